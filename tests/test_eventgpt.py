"""EventGPT (`EventChat_llama`): official key layout round trip, prompt ids, visual features,
placeholder scatter, cache and batching -- on a tiny random model (hidden 32, 2 layers,
CLIP 32 px / patch 8 -> 17 tokens per frame; 5 frames -> 22 placeholders)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import left_pad_rows
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)

from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig  # noqa: E402

from specalign.backends.eventgpt import EventGPTBackend  # noqa: E402
from specalign.dataset import Sample  # noqa: E402
from specalign.demo_tokenizer import build_backend, wrap  # noqa: E402
from specalign.eventgpt import (  # noqa: E402
    CLIP_PREFIX,
    DEFAULT_EVENT_PATCH_TOKEN,
    OFFICIAL_CLIP_PREFIX,
    EVENT_TOKEN_INDEX,
    SYSTEM_PROMPT,
    EventChatConfig,
    EventChatForCausalLM,
    official_name,
    spatio_temporal_pool,
    write_clip_dir,
    write_official_checkpoint,
)
from specalign.models import ModelSpec  # noqa: E402

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8)
N_SPATIAL = (32 // 8) ** 2 + 1  # 17: patches + CLS
N_EVENT = 5 + N_SPATIAL        # 22
QUESTIONS = ("What is in the scene?", "Describe the road and the cars in this scene in detail please.")


def _tokenizer():
    texts = [SYSTEM_PROMPT, *QUESTIONS, "USER: ASSISTANT:", "a red circle moves left", "a blue square moves up"]
    return wrap(build_backend(texts, 400))


def _model(tok, seed=0, **extra):
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(initializer_range=0.2, **VISION)
    cfg = EventChatConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        initializer_range=0.2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        **{"mm_visual_tower": "(embedded)", "mm_visual_tower_config": vision.to_dict(), "event_feature_adaptor": True,
           "mm_use_im_patch_token": True, "mm_use_im_start_end": False, **extra})
    return EventChatForCausalLM(cfg).eval()


def _frames(seed=0, n=5):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (24 + 2 * i, 40 - i, 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def tok():
    return _tokenizer()


@pytest.fixture(scope="module")
def ckpt(tok, tmp_path_factory):
    """A self-contained official checkpoint (CLIP inside) and the model written."""
    model = _model(tok)
    path = write_official_checkpoint(model, tok, tmp_path_factory.mktemp("egpt") / "ckpt", include_clip=True)
    return path, model


@pytest.fixture(scope="module")
def backend(ckpt):
    return EventGPTBackend(ModelSpec(name="draft", family="eventgpt", path=str(ckpt[0])))




# --------------------------------------------------------------------------- checkpoint layout
def test_checkpoint_files_use_official_layout(ckpt, tok):
    path, model = ckpt
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "EventChat_llama"
    assert cfg["mm_use_im_patch_token"] is True and cfg["mm_use_im_start_end"] is False
    assert cfg["event_feature_adaptor"] is True and cfg["mm_visual_tower_config"]["image_size"] == 32
    assert isinstance(AutoConfig.from_pretrained(str(path)), EventChatConfig)
    keys = set(load_file(str(path / "model.safetensors")))
    for k in ("model.visual_projector.0.weight", "model.visual_projector.0.bias", "model.visual_projector.2.weight",
              "model.feature_adaptor.weight", "model.feature_adaptor.bias", "model.embed_tokens.weight",
              "model.norm.weight", "lm_head.weight", "model.layers.1.mlp.down_proj.weight",
              OFFICIAL_CLIP_PREFIX + "embeddings.patch_embedding.weight",
              OFFICIAL_CLIP_PREFIX + "encoder.layers.1.self_attn.q_proj.weight"):
        assert k in keys, k
    assert all(k.startswith(OFFICIAL_CLIP_PREFIX) for k in keys if k.startswith(CLIP_PREFIX))
    assert not any(k.startswith("model.visual_projector.1") for k in keys)  # GELU has no weights
    # the tokenizer is written as the official download: without the ev tokens
    saved = AutoTokenizer.from_pretrained(str(path))
    assert len(saved) == len(tok) and DEFAULT_EVENT_PATCH_TOKEN not in saved.get_vocab()


def test_load_equals_written_clip_inside(ckpt, backend, tok):
    path, _ = ckpt
    written = load_file(str(path / "model.safetensors"))
    # in memory, transformers 5's CLIPVisionModel has no `vision_model.` level: compare by official name
    loaded = {official_name(k): v for k, v in backend.model.state_dict().items()}
    assert set(loaded) == set(written)
    v = len(tok)
    # <ev_patch> added at id v (mm_use_im_patch_token), embeddings resized to len(tokenizer) = v + 1
    assert backend.tokenizer.convert_tokens_to_ids(DEFAULT_EVENT_PATCH_TOKEN) == v
    assert len(backend.tokenizer) == v + 1 == backend.text_vocab_size
    for k, w in written.items():
        got = loaded[k]
        if k in ("model.embed_tokens.weight", "lm_head.weight"):
            assert got.shape == (v + 1, 32)
            assert torch.equal(got[:v], w), k
            assert torch.allclose(got[v], w.mean(0), atol=1e-6), k  # deterministic mean row for <ev_patch>
        else:
            assert torch.equal(got, w), k
    assert backend.eos_token_id == tok.eos_token_id and backend.pad_token_id == tok.unk_token_id == 0


def test_load_with_clip_from_separate_dir(tok, tmp_path):
    model = _model(tok, seed=1)
    clip_dir = write_clip_dir(model, tmp_path / "clip")
    model.config.mm_visual_tower = str(clip_dir)
    path = write_official_checkpoint(model, tok, tmp_path / "ckpt", include_clip=False)
    cfg = json.loads((path / "config.json").read_text())
    assert "mm_visual_tower_config" not in cfg and cfg["mm_visual_tower"] == str(clip_dir)
    written = load_file(str(path / "model.safetensors"))
    assert not any(k.startswith(CLIP_PREFIX) for k in written)

    b = EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))
    loaded = b.model.state_dict()
    clip = load_file(str(clip_dir / "model.safetensors"))  # hub layout: vision_model.*
    assert clip and all(k.startswith("vision_model.") for k in clip)
    assert set(map(official_name, loaded)) == set(written) | {CLIP_PREFIX + k for k in clip}
    for k, w in clip.items():
        assert torch.equal(loaded[CLIP_PREFIX + k.removeprefix("vision_model.")], w), k
    for k, w in written.items():
        got = loaded[k]
        assert torch.equal(got[: w.shape[0]], w), k
    # no preprocessor config anywhere: CLIP defaults at the tower size
    assert b.image_processor.crop_size == {"height": 32, "width": 32}


def test_missing_clip_dir_is_a_clear_error(tok, tmp_path):
    model = _model(tok)
    model.config.mm_visual_tower = str(tmp_path / "no-such-clip")
    path = write_official_checkpoint(model, tok, tmp_path / "ckpt", include_clip=False)
    with pytest.raises(FileNotFoundError, match="no-such-clip"):
        EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))


def test_missing_projector_weight_is_an_error(ckpt, tmp_path):
    import shutil

    path = tmp_path / "ckpt"
    shutil.copytree(ckpt[0], path)
    state = load_file(str(path / "model.safetensors"))
    del state["model.feature_adaptor.weight"]
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="feature_adaptor"):
        EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))


def test_event_qformer_config_rejected(ckpt, tok, tmp_path):
    with pytest.raises(NotImplementedError, match="use_event_qformer"):
        _model(tok, use_event_qformer=True)
    import shutil

    path = tmp_path / "ckpt"
    shutil.copytree(ckpt[0], path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["use_event_qformer"] = True
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NotImplementedError, match="use_event_qformer"):
        EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))


# --------------------------------------------------------------------------- prompt
def test_prompt_text_and_ids(backend):
    q = QUESTIONS[0]
    ids, text = backend.prompt_ids(q)
    assert text == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: <ev_start><event><ev_end>\n"
        "What is in the scene? ASSISTANT:"
    )
    tk = backend.tokenizer
    bos = tk.bos_token_id
    assert ids[0] == bos and ids.count(bos) == 1
    assert ids.count(EVENT_TOKEN_INDEX) == N_EVENT == backend.num_visual_tokens
    first = ids.index(EVENT_TOKEN_INDEX)
    assert ids[first:first + N_EVENT] == [EVENT_TOKEN_INDEX] * N_EVENT  # one contiguous block
    before, after = text.split("<event>")
    assert ids[:first] == tk(before).input_ids                       # chunk 1 with its BOS
    assert ids[first + N_EVENT:] == tk(after).input_ids[1:]          # chunk 2, its BOS dropped
    assert tk.decode(ids[first + N_EVENT:]) == "<ev_end>\n" + q + " ASSISTANT:"


# --------------------------------------------------------------------------- features
def test_spatio_temporal_pool_by_hand():
    f = torch.tensor([[[1., 2.], [3., 4.], [5., 6.]],
                      [[7., 8.], [9., 10.], [11., 12.]]])  # T=2 frames, N=3 tokens, H=2
    want = torch.tensor([[3., 4.], [9., 10.],               # temporal: mean over tokens per frame
                         [4., 5.], [6., 7.], [8., 9.]])     # spatial: mean over frames per token
    assert torch.equal(spatio_temporal_pool(f), want)
    assert torch.equal(spatio_temporal_pool(torch.stack([f, f + 1])), torch.stack([want, want + 1]))


def test_features_and_logits_match_the_pipeline(backend):
    m = backend.model
    pi = backend.prepare_frames("s", QUESTIONS[0], _frames())
    ev = pi.model_inputs["event_tensors"]
    assert ev.shape == (1, 5, 3, 32, 32) and ev.dtype == torch.float32
    with torch.no_grad():
        # the official order, one frame at a time: CLIP last_hidden_state -> projector -> adaptor
        per_frame = [m.model.feature_adaptor(m.model.visual_projector(
            m.model.visual_tower.visual_tower(ev[0, i:i + 1]).last_hidden_state))[0] for i in range(5)]
        feats = torch.stack(per_frame)  # [5, 17, 32]
        want = torch.cat([feats.mean(1), feats.mean(0)])  # [22, 32]
        got = m.encode_events(ev)[0]
        assert torch.allclose(got, want, atol=1e-5)

        ids = pi.input_ids[None]
        emb = m.model.embed_tokens(ids.clamp(min=0))
        emb[ids == EVENT_TOKEN_INDEX] = want
        ref = super(EventChatForCausalLM, m).forward(inputs_embeds=emb).logits
    logits = backend.forward(ids, model_inputs=pi.model_inputs)
    assert logits.shape == (1, ids.shape[1], backend.text_vocab_size)
    assert torch.allclose(logits, ref, atol=1e-5)


def test_placeholder_mismatch_errors(backend):
    pi = backend.prepare_frames("s", QUESTIONS[0], _frames())
    ids = pi.input_ids[None]
    with pytest.raises(ValueError, match="no event_tensors"):
        backend.forward(ids)
    i = pi.input_ids.tolist().index(EVENT_TOKEN_INDEX)
    short = torch.cat([ids[:, :i], ids[:, i + 1:]], dim=1)  # one placeholder too few
    with pytest.raises(ValueError, match="do not match"):
        backend.forward(short, model_inputs=pi.model_inputs)


def test_cache_prefill_then_decode(backend):
    pi = backend.prepare_frames("s", QUESTIONS[0], _frames(1))
    ids = pi.input_ids[None]
    full = backend.forward(ids, model_inputs=pi.model_inputs)
    cache = backend.new_cache()
    backend.forward(ids[:, :-2], cache=cache, model_inputs=pi.model_inputs)
    a = backend.forward(ids[:, -2:-1], cache=cache)  # decode steps: no event tensors
    b = backend.forward(ids[:, -1:], cache=cache)
    assert cache.get_seq_length() == ids.shape[1]
    assert torch.allclose(a[0, -1], full[0, -2], atol=1e-5) and torch.allclose(b[0, -1], full[0, -1], atol=1e-5)


def test_batched_left_padded_equals_unbatched(backend):
    pis = [backend.prepare_frames(f"s{i}", q, _frames(i)) for i, q in enumerate(QUESTIONS)]
    assert pis[0].input_ids.shape[0] != pis[1].input_ids.shape[0]
    ids, mask, pos = left_pad_rows([p.input_ids for p in pis], backend.pad_token_id)
    batch = backend.forward(ids, attention_mask=mask, position_ids=pos,
                            model_inputs={"event_tensors": torch.cat([p.model_inputs["event_tensors"] for p in pis])})
    for i, p in enumerate(pis):
        one = backend.forward(p.input_ids[None], model_inputs=p.model_inputs)[0]
        n = p.input_ids.shape[0]
        assert torch.allclose(batch[i, -n:], one, atol=1e-4), i


def test_generate_uses_events_only_in_prefill(backend):
    pi = backend.prepare_frames("s", QUESTIONS[1], _frames(2))
    ids = pi.input_ids[None]
    out = backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4,
                                 do_sample=False, event_tensors=pi.model_inputs["event_tensors"],
                                 eos_token_id=None, pad_token_id=backend.pad_token_id)
    cache, seq, want = backend.new_cache(), ids, []
    logits = backend.forward(seq, cache=cache, model_inputs=pi.model_inputs)
    for _ in range(4):
        nxt = logits[0, -1].argmax().item()
        want.append(nxt)
        logits = backend.forward(torch.tensor([[nxt]]), cache=cache)
    assert out[0, ids.shape[1]:].tolist() == want


# --------------------------------------------------------------------------- from a Sample
def _write_events(path: Path, duration_us: int, n=400, seed=0):
    rng = np.random.default_rng(seed)
    t0 = 1_000_000
    ev = {"x": rng.integers(0, 40, n).astype(np.uint16), "y": rng.integers(0, 30, n).astype(np.uint16),
          "t": np.sort(rng.integers(t0, t0 + duration_us, n)).astype(np.int64),
          "p": rng.integers(0, 2, n).astype(np.uint8)}
    ev["t"][0], ev["t"][-1] = t0, t0 + duration_us
    np.save(path, ev, allow_pickle=True)


def _stand_in_loaders(monkeypatch):
    """Until specalign.dataset.sample_events exists: load the .npy dict directly."""
    import specalign.dataset as ds

    if not hasattr(ds, "sample_events"):
        monkeypatch.setattr(ds, "sample_events", lambda s: np.load(s.event_path, allow_pickle=True).item(),
                            raising=False)


def test_prepare_from_sample_and_max_event_ms(backend, ckpt, tmp_path, monkeypatch):
    _stand_in_loaders(monkeypatch)
    _write_events(tmp_path / "a.npy", 150_000)
    s = Sample(sample_id="seq/000000", question=QUESTIONS[0], event_path=tmp_path / "a.npy")
    pi = backend.prepare(s)  # no limit by default (the original refuses >= 100 ms)
    assert pi.sample_id == "seq/000000" and pi.model_inputs["event_tensors"].shape == (1, 5, 3, 32, 32)
    assert pi.input_ids.tolist() == backend.prompt_ids(QUESTIONS[0])[0]
    logits = backend.forward(pi.input_ids[None], model_inputs=pi.model_inputs)
    assert torch.isfinite(logits).all()

    strict = EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(ckpt[0]),
                                       options=(("max_event_ms", 100),)))
    with pytest.raises(ValueError, match="max_event_ms"):
        strict.prepare(s)
    _write_events(tmp_path / "b.npy", 99_000)
    assert strict.prepare(replace(s, event_path=tmp_path / "b.npy")).input_ids.shape == pi.input_ids.shape


def test_start_end_tokens_when_configured(tok, tmp_path):
    """mm_use_im_start_end: <ev_start>/<ev_end> become single added ids around the placeholders;
    rewriting the loaded model drops all three ev tokens from the tokenizer again."""
    model = _model(tok, mm_use_im_start_end=True)
    path = write_official_checkpoint(model, tok, tmp_path / "ckpt")
    b = EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))
    v = len(tok)
    assert b.tokenizer.convert_tokens_to_ids(["<ev_patch>", "<ev_start>", "<ev_end>"]) == [v, v + 1, v + 2]
    assert b.text_vocab_size == v + 3
    ids, _ = b.prompt_ids(QUESTIONS[0])
    first = ids.index(EVENT_TOKEN_INDEX)
    assert ids[first - 1] == v + 1 and ids[first + N_EVENT] == v + 2 and ids.count(b.tokenizer.bos_token_id) == 1
    again = write_official_checkpoint(b.model, b.tokenizer, tmp_path / "again")
    saved = AutoTokenizer.from_pretrained(str(again))
    assert len(saved) == v and not {"<ev_patch>", "<ev_start>", "<ev_end>"} & set(saved.get_vocab())
    b2 = EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(again)))
    assert b2.text_vocab_size == v + 3
    assert torch.equal(b2.model.lm_head.weight, b.model.lm_head.weight)


def test_greedy_generation_batched_equals_unbatched(backend):
    """The generation stage's own loop: left-padded batches give the same greedy tokens."""
    from specalign.generation import Decoding, generate

    pis = [backend.prepare_frames(f"s{i}", q, _frames(i)) for i, q in enumerate(QUESTIONS)]
    dec = Decoding("greedy", max_new_tokens=6)
    one = [g.token_ids for g in generate(backend, pis, dec, batch_size=1)]
    many = [g.token_ids for g in generate(backend, pis, dec, batch_size=len(pis))]
    assert one == many and all(len(t) > 0 for t in one)
