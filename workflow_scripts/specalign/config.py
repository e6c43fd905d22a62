"""Config helpers shared by the rules (rules/common.smk) and the scripts.

Two jobs: cross-reference checks the JSON schema cannot express (a pair naming a
model that does not exist), and per-stage fingerprints so that a config edit
reruns exactly the stages it touched.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config problem; the message names the key."""


def canonical(obj: Any) -> str:
    """The one serialisation of config pieces: key order never matters."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def check_references(cfg: dict) -> None:
    """Fail before any job runs if config keys refer to things that do not exist."""
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
        if ds["kind"] == "demo":
            if ds.get("root"):
                raise ConfigError(f"datasets.{name}.root: a demo dataset is always written to results/demo_data/{name}")
        else:
            if "demo" in ds:
                raise ConfigError(f"datasets.{name}.demo: only datasets of kind demo take generator settings")
            if not ds.get("root"):
                raise ConfigError(f"datasets.{name}.root: a dsec dataset needs the folder that holds it")
    roles = {}
    for name, m in models.items():
        if not m.get("demo") and not m.get("path"):
            raise ConfigError(f"models.{name}.path: required (the local checkpoint directory)")
        if m.get("demo") and m.get("path"):
            raise ConfigError(f"models.{name}.path: a demo model is always trained into results/demo_models/{name}")
        if m.get("demo"):
            if m["demo"] in roles:
                raise ConfigError(f"models.{name}.demo: {m['demo']!r} is already models.{roles[m['demo']]}")
            roles[m["demo"]] = name
            want = {"target": "video_llava", "draft": "eventgpt"}[m["demo"]]
            if m["family"] != want:
                raise ConfigError(f"models.{name}.family: the demo {m['demo']} is a {want} model")
    if roles and cfg["demo_training"]["dataset"] not in datasets:
        raise ConfigError(f"demo_training.dataset: no dataset named {cfg['demo_training']['dataset']!r}")
    for name, d in decodings.items():
        if not d["do_sample"] and (d.get("temperature", 1.0) != 1.0 or d.get("top_p", 1.0) != 1.0):
            raise ConfigError(f"decodings.{name}: temperature/top_p have no effect when do_sample is false")


def dataset_root(cfg: dict, name: str) -> str:
    ds = cfg["datasets"][name]
    return f"results/demo_data/{name}" if ds["kind"] == "demo" else ds["root"]


def model_path(cfg: dict, name: str) -> str:
    m = cfg["models"][name]
    return f"results/demo_models/{name}" if m.get("demo") else m["path"]


def tokenizer_path(cfg: dict, name: str) -> str:
    m = cfg["models"][name]
    if m.get("tokenizer"):
        return m["tokenizer"]
    return f"results/demo_tokenizers/{m['demo']}" if m.get("demo") else m["path"]


def model_spec_dict(cfg: dict, name: str) -> dict:
    """What a backend needs to load `name` (path resolved); `gpu` is scheduling only.

    A demo checkpoint carries its own tokenizer; a real model may name another directory."""
    m = {k: v for k, v in cfg["models"][name].items() if k not in ("gpu", "demo", "tokenizer")}
    m["path"] = model_path(cfg, name)
    if cfg["models"][name].get("tokenizer") and not cfg["models"][name].get("demo"):
        m["tokenizer"] = cfg["models"][name]["tokenizer"]
    return m


def write_fingerprint(path: str | Path, obj: Any) -> Path:
    """Write the canonical JSON of `obj` only when it changed, atomically.

    Used as a rule input: its mtime moves only when the stage's config really
    changed, so reordering keys or reverting an edit reruns nothing.
    """
    path = Path(path)
    text = canonical(obj) + "\n"
    if path.exists() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path
