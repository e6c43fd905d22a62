"""One backend per model family, and the registry that loads a configured model.

The interface is in base.py; each family's module imports only base.py and common.py,
so there is no import cycle. Backends are imported when asked for (a job loads one or
two families), by name here so that rules/common.smk sees every family a script may load.
"""
from __future__ import annotations

from ..specs import ModelSpec
from .base import Backend, PromptInputs, torch_dtype

FAMILIES = ("eventgpt", "video_llava", "llava", "causal_lm")

__all__ = ["FAMILIES", "Backend", "ModelSpec", "PromptInputs", "load_backend", "torch_dtype"]


def load_backend(spec: ModelSpec) -> Backend:
    """Load a configured model through its family's backend."""
    if spec.family == "eventgpt":
        from .eventgpt import EventGPTBackend as cls
    elif spec.family == "video_llava":
        from .video_llava import VideoLlavaBackend as cls
    elif spec.family == "llava":
        from .llava import LlavaBackend as cls
    elif spec.family == "causal_lm":
        from .causal_lm import CausalLMBackend as cls
    else:
        raise ValueError(f"model {spec.name!r}: unknown family {spec.family!r} (known: {', '.join(FAMILIES)})")
    backend = cls(spec)
    if spec.layers is not None or spec.quantization is not None:
        from .variants import apply

        apply(backend)
    return backend
