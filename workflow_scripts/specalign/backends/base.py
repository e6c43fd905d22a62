"""The backend interface every model-running stage uses.

A backend hides one model family's inputs (event frames, video frames, one image, text
only) and prompt template behind four operations: prepare a sample, run a forward pass
with a KV cache, make a fresh cache, and report its special ids. Everything generic
(generation, teacher forcing, the speculative loop) is written once against it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..specs import ModelSpec


@dataclass
class PromptInputs:
    """One sample prepared for one model."""

    sample_id: str
    input_ids: torch.LongTensor  # [L]; every visual token already has its own placeholder id
    model_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # batch dim 1
    prompt_text: str = ""


class Backend:
    """Base class: subclasses set the attributes and implement `prepare`."""

    name: str
    family: str
    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    eos_token_id: int
    pad_token_id: int

    def _init_spec(self, spec: ModelSpec) -> None:
        """The attributes every backend takes from its spec."""
        self.spec = spec
        self.name = spec.name
        self.dtype = torch_dtype(spec.dtype)
        self.device = torch.device(spec.device)

    @property
    def tokenizer_path(self) -> str:
        return self.spec.tokenizer or self.spec.path

    def prepare(self, sample) -> PromptInputs:  # sample: specalign.dataset.Sample
        raise NotImplementedError

    @property
    def text_vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.no_grad()
    def forward(self, input_ids, attention_mask=None, cache=None, model_inputs=None, position_ids=None,
                logits_to_keep: int = 0):
        """Logits [B, L, V] in float32 for `input_ids` [B, L]; `cache` is extended in place.

        `model_inputs` (pixels) only in the pass that holds their placeholders. `logits_to_keep=k`
        returns only the last k positions' logits [B, k, V] (0: all): a 2k-token prefill that
        needs one row must not materialise 2k x 32064 float32 logits.
        """
        kwargs = dict(model_inputs or {})
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=None if attention_mask is None else attention_mask.to(self.device),
            position_ids=None if position_ids is None else position_ids.to(self.device),
            cache=cache,
            use_cache=cache is not None,
            logits_to_keep=int(logits_to_keep),
            **{k: v.to(self.device) for k, v in kwargs.items()},
        )
        return out.logits.float()


def torch_dtype(name: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use float32, bfloat16 or float16") from None
