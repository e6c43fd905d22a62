"""Helpers shared by the multimodal backends: loading and running transformers' own image processors
(PIL backend: torchvision is not needed), frame conversion, placeholder expansion, special ids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_PROCESSOR_FILE = "preprocessor_config.json"


def to_rgb_uint8(frame) -> np.ndarray:
    """A frame (PIL image, HxWx3 / 3xHxW array or tensor, uint8 or float in [0, 1]) -> uint8 [H, W, 3]."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3:
        raise ValueError(f"a frame must be [H, W, 3] or [3, H, W], got shape {a.shape}")
    if a.shape[-1] not in (3, 4) and a.shape[0] in (3, 4):
        a = np.transpose(a, (1, 2, 0))
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.shape[-1] != 3:
        raise ValueError(f"a frame must have 3 channels, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if a.max(initial=0.0) <= 1.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def image_processor_at(cls, image_size: int):
    """A transformers image processor class at its own defaults (CLIP's: bicubic, OpenAI CLIP mean/std)
    sized to the vision tower: shortest side -> `image_size`, centre crop `image_size` x `image_size`."""
    return cls(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})


def processor_output_hw(processor) -> tuple[int, int] | None:
    """The (height, width) every image comes out at: the crop size, else a fixed resize size; None when
    the output size depends on the input (shortest-edge resize without a crop)."""
    if getattr(processor, "do_center_crop", False):
        size = processor.crop_size
    elif getattr(processor, "do_resize", False):
        size = processor.size
    else:
        return None
    h, w = size.get("height"), size.get("width")
    return (int(h), int(w)) if h and w else None


def check_processor_size(processor, image_size: int, where) -> None:
    got = processor_output_hw(processor)
    if got != (image_size, image_size):
        raise ValueError(f"{where}: the image processor gives {got} pixels but the vision tower expects "
                         f"{image_size}x{image_size}")


def load_image_processor(path: str | Path, image_size: int, default_class):
    """The checkpoint's own image processor: `AutoImageProcessor.from_pretrained(path, backend="pil")` from
    its preprocessor_config.json (the class that file names, PIL backend); without that file,
    `default_class` at CLIP defaults sized to the tower. Its output size must equal the tower's."""
    path = Path(path)
    if (path / IMAGE_PROCESSOR_FILE).is_file():
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(str(path), backend="pil", local_files_only=True)
    else:
        processor = image_processor_at(default_class, image_size)
    check_processor_size(processor, image_size, path)
    return processor


def processor_pixels(processor, frames) -> torch.Tensor:
    """Frames (anything `to_rgb_uint8` takes) through a transformers image processor -> float32 [k, 3, h, w].

    The frames go in as uint8 [H, W, 3] (channels_last stated, not guessed). VideoLlavaImageProcessor is asked
    for its non-legacy output key (`pixel_values`, not the deprecated `pixel_values_images`)."""
    from transformers import VideoLlavaImageProcessor

    kw = {"return_legacy_image_output": False} if isinstance(processor, VideoLlavaImageProcessor) else {}
    out = processor(images=[to_rgb_uint8(f) for f in frames], return_tensors="pt",
                    input_data_format="channels_last", **kw)
    return out["pixel_values"]


def tile_grid(frames, rows: int, cols: int) -> np.ndarray:
    """Frames (all one size) tiled row-major into one uint8 [rows*H, cols*W, 3] image."""
    frames = [to_rgb_uint8(f) for f in frames]
    if len(frames) != rows * cols:
        raise ValueError(f"a {rows}x{cols} grid needs {rows * cols} frames, got {len(frames)}")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"grid frames differ in size: {sorted(shapes)}")
    return np.concatenate([np.concatenate(frames[r * cols:(r + 1) * cols], axis=1) for r in range(rows)], axis=0)


def grid_of(vision_config) -> int:
    """Patches per image side squared: (image_size // patch_size) ** 2."""
    s, p = vision_config.image_size, vision_config.patch_size
    s = s[0] if isinstance(s, (list, tuple)) else s
    p = p[0] if isinstance(p, (list, tuple)) else p
    return (int(s) // int(p)) ** 2


def image_size_of(vision_config) -> int:
    s = vision_config.image_size
    return int(s[0] if isinstance(s, (list, tuple)) else s)


def encode_with_placeholder(tokenizer, text: str, token: str, token_id: int, count: int) -> list[int]:
    """Tokenise `text` (BOS first) holding one `token`, then expand its id to `count` copies.

    Equal to tokenising the text with `token` written `count` times (what the HF processors do):
    an added token splits the text, so the pieces around it tokenise the same either way.
    """
    got = tokenizer.convert_tokens_to_ids(token)
    if got != token_id:
        raise ValueError(f"tokenizer maps {token} to {got}, but the model config expects id {token_id}")
    ids = list(tokenizer(text).input_ids)
    bos = tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos] + ids
    n = ids.count(token_id)
    if n != 1:
        raise ValueError(f"expected one {token} (id {token_id}) in the tokenised prompt, found {n}")
    i = ids.index(token_id)
    return ids[:i] + [token_id] * count + ids[i + 1:]


def special_ids(tokenizer) -> tuple[int, int]:
    """(eos, pad); pad falls back to unk, then 0."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0
    return int(eos), int(pad)


def check_plain_load(spec) -> None:
    if spec.load_in_4bit:
        raise NotImplementedError(f"model {spec.name!r}: load_in_4bit is not supported by the {spec.family} backend")
