"""EventGPT-7B (`EventChat_llama`) in the official checkpoint key layout.

Written from the facts of the public code (XduSyL/EventGPT: model/EventChatModel.py,
common/common.py, dataset/conversation.py); no code is copied from it.

Architecture (a LlamaForCausalLM, Vicuna-7B-v1.5 base, plus three modules in `model.`):
    event frame [3, S, S] -> CLIP vision_model -> last_hidden_state (CLS kept, N = (S/p)^2 + 1 tokens)
      -> visual_projector   Linear(vision hidden, H) -> GELU -> Linear(H, H)
      -> feature_adaptor    Linear(H, H)                  (when config.event_feature_adaptor)
    T frames -> spatio-temporal pooling: mean over tokens per frame (T temporal tokens) and
    mean over frames (N spatial tokens), concatenated [T temporal; N spatial] = T + N tokens.
The official code sizes the projector with hard-coded 1024/4096; here the sizes come from the
vision config and the LM config (identical for the real 7B model).

Checkpoint keys (official names; in memory, transformers 5's flattened CLIPVisionModel has no
`vision_model.` level: state_dict() names are model.visual_tower.visual_tower.*):
    model.visual_tower.visual_tower.vision_model.*   CLIP (may be absent: then loaded from
                                                     config.mm_visual_tower, a local dir or HF cache entry)
    model.visual_projector.{0,2}.{weight,bias}
    model.feature_adaptor.{weight,bias}
    model.embed_tokens.*, model.layers.*, model.norm.*, lm_head.*   (Llama)

Input convention here (differs from the official code, which splices features in by
splitting sequences): `input_ids` already hold one EVENT_TOKEN_INDEX (-200) per visual token
(T + N of them, expanded by the backend), so every position in input_ids is one position of
the language model and KV caches / left padding / position ids work as for plain Llama.

Vision config: `config.mm_visual_tower_config` (a CLIPVisionConfig dict; written by
`write_official_checkpoint(include_clip=True)`, used by tiny self-contained checkpoints)
takes precedence; otherwise it is read from `config.mm_visual_tower` (never downloaded).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel

log = logging.getLogger(__name__)

EVENT_TOKEN_INDEX = -200
DEFAULT_EVENT_TOKEN = "<event>"
DEFAULT_EVENT_PATCH_TOKEN = "<ev_patch>"
DEFAULT_EV_START_TOKEN = "<ev_start>"
DEFAULT_EV_END_TOKEN = "<ev_end>"
EV_TOKENS = (DEFAULT_EVENT_PATCH_TOKEN, DEFAULT_EV_START_TOKEN, DEFAULT_EV_END_TOKEN)
NUM_EVENT_FRAMES = 5

# conversation "eventgpt_v1": SeparatorStyle.TWO, sep " ", roles USER / ASSISTANT
SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
VISION_CONFIG_KEY = "mm_visual_tower_config"
# Module path of the CLIPVisionModel. transformers 5 flattened CLIPVisionModel (no `.vision_model`
# submodule any more); its registered PrefixChange("vision_model") conversion, scoped to this nested
# submodule by from_pretrained, maps the official `...visual_tower.vision_model.X` names onto it.
CLIP_PREFIX = "model.visual_tower.visual_tower."
OFFICIAL_CLIP_PREFIX = CLIP_PREFIX + "vision_model."  # the names written in the official checkpoint
MODEL_TYPE = "EventChat_llama"


class EventChatConfig(LlamaConfig):
    """LlamaConfig + the EventGPT keys (mm_visual_tower, mm_visual_tower_config,
    event_feature_adaptor, mm_use_im_patch_token, mm_use_im_start_end), kept as extra attributes."""

    model_type = MODEL_TYPE


# ----------------------------------------------------------------------------- config helpers
def check_supported(config) -> None:
    """Reject configs this implementation cannot reproduce faithfully."""
    if getattr(config, "use_event_qformer", None):
        raise NotImplementedError(
            "EventGPT config sets use_event_qformer: the official code references build_event_qformer "
            "but never defines it, so such a checkpoint cannot be reproduced; only the "
            "projector + feature_adaptor + spatio-temporal pooling variant (EventGPT-7B) is supported"
        )


def has_visual_tower(config) -> bool:
    return bool(getattr(config, VISION_CONFIG_KEY, None) or getattr(config, "mm_visual_tower", None))


def resolve_visual_tower_dir(name: str | os.PathLike | None) -> Path:
    """`mm_visual_tower` as a local directory: a path, or a Hugging Face cache entry. Never downloads."""
    if not name:
        raise ValueError("EventGPT config has neither mm_visual_tower_config nor mm_visual_tower: "
                         "cannot build the CLIP vision tower")
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name), local_files_only=True))
    except Exception as exc:  # invalid repo id, not cached, offline ...
        raise FileNotFoundError(
            f"EventGPT vision tower mm_visual_tower={str(name)!r} is neither a local directory nor in the "
            f"Hugging Face cache (nothing is downloaded). Put the CLIP model (e.g. "
            f"openai/clip-vit-large-patch14-336) on disk and set mm_visual_tower in the checkpoint's "
            f"config.json to its directory"
        ) from exc


def visual_tower_config(config) -> CLIPVisionConfig:
    """The CLIP vision config: the embedded dict if present, else read from mm_visual_tower."""
    emb = getattr(config, VISION_CONFIG_KEY, None)
    if emb:
        if isinstance(emb, CLIPVisionConfig):
            return emb
        emb = dict(emb)
        if emb.get("model_type") == "clip" and "vision_config" in emb:
            emb = dict(emb["vision_config"])
        return CLIPVisionConfig.from_dict(emb)
    return CLIPVisionConfig.from_pretrained(str(resolve_visual_tower_dir(config.mm_visual_tower)),
                                            local_files_only=True)


def _as_int(size) -> int:
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"non-square vision size {size} is not supported")
        size = size[0]
    return int(size)


def spatial_token_count(vision_config) -> int:
    """Tokens per frame from CLIP's last_hidden_state: (S // p)^2 patches + CLS."""
    return (_as_int(vision_config.image_size) // _as_int(vision_config.patch_size)) ** 2 + 1


def num_event_tokens(vision_config, num_frames: int = NUM_EVENT_FRAMES) -> int:
    """Placeholders for one `<event>`: T temporal + N spatial tokens (582 for EventGPT-7B, T=5)."""
    return num_frames + spatial_token_count(vision_config)


# ----------------------------------------------------------------------------- modules
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
        if getattr(config, "event_feature_adaptor", None):
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


# ----------------------------------------------------------------------------- prompt
def event_prompt(question: str) -> str:
    """`prepare_event_prompt(question, "eventgpt_v1")`: always `<ev_start><event><ev_end>\\n{question}`
    (the start/end strings are plain text unless mm_use_im_start_end added them as tokens)."""
    user = f"{DEFAULT_EV_START_TOKEN}{DEFAULT_EVENT_TOKEN}{DEFAULT_EV_END_TOKEN}\n{question}"
    return f"{SYSTEM_PROMPT} USER: {user} ASSISTANT:"


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


# ----------------------------------------------------------------------------- loading
def checkpoint_tensor_names(path: str | os.PathLike) -> set[str]:
    """Tensor names stored in a checkpoint directory (safetensors or .bin, sharded or not)."""
    p = Path(path)
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (p / index).is_file():
            return set(json.loads((p / index).read_text())["weight_map"])
    if (p / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(p / "model.safetensors"), framework="pt") as f:
            return set(f.keys())
    if (p / "pytorch_model.bin").is_file():
        return set(torch.load(p / "pytorch_model.bin", map_location="cpu", weights_only=True, mmap=True))
    raise FileNotFoundError(f"{p}: no model.safetensors / pytorch_model.bin (or their index) found")


def _resize_embeddings(model, n: int) -> None:
    """resize_token_embeddings(n) as the official loader does; new rows = mean of the old rows
    (deterministic; the official transformers 4.37 drew them at random; prompts never use them)."""
    old = model.get_input_embeddings().weight.shape[0]
    if n == old:
        return
    model.resize_token_embeddings(n, mean_resizing=False)
    if n > old:
        with torch.no_grad():
            embeddings = (model.get_input_embeddings(), model.get_output_embeddings())
            for w in {id(e.weight): e.weight for e in embeddings}.values():  # once if tied
                w[old:] = w[:old].float().mean(0, keepdim=True).to(w.dtype)


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


def load_eventgpt(path: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu",
                  attn_implementation: str | None = "sdpa", tokenizer_path: str | os.PathLike | None = None):
    """Load an official EventGPT checkpoint dir -> (model, tokenizer, image_processor).

    Tokenizer: AutoTokenizer (transformers 5 has only tokenizers-backed ("fast") tokenizers; the
    official code asked for the slow SentencePiece one). `<ev_patch>` (mm_use_im_patch_token, default
    True) and `<ev_start>`/`<ev_end>` (mm_use_im_start_end) are added and the embeddings resized to
    len(tokenizer), as the official inference script does. Every non-CLIP weight must be in the
    checkpoint; CLIP weights come from the checkpoint if present, else from mm_visual_tower.
    `tokenizer_path` (default: the checkpoint dir) lets the tokenizer come from elsewhere, e.g. a
    tokenizer.json conversion when the checkpoint ships only tokenizer.model and neither
    `sentencepiece` nor `protobuf` is installed (transformers 5 needs one of them to convert it).
    """
    from transformers import AutoTokenizer

    path = Path(path)
    config = EventChatConfig.from_pretrained(str(path))
    check_supported(config)
    if not has_visual_tower(config):
        raise ValueError(f"{path}: config has neither mm_visual_tower nor {VISION_CONFIG_KEY}: "
                         "not an EventGPT checkpoint")
    names = checkpoint_tensor_names(path)
    clip_inside = any(n.startswith(CLIP_PREFIX) for n in names)
    clip_dir = None
    if not getattr(config, VISION_CONFIG_KEY, None) or not clip_inside:
        clip_dir = resolve_visual_tower_dir(getattr(config, "mm_visual_tower", None))

    kw = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model, info = EventChatForCausalLM.from_pretrained(str(path), config=config, dtype=dtype,
                                                       output_loading_info=True, **kw)
    missing = [k for k in info["missing_keys"] if not (k.startswith(CLIP_PREFIX) and not clip_inside)]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {len(missing)} weights, e.g. {sorted(missing)[:5]}")
    if info["unexpected_keys"]:
        log.warning("%s: %d checkpoint tensors not used, e.g. %s", path, len(info["unexpected_keys"]),
                    sorted(info["unexpected_keys"])[:5])
    if not clip_inside:
        clip = CLIPVisionModel.from_pretrained(str(clip_dir), dtype=dtype, local_files_only=True)
        tower = model.model.visual_tower.visual_tower
        want, got = tower.state_dict(), clip.state_dict()
        if set(want) != set(got) or any(want[k].shape != got[k].shape for k in want):
            raise ValueError(f"CLIP at {clip_dir} does not match the vision config the model was built with")
        tower.load_state_dict(got, strict=True)
        log.info("%s: CLIP vision weights loaded from %s", path, clip_dir)

    tok_dir = Path(tokenizer_path) if tokenizer_path else path
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    except Exception as exc:
        raise RuntimeError(
            f"{tok_dir}: cannot load the EventGPT tokenizer ({exc}). A checkpoint with only tokenizer.model needs "
            f"the sentencepiece (or protobuf) package to convert it, or pass a directory with tokenizer.json as "
            f"the model option tokenizer_path"
        ) from exc
    add_event_tokens(tokenizer, config)
    _resize_embeddings(model, len(tokenizer))
    image_processor = build_image_processor(model.vision_config, path, clip_dir)
    model.to(device).eval()
    return model, tokenizer, image_processor


# ----------------------------------------------------------------------------- writing
def _strip_added_tokens(tok_dir: Path, drop: set[str]) -> None:
    """Remove `drop` (the highest ids) from a saved tokenizer's tokenizer.json / tokenizer_config.json."""
    tj = tok_dir / "tokenizer.json"
    if tj.is_file():
        data = json.loads(tj.read_text(encoding="utf-8"))
        added = data.get("added_tokens", [])
        gone = [t["id"] for t in added if t["content"] in drop]
        kept = [t["id"] for t in added if t["content"] not in drop]
        vocab = data.get("model", {}).get("vocab")
        if isinstance(vocab, dict):
            kept += list(vocab.values())
        if gone and kept and min(gone) < max(kept):
            raise ValueError(f"cannot drop {sorted(drop)}: they are not the last ids of the tokenizer")
        data["added_tokens"] = [t for t in added if t["content"] not in drop]
        tj.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = tok_dir / name
        if not f.is_file():
            continue
        data = json.loads(f.read_text(encoding="utf-8"))
        dec = data.get("added_tokens_decoder")
        if isinstance(dec, dict):
            data["added_tokens_decoder"] = {k: v for k, v in dec.items() if v.get("content") not in drop}
        for key, val in list(data.items()):
            if isinstance(val, list):
                data[key] = [v for v in val if not (isinstance(v, str) and v in drop)
                             and not (isinstance(v, dict) and v.get("content") in drop)]
        f.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def official_name(key: str) -> str:
    """In-memory state_dict name -> the official checkpoint name (CLIP keys regain `vision_model.`)."""
    if key.startswith(CLIP_PREFIX) and not key.startswith(OFFICIAL_CLIP_PREFIX):
        return OFFICIAL_CLIP_PREFIX + key[len(CLIP_PREFIX):]
    return key


def write_official_checkpoint(model: EventChatForCausalLM, tokenizer, path: str | os.PathLike,
                              include_clip: bool = True) -> Path:
    """Write `model` as the official download looks: config.json (model_type EventChat_llama, mm_* keys),
    model.safetensors with the official key names, and the tokenizer WITHOUT `<ev_patch>`/`<ev_start>`/
    `<ev_end>` (the loader adds them again).

    include_clip=True: CLIP weights and the vision config (`mm_visual_tower_config`) are embedded.
    include_clip=False: both are left out; config.mm_visual_tower must name a CLIP dir (see
    `write_clip_dir`).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg["model_type"] = MODEL_TYPE
    cfg["architectures"] = ["EventChatModel"]
    cfg["vocab_size"] = model.get_input_embeddings().weight.shape[0]
    if include_clip:
        cfg[VISION_CONFIG_KEY] = model.vision_config.to_dict()
        cfg.setdefault("mm_visual_tower", "(embedded)")
    else:
        cfg.pop(VISION_CONFIG_KEY, None)
        if not cfg.get("mm_visual_tower"):
            raise ValueError("include_clip=False needs config.mm_visual_tower (the CLIP dir to load from)")
    state, seen = {}, set()
    for k, v in model.state_dict().items():
        if k.startswith(CLIP_PREFIX):
            if not include_clip:
                continue
            k = official_name(k)
        v = v.detach().cpu()
        if v.data_ptr() in seen:  # tied weights: safetensors refuses shared storage
            v = v.clone()
        seen.add(v.data_ptr())
        state[k] = v.contiguous()
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str), encoding="utf-8")
    for stale in ("model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"):
        if (path / stale).exists():
            (path / stale).unlink()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        _strip_added_tokens(Path(tmp), set(EV_TOKENS))
        for f in Path(tmp).iterdir():
            shutil.copy2(f, path / f.name)
    return path


def write_clip_dir(model: EventChatForCausalLM, path: str | os.PathLike) -> Path:
    """Save the model's CLIP vision tower as a standalone dir in the hub layout of
    openai/clip-vit-*: config.json + model.safetensors with `vision_model.*` names (transformers 5's
    save_pretrained of a freshly built CLIPVisionModel would write the flattened names)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tower = model.model.visual_tower.visual_tower
    tower.config.save_pretrained(str(path))
    state = {"vision_model." + k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path
