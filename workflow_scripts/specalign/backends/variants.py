"""Drafts made from a checkpoint: the first k decoder layers, and quantized weights.

The seed note's Option A: "use a quantized/smaller Video-LLaVA as draft (same tokenizer)". Both
are changes to a loaded model, the same for every family, so `load_backend` applies them after
the family's backend has loaded the checkpoint (its inputs, prompt and tokenizer stay the
target's: the translation map is the identity).

- Layer truncation (Draft & Verify / LayerSkip's self-draft): keep decoder layers 0..k-1 and the
  final norm and LM head, so a decode step costs about k / L of the model's.
- Quantization with torchao's `quantize_` (what transformers' TorchAoConfig applies at load) of the
  language model's decoder layers and LM head, nothing else (EventGPT's decoder module also holds
  its CLIP tower and feature adaptor; a vision tower is not what a decode step costs):
  int8_dynamic (int8 weights and activations; the CPU method the demo and CI run),
  int8_weight / int4_weight (weight-only; CUDA; int4 needs the mslk kernels, the `int4` extra).
  config.QUANTIZATION lists them; the config check refuses what the machine cannot run before any
  job starts, and `quantize` checks again where the job runs.
"""
from __future__ import annotations

import logging

from ..config import QUANTIZATION, quantization_missing

log = logging.getLogger(__name__)


def decoder_layers(model):
    """(the language model's decoder, its ModuleList of layers), for every supported family."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: its decoder {type(decoder).__name__} has no `layers` list")
    return decoder, layers


def truncate_layers(model, k: int, name: str = "model") -> None:
    """Keep the first k decoder layers in place; the config follows (the KV cache is sized from it)."""
    decoder, layers = decoder_layers(model)
    n = len(layers)
    if not 1 <= k < n:
        raise ValueError(f"model {name!r}: layers {k} must lie in 1..{n - 1} (its checkpoint has {n} decoder layers)")
    decoder.layers = layers[:k]
    for cfg in {id(c): c for c in (decoder.config, model.config.get_text_config())}.values():
        cfg.num_hidden_layers = k
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = list(cfg.layer_types)[:k]
    log.info("%s: kept decoder layers 0..%d of %d", name, k - 1, n)


def quantize(model, method: str, name: str = "model") -> None:
    """torchao quantization of the language model's Linear layers, in place: those of the decoder
    layers and the LM head (unless tied to the input embeddings). The final norm has no Linear; the
    vision / event towers, projectors and adaptors stay as loaded: the draft's cost is its decode steps.

    Fails before touching the model when a package the method needs is missing (naming it) or the
    model is on a device the method does not run on."""
    missing = quantization_missing(method)
    if missing:
        raise ImportError(f"model {name!r}: {missing}")
    device, config_class, _ = QUANTIZATION[method]
    on = next(model.parameters()).device.type
    if on != device:
        raise ValueError(f"{method} runs on {device}, but model {name!r} is on {on}")
    import torchao.quantization as tq

    decoder, layers = decoder_layers(model)
    tq.quantize_(layers, getattr(tq, config_class)())
    head = model.get_output_embeddings()
    if head is not None and head.weight is not decoder.get_input_embeddings().weight:  # untied head
        tq.quantize_(head, getattr(tq, config_class)())
    log.info("%s: decoder layers and LM head quantized with torchao %s (%s)", name, config_class, method)


def apply(backend) -> None:
    """The spec's changes (layers, then quantization) to a loaded backend's model."""
    spec = backend.spec
    if spec.layers is not None:
        truncate_layers(backend.model, spec.layers, spec.name)
    if spec.quantization is not None:
        quantize(backend.model, spec.quantization, spec.name)
