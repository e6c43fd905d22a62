"""Video-LLaVA-7B target backend (transformers VideoLlavaForConditionalGeneration).

Frames: `specalign.dataset.sample_video_frames(sample, 8)` (the project's one sampler), each through
transformers' VideoLlavaImageProcessor (PIL/numpy, what the published checkpoint's preprocessor_config.json
names and what processed videos in transformers 4): resize shortest side -> vision image size (bicubic),
center crop, /255, CLIP mean/std. Not VideoLlavaVideoProcessor: in transformers 5 it needs torchvision,
and its torch bicubic resize differs from PIL's by a grey level or two on some pixels. Loaded with
`AutoImageProcessor.from_pretrained(path, backend="pil")` from preprocessor_config.json; a
video_preprocessor_config.json (what transformers 5 saves for the video processor) takes precedence, its
numbers given to VideoLlavaImageProcessor; neither file: CLIP defaults at the tower's image size.
pixel_values_videos: float32 [1, 8, 3, S, S].

Prompt: "USER: <video>\\n{question} ASSISTANT:", BOS first. `<video>` is expanded to
frames x (patches + 1) copies of config.video_token_id: get_video_features keeps CLS for
videos whatever vision_feature_select_strategy says (VideoLlavaProcessor.replace_video_token
counts the same: (h//p)*(w//p) + num_additional_image_tokens(1), times frames). 8 x 257 = 2056
for the 7B model.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..specs import ModelSpec
from .base import Backend, PromptInputs
from .common import (
    check_plain_load,
    check_processor_size,
    encode_with_placeholder,
    grid_of,
    image_size_of,
    load_image_processor,
    processor_pixels,
    special_ids,
)
from .prompts import VIDEO_TOKEN, video_prompt

NUM_FRAMES = 8
VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"


def load_frame_processor(path, image_size: int):
    """The processor every video frame goes through (a VideoLlavaImageProcessor, or what the checkpoint's
    preprocessor_config.json names): the numbers of video_preprocessor_config.json when present (the keys an
    image processor has: resize, crop, rescale, normalise, convert-rgb), else `load_image_processor`."""
    from transformers import VideoLlavaImageProcessor

    f = Path(path) / VIDEO_PROCESSOR_FILE
    if not f.is_file():
        return load_image_processor(path, image_size, VideoLlavaImageProcessor)
    numbers = json.loads(f.read_text(encoding="utf-8"))
    keys = set(VideoLlavaImageProcessor().to_dict()) - {"image_processor_type"}
    processor = VideoLlavaImageProcessor.from_dict({k: v for k, v in numbers.items() if k in keys})
    check_processor_size(processor, image_size, f)
    return processor


class VideoLlavaBackend(Backend):
    family = "video_llava"

    def __init__(self, spec: ModelSpec):
        from transformers import AutoTokenizer, VideoLlavaForConditionalGeneration

        check_plain_load(spec)
        self._init_spec(spec)
        kw = {"attn_implementation": spec.attn_implementation} if spec.attn_implementation else {}
        self.model = VideoLlavaForConditionalGeneration.from_pretrained(spec.path, dtype=self.dtype, local_files_only=True, **kw)
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path, local_files_only=True)
        cfg = self.model.config
        vision = cfg.vision_config
        self.num_frames = NUM_FRAMES
        self.tokens_per_frame = grid_of(vision) + 1  # CLS kept for video frames
        self.num_visual_tokens = self.num_frames * self.tokens_per_frame
        self.video_token_id = int(cfg.video_token_id)
        self.image_processor = load_frame_processor(spec.path, image_size_of(vision))
        self.eos_token_id, self.pad_token_id = special_ids(self.tokenizer)
        if self.pad_token_id == self.video_token_id:
            raise ValueError(f"{spec.name}: pad id equals the <video> id {self.video_token_id}")

    def prepare(self, sample) -> PromptInputs:
        from ..dataset import sample_video_frames

        frames = sample_video_frames(sample, self.num_frames)
        return self.prepare_frames(sample.sample_id, sample.question, frames)

    def pixel_values_videos(self, frames) -> torch.Tensor:
        if len(frames) != self.num_frames:
            raise ValueError(f"Video-LLaVA takes exactly {self.num_frames} frames, got {len(frames)}")
        return processor_pixels(self.image_processor, frames).unsqueeze(0)

    def prompt_ids(self, question: str) -> tuple[list[int], str]:
        text = video_prompt(question, self.spec.option("prompt"))
        ids = encode_with_placeholder(self.tokenizer, text, VIDEO_TOKEN, self.video_token_id, self.num_visual_tokens)
        return ids, text

    def prepare_frames(self, sample_id: str, question: str, frames) -> PromptInputs:
        ids, text = self.prompt_ids(question)
        return PromptInputs(sample_id, torch.tensor(ids, dtype=torch.long),
                            {"pixel_values_videos": self.pixel_values_videos(frames)}, text)
