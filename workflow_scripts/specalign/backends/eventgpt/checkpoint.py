"""Reading and writing EventGPT checkpoints in the official download's layout.

`load_eventgpt` takes config.json as the authors publish it (model_type EventChat_llama, the
LlamaConfig keys, mm_visual_tower, event_feature_adaptor; no vision config): where the CLIP
vision config then comes from is configuration.py's module docstring.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import CLIPVisionModel

from .configuration import (
    ADAPTOR_KEY,
    ADAPTOR_PREFIX,
    CLIP_PREFIX,
    EV_TOKENS,
    MODEL_TYPE,
    OFFICIAL_CLIP_PREFIX,
    VISION_CONFIG_KEY,
    EventChatConfig,
    check_supported,
    check_vision_config_matches,
    clip_vision_config_from_shapes,
    has_feature_adaptor,
    has_visual_tower,
    resolve_visual_tower_dir,
    visual_tower_config,
)
from .modeling import EventChatForCausalLM
from .processing import add_event_tokens, build_image_processor

log = logging.getLogger(__name__)


def _weight_files(p: Path) -> list[Path]:
    """The weight files of a checkpoint directory (safetensors or .bin, sharded or not)."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (p / index).is_file():
            shards = sorted(set(json.loads((p / index).read_text())["weight_map"].values()))
            return [p / f for f in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (p / single).is_file():
            return [p / single]
    raise FileNotFoundError(f"{p}: no model.safetensors / pytorch_model.bin (or their index) found")


def checkpoint_tensor_shapes(path: str | os.PathLike, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """Name -> shape of the tensors stored in a checkpoint directory whose names start with `prefix`
    (safetensors: read from the headers; .bin: memory-mapped, nothing copied)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for f in _weight_files(Path(path)):
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as sf:
                for k in sf.keys():
                    if k.startswith(prefix):
                        shapes[k] = tuple(sf.get_slice(k).get_shape())
        else:
            state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            shapes.update({k: tuple(v.shape) for k, v in state.items() if k.startswith(prefix)})
    return shapes


def checkpoint_tensor_names(path: str | os.PathLike) -> set[str]:
    """Tensor names stored in a checkpoint directory (safetensors or .bin, sharded or not)."""
    p = Path(path)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (p / index).is_file():
            return set(json.loads((p / index).read_text())["weight_map"])
    return set(checkpoint_tensor_shapes(p))


def _name_keys(keys, limit: int = 20) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _resize_embeddings(model, n: int) -> None:
    """resize_token_embeddings(n) as the official loader does; new rows = mean of the old rows
    (deterministic; the official transformers 4.37 drew them at random; prompts never use them)."""
    old = model.get_input_embeddings().weight.shape[0]
    if n == old:
        return
    model.resize_token_embeddings(n, mean_resizing=False)
    if n > old:
        with torch.no_grad():
            embeddings = (model.get_input_embeddings(), model.get_output_embeddings())
            for w in {id(e.weight): e.weight for e in embeddings}.values():  # once if tied
                w[old:] = w[:old].float().mean(0, keepdim=True).to(w.dtype)



def load_eventgpt(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu",
                  attn_implementation: str | None = "sdpa", tokenizer_path: str | os.PathLike | None = None):
    """Load an official EventGPT checkpoint dir -> (model, tokenizer, image_processor).

    Tokenizer: AutoTokenizer (transformers 5 has only tokenizers-backed ("fast") tokenizers; the
    official code asked for the slow SentencePiece one). `<ev_patch>` (mm_use_im_patch_token, default
    True) and `<ev_start>`/`<ev_end>` (mm_use_im_start_end) are added and the embeddings resized to
    len(tokenizer), as the official inference script does. Every non-CLIP weight must be in the
    checkpoint and every non-CLIP tensor of the checkpoint must be used (else ValueError naming
    them); CLIP weights come from the checkpoint if present (all of them), else from
    mm_visual_tower. The vision config: configuration.py's module docstring (embedded, else read
    from the CLIP tensors, else mm_visual_tower's config.json); the config as published needs no
    CLIP directory when the CLIP tensors are inside. The feature adaptor is built when the config
    has event_feature_adaptor (the official rule) or its weights are in the checkpoint.
    `tokenizer_path` (default: the checkpoint dir) lets the tokenizer come from elsewhere, e.g. a
    tokenizer.json conversion when the checkpoint ships only tokenizer.model and neither
    `sentencepiece` nor `protobuf` is installed (transformers 5 needs one of them to convert it).
    """
    from transformers import AutoTokenizer

    path = Path(path)
    config = EventChatConfig.from_pretrained(str(path))
    check_supported(config)
    if not has_visual_tower(config):
        raise ValueError(f"{path}: config has neither mm_visual_tower nor {VISION_CONFIG_KEY}: "
                         "not an EventGPT checkpoint")
    names = checkpoint_tensor_names(path)
    clip_inside = any(n.startswith(CLIP_PREFIX) for n in names)
    clip_dir = None
    if clip_inside:  # the vision config: embedded (checked against the tensors), else read from them
        shapes = {k[len(CLIP_PREFIX):]: v for k, v in checkpoint_tensor_shapes(path, CLIP_PREFIX).items()}
        if getattr(config, VISION_CONFIG_KEY, None):
            check_vision_config_matches(visual_tower_config(config), shapes, str(path))
        else:
            vcfg = clip_vision_config_from_shapes(shapes, getattr(config, "mm_visual_tower", None))
            setattr(config, VISION_CONFIG_KEY, vcfg.to_dict())  # in memory only; the file is not changed
    else:
        clip_dir = resolve_visual_tower_dir(getattr(config, "mm_visual_tower", None))
    if any(n.startswith(ADAPTOR_PREFIX) for n in names) and not has_feature_adaptor(config):
        setattr(config, ADAPTOR_KEY, True)  # the weights are there: build and apply the adaptor

    kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model, info = EventChatForCausalLM.from_pretrained(str(path), config=config, dtype=dtype,
                                                       output_loading_info=True, **kw)
    # CLIP weights may be absent as a whole (then they come from mm_visual_tower); any other missing
    # weight, a partial CLIP, or an unused non-CLIP tensor is an error.
    missing = [k for k in info["missing_keys"] if not (k.startswith(CLIP_PREFIX) and not clip_inside)]
    if missing:
        hint = (f" (the feature adaptor is built when config.json has {ADAPTOR_KEY}, whatever its value, as "
                f"the official code does, or when any of its weights are in the checkpoint: then all must be)"
                if any(k.startswith(ADAPTOR_PREFIX) for k in missing) else "")
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} weights: {_name_keys(missing)}{hint}")
    unexpected = [k for k in info["unexpected_keys"] if not k.startswith(CLIP_PREFIX)]
    if unexpected:
        raise ValueError(f"{path}: {len(unexpected)} checkpoint tensors belong to no module of EventChat "
                         f"(they would be dropped): {_name_keys(unexpected)}")
    clip_unused = [k for k in info["unexpected_keys"] if k.startswith(CLIP_PREFIX)]
    if clip_unused:
        log.warning("%s: %d CLIP tensors not used: %s", path, len(clip_unused), _name_keys(clip_unused))
    if not clip_inside:
        clip = CLIPVisionModel.from_pretrained(str(clip_dir), dtype=dtype, local_files_only=True)
        tower = model.model.visual_tower.visual_tower
        want, got = tower.state_dict(), clip.state_dict()
        if set(want) != set(got) or any(want[k].shape != got[k].shape for k in want):
            raise ValueError(f"CLIP at {clip_dir} does not match the vision config the model was built with")
        tower.load_state_dict(got, strict=True)
        log.info("%s: CLIP vision weights loaded from %s", path, clip_dir)

    tok_dir = Path(tokenizer_path) if tokenizer_path else path
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    except Exception as exc:
        raise RuntimeError(
            f"{tok_dir}: cannot load the EventGPT tokenizer ({exc}). A checkpoint with only tokenizer.model needs "
            f"the sentencepiece (or protobuf) package to convert it, or pass a directory with tokenizer.json as "
            f"the model's `tokenizer` key in the config"
        ) from exc
    add_event_tokens(tokenizer, config)
    _resize_embeddings(model, len(tokenizer))
    image_processor = build_image_processor(model.vision_config, path, clip_dir)
    model.to(device).eval()
    return model, tokenizer, image_processor



def _strip_added_tokens(tok_dir: Path, drop: set[str]) -> None:
    """Remove `drop` (the highest ids) from a saved tokenizer's tokenizer.json / tokenizer_config.json."""
    tj = tok_dir / "tokenizer.json"
    if tj.is_file():
        data = json.loads(tj.read_text(encoding="utf-8"))
        added = data.get("added_tokens", [])
        gone = [t["id"] for t in added if t["content"] in drop]
        kept = [t["id"] for t in added if t["content"] not in drop]
        vocab = data.get("model", {}).get("vocab")
        if isinstance(vocab, dict):
            kept += list(vocab.values())
        if gone and kept and min(gone) < max(kept):
            raise ValueError(f"cannot drop {sorted(drop)}: they are not the last ids of the tokenizer")
        data["added_tokens"] = [t for t in added if t["content"] not in drop]
        tj.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = tok_dir / name
        if not f.is_file():
            continue
        data = json.loads(f.read_text(encoding="utf-8"))
        dec = data.get("added_tokens_decoder")
        if isinstance(dec, dict):
            data["added_tokens_decoder"] = {k: v for k, v in dec.items() if v.get("content") not in drop}
        for key, val in list(data.items()):
            if isinstance(val, list):
                data[key] = [v for v in val if not (isinstance(v, str) and v in drop)
                             and not (isinstance(v, dict) and v.get("content") in drop)]
        f.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def official_name(key: str) -> str:
    """In-memory state_dict name -> the official checkpoint name (CLIP keys regain `vision_model.`)."""
    if key.startswith(CLIP_PREFIX) and not key.startswith(OFFICIAL_CLIP_PREFIX):
        return OFFICIAL_CLIP_PREFIX + key[len(CLIP_PREFIX):]
    return key


def write_official_checkpoint(model: EventChatForCausalLM, tokenizer, path: str | os.PathLike,
                              include_clip: bool = True) -> Path:
    """Write `model` as the official download looks: config.json (model_type EventChat_llama, mm_* keys),
    model.safetensors with the official key names, and the tokenizer WITHOUT `<ev_patch>`/`<ev_start>`/
    `<ev_end>` (the loader adds them again).

    include_clip=True: CLIP weights and the vision config (`mm_visual_tower_config`) are embedded.
    include_clip=False: both are left out; config.mm_visual_tower must name a CLIP dir (see
    `write_clip_dir`).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg["model_type"] = MODEL_TYPE
    cfg["architectures"] = ["EventChatModel"]
    cfg["vocab_size"] = model.get_input_embeddings().weight.shape[0]
    if include_clip:
        cfg[VISION_CONFIG_KEY] = model.vision_config.to_dict()
        cfg.setdefault("mm_visual_tower", "(embedded)")
    else:
        cfg.pop(VISION_CONFIG_KEY, None)
        if not cfg.get("mm_visual_tower"):
            raise ValueError("include_clip=False needs config.mm_visual_tower (the CLIP dir to load from)")
    state, seen = {}, set()
    for k, v in model.state_dict().items():
        if k.startswith(CLIP_PREFIX):
            if not include_clip:
                continue
            k = official_name(k)
        v = v.detach().cpu()
        if v.data_ptr() in seen:  # tied weights: safetensors refuses shared storage
            v = v.clone()
        seen.add(v.data_ptr())
        state[k] = v.contiguous()
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str), encoding="utf-8")
    for stale in ("model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"):
        if (path / stale).exists():
            (path / stale).unlink()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        _strip_added_tokens(Path(tmp), set(EV_TOKENS))
        for f in Path(tmp).iterdir():
            shutil.copy2(f, path / f.name)
    return path


def write_clip_dir(model: EventChatForCausalLM, path: str | os.PathLike) -> Path:
    """Save the model's CLIP vision tower as a standalone dir in the hub layout of
    openai/clip-vit-*: config.json + model.safetensors with `vision_model.*` names (transformers 5's
    save_pretrained of a freshly built CLIPVisionModel would write the flattened names)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tower = model.model.visual_tower.visual_tower
    tower.config.save_pretrained(str(path))
    state = {"vision_model." + k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path

