"""The records a job is made of: a model, a decoding preset, a run of the acceptance tables.

Plain dataclasses, no torch: every stage's job is built from them (jobs.Job), and
`stages.spec` writes their fields into each stage's fingerprint. Their defaults are
read from schemas/config.schema.yaml, the one place defaults live: a job built from a
validated config gets exactly the config's values, and code building a record by hand
(tests, bench/) gets the schema's defaults, never a second copy that can drift.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"

# The demo models' roles and the family each must be (config checks and demo training share it):
# the target, the event draft, and a text-only draft (the question alone, no clip: the floor every
# multimodal speculative-decoding paper reports).
DEMO_FAMILIES = {"target": "video_llava", "draft": "eventgpt", "text": "causal_lm"}
# The demo tokenizer each role uses (results/demo_tokenizers/{name}): the text draft has the draft's,
# a Llama vocabulary without the target's added <image>/<video>/<pad>, as a small Llama text model would.
DEMO_TOKENIZERS = {"target": "target", "draft": "draft", "text": "draft"}


@lru_cache(maxsize=1)
def schema() -> dict:
    import yaml

    return yaml.safe_load(SCHEMA_PATH.read_text())


def schema_defaults(*path: str) -> dict[str, Any]:
    """The value every property of the object at `path` in the config schema takes when nothing sets it.

    `path` walks `properties` by name, and `additionalProperties` by "*" (e.g. ("models", "*")).
    That is the property's `default`, or its `fallback_default` where it has one: a key whose
    schema default is null (unset) because it may be inherited (a model's dtype, device, gpu:
    config.inherit_model_settings) takes the fallback when there is nothing to inherit from.
    """
    node = schema()
    for key in path:
        node = node["additionalProperties"] if key == "*" else node["properties"][key]
    return {k: v.get("fallback_default", v.get("default")) for k, v in node.get("properties", {}).items()
            if "default" in v or "fallback_default" in v}


def option_defaults(family: str) -> dict[str, Any]:
    """The options a family takes, with their defaults ($defs/{family}_options of the schema)."""
    node = schema()["$defs"][f"{family}_options"]
    return {k: v.get("default") for k, v in node.get("properties", {}).items()}


_MODEL = schema_defaults("models", "*")
_DECODING = schema_defaults("decodings", "*")


@dataclass(frozen=True)
class ModelSpec:
    """A `models:` entry as a backend loads it: path resolved, scheduling keys (gpu) left out."""

    name: str
    family: str  # eventgpt | video_llava | llava | causal_lm
    path: str
    tokenizer: str | None = _MODEL["tokenizer"]  # tokenizer directory when it is not the checkpoint's own
    dtype: str = _MODEL["dtype"]
    device: str = _MODEL["device"]
    attn_implementation: str = _MODEL["attn_implementation"]
    load_in_4bit: bool = _MODEL["load_in_4bit"]
    batch_size: int = _MODEL["batch_size"]
    layers: int | None = _MODEL["layers"]  # keep the first k decoder layers (backends.variants)
    quantization: str | None = _MODEL["quantization"]  # config.QUANTIZATION method, applied after loading
    options: Any = ()  # family-specific (validated per family by the schema); a dict or (key, value) pairs

    def __post_init__(self):
        # Kept as sorted pairs: a frozen record must hash, and key order must not matter.
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    def option(self, key: str) -> Any:
        """A family option: as configured, else the schema's default for the family."""
        defaults = option_defaults(self.family)
        if key not in defaults:
            raise KeyError(f"model {self.name!r}: {key!r} is not an option of family {self.family!r} "
                           f"(known: {', '.join(sorted(defaults)) or 'none'}; schemas/config.schema.yaml $defs)")
        return dict(self.options).get(key, defaults[key])


@dataclass(frozen=True)
class Decoding:
    """A `decodings:` preset."""

    name: str
    do_sample: bool = _DECODING["do_sample"]
    temperature: float = _DECODING["temperature"]
    top_p: float = _DECODING["top_p"]
    seed: int = _DECODING["seed"]
    max_new_tokens: int = _DECODING["max_new_tokens"]

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"decoding {self.name!r}: max_new_tokens must be >= 1")
        if self.do_sample:
            if not self.temperature > 0:
                raise ValueError(f"decoding {self.name!r}: temperature must be > 0 when sampling")
            if not 0 < self.top_p <= 1:
                raise ValueError(f"decoding {self.name!r}: top_p must lie in (0, 1]")

    @property
    def greedy(self) -> bool:
        return not self.do_sample


@dataclass(frozen=True)
class Run:
    """One dataset x draft x target x decoding of the acceptance tables, and where its artifacts are."""

    dataset: str
    pair: str
    draft: str
    target: str
    decoding: Decoding
    scores: str
    translation: str
    target_vocab: str
    draft_tokens: tuple[str, ...] = field(default_factory=tuple)
    target_tokens: tuple[str, ...] = field(default_factory=tuple)
    rounds: tuple[str, ...] = field(default_factory=tuple)
    timing: str | None = None  # the paired timing job's table (timing.py): every cost ratio of the run
    # an input ablation's name (ablations.py): `scores` is then the ablated pass along the target's plain
    # stream, and the run has no loop, timing or free-running draft stream of its own; None: the plain run
    ablation: str | None = None

    def __post_init__(self):
        if isinstance(self.decoding, dict):  # as it comes back from a job spec (JSON)
            object.__setattr__(self, "decoding", Decoding(**self.decoding))
        for name in ("draft_tokens", "target_tokens", "rounds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def keys(self) -> dict:
        return {"dataset": self.dataset, "draft": self.draft, "target": self.target, "decoding": self.decoding.name}

    def label(self, with_dataset: bool = False) -> str:
        """The run's name in every report, plot and log: draft → target · decoding (dataset first when
        a report holds several datasets)."""
        return run_label(self.keys, with_dataset)


def run_label(keys: Mapping, with_dataset: bool = False) -> str:
    """A run's label from its keys (a Run's `keys`, or a table row with dataset, draft, target and, when
    it has one, decoding): the one definition Run.label and the tables' labels share."""
    base = f"{keys['draft']} → {keys['target']}"
    if keys.get("decoding"):
        base += f" · {keys['decoding']}"
    return f"{keys['dataset']} · {base}" if with_dataset else base
