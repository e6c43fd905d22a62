"""Checkpoint shapes and parameter counts for the resource plan (plan.py), from config.json alone.

shape_of reads what the plan needs of a checkpoint's config.json (the keys it leaves out take
transformers' defaults); the parameter counts are the architectures' formulas, checked against the
real transformers classes built on the meta device in tests/test_plan.py. published_config reads a
family's published config (published/{family}.json beside this module), which the plan falls back
to where a checkpoint is not on this machine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PUBLISHED = Path(__file__).resolve().parent / "published"
VIDEO_FRAMES = 8              # Video-LLaVA's sampled frames (video.uniform_frame_indices)

# transformers' defaults for keys a config.json leaves out (LlamaConfig, CLIPVisionConfig);
# tests/test_plan.py checks them against the classes.
LLAMA_DEFAULTS = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": None, "vocab_size": 32000,
                  "tie_word_embeddings": False}
CLIP_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "image_size": 224,
                 "patch_size": 32, "num_channels": 3}


@dataclass(frozen=True)
class Shape:
    """What the plan reads of a checkpoint's config.json."""

    family: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    vision: dict | None          # CLIP tower sizes (None: text only)
    towers: int                  # CLIP towers (Video-LLaVA has an image and a video tower)
    visual_tokens: int           # placeholders the prompt holds
    frames: int                  # images the vision tower encodes per prompt (video frames, event frames)
    source: str                  # where the config came from

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def _text(cfg: dict) -> dict:
    inner = cfg.get("text_config") or cfg
    out = {k: inner.get(k, v) for k, v in LLAMA_DEFAULTS.items()}
    out["vocab_size"] = inner.get("vocab_size", cfg.get("vocab_size", LLAMA_DEFAULTS["vocab_size"]))
    out["tie_word_embeddings"] = cfg.get("tie_word_embeddings", inner.get("tie_word_embeddings", False))
    if out["num_key_value_heads"] is None:
        out["num_key_value_heads"] = out["num_attention_heads"]
    return out


def _vision(v: dict) -> dict:
    return {k: v.get(k, d) for k, d in CLIP_DEFAULTS.items()}


def shape_of(family: str, cfg: dict, source: str, event_frames: int = 5) -> Shape:
    t = _text(cfg)
    vision, towers, tokens, frames = None, 0, 0, 0
    if family in ("llava", "video_llava"):
        vision = _vision(cfg.get("vision_config") or {})
        grid = (vision["image_size"] // vision["patch_size"]) ** 2
        if family == "llava":   # default strategy: the CLS token dropped
            towers, tokens, frames = 1, grid + (cfg.get("vision_feature_select_strategy", "default") != "default"), 1
        else:                   # an image and a video tower; 8 frames of grid + CLS
            towers, tokens, frames = 2, VIDEO_FRAMES * (grid + 1), VIDEO_FRAMES
    elif family == "eventgpt":
        if not cfg.get("mm_visual_tower_config"):  # the released tower is CLIP-L/14-336 (configuration.py)
            cfg = {**cfg, "mm_visual_tower_config": published_config("eventgpt")[0]["mm_visual_tower_config"]}
        vision = _vision(cfg["mm_visual_tower_config"])
        towers, frames = 1, event_frames
        tokens = event_frames + (vision["image_size"] // vision["patch_size"]) ** 2 + 1
    return Shape(family, t["hidden_size"], t["intermediate_size"], t["num_hidden_layers"], t["num_attention_heads"],
                 t["num_key_value_heads"], t["vocab_size"], bool(t["tie_word_embeddings"]), vision, towers, tokens,
                 frames, source)


def published_config(family: str) -> tuple[dict, Path]:
    path = PUBLISHED / f"{family}.json"
    return json.loads(path.read_text()), path


# --------------------------------------------------------------------------------- parameter counts
def layer_params(s: Shape) -> tuple[int, int]:
    """(Linear weights, other parameters) of one decoder layer (Llama: no biases)."""
    hd = s.head_dim
    linear = s.hidden * s.heads * hd * 2 + s.hidden * s.kv_heads * hd * 2 + 3 * s.hidden * s.intermediate
    return linear, 2 * s.hidden


def clip_params(v: dict) -> int:
    d, i, p, c = v["hidden_size"], v["intermediate_size"], v["patch_size"], v["num_channels"]
    positions = (v["image_size"] // p) ** 2 + 1
    embeddings = d + c * p * p * d + positions * d              # class, patch conv (no bias), positions
    layer = 4 * (d * d + d) + (d * i + i) + (i * d + d) + 4 * d  # attention, MLP, two layer norms
    return embeddings + 2 * d + v["num_hidden_layers"] * layer + 2 * d  # pre and post layer norm


def param_parts(s: Shape) -> dict[str, int]:
    """Parameters by part: what quantization and layer truncation act on are kept apart."""
    linear, other = layer_params(s)
    parts = {"decoder_linear_per_layer": linear, "decoder_other_per_layer": other,
             "embeddings": s.vocab * s.hidden + s.hidden,   # + the final norm
             "lm_head": 0 if s.tied else s.vocab * s.hidden, "vision": 0}
    if s.vision is not None:
        dv = s.vision["hidden_size"]
        projector = (dv * s.hidden + s.hidden) + (s.hidden * s.hidden + s.hidden)   # two-layer MLP, biases
        if s.family == "eventgpt":
            projector += s.hidden * s.hidden + s.hidden                           # the feature adaptor
        parts["vision"] = s.towers * clip_params(s.vision) + projector
    return parts


def total_params(s: Shape, layers: int | None = None) -> int:
    p = param_parts(s)
    n = s.layers if layers is None else layers
    return n * (p["decoder_linear_per_layer"] + p["decoder_other_per_layer"]) + p["embeddings"] + p["lm_head"] + \
        p["vision"]
