"""EventGPT-7B draft backend: event stream -> 5 polarity frames -> CLIP -> T + N visual tokens.

Prompt: option `prompt` (schema default: conversation eventgpt_v1, as `prepare_event_prompt`
builds it, always with the start/end strings):
    "{system} USER: <ev_start><event><ev_end>\\n{question} ASSISTANT:"
tokenised chunk by chunk around `<event>` (BOS only on the first chunk); the single
EVENT_TOKEN_INDEX (-200) is expanded to T + N placeholders (T = 5 frames, N = (S/p)^2 + 1 =
577 for CLIP ViT-L/14-336: 582).

The official code refuses streams of 100 ms or longer; this backend does not by default
(the DSEC clips are 200 ms - 20 s). Option `max_event_ms` restores a limit (the original's is
100): a stream whose duration (t.max - t.min, microseconds) is >= that raises ValueError.
Option `event_frames` (default 5) changes T. The model's `tokenizer` key loads the tokenizer
from another directory (see checkpoint.load_eventgpt).
"""
from __future__ import annotations

import numpy as np
import torch

from ...specs import ModelSpec
from ..base import Backend, PromptInputs
from ..common import check_plain_load, special_ids, to_rgb_uint8
from ..prompts import event_prompt
from .checkpoint import load_eventgpt
from .configuration import EVENT_TOKEN_INDEX, num_event_tokens
from .processing import expand_event_placeholders, tokenize_event_prompt


def event_duration_ms(events) -> float:
    t = np.asarray(events["t"])
    return float(t.max() - t.min()) / 1000.0 if t.size else 0.0


class EventGPTBackend(Backend):
    family = "eventgpt"

    def __init__(self, spec: ModelSpec):
        check_plain_load(spec)
        self._init_spec(spec)
        self.model, self.tokenizer, self.image_processor = load_eventgpt(
            spec.path, self.dtype, self.device, spec.attn_implementation, spec.tokenizer)
        self.num_frames = int(spec.option("event_frames"))
        self.prompt_template = spec.option("prompt")
        self.max_event_ms = spec.option("max_event_ms")
        self.num_visual_tokens = num_event_tokens(self.model.vision_config, self.num_frames)
        self.eos_token_id, self.pad_token_id = special_ids(self.tokenizer)

    def prepare(self, sample) -> PromptInputs:
        from ...dataset import sample_events
        from ...events import eventgpt_frames

        events = sample_events(sample)
        if self.max_event_ms is not None:
            ms = event_duration_ms(events)
            if ms >= float(self.max_event_ms):
                raise ValueError(f"{sample.sample_id}: event stream of {ms:.1f} ms >= max_event_ms "
                                 f"{self.max_event_ms} (EventGPT's own limit is 100 ms)")
        frames = eventgpt_frames(events, n=self.num_frames)
        return self.prepare_frames(sample.sample_id, sample.question, frames)

    def event_tensors(self, frames) -> torch.Tensor:
        """n event pictures (uint8 [H, W, 3], sizes may differ) -> float32 [1, n, 3, S, S]."""
        if len(frames) != self.num_frames:
            raise ValueError(f"EventGPT expects {self.num_frames} event frames, got {len(frames)}")
        pix = [self.image_processor(images=to_rgb_uint8(f), return_tensors="pt")["pixel_values"][0] for f in frames]
        return torch.stack(pix).unsqueeze(0).float()

    def prompt_ids(self, question: str) -> tuple[list[int], str]:
        text = event_prompt(question, self.prompt_template)
        ids = expand_event_placeholders(tokenize_event_prompt(text, self.tokenizer), self.num_visual_tokens)
        return ids, text

    def prepare_frames(self, sample_id: str, question: str, frames) -> PromptInputs:
        ids, text = self.prompt_ids(question)
        assert ids.count(EVENT_TOKEN_INDEX) == self.num_visual_tokens
        return PromptInputs(sample_id, torch.tensor(ids, dtype=torch.long),
                            {"event_tensors": self.event_tensors(frames)}, text)
