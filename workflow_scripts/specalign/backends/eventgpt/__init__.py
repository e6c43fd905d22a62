"""EventGPT-7B, split the way transformers splits a model family:
configuration.py (constants, config class, vision config), modeling.py (the modules),
processing.py (prompt ids, tokenizer additions, image processor), checkpoint.py (the
official download's layout, read and written), backend.py (the specalign backend)."""
from .backend import EventGPTBackend, event_duration_ms
from .checkpoint import (
    checkpoint_tensor_names,
    load_eventgpt,
    official_name,
    write_clip_dir,
    write_official_checkpoint,
)
from .configuration import (
    CLIP_PREFIX,
    DEFAULT_EVENT_PATCH_TOKEN,
    DEFAULT_EVENT_TOKEN,
    EV_TOKENS,
    EVENT_TOKEN_INDEX,
    MODEL_TYPE,
    NUM_EVENT_FRAMES,
    OFFICIAL_CLIP_PREFIX,
    EventChatConfig,
    num_event_tokens,
)
from .modeling import EventChatForCausalLM, spatio_temporal_pool
from .processing import add_event_tokens, expand_event_placeholders, tokenize_event_prompt

__all__ = [
    "CLIP_PREFIX", "DEFAULT_EVENT_PATCH_TOKEN", "DEFAULT_EVENT_TOKEN", "EV_TOKENS", "EVENT_TOKEN_INDEX",
    "MODEL_TYPE", "NUM_EVENT_FRAMES", "OFFICIAL_CLIP_PREFIX", "EventChatConfig", "EventChatForCausalLM",
    "EventGPTBackend", "add_event_tokens", "checkpoint_tensor_names", "event_duration_ms",
    "expand_event_placeholders", "load_eventgpt", "num_event_tokens", "official_name", "spatio_temporal_pool",
    "tokenize_event_prompt", "write_clip_dir", "write_official_checkpoint",
]
