"""The backend interface every model-running stage uses, and `load_backend`.

A backend hides one model family's inputs (event frames, video frames, one
image, text only) and prompt template behind four operations: prepare a
sample, run a forward pass with a KV cache, make a fresh cache, and report
its special ids. Everything generic (generation, teacher forcing, the
speculative loop) is written once against this interface.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class PromptInputs:
    """One sample prepared for one model."""

    sample_id: str
    input_ids: torch.LongTensor  # [L]; every visual token already has its own placeholder id
    model_inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # batch dim 1
    prompt_text: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """A model as configured in config.yaml `models:`."""

    name: str
    family: str  # eventgpt | video_llava | llava | causal_lm
    path: str
    tokenizer: str | None = None  # tokenizer directory when it is not the checkpoint's own
    dtype: str = "float32"
    device: str = "cpu"
    attn_implementation: str = "sdpa"
    load_in_4bit: bool = False
    batch_size: int = 1
    options: tuple[tuple[str, Any], ...] = ()  # family-specific, e.g. (("image_mode", "grid"),)

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    @classmethod
    def from_config(cls, name: str, cfg: dict) -> "ModelSpec":
        known = {"family", "path", "tokenizer", "dtype", "device", "attn_implementation", "load_in_4bit",
                 "batch_size"}
        opts = tuple(sorted((k, v) for k, v in cfg.get("options", {}).items()))
        return cls(name=name, options=opts, **{k: v for k, v in cfg.items() if k in known})


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
    def forward(self, input_ids, attention_mask=None, cache=None, model_inputs=None, position_ids=None):
        """Logits [B, L, V] in float32 for `input_ids` [B, L]; `cache` is extended in place.

        `model_inputs` (pixels) only in the pass that holds their placeholders.
        """
        kwargs = dict(model_inputs or {})
        out = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=None if attention_mask is None else attention_mask.to(self.device),
            position_ids=None if position_ids is None else position_ids.to(self.device),
            cache=cache,
            use_cache=cache is not None,
            **{k: v.to(self.device) for k, v in kwargs.items()},
        )
        return out.logits.float()


def torch_dtype(name: str) -> torch.dtype:
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use float32, bfloat16 or float16") from None


def load_backend(spec: ModelSpec) -> Backend:
    """Load a configured model through its family's backend."""
    if spec.family == "eventgpt":
        from .backends.eventgpt import EventGPTBackend as cls
    elif spec.family == "video_llava":
        from .backends.video_llava import VideoLlavaBackend as cls
    elif spec.family == "llava":
        from .backends.llava import LlavaBackend as cls
    elif spec.family == "causal_lm":
        from .backends.causal_lm import CausalLMBackend as cls
    else:
        raise ValueError(f"model {spec.name!r}: unknown family {spec.family!r}")
    return cls(spec)


def prepare_samples(backend: Backend, samples, skip_bad: bool, stage: str):
    """`backend.prepare` every sample: (prompts, error rows). A failure stops the job with a
    message naming the sample and file, or, with `skip_bad`, becomes an errors-table row."""
    from .dataset import SampleError

    prompts, errors = [], []
    for s in samples:
        try:
            prompts.append(backend.prepare(s))
        except Exception as exc:  # noqa: BLE001 - every failure is reported with its sample
            file = str(s.event_path or s.mp4_path or s.video_dir or "")
            if not skip_bad:
                raise SampleError(s.sample_id, file, f"{backend.name}: {exc}") from exc
            errors.append({"sample_id": s.sample_id, "stage": stage, "file": file, "error": f"{backend.name}: {exc}"})
    return prompts, errors


def prepare_pairs(draft: Backend, target: Backend, samples, skip_bad: bool, stage: str):
    """Each sample prepared for both models, with its own inputs and prompt: ([(draft prompt,
    target prompt)], error rows). A sample either model cannot take is in the errors, not the pairs."""
    dprompts, derr = prepare_samples(draft, samples, skip_bad, stage)
    tprompts, terr = prepare_samples(target, samples, skip_bad, stage)
    dmap = {p.sample_id: p for p in dprompts}
    return [(dmap[tp.sample_id], tp) for tp in tprompts if tp.sample_id in dmap], derr + terr
