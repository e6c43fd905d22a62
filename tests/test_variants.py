"""Drafts made from a checkpoint (backends/variants.py): the first k layers, quantized weights.

Computed truths: a truncated model's logits equal the full model's first k layers, final norm
and head applied by hand; the int8 model is close to the fp32 one; either as a self-draft keeps
speculative decoding lossless (greedy output == the target's, rounds == the teacher-forced
replay); configs that cannot run are refused before any job starts, naming the key.
"""
from __future__ import annotations

import copy

import pytest
import torch
import yaml
from conftest import load_lm
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
    cfg = copy.deepcopy(drafts_config())
    cfg["models"]["demo_target_int8"]["quantization"] = "int3"
    with pytest.raises(Exception, match="int3"):
        validate(cfg, str(SCHEMA_PATH))
