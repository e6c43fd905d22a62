"""Config helpers shared by the rules (rules/common.smk), stages.py and the scripts.

Cross-reference checks the JSON schema cannot express (a pair naming a model that
does not exist), the paths a config resolves to, and the fingerprint writer that
makes a config edit rerun exactly the jobs it touched (stages.py says what each job reads).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .specs import DEMO_FAMILIES, DEMO_TOKENIZERS, schema_defaults

# The kind of a dataset the workflow cuts from raw DSEC sequences, one per configured duration
# (expand_datasets); users write kind dsec_raw, never this one.
CLIPS = "clips"


class ConfigError(ValueError):
    """A config problem; the message names the key."""


def canonical(obj: Any) -> str:
    """The one serialisation of config pieces: key order never matters."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# What a model made from another (`base:`, or `distill.draft`) takes from that model unless it sets
# them: a self-draft or a distilled draft of a bfloat16 CUDA model runs as bfloat16 on CUDA and asks
# for a GPU, like its original. Their schema default is null (unset); with nothing to inherit from,
# the schema's `fallback_default` (specs.schema_defaults).
INHERITED = ("dtype", "device", "gpu")


def parent_model(m: dict) -> str | None:
    """The model a `models:` entry is made from: its base, or the draft it is distilled from."""
    return m.get("base") or (m.get("distill") or {}).get("draft")


def inherited(models: dict, name: str, key: str) -> Any:
    """models[name][key] as set, else as the model it is made from has it (transitively), else the
    schema's default. Safe on a config not yet checked (an unknown parent or a cycle ends the walk)."""
    seen = set()
    while name in models and name not in seen:
        seen.add(name)
        if models[name].get(key) is not None:
            return models[name][key]
        name = parent_model(models[name])
    return schema_defaults("models", "*")[key]


def inherit_model_settings(cfg: dict) -> dict:
    """Fill every model's INHERITED keys in place (and return cfg), so that whatever reads the
    config (the rules' gpu resources, the checks below) sees the values a job runs with. Idempotent."""
    models = cfg["models"]
    resolved = {name: {key: inherited(models, name, key) for key in INHERITED} for name in models}
    for name, values in resolved.items():
        models[name].update(values)
    return cfg


def check_references(cfg: dict) -> None:
    """Fail before any job runs if config keys refer to things that do not exist.

    First fills what models made from others inherit (inherit_model_settings): the checks, and
    rules/common.smk after them, read the resolved values."""
    inherit_model_settings(cfg)
    models, decodings, datasets = cfg["models"], cfg["decodings"], cfg["datasets"]
    for i, pair in enumerate(cfg["pairs"]):
        for role in ("draft", "target"):
            if pair[role] not in models:
                raise ConfigError(f"pairs[{i}].{role}: no model named {pair[role]!r} under models "
                                  f"(known: {', '.join(sorted(models))})")
    for name in cfg["speculative"]["decodings"]:
        if name not in decodings:
            raise ConfigError(f"speculative.decodings: no decoding preset named {name!r} under decodings")
    for name, ds in datasets.items():
        raw_keys = [k for k in ("sequences", "durations_ms") if k in ds]
        if ds["kind"] == "demo":
            if ds.get("root"):
                raise ConfigError(f"datasets.{name}.root: a demo dataset is always written to results/demo_data/{name}")
        elif ds["kind"] in ("dsec", "dsec_raw"):
            if "demo" in ds:
                raise ConfigError(f"datasets.{name}.demo: only datasets of kind demo take generator settings")
            if not ds.get("root"):
                what = "the raw DSEC sequences" if ds["kind"] == "dsec_raw" else "its clips"
                raise ConfigError(f"datasets.{name}.root: a {ds['kind']} dataset needs the folder that holds {what}")
        if ds["kind"] == "dsec_raw":
            for key in ("sequences", "durations_ms"):
                if not ds.get(key):
                    raise ConfigError(f"datasets.{name}.{key}: required for a dsec_raw dataset")
            splits = sorted(set(ds["sequences"].values()))
            if ds["split"] is not None and ds["split"] not in splits:
                raise ConfigError(f"datasets.{name}.split: {ds['split']!r} is the split of none of its sequences "
                                  f"(their splits: {', '.join(splits)}): nothing would be evaluated")
            for d in ds["durations_ms"]:
                if f"{name}_{d}ms" in datasets:
                    raise ConfigError(f"datasets.{name}.durations_ms: {d} makes dataset {name}_{d}ms, "
                                      "which is already a dataset name")
        elif raw_keys and ds["kind"] != CLIPS:
            raise ConfigError(f"datasets.{name}.{raw_keys[0]}: only datasets of kind dsec_raw take it")
    trained_on = {m["distill"]["dataset"] for m in models.values() if m.get("distill")}
    for name, ds in datasets.items():
        if not ds.get("evaluate", True) and name not in trained_on:
            raise ConfigError(f"datasets.{name}.evaluate: false, but no model's distill.dataset is {name!r}: "
                              "nothing would read it")
    if not any(ds.get("evaluate", True) for ds in datasets.values()):
        raise ConfigError("datasets: every dataset has evaluate: false; nothing would be measured")
    roles = {}
    for name, m in models.items():
        if m.get("base") is not None:
            _check_derived(name, m, models)
            continue
        if m.get("distill") is not None:
            _check_distilled(name, m, models, datasets)
            continue
        for key in ("layers", "quantization"):
            if m.get(key) is not None:
                raise ConfigError(f"models.{name}.{key}: only a model made from another one (base: MODEL) takes it; "
                                  f"write models.{name}_draft: {{base: {name}, {key}: ...}}")
        if not m.get("demo") and not m.get("path"):
            raise ConfigError(f"models.{name}.path: required (the local checkpoint directory)")
        if m.get("demo") and m.get("path"):
            raise ConfigError(f"models.{name}.path: a demo model is always trained into results/demo_models/{name}")
        if m.get("demo"):
            if m["demo"] in roles:
                raise ConfigError(f"models.{name}.demo: {m['demo']!r} is already models.{roles[m['demo']]}")
            roles[m["demo"]] = name
            want = DEMO_FAMILIES[m["demo"]]
            if m["family"] != want:
                raise ConfigError(f"models.{name}.family: the demo {m['demo']} is a {want} model")
    if roles and cfg["demo_training"]["dataset"] not in datasets:
        raise ConfigError(f"demo_training.dataset: no dataset named {cfg['demo_training']['dataset']!r}")
    for name, d in decodings.items():
        if not d["do_sample"] and (d.get("temperature", 1.0) != 1.0 or d.get("top_p", 1.0) != 1.0):
            raise ConfigError(f"decodings.{name}: temperature/top_p have no effect when do_sample is false")


def expand_datasets(cfg: dict) -> dict:
    """Replace every dsec_raw dataset by one dataset of kind `clips` per duration, named
    NAME_{duration}ms, in place (and return cfg). Idempotent. Every later stage sees plain clip
    datasets, so a duration is compared with another like any two datasets, and adding one
    plans only its own jobs."""
    expanded = {}
    for name, ds in cfg["datasets"].items():
        if ds["kind"] != "dsec_raw":
            expanded[name] = ds
            continue
        for d in ds["durations_ms"]:
            clip = {k: v for k, v in ds.items() if k not in ("durations_ms", "kind", "root")}
            expanded[f"{name}_{d}ms"] = {**clip, "kind": CLIPS, "raw_root": ds["root"], "duration_ms": d}
    cfg["datasets"].clear()
    cfg["datasets"].update(expanded)
    return cfg


# quantization method -> (the device type it runs on, the torchao config class applying it, the module its
# kernels need beyond torchao or None). torchao 0.18 packs int4 weights with the mslk kernels
# (Int4WeightOnlyConfig's default plain format: Int4Tensor.from_hp raises "Requires mslk >= 1.0.0"
# without them, on every machine); the module `mslk` comes with PyPI's mslk-cuda (PyPI's `mslk` is an
# empty placeholder), pyproject's optional extra `int4`, for GPU nodes only.
QUANTIZATION = {
    "int8_dynamic": ("cpu", "Int8DynamicActivationInt8WeightConfig", None),
    "int8_weight": ("cuda", "Int8WeightOnlyConfig", None),
    "int4_weight": ("cuda", "Int4WeightOnlyConfig", "mslk"),
}
# a module a method needs -> how to install it
INSTALL = {"torchao": "scripts/setup.sh installs it",
           "mslk": "pip install -e '.[int4]' on the GPU nodes (the extra `int4` of pyproject.toml: mslk-cuda)"}


def quantization_missing(method: str) -> str | None:
    """Why `method` cannot run on this machine for want of a package (naming it and how to install
    it), or None. The config check asks before any job starts, and the loader again on the node
    that runs the job (another machine, on a cluster)."""
    import importlib.util

    for module in ("torchao", QUANTIZATION[method][2]):
        if module is not None and importlib.util.find_spec(module) is None:
            return f"{method} needs the {module} package, which is not installed: {INSTALL[module]}"
    return None


def _check_derived(name: str, m: dict, models: dict) -> None:
    """A model made from another (`base`): same family, no checkpoint of its own, a change that
    the machine can run (checked here, before any job starts)."""
    base = m["base"]
    if base not in models:
        raise ConfigError(f"models.{name}.base: no model named {base!r} under models (known: {', '.join(sorted(models))})")
    if models[base].get("base") is not None:
        raise ConfigError(f"models.{name}.base: {base!r} is itself made from {models[base]['base']!r}; "
                          f"name that one as the base")
    if m["family"] != models[base]["family"]:
        raise ConfigError(f"models.{name}.family: {m['family']!r}, but its base {base!r} is a "
                          f"{models[base]['family']!r} model")
    for key in ("path", "tokenizer", "demo"):
        if m.get(key):
            raise ConfigError(f"models.{name}.{key}: a model made from {base!r} uses its checkpoint and tokenizer")
    if m.get("layers") is None and m.get("quantization") is None:
        raise ConfigError(f"models.{name}: base {base!r} with neither layers nor quantization is {base!r} itself")
    method = m.get("quantization")
    if method is not None:
        device = QUANTIZATION[method][0]
        if not str(m["device"]).startswith(device):
            raise ConfigError(f"models.{name}.quantization: {method} runs on {device}, but models.{name}.device "
                              f"is {m['device']!r}")
        missing = quantization_missing(method)
        if missing:
            raise ConfigError(f"models.{name}.quantization: {missing}")


def _check_distilled(name: str, m: dict, models: dict, datasets: dict) -> None:
    d = m["distill"]
    for role in ("draft", "target"):
        if d[role] not in models:
            raise ConfigError(f"models.{name}.distill.{role}: no model named {d[role]!r} under models")
        if models[d[role]].get("distill") is not None:
            raise ConfigError(f"models.{name}.distill.{role}: {d[role]!r} is itself distilled; name its original")
    if m["family"] != models[d["draft"]]["family"]:
        raise ConfigError(f"models.{name}.family: {m['family']!r}, but distill.draft {d['draft']!r} is a "
                          f"{models[d['draft']]['family']!r} model")
    for key in ("path", "tokenizer", "demo", "base", "layers", "quantization"):
        if m.get(key):
            raise ConfigError(f"models.{name}.{key}: a distilled model is trained by the workflow "
                              f"(results/distilled/{name}) from distill.draft")
    if d["dataset"] not in datasets:
        raise ConfigError(f"models.{name}.distill.dataset: no dataset named {d['dataset']!r}")


def distilled_path(name: str) -> str:
    return f"results/distilled/{name}"


def dataset_root(cfg: dict, name: str) -> str:
    """Where a dataset's clips are: built by the workflow (demo, clips) or given (dsec)."""
    ds = cfg["datasets"][name]
    if ds["kind"] == "demo":
        return f"results/demo_data/{name}"
    if ds["kind"] == CLIPS:
        return f"results/clips/{name}"
    return ds["root"]


def checkpoint_model(cfg: dict, name: str) -> str:
    """The model whose checkpoint `name` loads: itself, or its `base`."""
    return cfg["models"][name].get("base") or name


def model_path(cfg: dict, name: str) -> str:
    name = checkpoint_model(cfg, name)
    m = cfg["models"][name]
    if m.get("distill"):
        return distilled_path(name)
    return f"results/demo_models/{name}" if m.get("demo") else m["path"]


def tokenizer_path(cfg: dict, name: str) -> str:
    m = cfg["models"][checkpoint_model(cfg, name)]
    if m.get("distill"):  # the distilled draft keeps its original's tokenizer
        return tokenizer_path(cfg, m["distill"]["draft"])
    if m.get("tokenizer"):
        return m["tokenizer"]
    return f"results/demo_tokenizers/{DEMO_TOKENIZERS[m['demo']]}" if m.get("demo") else m["path"]


def model_spec_dict(cfg: dict, name: str) -> dict:
    """The fields of specs.ModelSpec for `name` (path resolved); `gpu` is scheduling only.

    A demo checkpoint carries its own tokenizer; a real model may name another directory."""
    m = {k: v for k, v in cfg["models"][name].items() if k not in ("gpu", "demo", "tokenizer", "base", "distill")}
    m.update({k: inherited(cfg["models"], name, k) for k in INHERITED if k != "gpu"})  # filled or not: one answer
    m["path"] = model_path(cfg, name)
    own = cfg["models"][checkpoint_model(cfg, name)]
    m["tokenizer"] = own.get("tokenizer") if not own.get("demo") else None
    return m


def write_fingerprint(path: str | Path, obj: Any) -> Path:
    """Write the canonical JSON of `obj` only when it changed, atomically.

    Used as a rule input: its mtime moves only when the stage's config really
    changed, so reordering keys or reverting an edit reruns nothing.
    """
    from .artifacts import write_text

    path = Path(path)
    text = canonical(obj) + "\n"
    if not (path.exists() and path.read_text() == text):
        write_text(text, path)
    return path
