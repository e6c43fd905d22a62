"""LLaVA-1.5-7B target backend (transformers LlavaForConditionalGeneration): one image per clip.

The clip's 8 frames come from `specalign.dataset.sample_video_frames(sample, 8)` (the same
frames Video-LLaVA sees); option `image_mode`:
  "middle" (default): frames[len(frames) // 2] = frames[4], the 5th of the 8 uniformly sampled
                      frames (linspace(0, n-1, 8) -> at 4/7 of the clip, just after the middle).
  "grid":   the 8 frames tiled 2 rows x 4 columns (row-major, the seed's benchmark input), then
            preprocessed like any image. Option `grid_resize`:
              "crop" (default): the processor's own behaviour, resize-shortest-side + center crop. For
                  4:3 frames the grid is 8:3, so the crop keeps only the middle 3/8 of its width (the
                  outer columns are mostly cut off) -- what the seed's processor call did.
              "stretch": the whole grid resized to S x S (all 8 frames visible, squashed): the same
                  processor configured with size {height: S, width: S}, do_center_crop False, do_pad False.
Preprocessing: the checkpoint's own image processor, `AutoImageProcessor.from_pretrained(path, backend="pil")`
from its preprocessor_config.json (llava-1.5-7b-hf names CLIPImageProcessor -> CLIPImageProcessorPil: no
pad; a config naming LlavaImageProcessor with do_pad true pads to square with the mean colour first), else
CLIPImageProcessorPil at CLIP defaults sized to the tower. pixel_values: float32 [1, 3, S, S].

Prompt: "USER: <image>\\n{question} ASSISTANT:", BOS first; `<image>` expanded to the number of
image features: (S // p)^2 patches, plus 1 when vision_feature_select_strategy is "full"
(get_image_features drops CLS under "default"): 576 for the 7B model.
"""
from __future__ import annotations

import torch

from ..specs import ModelSpec
from .base import Backend, PromptInputs
from .common import (
    check_plain_load,
    encode_with_placeholder,
    grid_of,
    image_size_of,
    load_image_processor,
    processor_pixels,
    special_ids,
    tile_grid,
)
from .prompts import IMAGE_TOKEN, image_prompt

NUM_FRAMES = 8
GRID_ROWS, GRID_COLS = 2, 4
IMAGE_MODES = ("middle", "grid")
GRID_RESIZES = ("crop", "stretch")


def stretch_processor(processor, image_size: int):
    """The same processor (class and numbers) resizing the whole image to image_size x image_size, aspect
    not kept: size {height, width}, no centre crop, no pad to square."""
    numbers = processor.to_dict()
    numbers.update(do_resize=True, size={"height": image_size, "width": image_size}, do_center_crop=False)
    if "do_pad" in numbers:
        numbers["do_pad"] = False
    return type(processor).from_dict(numbers)


class LlavaBackend(Backend):
    family = "llava"

    def __init__(self, spec: ModelSpec):
        from transformers import AutoTokenizer, CLIPImageProcessorPil, LlavaForConditionalGeneration

        check_plain_load(spec)
        self._init_spec(spec)
        self.image_mode = spec.option("image_mode")
        if self.image_mode not in IMAGE_MODES:
            raise ValueError(f"model {spec.name!r}: image_mode must be one of {IMAGE_MODES}, got {self.image_mode!r}")
        self.grid_resize = spec.option("grid_resize")
        if self.grid_resize not in GRID_RESIZES:
            raise ValueError(f"model {spec.name!r}: grid_resize must be one of {GRID_RESIZES}, "
                             f"got {self.grid_resize!r}")
        kw = {"attn_implementation": spec.attn_implementation} if spec.attn_implementation else {}
        self.model = LlavaForConditionalGeneration.from_pretrained(spec.path, dtype=self.dtype, local_files_only=True, **kw)
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path, local_files_only=True)
        cfg = self.model.config
        vision = cfg.vision_config
        self.image_size = image_size_of(vision)
        strategy = cfg.vision_feature_select_strategy
        self.num_visual_tokens = grid_of(vision) + (0 if strategy == "default" else 1)
        self.image_token_id = int(cfg.image_token_id)
        self.image_processor = load_image_processor(spec.path, self.image_size, CLIPImageProcessorPil)
        self.grid_processor = (stretch_processor(self.image_processor, self.image_size)
                               if self.grid_resize == "stretch" else self.image_processor)
        self.eos_token_id, self.pad_token_id = special_ids(self.tokenizer)
        if self.pad_token_id == self.image_token_id:
            raise ValueError(f"{spec.name}: pad id equals the <image> id {self.image_token_id}")

    def prepare(self, sample) -> PromptInputs:
        from ..dataset import sample_video_frames

        frames = sample_video_frames(sample, NUM_FRAMES)
        return self.prepare_frames(sample.sample_id, sample.question, frames)

    def pixel_values(self, frames) -> torch.Tensor:
        frames = list(frames)
        if self.image_mode == "middle":
            return processor_pixels(self.image_processor, [frames[len(frames) // 2]])
        return processor_pixels(self.grid_processor, [tile_grid(frames, GRID_ROWS, GRID_COLS)])

    def prompt_ids(self, question: str) -> tuple[list[int], str]:
        text = image_prompt(question, self.spec.option("prompt"))
        ids = encode_with_placeholder(self.tokenizer, text, IMAGE_TOKEN, self.image_token_id, self.num_visual_tokens)
        return ids, text

    def prepare_frames(self, sample_id: str, question: str, frames) -> PromptInputs:
        ids, text = self.prompt_ids(question)
        return PromptInputs(sample_id, torch.tensor(ids, dtype=torch.long),
                            {"pixel_values": self.pixel_values(frames)}, text)
