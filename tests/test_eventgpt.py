"""EventGPT (`EventChat_llama`): official key layout round trip, prompt ids, visual features,
placeholder scatter, cache and batching -- on a tiny random model (hidden 32, 2 layers,
CLIP 32 px / patch 8 -> 17 tokens per frame; 5 frames -> 22 placeholders).

Also a tiny checkpoint shaped like the published one (config.json with exactly the keys of
tests/data/checkpoints/EventGPT-7B/config.UNCONFIRMED_template.json, sizes shrunk; CLIP width 128
with 2 heads inside), which loads with no CLIP directory; no weight dropped silently; the prompt
templates as validated model options."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import left_pad_rows
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)

from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig  # noqa: E402

from specalign.backends.eventgpt import (  # noqa: E402
    CLIP_PREFIX,
    DEFAULT_EVENT_PATCH_TOKEN,
    EVENT_TOKEN_INDEX,
    OFFICIAL_CLIP_PREFIX,
    EventChatConfig,
    EventChatForCausalLM,
    EventGPTBackend,  # noqa: E402
    official_name,
    spatio_temporal_pool,
    write_clip_dir,
    write_official_checkpoint,
)
from specalign.backends.prompts import EVENTGPT_SYSTEM as SYSTEM_PROMPT  # noqa: E402
from specalign.dataset import Sample  # noqa: E402
from specalign.demo_tokenizer import build_backend, wrap  # noqa: E402
from specalign.specs import ModelSpec  # noqa: E402

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
    from specalign.generation import generate
    from specalign.specs import Decoding

    pis = [backend.prepare_frames(f"s{i}", q, _frames(i)) for i, q in enumerate(QUESTIONS)]
    dec = Decoding("greedy", max_new_tokens=6)
    one = [g.token_ids for g in generate(backend, pis, dec, batch_size=1)]
    many = [g.token_ids for g in generate(backend, pis, dec, batch_size=len(pis))]
    assert one == many and all(len(t) > 0 for t in one)


# --------------------------------------------------------------------------- the config as published
DATA = Path(__file__).parent / "data" / "checkpoints"
PUBLISHED = DATA / "EventGPT-7B" / "config.UNCONFIRMED_template.json"
CLIP_L = DATA / "clip-vit-large-patch14-336"
# A CLIP of openai/CLIP's kind (head size 64, quick_gelu, eps 1e-5), only smaller: what the sizes
# rule (configuration.py, rule 2) reads back exactly from the tensors.
VISION_64 = dict(hidden_size=128, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                 image_size=32, patch_size=8)
SHRUNK = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, num_key_value_heads=4)


def _published_config(tok) -> dict:
    """The published key set (the template less its _COMMENT), every size shrunk, nothing added."""
    cfg = json.loads(PUBLISHED.read_text())
    cfg.pop("_COMMENT")
    assert cfg["mm_visual_tower"] == "openai/clip-vit-large-patch14-336" and "mm_visual_tower_config" not in cfg
    assert set(SHRUNK) < set(cfg) and (cfg["bos_token_id"], cfg["eos_token_id"]) == (tok.bos_token_id, tok.eos_token_id)
    return {**cfg, **SHRUNK, "vocab_size": len(tok)}


def _published_checkpoint(tok, path: Path, seed=3, layout="safetensors", drop_config=(), **config_changes):
    """A tiny checkpoint in the published layout: config.json with exactly the published keys
    (sizes shrunk), CLIP inside as model.visual_tower.visual_tower.vision_model.*. -> (path, model)."""
    published = _published_config(tok)
    torch.manual_seed(seed)
    llama = {k: v for k, v in published.items() if k not in ("architectures", "model_type", "torch_dtype")}
    model = EventChatForCausalLM(EventChatConfig(
        **llama, initializer_range=0.2,
        mm_visual_tower_config=CLIPVisionConfig(initializer_range=0.2, **VISION_64).to_dict())).eval()
    write_official_checkpoint(model, tok, path, include_clip=True)
    cfg = {k: v for k, v in {**published, **config_changes}.items() if k not in drop_config}
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    if layout == "bin_sharded":  # the other layout save_pretrained writes: .bin shards + index
        state = load_file(str(path / "model.safetensors"))
        (path / "model.safetensors").unlink()
        keys = sorted(state)
        shards = {"pytorch_model-00001-of-00002.bin": keys[::2], "pytorch_model-00002-of-00002.bin": keys[1::2]}
        for name, ks in shards.items():
            torch.save({k: state[k] for k in ks}, path / name)
        (path / "pytorch_model.bin.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}))
    return path, model


def _no_clip_dir(monkeypatch):
    """Resolving mm_visual_tower (a local dir or the HF cache) fails the test: nothing outside the
    checkpoint may be read when the CLIP tensors are inside."""
    import specalign.backends.eventgpt.checkpoint as ck
    import specalign.backends.eventgpt.configuration as cf

    def refuse(name):
        raise AssertionError(f"mm_visual_tower {name!r} was resolved")

    monkeypatch.setattr(ck, "resolve_visual_tower_dir", refuse)
    monkeypatch.setattr(cf, "resolve_visual_tower_dir", refuse)


@pytest.mark.parametrize("layout", ["safetensors", "bin_sharded"])
def test_published_config_with_clip_inside_loads_and_runs(tok, tmp_path, monkeypatch, caplog, layout):
    """The config exactly as published (mm_visual_tower a hub id not on disk, no vision config) with
    the CLIP tensors inside: the vision config is read from the tensors, the model equals the
    one written, and prepare -> forward gives the written model's features and logits."""
    path, written = _published_checkpoint(tok, tmp_path / "ckpt", layout=layout)
    on_disk = json.loads((path / "config.json").read_text())
    assert set(on_disk) == set(json.loads(PUBLISHED.read_text())) - {"_COMMENT"}
    _no_clip_dir(monkeypatch)
    with caplog.at_level("WARNING"):
        b = EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))
    assert json.loads((path / "config.json").read_text()) == on_disk  # the file is not rewritten
    assert "names CLIP-L/14-336" in caplog.text and "hidden_size" in caplog.text  # the shrunk sizes are named
    vc = b.model.vision_config
    for k, v in VISION_64.items():
        assert getattr(vc, k) == v, k
    assert (vc.hidden_act, vc.layer_norm_eps) == ("quick_gelu", 1e-5)
    assert b.num_visual_tokens == 5 + 17
    assert hasattr(b.model.model, "feature_adaptor")
    got = {official_name(k): v for k, v in b.model.state_dict().items()}
    for k, w in written.state_dict().items():
        k = official_name(k)
        assert torch.equal(got[k][: w.shape[0]], w), k

    _stand_in_loaders(monkeypatch)
    _write_events(tmp_path / "a.npy", 50_000)
    pi = b.prepare(Sample(sample_id="seq/000001", question=QUESTIONS[1], event_path=tmp_path / "a.npy"))
    ev = pi.model_inputs["event_tensors"]
    assert ev.shape == (1, 5, 3, 32, 32) and pi.input_ids.tolist().count(EVENT_TOKEN_INDEX) == 22
    logits = b.forward(pi.input_ids[None], model_inputs=pi.model_inputs)
    with torch.no_grad():
        assert torch.allclose(b.model.encode_events(ev), written.encode_events(ev), atol=1e-5)
        ref = written(input_ids=pi.input_ids[None], event_tensors=ev).logits
    assert logits.shape == (1, pi.input_ids.shape[0], len(tok) + 1)  # + <ev_patch>
    assert torch.allclose(logits[..., : len(tok)], ref, atol=1e-5)


def _clip_l_vision():
    from transformers import CLIPConfig

    return CLIPConfig.from_pretrained(str(CLIP_L / "config.minimal_resave_NOT_ORIGINAL.json")).vision_config


def test_vision_config_rule_is_exact_for_clip_l14_336():
    """Tensor shapes of a real CLIP-L/14-336 (built on the meta device: no memory) give exactly its
    known vision config, and CLIP_L14_336_VISION is that config; its image processor is the
    checkpoint's own preprocessor_config.json."""
    from transformers import CLIPImageProcessorPil, CLIPVisionModel

    from specalign.backends.eventgpt.configuration import (
        CLIP_L14_336_VISION,
        clip_l14_336_vision_config,
        clip_vision_config_from_shapes,
        names_clip_l14_336,
        num_event_tokens,
    )
    from specalign.backends.eventgpt.processing import build_image_processor

    known = _clip_l_vision()
    skip = {"transformers_version", "_name_or_path", "architectures"}
    want = {k: v for k, v in known.to_dict().items() if k not in skip}
    with torch.device("meta"):
        shapes = {"vision_model." + k: tuple(v.shape) for k, v in CLIPVisionModel(known).state_dict().items()}
    derived = clip_vision_config_from_shapes(shapes, "openai/clip-vit-large-patch14-336")
    assert {k: v for k, v in derived.to_dict().items() if k not in skip} == want
    assert {k: v for k, v in clip_l14_336_vision_config().to_dict().items() if k not in skip} == want
    assert all(known.to_dict()[k] == v for k, v in CLIP_L14_336_VISION.items())
    assert num_event_tokens(derived) == 582  # 5 temporal + 577 spatial, as the fork measured
    assert (build_image_processor(derived).to_dict()
            == CLIPImageProcessorPil.from_pretrained(str(CLIP_L)).to_dict())
    assert all(map(names_clip_l14_336, ["openai/clip-vit-large-patch14-336", "clip-vit-large-patch14-336",
                                        "/models/CLIP-ViT-Large-Patch14-336/", "C:\\m\\clip-vit-large-patch14-336"]))
    assert not any(map(names_clip_l14_336, ["openai/clip-vit-large-patch14", "/data/clip", None, ""]))


def test_vision_config_rule_refuses_what_the_tensors_cannot_tell():
    from specalign.backends.eventgpt.configuration import clip_vision_config_from_shapes

    with torch.device("meta"):
        from transformers import CLIPVisionModel

        shapes = {k: tuple(v.shape) for k, v in CLIPVisionModel(CLIPVisionConfig(**VISION)).state_dict().items()}
    with pytest.raises(ValueError, match="not a multiple of 64"):  # width 32: no head count
        clip_vision_config_from_shapes(shapes)
    bad = {**{k: (64, *v[1:]) if k.endswith("patch_embedding.weight") else v for k, v in shapes.items()},
           "embeddings.position_embedding.weight": (18, 64)}
    with pytest.raises(ValueError, match="position embedding"):
        clip_vision_config_from_shapes(bad)


def test_embedded_vision_config_must_match_the_tensors(ckpt, tmp_path):
    path = _edited_copy(ckpt, tmp_path / "ckpt", config=lambda c: c["mm_visual_tower_config"].update(
        num_hidden_layers=3))
    with pytest.raises(ValueError, match="num_hidden_layers"):
        EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))


# --------------------------------------------------------------------------- no weight dropped silently
def _edited_copy(ckpt, path: Path, config=None, state=None) -> Path:
    """A copy of the module's checkpoint with config.json and/or the tensors edited in place."""
    import shutil

    shutil.copytree(ckpt[0], path)
    if config is not None:
        cfg = json.loads((path / "config.json").read_text())
        config(cfg)
        (path / "config.json").write_text(json.dumps(cfg))
    if state is not None:
        tensors = load_file(str(path / "model.safetensors"))
        state(tensors)
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


@pytest.mark.parametrize("change", ["key absent", "false"])
def test_feature_adaptor_built_and_applied_when_its_weights_are_there(ckpt, tmp_path, change):
    """The official code builds the adaptor on `hasattr(config, "event_feature_adaptor")` and always
    applies it: with its weights in the checkpoint it is built and applied, whatever the key says."""
    def edit(cfg):
        if change == "key absent":
            del cfg["event_feature_adaptor"]
        else:
            cfg["event_feature_adaptor"] = False

    path = _edited_copy(ckpt, tmp_path / "ckpt", config=edit)
    assert "model.feature_adaptor.weight" in load_file(str(path / "model.safetensors"))
    b = EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))
    written = ckpt[1]
    assert torch.equal(b.model.model.feature_adaptor.weight, written.model.feature_adaptor.weight)
    ev = b.prepare_frames("s", QUESTIONS[0], _frames()).model_inputs["event_tensors"]
    with torch.no_grad():
        assert torch.allclose(b.model.encode_events(ev), written.encode_events(ev), atol=1e-5)


def test_unexpected_non_clip_tensor_is_an_error_naming_it(ckpt, tmp_path):
    def add(t):
        t["model.event_qformer.query.weight"] = torch.zeros(4, 32)
        t["lm_head_extra.bias"] = torch.zeros(3)

    path = _edited_copy(ckpt, tmp_path / "extra", state=add)
    with pytest.raises(ValueError, match=r"2 checkpoint tensors .*lm_head_extra\.bias, model\.event_qformer\.query\.weight"):
        EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))
    # a CLIP buffer older transformers saved (position_ids) is no weight: still loads
    path = _edited_copy(ckpt, tmp_path / "buffer", state=lambda t: t.update(
        {OFFICIAL_CLIP_PREFIX + "embeddings.position_ids": torch.arange(N_SPATIAL)[None]}))
    assert EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path))).num_visual_tokens == N_EVENT


def test_missing_weights_are_an_error_naming_them(ckpt, tmp_path):
    """The adaptor declared (the key present, even false: the original builds it) but its weights
    absent; and a partial CLIP plus a Llama weight: errors naming every missing key."""
    def no_adaptor(t):
        del t["model.feature_adaptor.weight"], t["model.feature_adaptor.bias"]

    path = _edited_copy(ckpt, tmp_path / "adaptor", config=lambda c: c.update(event_feature_adaptor=False),
                        state=no_adaptor)
    with pytest.raises(ValueError, match=r"lacks 2 weights: model\.feature_adaptor\.bias, model\.feature_adaptor\.weight"):
        EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))

    def partial(t):
        del t[OFFICIAL_CLIP_PREFIX + "encoder.layers.1.mlp.fc2.bias"], t["model.layers.0.input_layernorm.weight"]

    path = _edited_copy(ckpt, tmp_path / "partial", state=partial)
    with pytest.raises(ValueError, match=r"lacks 2 weights: .*input_layernorm.*fc2\.bias"):
        EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))


def test_published_checkpoint_without_adaptor_key_still_gets_its_adaptor(tok, tmp_path, monkeypatch):
    """The same on the published layout (mm_visual_tower not on disk)."""
    path, written = _published_checkpoint(tok, tmp_path / "ckpt", drop_config=("event_feature_adaptor",))
    _no_clip_dir(monkeypatch)
    b = EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(path)))
    ev = b.prepare_frames("s", QUESTIONS[0], _frames()).model_inputs["event_tensors"]
    with torch.no_grad():
        assert torch.allclose(b.model.encode_events(ev), written.encode_events(ev), atol=1e-5)


# --------------------------------------------------------------------------- the prompt as a model option
EVENTGPT_DOC_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: <ev_start><event><ev_end>\n{question} ASSISTANT:"
)


def test_default_prompts_are_the_documented_ones(backend):
    from specalign.backends.prompts import event_prompt, image_prompt, video_prompt
    from specalign.specs import option_defaults

    assert option_defaults("eventgpt")["prompt"] == EVENTGPT_DOC_PROMPT
    assert option_defaults("video_llava")["prompt"] == "USER: <video>\n{question} ASSISTANT:"
    assert option_defaults("llava")["prompt"] == "USER: <image>\n{question} ASSISTANT:"
    assert backend.spec.option("prompt") == EVENTGPT_DOC_PROMPT
    assert backend.prompt_ids("Q?")[1] == event_prompt("Q?") == EVENTGPT_DOC_PROMPT.replace("{question}", "Q?")
    assert video_prompt("Q?") == "USER: <video>\nQ? ASSISTANT:" and image_prompt("Q?") == "USER: <image>\nQ? ASSISTANT:"
    assert SYSTEM_PROMPT + " USER:" == EVENTGPT_DOC_PROMPT.split(" USER:")[0] + " USER:"


def test_custom_prompt_changes_prompt_ids(ckpt, backend):
    custom = "USER: <event>\n{question} ASSISTANT:"
    b = EventGPTBackend(ModelSpec(name="d", family="eventgpt", path=str(ckpt[0]), options={"prompt": custom}))
    ids, text = b.prompt_ids(QUESTIONS[0])
    assert text == "USER: <event>\n" + QUESTIONS[0] + " ASSISTANT:"
    assert ids != backend.prompt_ids(QUESTIONS[0])[0] and ids.count(EVENT_TOKEN_INDEX) == N_EVENT
    first = ids.index(EVENT_TOKEN_INDEX)
    assert ids[:first] == b.tokenizer("USER: ").input_ids
    logits = b.forward(torch.tensor([ids]), model_inputs={"event_tensors": b.event_tensors(_frames())})
    assert logits.shape == (1, len(ids), b.text_vocab_size)


@pytest.mark.parametrize("family, token", [("video_llava", "<video>"), ("llava", "<image>")])
def test_custom_prompt_of_the_target_families(family, token):
    """The Video-LLaVA / LLaVA backends build their prompt text from the option (only prompt_ids is
    run: the object carries what prompt_ids reads)."""
    from specalign.backends.llava import LlavaBackend
    from specalign.backends.video_llava import VideoLlavaBackend
    from specalign.demo_tokenizer import add_target_tokens

    tk = add_target_tokens(_tokenizer())
    cls, id_attr = {"video_llava": (VideoLlavaBackend, "video_token_id"), "llava": (LlavaBackend, "image_token_id")}[family]

    def ids_for(options):
        b = cls.__new__(cls)
        b.spec, b.tokenizer, b.num_visual_tokens = ModelSpec(name="t", family=family, path="p", options=options), tk, 3
        setattr(b, id_attr, tk.convert_tokens_to_ids(token))
        return b.prompt_ids(QUESTIONS[0])

    default_ids, default_text = ids_for({})
    assert default_text == f"USER: {token}\n{QUESTIONS[0]} ASSISTANT:"
    ids, text = ids_for({"prompt": f"USER: {token}{{question}} ASSISTANT:"})  # the model card's form
    assert text == f"USER: {token}{QUESTIONS[0]} ASSISTANT:" and ids != default_ids
    assert ids.count(tk.convert_tokens_to_ids(token)) == default_ids.count(tk.convert_tokens_to_ids(token)) == 3


@pytest.mark.parametrize("family, token", [("eventgpt", "<ev_start><event><ev_end>"), ("video_llava", "<video>"),
                                           ("llava", "<image>")])
def test_prompt_option_is_validated_by_the_schema(family, token):
    from snakemake.utils import validate

    from specalign.specs import SCHEMA_PATH, option_defaults

    def config(options):
        return {"datasets": {"d": {"kind": "demo"}},
                "models": {"m": {"family": family, "path": "p", "options": options}},
                "pairs": [{"draft": "m", "target": "m"}], "decodings": {"greedy": {}}}

    good = config({"prompt": f"Q: {token} {{question}} A:"})
    validate(good, str(SCHEMA_PATH))
    filled = config({})
    validate(filled, str(SCHEMA_PATH))
    assert filled["models"]["m"]["options"]["prompt"] == option_defaults(family)["prompt"]
    placeholder = token.replace("<ev_start>", "").replace("<ev_end>", "")
    for bad in (f"USER: {token}\nASSISTANT:",                       # no {question}
                "USER: {question} ASSISTANT:",                      # no visual placeholder
                f"USER: {placeholder}{placeholder}\n{{question}} ASSISTANT:"):  # two placeholders
        with pytest.raises(Exception, match="does not match"):
            validate(config({"prompt": bad}), str(SCHEMA_PATH))
