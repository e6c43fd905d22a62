"""EventGPT-7B's configuration (`EventChat_llama`): constants, the config class, the vision config.

Written from the facts of the public code (XduSyL/EventGPT: model/EventChatModel.py,
common/common.py, dataset/conversation.py); no code is copied from it. See modeling.py
for the architecture, processing.py for the prompt ids and pixels, checkpoint.py for the
official checkpoint layout.

Where the CLIP vision config comes from (the published config.json holds only
`mm_visual_tower`, a CLIP path or hub id, never a vision config; `mm_visual_tower` is never
downloaded):

1. `config.mm_visual_tower_config` (a CLIPVisionConfig dict) when present. Only this
   project writes it (`write_official_checkpoint(include_clip=True)`, the demo draft); when
   the CLIP tensors are in the checkpoint too, the sizes they show must agree with it.
2. Else, when the checkpoint holds the CLIP tensors (`model.visual_tower.visual_tower.
   vision_model.*`): the config is read from the tensors, the way openai/CLIP's
   `build_model` reads a ViT from its state dict (`clip_vision_config_from_shapes`):
     hidden_size, num_channels, patch_size  <- embeddings.patch_embedding.weight [D, C, p, p]
     image_size = p * sqrt(N - 1)           <- embeddings.position_embedding.weight [N, D]
     num_hidden_layers                      <- the number of encoder.layers.{i}
     intermediate_size                      <- encoder.layers.0.mlp.fc1.weight [I, D]
     num_attention_heads = D // 64          (head size 64: openai/CLIP's `vision_heads =
                                             vision_width // 64`; 1024 // 64 = 16 for ViT-L)
   and every value no tensor shows (hidden_act quick_gelu, layer_norm_eps 1e-5, dropouts,
   projection_dim 768, ...) from the known CLIP-L/14-336 vision config (`CLIP_L14_336_VISION`,
   shared/reference/checkpoints/clip-vit-large-patch14-336). For the real EventGPT-7B
   checkpoint the shapes are CLIP-L/14-336's (1024, 3, 14, 336, 24 layers, 4096), and the
   rule yields exactly CLIP_L14_336_VISION. A tiny test checkpoint yields exactly its own
   config when it is a CLIP of that kind (head size 64, quick_gelu, eps 1e-5). A width
   that is not a multiple of 64 is an error (no head count could be told). When
   `mm_visual_tower` names CLIP-L/14-336 (its last path part is clip-vit-large-patch14-336)
   but the tensors show other sizes, the tensors win (they are what is loaded) and a
   warning names the sizes that differ: that is how a shrunk test copy of the published
   checkpoint looks. `mm_visual_tower` is only compared by name here, never resolved: nothing
   outside the checkpoint directory is read. checkpoint.load_eventgpt applies this rule and
   records the result in the in-memory config as mm_visual_tower_config (config.json is not
   rewritten), so the model is built from it.
3. Else (no CLIP tensors): `config.mm_visual_tower` must be a local directory or a Hugging
   Face cache entry; its config.json gives the vision config and its weights the tower.
"""
from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

from transformers import CLIPVisionConfig, LlamaConfig

from ..prompts import EV_END_TOKEN, EV_START_TOKEN, EVENT_TOKEN

log = logging.getLogger(__name__)

EVENT_TOKEN_INDEX = -200
DEFAULT_EVENT_TOKEN = EVENT_TOKEN
DEFAULT_EVENT_PATCH_TOKEN = "<ev_patch>"
DEFAULT_EV_START_TOKEN = EV_START_TOKEN
DEFAULT_EV_END_TOKEN = EV_END_TOKEN
EV_TOKENS = (DEFAULT_EVENT_PATCH_TOKEN, DEFAULT_EV_START_TOKEN, DEFAULT_EV_END_TOKEN)
NUM_EVENT_FRAMES = 5

VISION_CONFIG_KEY = "mm_visual_tower_config"
ADAPTOR_KEY = "event_feature_adaptor"
# Module path of the CLIPVisionModel. transformers 5 flattened CLIPVisionModel (no `.vision_model`
# submodule any more); its registered PrefixChange("vision_model") conversion, scoped to this nested
# submodule by from_pretrained, maps the official `...visual_tower.vision_model.X` names onto it.
CLIP_PREFIX = "model.visual_tower.visual_tower."
OFFICIAL_CLIP_PREFIX = CLIP_PREFIX + "vision_model."  # the names written in the official checkpoint
ADAPTOR_PREFIX = "model.feature_adaptor."
MODEL_TYPE = "EventChat_llama"

# openai/clip-vit-large-patch14-336's vision_config, the values every copy of its config.json
# agrees on (shared/reference/checkpoints/clip-vit-large-patch14-336/SOURCE.md); the rest are
# CLIPVisionConfig's defaults, which the official file's full dump also holds.
CLIP_L14_336_NAME = "clip-vit-large-patch14-336"
CLIP_L14_336_VISION = {
    "hidden_size": 1024, "image_size": 336, "patch_size": 14, "intermediate_size": 4096,
    "num_attention_heads": 16, "num_hidden_layers": 24, "num_channels": 3, "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-05, "projection_dim": 768, "attention_dropout": 0.0, "dropout": 0.0,
    "initializer_range": 0.02, "initializer_factor": 1.0,
}
CLIP_HEAD_DIM = 64  # openai/CLIP build_model: vision_heads = vision_width // 64


class EventChatConfig(LlamaConfig):
    """LlamaConfig + the EventGPT keys (mm_visual_tower, mm_visual_tower_config,
    event_feature_adaptor, mm_use_im_patch_token, mm_use_im_start_end), kept as extra attributes."""

    model_type = MODEL_TYPE


def check_supported(config) -> None:
    """Reject configs this implementation cannot reproduce faithfully."""
    if getattr(config, "use_event_qformer", None):
        raise NotImplementedError(
            "EventGPT config sets use_event_qformer: the official code references build_event_qformer "
            "but never defines it, so such a checkpoint cannot be reproduced; only the "
            "projector + feature_adaptor + spatio-temporal pooling variant (EventGPT-7B) is supported"
        )


def has_visual_tower(config) -> bool:
    return bool(getattr(config, VISION_CONFIG_KEY, None) or getattr(config, "mm_visual_tower", None))


def has_feature_adaptor(config) -> bool:
    """The official rule: `hasattr(config, "event_feature_adaptor")`, whatever its value (the loader
    also sets it when the checkpoint holds the adaptor's weights, see checkpoint.load_eventgpt)."""
    return hasattr(config, ADAPTOR_KEY)


def names_clip_l14_336(name) -> bool:
    """Does an `mm_visual_tower` value name CLIP-L/14-336 (hub id, bare name or a path ending in it)?"""
    if not name:
        return False
    last = re.split(r"[\\/]+", str(name).rstrip("/\\"))[-1]
    return last.lower() == CLIP_L14_336_NAME


def resolve_visual_tower_dir(name: str | os.PathLike | None) -> Path:
    """`mm_visual_tower` as a local directory: a path, or a Hugging Face cache entry. Never downloads."""
    if not name:
        raise ValueError("EventGPT config has neither mm_visual_tower_config nor mm_visual_tower: "
                         "cannot build the CLIP vision tower")
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name), local_files_only=True))
    except Exception as exc:  # invalid repo id, not cached, offline ...
        raise FileNotFoundError(
            f"EventGPT vision tower mm_visual_tower={str(name)!r} is neither a local directory nor in the "
            f"Hugging Face cache (nothing is downloaded). Put the CLIP model (e.g. "
            f"openai/clip-vit-large-patch14-336) on disk and set mm_visual_tower in the checkpoint's "
            f"config.json to its directory (load_eventgpt needs none when the checkpoint holds the CLIP "
            f"weights, {OFFICIAL_CLIP_PREFIX}*)"
        ) from exc


def _embedded_vision_config(emb) -> CLIPVisionConfig:
    if isinstance(emb, CLIPVisionConfig):
        return emb
    emb = dict(emb)
    if emb.get("model_type") == "clip" and "vision_config" in emb:
        emb = dict(emb["vision_config"])
    return CLIPVisionConfig.from_dict(emb)


def visual_tower_config(config) -> CLIPVisionConfig:
    """The CLIP vision config: the embedded dict if present, else read from mm_visual_tower.

    A checkpoint whose config has neither but holds the CLIP tensors is loaded with
    checkpoint.load_eventgpt, which reads the vision config from those tensors first
    (module docstring, rule 2) and records it in the in-memory config as mm_visual_tower_config.
    """
    emb = getattr(config, VISION_CONFIG_KEY, None)
    if emb:
        return _embedded_vision_config(emb)
    return CLIPVisionConfig.from_pretrained(str(resolve_visual_tower_dir(config.mm_visual_tower)),
                                            local_files_only=True)


def clip_l14_336_vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(**CLIP_L14_336_VISION)


def _shape(shapes: dict, rel: str) -> tuple[int, ...]:
    if rel not in shapes:
        raise ValueError(f"the checkpoint's CLIP tensors lack {OFFICIAL_CLIP_PREFIX}{rel}: "
                         "cannot read the vision config from them")
    return tuple(int(s) for s in shapes[rel])


def clip_sizes_from_shapes(shapes: dict) -> dict[str, int]:
    """The sizes a CLIP vision model's tensors show: every size of its config but the head count.

    `shapes`: tensor name -> shape, names relative to the CLIP model (`embeddings.
    patch_embedding.weight`, ...; a leading `vision_model.` is dropped)."""
    rel = {k.removeprefix("vision_model."): v for k, v in shapes.items()}
    d, c, p, p2 = _shape(rel, "embeddings.patch_embedding.weight")
    n, d_pos = _shape(rel, "embeddings.position_embedding.weight")
    if p != p2:
        raise ValueError(f"non-square CLIP patches {p}x{p2} are not supported")
    grid = math.isqrt(n - 1) if n > 1 else 0
    if grid < 1 or grid * grid != n - 1 or d_pos != d:
        raise ValueError(f"CLIP position embedding of shape {(n, d_pos)} is not (grid^2 + 1, {d}): "
                         "cannot tell the image size")
    layers = {int(m.group(1)) for k in rel if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    if not layers or layers != set(range(len(layers))):
        raise ValueError(f"CLIP encoder layers {sorted(layers)} are not 0..L-1")
    inter, _ = _shape(rel, "encoder.layers.0.mlp.fc1.weight")
    return {"hidden_size": d, "num_channels": c, "patch_size": p, "image_size": p * grid,
            "num_hidden_layers": len(layers), "intermediate_size": inter}


def clip_vision_config_from_shapes(shapes: dict, name=None) -> CLIPVisionConfig:
    """The CLIP vision config of a checkpoint's CLIP tensors (module docstring, rule 2).

    `shapes` as for clip_sizes_from_shapes. `name`: the config's mm_visual_tower, only compared
    (a warning when it names CLIP-L/14-336 and the sizes differ).
    """
    sizes = clip_sizes_from_shapes(shapes)
    d = sizes["hidden_size"]
    if d % CLIP_HEAD_DIM:
        raise ValueError(f"CLIP width {d} is not a multiple of {CLIP_HEAD_DIM}: the head count cannot be read "
                         f"from the tensors (openai/CLIP: heads = width // {CLIP_HEAD_DIM}); write the vision "
                         f"config into config.json as {VISION_CONFIG_KEY}")
    sizes["num_attention_heads"] = d // CLIP_HEAD_DIM
    if names_clip_l14_336(name):
        differ = {k: (v, CLIP_L14_336_VISION[k]) for k, v in sizes.items() if v != CLIP_L14_336_VISION[k]}
        if differ:
            log.warning("mm_visual_tower=%r names CLIP-L/14-336, but the checkpoint's CLIP tensors show other "
                        "sizes (tensors, CLIP-L/14-336): %s; the tensors' sizes are used", str(name), differ)
    return CLIPVisionConfig(**{**CLIP_L14_336_VISION, **sizes})


def check_vision_config_matches(vcfg: CLIPVisionConfig, shapes: dict, where: str) -> None:
    """The sizes the CLIP tensors show must be those of `vcfg` (an embedded vision config)."""
    got = clip_sizes_from_shapes(shapes)
    want = {f: _as_int(getattr(vcfg, f)) for f in got}
    # image_size: CLIP uses (S // p) patches per side, so only S // p shows in the tensors
    want["image_size"] = want["image_size"] // want["patch_size"] * want["patch_size"]
    bad = {f: (v, want[f]) for f, v in got.items() if v != want[f]}
    if bad:
        raise ValueError(f"{where}: the CLIP tensors and {VISION_CONFIG_KEY} disagree (tensors, config): {bad}")


def _as_int(size) -> int:
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"non-square vision size {size} is not supported")
        size = size[0]
    return int(size)


def spatial_token_count(vision_config) -> int:
    """Tokens per frame from CLIP's last_hidden_state: (S // p)^2 patches + CLS."""
    return (_as_int(vision_config.image_size) // _as_int(vision_config.patch_size)) ** 2 + 1


def num_event_tokens(vision_config, num_frames: int = NUM_EVENT_FRAMES) -> int:
    """Placeholders for one `<event>`: T temporal + N spatial tokens (582 for EventGPT-7B, T=5)."""
    return num_frames + spatial_token_count(vision_config)
