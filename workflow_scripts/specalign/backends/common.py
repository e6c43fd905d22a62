"""Helpers shared by the multimodal backends: CLIP-style preprocessing without torchvision,
frame conversion, placeholder expansion, special ids."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC == transformers PILImageResampling.BICUBIC


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


def _hw(v) -> tuple[int, int]:
    if isinstance(v, dict):
        if "height" in v and "width" in v:
            return int(v["height"]), int(v["width"])
        if "shortest_edge" in v:
            return int(v["shortest_edge"]), int(v["shortest_edge"])
        raise ValueError(f"unsupported size {v}")
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[-1])
    return int(v), int(v)


@dataclass(frozen=True)
class ClipPreprocess:
    """What CLIPImageProcessor (PIL backend) does, written out: optional pad to square (mean colour),
    resize (shortest side to `shortest_edge` keeping aspect, long side int(s * long / short); or to a
    fixed height x width), center crop (top = (h - ch) // 2), x rescale_factor, (x - mean) / std."""

    shortest_edge: int | None
    resize_hw: tuple[int, int] | None
    crop_hw: tuple[int, int] | None
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: int = BICUBIC
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    do_pad: bool = False

    @classmethod
    def for_size(cls, size: int) -> "ClipPreprocess":
        return cls(shortest_edge=size, resize_hw=None, crop_hw=(size, size))

    @classmethod
    def from_dict(cls, d: dict) -> "ClipPreprocess":
        size = d.get("size", 224) if d.get("do_resize", True) else None
        shortest, resize_hw = None, None
        if size is not None:
            if isinstance(size, dict) and "height" in size and "width" in size:
                resize_hw = _hw(size)
            elif isinstance(size, dict):
                shortest = int(size["shortest_edge"])
            else:  # old configs: an int means the shortest edge
                shortest = int(size if not isinstance(size, (list, tuple)) else size[0])
        crop = _hw(d.get("crop_size", 224)) if d.get("do_center_crop", True) else None
        return cls(
            shortest_edge=shortest,
            resize_hw=resize_hw,
            crop_hw=crop,
            image_mean=tuple(d.get("image_mean") or OPENAI_CLIP_MEAN),
            image_std=tuple(d.get("image_std") or OPENAI_CLIP_STD),
            resample=int(d.get("resample", BICUBIC)),
            do_rescale=bool(d.get("do_rescale", True)),
            rescale_factor=float(d.get("rescale_factor", 1 / 255)),
            do_normalize=bool(d.get("do_normalize", True)),
            do_pad=bool(d.get("do_pad", False)),
        )

    def output_hw(self) -> tuple[int, int]:
        if self.crop_hw:
            return self.crop_hw
        if self.resize_hw:
            return self.resize_hw
        raise ValueError("preprocessing without crop or fixed resize has no fixed output size")

    def __call__(self, frame) -> torch.Tensor:
        """One frame -> float32 [3, h, w]."""
        a = to_rgb_uint8(frame)
        if self.do_pad:
            h, w = a.shape[:2]
            if h != w:
                m = max(h, w)
                bg = np.array([int(x * 255) for x in self.image_mean], dtype=np.uint8)
                out = np.empty((m, m, 3), np.uint8)
                out[:] = bg
                top, left = (m - h) // 2, (m - w) // 2
                out[top:top + h, left:left + w] = a
                a = out
        img = Image.fromarray(a)
        if self.resize_hw:
            th, tw = self.resize_hw
            img = img.resize((tw, th), resample=self.resample)
        elif self.shortest_edge:
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), resample=self.resample)
        a = np.asarray(img)
        if self.crop_hw:
            ch, cw = self.crop_hw
            h, w = a.shape[:2]
            if h < ch or w < cw:
                raise ValueError(f"image {h}x{w} smaller than the crop {ch}x{cw} after resizing")
            top, left = (h - ch) // 2, (w - cw) // 2
            a = a[top:top + ch, left:left + cw]
        x = a.astype(np.float32)
        if self.do_rescale:
            x = x * np.float32(self.rescale_factor)
        if self.do_normalize:
            x = (x - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def batch(self, frames) -> torch.Tensor:
        """Frames -> float32 [k, 3, h, w]."""
        return torch.stack([self(f) for f in frames])


def load_preprocess(path: str | Path, image_size: int,
                    filenames=("preprocessor_config.json",)) -> ClipPreprocess:
    """The checkpoint's preprocessing numbers (first of `filenames` found) or CLIP defaults at
    `image_size`; the output size must equal the vision tower's image size."""
    pre = None
    for name in filenames:
        f = Path(path) / name
        if f.is_file():
            pre = ClipPreprocess.from_dict(json.loads(f.read_text(encoding="utf-8")))
            break
    if pre is None:
        return ClipPreprocess.for_size(image_size)
    if pre.output_hw() != (image_size, image_size):
        raise ValueError(f"{path}: preprocessing gives {pre.output_hw()} pixels but the vision tower "
                         f"expects {image_size}x{image_size}")
    return pre


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
