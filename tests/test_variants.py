"""Drafts made from a checkpoint (backends/variants.py): the first k layers, quantized weights.

Computed truths: a truncated model's logits equal the full model's first k layers, final norm
and head applied by hand; the int8 model is close to the fp32 one; either as a self-draft keeps
speculative decoding lossless (greedy output == the target's, rounds == the teacher-forced
replay); configs that cannot run are refused before any job starts, naming the key.
"""
from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
import yaml
from builders import load_lm
from snakemake.utils import validate
from test_speculative import check_greedy_pair

from specalign.config import ConfigError, check_references
from specalign.specs import SCHEMA_PATH

pytest.importorskip("torchao")


def load_variant(path, name, **kw):
    """Through `load_backend`, the one place the variants are applied."""
    from specalign.backends import ModelSpec, load_backend

    return load_backend(ModelSpec(name=name, family="causal_lm", path=str(path), **kw))


def test_truncation_is_the_first_k_layers(tiny_lm_factory, make_prompts):
    path = tiny_lm_factory("deep", layers=3, **{"eos_like": 49})
    full = load_lm(path, "full")
    short = load_variant(path, "short", layers=2)
    assert len(short.model.model.layers) == 2 and short.model.config.num_hidden_layers == 2
    assert len(full.model.model.layers) == 3
    ids = make_prompts(full, 1, seed=3, min_len=6)[0].input_ids[None]
    with torch.no_grad():
        m = full.model.model
        h = m.embed_tokens(ids)
        pos = torch.arange(ids.shape[1])[None]
        emb = m.rotary_emb(h, pos)
        mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)[None, None]
        for layer in m.layers[:2]:
            h = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=emb)
            h = h[0] if isinstance(h, tuple) else h
        by_hand = full.model.lm_head(m.norm(h)).float()
    torch.testing.assert_close(short.forward(ids), by_hand, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="layers 3 must lie in 1..2"):
        load_variant(path, "too_many", layers=3)


def test_quantized_weights_are_int8_and_close(tiny_target_dir, tiny_target, make_prompts):
    q = load_variant(tiny_target_dir, "q", quantization="int8_dynamic")
    w = q.model.model.layers[0].self_attn.q_proj.weight
    assert "Int8" in type(w).__name__, type(w)
    ids = make_prompts(tiny_target, 1, seed=4, min_len=6)[0].input_ids[None]
    ref, got = tiny_target.forward(ids), q.forward(ids)
    assert not torch.equal(ref, got)  # really quantized
    assert (ref - got).abs().max() < 0.05 * ref.abs().max()


@pytest.mark.parametrize("kw", [{"layers": 1}, {"quantization": "int8_dynamic"}])
def test_a_self_draft_is_lossless(tiny_target_dir, tiny_target, identity_map, make_prompts, kw):
    draft = load_variant(tiny_target_dir, "self_draft", **kw)
    assert draft.spec.layers == kw.get("layers") and draft.spec.quantization == kw.get("quantization")
    pairs = [(p, p) for p in make_prompts(tiny_target, 3, seed=21, max_len=10)]
    bad_rounds, bad_out, tot = check_greedy_pair(draft, tiny_target, pairs, identity_map, max_news=(12,),
                                                 gammas=(1, 3))
    assert (bad_rounds, bad_out) == (0, 0)
    assert tot["drafted"] > 0


# ---------------------------------------------------------------- quantization: the language model only
TEXTS = ["USER: What is in this scene? ASSISTANT:", "a red circle moves left", "a blue square moves up"]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    """One tiny checkpoint per family, written as each loads it (the demo builders; LLaVA as the hub writes it)."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    from specalign import demo_models
    from specalign.backends.eventgpt import write_official_checkpoint
    from specalign.demo_tokenizer import add_target_tokens, build_backend, wrap

    root = tmp_path_factory.mktemp("families")
    draft_tok = wrap(build_backend(TEXTS, 300))
    target_tok = add_target_tokens(wrap(build_backend(TEXTS, 300)))
    dirs = {f: root / f for f in ("eventgpt", "video_llava", "llava", "causal_lm")}
    write_official_checkpoint(demo_models.build_draft(draft_tok), draft_tok, dirs["eventgpt"], include_clip=True)
    for family, model, tok in [("video_llava", demo_models.build_target(target_tok), target_tok),
                               ("causal_lm", demo_models.build_text(draft_tok), draft_tok)]:
        model.save_pretrained(dirs[family])
        tok.save_pretrained(dirs[family])
    torch.manual_seed(0)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**demo_models.VISION),
                      text_config=demo_models._text_config(target_tok),
                      image_token_index=target_tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
                      image_seq_length=(demo_models.VISION["image_size"] // demo_models.VISION["patch_size"]) ** 2)
    LlavaForConditionalGeneration(cfg).save_pretrained(dirs["llava"])
    target_tok.save_pretrained(dirs["llava"])
    return dirs


def _quantized(weight) -> bool:
    """A torchao tensor subclass (int8 data and scales) rather than a plain float weight."""
    return type(weight) not in (torch.Tensor, torch.nn.Parameter)


@pytest.mark.parametrize("family", ["eventgpt", "video_llava", "llava", "causal_lm"])
def test_quantization_takes_the_decoder_layers_and_head_only(family_dirs, family):
    """Every Linear of the decoder layers and the LM head is quantized; every other Linear (EventGPT's CLIP
    tower and feature adaptor, the LLaVA projector and vision tower) keeps its float weight."""
    from specalign.backends import ModelSpec, load_backend
    from specalign.backends.variants import decoder_layers

    backend = load_backend(ModelSpec(name=f"{family}_int8", family=family, path=str(family_dirs[family]),
                                     quantization="int8_dynamic"))
    model = backend.model
    _, layers = decoder_layers(model)
    in_layers = {id(m) for m in layers.modules()}
    head = model.get_output_embeddings()
    assert head is not None and head.weight is not model.get_input_embeddings().weight  # untied: quantized too
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    quantized = {n for n, m in linears.items() if id(m) in in_layers or m is head}
    # per layer: q k v o, gate up down
    assert len(quantized) == 7 * len(layers) + 1
    others = set(linears) - quantized
    if family != "causal_lm":
        assert others, "a multimodal model has vision / projector Linears"
    for n in quantized:
        assert _quantized(linears[n].weight), n
    for n in others:
        w = linears[n].weight
        assert not _quantized(w) and w.dtype == torch.float32, (n, type(w), w.dtype)


def test_int4_without_its_package_fails_at_once_naming_it(tiny_target_dir):
    """torchao's int4 weights need the mslk kernels (the `int4` extra): a job lacking them stops before
    touching the model, naming the package and the extra - not torchao's bare ImportError halfway through."""
    from specalign.backends.variants import quantize

    if importlib.util.find_spec("mslk") is not None:
        pytest.skip("mslk is installed here")
    model = load_lm(tiny_target_dir, "t").model
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(ImportError, match=r"int4_weight needs the mslk package.*pip install -e '?\.\[int4\]"):
        quantize(model, "int4_weight", "t")
    after = model.state_dict()
    assert all(type(after[n]) is torch.Tensor and torch.equal(after[n], w) for n, w in before.items())


def test_a_method_for_another_device_is_refused_by_the_loader(tiny_target_dir):
    """The config check refuses int8_weight on a CPU model; a model built by hand (bench/) meets the same rule."""
    from specalign.backends.variants import quantize

    model = load_lm(tiny_target_dir, "t").model
    with pytest.raises(ValueError, match="int8_weight runs on cuda, but model 't' is on cpu"):
        quantize(model, "int8_weight", "t")


def drafts_config() -> dict:
    cfg = yaml.safe_load(open(SCHEMA_PATH.parents[1] / ".test" / "config.yaml"))
    cfg["models"]["demo_target_int8"] = {"family": "video_llava", "base": "demo_target",
                                         "quantization": "int8_dynamic"}
    return cfg


def checked(cfg):
    validate(cfg, str(SCHEMA_PATH))
    check_references(cfg)


def test_config_refuses_what_cannot_run_before_any_job():
    checked(drafts_config())
    for edit, key in [
        (lambda m: m.update(quantization="int4_weight"), "quantization: int4_weight runs on cuda"),
        (lambda m: m.update(quantization="int8_weight"), "quantization: int8_weight runs on cuda"),
        (lambda m: m.update(base="nope"), "base: no model named 'nope'"),
        (lambda m: m.update(family="eventgpt"), "but its base 'demo_target' is a 'video_llava' model"),
        (lambda m: m.update(path="/x"), "uses its checkpoint and tokenizer"),
        (lambda m: m.pop("quantization"), "with neither layers nor quantization"),
    ]:
        cfg = drafts_config()
        edit(cfg["models"]["demo_target_int8"])
        with pytest.raises(ConfigError, match=key):
            checked(cfg)
    cfg = drafts_config()
    cfg["models"]["demo_target"]["layers"] = 1  # on a checkpoint's own entry: name a draft instead
    with pytest.raises(ConfigError, match="models.demo_target.layers: only a model made from another one"):
        checked(cfg)
    if importlib.util.find_spec("mslk") is None:  # on CUDA, int4 needs the int4 extra (mslk): refused, naming it
        cfg = drafts_config()
        cfg["models"]["demo_target_int8"].update(quantization="int4_weight", device="cuda")
        with pytest.raises(ConfigError, match=r"models.demo_target_int8.quantization: int4_weight needs the mslk "
                                              r"package.*pip install -e '?\.\[int4\]"):
            checked(cfg)
    cfg = drafts_config()
    cfg["models"]["demo_target_int8"].update(quantization="int8_weight", device="cuda")
    checked(cfg)  # weight-only int8 needs nothing beyond torchao
    cfg = copy.deepcopy(drafts_config())
    cfg["models"]["demo_target_int8"]["quantization"] = "int3"
    with pytest.raises(Exception, match="int3"):
        validate(cfg, str(SCHEMA_PATH))
