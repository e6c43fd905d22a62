"""EventGPT-7B (`EventChat_llama`): the modules, in the official checkpoint key layout.

Architecture (a LlamaForCausalLM, Vicuna-7B-v1.5 base, plus three modules in `model.`):
    event frame [3, S, S] -> CLIP vision_model -> last_hidden_state (CLS kept, N = (S/p)^2 + 1 tokens)
      -> visual_projector   Linear(vision hidden, H) -> GELU -> Linear(H, H)
      -> feature_adaptor    Linear(H, H)                  (built when the config has the key
                                                            event_feature_adaptor, whatever its value, as
                                                            the official `hasattr` test; load_eventgpt
                                                            also builds it when its weights are in the
                                                            checkpoint; applied whenever built)
    T frames -> spatio-temporal pooling: mean over tokens per frame (T temporal tokens) and
    mean over frames (N spatial tokens), concatenated [T temporal; N spatial] = T + N tokens.
The official code sizes the projector with hard-coded 1024/4096; here the sizes come from the
vision config and the LM config (identical for the real 7B model).

Checkpoint keys (official names; in memory, transformers 5's flattened CLIPVisionModel has no
`vision_model.` level: state_dict() names are model.visual_tower.visual_tower.*):
    model.visual_tower.visual_tower.vision_model.*   CLIP (may be absent: then loaded from
                                                     config.mm_visual_tower, a local dir or HF cache entry;
                                                     where the vision config comes from: configuration.py)
    model.visual_projector.{0,2}.{weight,bias}
    model.feature_adaptor.{weight,bias}
    model.embed_tokens.*, model.layers.*, model.norm.*, lm_head.*   (Llama)

Input convention here (differs from the official code, which splices features in by
splitting sequences): `input_ids` already hold one EVENT_TOKEN_INDEX (-200) per visual token
(T + N of them, expanded by the backend), so every position in input_ids is one position of
the language model and KV caches / left padding / position ids work as for plain Llama.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel
from transformers.models.llama.modeling_llama import LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel

from .configuration import (
    EVENT_TOKEN_INDEX,
    MODEL_TYPE,
    EventChatConfig,
    check_supported,
    has_feature_adaptor,
    has_visual_tower,
    visual_tower_config,
)


def spatio_temporal_pool(features: torch.Tensor) -> torch.Tensor:
    """[..., T, N, H] -> [..., T + N, H]: per-frame token means (T), then per-token frame means (N)."""
    if features.ndim < 3:
        raise ValueError(f"spatio_temporal_pool expects [..., T, N, H], got shape {tuple(features.shape)}")
    temporal = features.mean(dim=-2)  # [..., T, H]
    spatial = features.mean(dim=-3)   # [..., N, H]
    return torch.cat([temporal, spatial], dim=-2)


class EventVisualTower(nn.Module):
    """Holds the CLIPVisionModel as `.visual_tower` (official keys visual_tower.vision_model.*)."""

    def __init__(self, vision_config: CLIPVisionConfig):
        super().__init__()
        self.visual_tower = CLIPVisionModel(vision_config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[M, 3, S, S] -> last_hidden_state [M, N, D_vision] (CLS kept; no post-layernorm)."""
        return self.visual_tower(pixel_values=pixel_values).last_hidden_state


class EventChatLlamaModel(LlamaModel):
    config_class = EventChatConfig

    def __init__(self, config: EventChatConfig):
        check_supported(config)
        super().__init__(config)
        if has_visual_tower(config):
            vcfg = visual_tower_config(config)
            self.visual_tower = EventVisualTower(vcfg)
            self.visual_projector = nn.Sequential(
                nn.Linear(vcfg.hidden_size, config.hidden_size),
                nn.GELU(),
                nn.Linear(config.hidden_size, config.hidden_size),
            )
        if has_feature_adaptor(config):
            self.feature_adaptor = nn.Linear(config.hidden_size, config.hidden_size)
        self.post_init()  # again: gather the new children's properties and initialise them


class EventChatForCausalLM(LlamaForCausalLM):
    """EventGPT: `forward(input_ids with -200 placeholders, event_tensors [B, T, 3, S, S], ...)`."""

    config_class = EventChatConfig

    def __init__(self, config: EventChatConfig):
        LlamaPreTrainedModel.__init__(self, config)  # skip LlamaForCausalLM.__init__: no plain LlamaModel
        self.model = EventChatLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    # -- visual path
    @property
    def vision_config(self) -> CLIPVisionConfig:
        return self.model.visual_tower.visual_tower.config

    def encode_events(self, event_tensors: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, S, S] -> [B, T + N, H] in the LM's embedding dtype."""
        if not hasattr(self.model, "visual_tower"):
            raise ValueError("this EventChat model has no visual tower (config lacks mm_visual_tower)")
        if event_tensors.ndim != 5:
            raise ValueError(f"event_tensors must be [B, T, 3, H, W], got shape {tuple(event_tensors.shape)}")
        b, t = event_tensors.shape[:2]
        feats = self.model.visual_tower(event_tensors.flatten(0, 1))  # [B*T, N, Dv]
        proj_dtype = self.model.visual_projector[0].weight.dtype
        feats = self.model.visual_projector(feats.to(proj_dtype))
        if hasattr(self.model, "feature_adaptor"):
            feats = self.model.feature_adaptor(feats)
        feats = feats.view(b, t, feats.shape[-2], feats.shape[-1])
        return spatio_temporal_pool(feats).to(self.model.embed_tokens.weight.dtype)

    def embed_with_events(self, input_ids: torch.LongTensor, event_tensors: torch.Tensor | None) -> torch.Tensor:
        placeholders = input_ids == EVENT_TOKEN_INDEX
        embeds = self.model.embed_tokens(input_ids.masked_fill(placeholders, 0))
        per_row = placeholders.sum(dim=-1)
        if event_tensors is None:
            if per_row.any():
                raise ValueError(f"input_ids hold {int(per_row.sum())} event placeholders ({EVENT_TOKEN_INDEX}) "
                                 "but no event_tensors were given (pass them in the pass that holds the placeholders)")
            return embeds
        feats = self.encode_events(event_tensors)  # [B_ev, T + N, H]
        if feats.shape[0] != input_ids.shape[0] or not bool((per_row == feats.shape[1]).all()):
            raise ValueError(
                f"event features and event placeholders do not match: event_tensors give {feats.shape[0]} x "
                f"{feats.shape[1]} tokens (T={event_tensors.shape[1]} frames + "
                f"{feats.shape[1] - event_tensors.shape[1]} spatial), input_ids hold {per_row.tolist()} "
                f"placeholders per row"
            )
        return embeds.masked_scatter(placeholders.unsqueeze(-1), feats)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        event_tensors: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("EventChatForCausalLM.forward needs input_ids or inputs_embeds")
            inputs_embeds = self.embed_with_events(input_ids, event_tensors)
        elif event_tensors is not None:
            raise ValueError("pass event_tensors with input_ids (holding the placeholders), not with inputs_embeds")
        return super().forward(
            input_ids=None,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, input_ids, *args, is_first_iteration: bool | None = False, **kwargs):
        """For `generate`: event_tensors only in the prefill (the pass that holds the placeholders)."""
        event_tensors = kwargs.pop("event_tensors", None)
        inputs = super().prepare_inputs_for_generation(input_ids, *args, is_first_iteration=is_first_iteration,
                                                       **kwargs)
        if event_tensors is not None and (is_first_iteration or not kwargs.get("use_cache", True)):
            inputs["event_tensors"] = event_tensors
        return inputs


AutoConfig.register(MODEL_TYPE, EventChatConfig, exist_ok=True)
AutoModelForCausalLM.register(EventChatConfig, EventChatForCausalLM, exist_ok=True)
