"""EventGPT's processing: the prompt's token ids, the tokenizer additions, the image processor.

The prompt text itself is in backends/prompts.py, beside the other families' prompts.
"""
from __future__ import annotations

from pathlib import Path

from .configuration import (
    DEFAULT_EV_END_TOKEN,
    DEFAULT_EV_START_TOKEN,
    DEFAULT_EVENT_PATCH_TOKEN,
    DEFAULT_EVENT_TOKEN,
    EVENT_TOKEN_INDEX,
    _as_int,
)


def tokenize_event_prompt(prompt: str, tokenizer) -> list[int]:
    """`tokenizer_event_token`: each chunk around `<event>` tokenised on its own; when the first chunk
    starts with BOS it is kept once and the first id of every later chunk (its BOS) is dropped;
    one EVENT_TOKEN_INDEX between chunks."""
    chunks = [list(tokenizer(chunk).input_ids) for chunk in prompt.split(DEFAULT_EVENT_TOKEN)]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(EVENT_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


def expand_event_placeholders(ids: list[int], count: int) -> list[int]:
    """Replace the single EVENT_TOKEN_INDEX by `count` copies (one per visual token)."""
    n = ids.count(EVENT_TOKEN_INDEX)
    if n != 1:
        raise ValueError(f"expected exactly one {DEFAULT_EVENT_TOKEN} placeholder in the prompt ids, found {n}")
    i = ids.index(EVENT_TOKEN_INDEX)
    return ids[:i] + [EVENT_TOKEN_INDEX] * count + ids[i + 1:]



def add_event_tokens(tokenizer, config) -> list[str]:
    """The official inference-time tokenizer additions; returns the tokens added."""
    added = []
    if getattr(config, "mm_use_im_patch_token", True):
        tokenizer.add_tokens([DEFAULT_EVENT_PATCH_TOKEN], special_tokens=True)
        added.append(DEFAULT_EVENT_PATCH_TOKEN)
    if getattr(config, "mm_use_im_start_end", False):
        tokenizer.add_tokens([DEFAULT_EV_START_TOKEN, DEFAULT_EV_END_TOKEN], special_tokens=True)
        added += [DEFAULT_EV_START_TOKEN, DEFAULT_EV_END_TOKEN]
    return added



def build_image_processor(vision_config, *dirs):
    """CLIPImageProcessor (PIL backend: torchvision is not needed) from the first dir holding a
    preprocessor_config.json, else resize shortest side / center crop to the tower size, CLIP mean/std."""
    from transformers import CLIPImageProcessorPil

    size = _as_int(vision_config.image_size)
    proc = None
    for d in dirs:
        if d and (Path(d) / "preprocessor_config.json").is_file():
            proc = CLIPImageProcessorPil.from_pretrained(str(d))
            break
    if proc is None:
        return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    crop = proc.crop_size if proc.do_center_crop else proc.size
    crop = dict(crop) if not isinstance(crop, dict) else crop
    if (crop.get("height"), crop.get("width")) != (size, size):
        raise ValueError(f"image processor output size {crop} != vision tower image size {size}")
    return proc


