"""Text-only backend for any Hugging Face causal LM in a local folder.

The prompt is `spec.option("prompt")` (schema default "USER: {question} ASSISTANT:") filled with the
sample's question, tokenised with the tokenizer's own special-token rule (a Llama
tokenizer prepends BOS, a GPT-2 one does not). Option `add_bos` overrides that:
True prepends BOS when the tokenizer did not, False strips a leading BOS.

Loading never downloads (`local_files_only=True`, and the path must be a folder).
4-bit loading needs `load_in_4bit: true`, bitsandbytes importable and CUDA; anything
else is a clear error rather than a silent fp16/fp32 fallback.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..specs import ModelSpec
from .base import Backend, PromptInputs


def _first_id(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return int(value)


def _check_4bit(spec: ModelSpec) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise RuntimeError(f"model {spec.name!r}: load_in_4bit needs the bitsandbytes package, "
                           "which is not installed") from None
    if not torch.cuda.is_available():
        raise RuntimeError(f"model {spec.name!r}: load_in_4bit needs a CUDA device; none is available")
    if not str(spec.device).startswith("cuda"):
        raise RuntimeError(f"model {spec.name!r}: load_in_4bit needs device 'cuda', got {spec.device!r}")


class CausalLMBackend(Backend):
    """Any `AutoModelForCausalLM` checkpoint with a text-only prompt."""

    family = "causal_lm"

    def __init__(self, spec: ModelSpec, tokenizer_path: str | Path | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(spec.path)
        if not path.is_dir():
            raise FileNotFoundError(f"model {spec.name!r}: {path} is not a local checkpoint folder "
                                    "(models are never downloaded)")
        tok_path = Path(tokenizer_path or spec.tokenizer or path)
        if not tok_path.is_dir():
            raise FileNotFoundError(f"model {spec.name!r}: tokenizer folder {tok_path} does not exist")
        self._init_spec(spec)
        kwargs = dict(dtype=self.dtype, attn_implementation=spec.attn_implementation, local_files_only=True)
        if spec.load_in_4bit:
            _check_4bit(spec)
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_compute_dtype=self.dtype, bnb_4bit_quant_type="nf4")
            kwargs["device_map"] = {"": self.device}
            self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()
        else:
            self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(tok_path, local_files_only=True)
        self.prompt_template = spec.option("prompt")
        self.add_bos = spec.option("add_bos")

        eos = _first_id(self.tokenizer.eos_token_id)
        if eos is None:
            eos = _first_id(getattr(self.model.generation_config, "eos_token_id", None))
        if eos is None:
            eos = _first_id(getattr(self.model.config, "eos_token_id", None))
        if eos is None:
            raise ValueError(f"model {spec.name!r}: neither the tokenizer nor the config names an EOS token")
        self.eos_token_id = eos
        pad = _first_id(self.tokenizer.pad_token_id)
        self.pad_token_id = eos if pad is None else pad

    def prompt_ids(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if self.add_bos is True and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        elif self.add_bos is False and bos is not None and ids and ids[0] == bos:
            ids = ids[1:]
        return ids

    def prepare(self, sample) -> PromptInputs:
        text = self.prompt_template.format(question=sample.question)
        ids = self.prompt_ids(text)
        if not ids:
            raise ValueError(f"sample {sample.sample_id}: the prompt {text!r} tokenises to nothing")
        return PromptInputs(sample_id=sample.sample_id, input_ids=torch.tensor(ids, dtype=torch.long),
                            model_inputs={}, prompt_text=text)
