"""What every job of every stage needs, resolved from the validated config, in one place.

`spec(config, stage, **wildcards)` is a pure function: it returns a JSON-able dict with
everything the job reads (model specs with paths, decoding, dataset root, skip_bad,
shard k of n, the run list...). rules/common.smk writes it as the job's fingerprint
(an input: the job reruns exactly when its spec changes) and passes it as the rule's one
param; the job script reads it back through `jobs.start` and nothing else of the config.
So the slice of the config a job depends on is defined once, here, and cannot drift
from what the job uses.

`all_jobs(config)` lists every (stage, wildcards) the workflow can plan, so the
fingerprints exist before the DAG is built.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Iterator

from . import ablations, grounding
from .config import CLIPS, dataset_root, model_spec_dict, tokenizer_path
from .specs import Run, schema_defaults

FINGERPRINTS = "results/.fingerprints"

# stage -> the wildcards its jobs have, in the order of its fingerprint path
WILDCARDS: dict[str, tuple[str, ...]] = {
    "demo_data": ("dataset",),
    "build_clips": ("dataset",),
    "manifest": ("dataset",),
    "demo_tokenizers": (),
    "vocab": ("model",),
    "translation": ("pair",),
    "demo_model": ("model",),
    "distill": ("model",),
    "generate": ("dataset", "model", "decoding", "shard"),
    "score": ("dataset", "pair", "decoding"),
    "score_ablation": ("dataset", "pair", "decoding", "ablation"),
    "speculative": ("dataset", "pair", "decoding", "gamma", "shard"),
    "timing": ("dataset", "pair", "decoding"),
    "acceptance": (),
    "report": (),
    "report_html": (),
}


def pair_name(draft: str, target: str) -> str:
    return f"{draft}__{target}"


def pair_models(pair: str) -> tuple[str, str]:
    draft, target = pair.split("__")
    return draft, target


def pairs(cfg: dict) -> list[str]:
    return [pair_name(p["draft"], p["target"]) for p in cfg["pairs"]]


def fingerprint_path(stage: str, **wildcards: Any) -> str:
    """results/.fingerprints/{stage}/{w1}/{w2}/.../{wn}.json (`all` for a stage without wildcards)."""
    parts = [str(wildcards[w]) for w in WILDCARDS[stage]] or ["all"]
    return "/".join([FINGERPRINTS, stage, *parts]) + ".json"


def fingerprint_pattern(stage: str) -> str:
    """The same path with `{wildcard}` placeholders, for a rule's input."""
    return fingerprint_path(stage, **{w: "{" + w + "}" for w in WILDCARDS[stage]})


# ---------------------------------------------------------------------------------- file names
def shard_files(cfg: dict, dataset: str, model: str, decoding: str) -> list[str]:
    return [f"results/generate/{dataset}/{model}/{decoding}/shard{k}.parquet" for k in range(cfg["shards"])]


def loop_gammas(cfg: dict, decoding: str) -> list[int]:
    """The gammas the real loop runs at for a decoding preset: none unless it is in
    speculative.decodings; greedy presets at speculative.greedy_gammas (a check: the replay is
    exact for greedy), sampled ones at speculative.gammas (the loop is their only measurement)."""
    spec_cfg = cfg["speculative"]
    if decoding not in spec_cfg["decodings"]:
        return []
    greedy = not cfg["decodings"][decoding]["do_sample"]
    return list(spec_cfg["greedy_gammas"] if greedy else spec_cfg["gammas"])


def round_files(cfg: dict, dataset: str, pair: str, decoding: str) -> list[str]:
    return [f"results/speculative/{dataset}/{pair}/{decoding}/g{g}/shard{k}.parquet"
            for g in loop_gammas(cfg, decoding) for k in range(cfg["shards"])]


# verify passes timed beyond the gammas: the sizes of trees (nodes + 1 tokens), so a tree of up to
# 64 nodes gets its verify cost measured or interpolated between two timed passes, never extrapolated.
# Fixed, not read from `trees:`: editing the trees reruns only the tables, never a job that loads models.
TREE_VERIFY_SIZES = (16, 32, 64)


def timing_gammas(cfg: dict) -> dict[str, list[int]]:
    """The timing job's gammas: the loop A/B at timing.gammas (null: speculative.gammas); verify
    passes (one forward each, cheap beside a loop) at every k = 1..the largest gamma the loop runs or
    is timed at, so the tables' gammas up to it all get a measured verify cost, and at
    TREE_VERIFY_SIZES for the trees. Not from `gammas`: editing the replay's gammas reruns only the
    tables, never a job that loads models."""
    spec_cfg = cfg["speculative"]
    loop = sorted(set(cfg["timing"]["gammas"] or spec_cfg["gammas"]))
    top = max([*loop, *spec_cfg["gammas"], *spec_cfg["greedy_gammas"]])
    return {"loop_gammas": loop, "verify_gammas": sorted({*range(1, top + 1), *TREE_VERIFY_SIZES})}


def timing_file(dataset: str, pair: str, decoding: str) -> str:
    return f"results/timing/{dataset}/{pair}/{decoding}.parquet"


def rank_k(cfg: dict) -> int:
    """scoring.rank_k: the cap of the scores' target_rank."""
    return int({**schema_defaults("scoring"), **cfg.get("scoring", {})}["rank_k"])


def tree_settings(cfg: dict) -> dict:
    """The trees the acceptance job replays (trees.csv), checked here so that a bad tree stops the
    workflow before any job starts, naming its key (trees.from_config)."""
    from .trees import config_trees

    trees = dict(cfg.get("trees") or {})
    budgets = list(cfg.get("tree_budgets", schema_defaults()["tree_budgets"]))
    config_trees(trees, cfg["gammas"], rank_k(cfg))
    return {"trees": trees, "budgets": budgets, "rank_k": rank_k(cfg)}


def evaluated(cfg: dict) -> list[str]:
    """The datasets measured (all but those with `evaluate: false`, which only a distillation reads)."""
    return sorted(d for d, ds in cfg["datasets"].items() if ds.get("evaluate", True))


def runs(cfg: dict) -> list[Run]:
    """One run per evaluated dataset x pair x decoding: the rows of the acceptance tables."""
    out = []
    for d in evaluated(cfg):
        for p in pairs(cfg):
            draft, target = pair_models(p)
            for dec in sorted(cfg["decodings"]):
                out.append(Run(
                    dataset=d, pair=p, draft=draft, target=target, decoding=decoding(cfg, dec),
                    scores=f"results/score/{d}/{p}/{dec}.parquet",
                    translation=f"results/translation/{p}.parquet",
                    target_vocab=f"results/vocab/{target}.parquet",
                    draft_tokens=shard_files(cfg, d, draft, dec),
                    target_tokens=shard_files(cfg, d, target, dec),
                    rounds=round_files(cfg, d, p, dec),
                    timing=timing_file(d, p, dec),
                ))
    return out


def score_file(dataset: str, pair: str, decoding: str, ablation: str | None = None) -> str:
    """The scores of a run: the plain pass, or an input ablation's pass along the same target stream."""
    return f"results/score/{dataset}/{pair}/{decoding}{'' if ablation is None else '.' + ablation}.parquet"


def ablation_jobs(cfg: dict) -> list[dict]:
    """Every (dataset, pair, decoding, ablation) an input ablation is scored at (ablations.applies)."""
    abl = ablations.configured(cfg)
    return [{"dataset": d, "pair": p, "decoding": dec, "ablation": name}
            for d in evaluated(cfg) for p in pairs(cfg) for dec in sorted(cfg["decodings"])
            for name, a in abl.items() if ablations.applies(a, pair_models(p), dec)]


def ablation_runs(cfg: dict) -> list[Run]:
    """One run per ablation job: the plain run's keys, the ablated scores, the target's plain stream;
    no loop, timing or draft stream (the ablation is one teacher-forced pass, nothing generated)."""
    out = []
    for j in ablation_jobs(cfg):
        draft, target = pair_models(j["pair"])
        out.append(Run(dataset=j["dataset"], pair=j["pair"], draft=draft, target=target,
                       decoding=decoding(cfg, j["decoding"]), ablation=j["ablation"],
                       scores=score_file(j["dataset"], j["pair"], j["decoding"], j["ablation"]),
                       translation=f"results/translation/{j['pair']}.parquet",
                       target_vocab=f"results/vocab/{target}.parquet",
                       target_tokens=shard_files(cfg, j["dataset"], target, j["decoding"])))
    return out


def comparisons(cfg: dict) -> list[dict]:
    """Before/after pairs of runs: a distilled draft and the draft it was distilled from, against
    the same target on the same dataset and decoding (so their scores lie along the same target
    streams, and the difference can be bootstrapped paired over the same clips)."""
    by_key = {(r.dataset, r.draft, r.target, r.decoding.name): r for r in runs(cfg)}
    out = []
    for (dataset, draft, target, dec), r in sorted(by_key.items()):
        d = cfg["models"][draft].get("distill")
        if d is None or (dataset, d["draft"], target, dec) not in by_key:
            continue
        before = by_key[(dataset, d["draft"], target, dec)]
        out.append({"dataset": dataset, "target": target, "decoding": dec, "before": d["draft"], "after": draft,
                    "loss": d["loss"], "data": d["data"], "distilled_toward": d["target"],
                    "before_scores": before.scores, "after_scores": r.scores})
    return out


# ---------------------------------------------------------------------------------- slices
def decoding(cfg: dict, name: str) -> dict:
    return {"name": name, **cfg["decodings"][name]}


def _dataset(cfg: dict, name: str) -> dict:
    ds = cfg["datasets"][name]
    return {"dataset": name, "root": dataset_root(cfg, name), "instructions": ds["instructions"],
            "questions": list(cfg["questions"])}


def _model(cfg: dict, name: str) -> dict:
    return {"name": name, **model_spec_dict(cfg, name)}


def _samples(cfg: dict, dataset: str) -> dict:
    """What a model-running job needs to read its samples from the manifest."""
    return {"dataset": dataset, "root": dataset_root(cfg, dataset), "skip_bad": cfg["skip_bad_samples"]}


def _shard(cfg: dict, shard: Any) -> dict:
    return {"shard": int(shard), "shards": cfg["shards"]}


def spec(cfg: dict, stage: str, **w: Any) -> dict:
    """Everything job `stage`/`w` reads, resolved; canonical (sorted keys, JSON types)."""
    if stage == "demo_data":
        out = {"dataset": w["dataset"], "demo": cfg["datasets"][w["dataset"]]["demo"]}
    elif stage == "build_clips":
        ds = cfg["datasets"][w["dataset"]]
        out = {"dataset": w["dataset"], "raw_root": ds["raw_root"], "sequences": ds["sequences"],
               "duration_ms": ds["duration_ms"], "overlap": ds["overlap"], "instructions": ds["instructions"],
               "sensor_size": [ds["sensor_height"], ds["sensor_width"]]}
    elif stage == "manifest":
        ds = cfg["datasets"][w["dataset"]]
        if ds["kind"] == "demo":   # the demo's sensor is its frame: sensor_width/height do not apply
            side = (ds.get("demo") or {}).get("size", schema_defaults("datasets", "*", "demo")["size"])
            sensor = [side, side]
        else:
            sensor = [ds["sensor_height"], ds["sensor_width"]]
        out = {**_dataset(cfg, w["dataset"]), "split": ds["split"], "skip_bad": cfg["skip_bad_samples"],
               "sensor_size": sensor, "short_video": ds["short_video"], "min_frames": ds["min_frames"]}
    elif stage == "demo_tokenizers":
        out = {**_dataset(cfg, cfg["demo_training"]["dataset"]), "vocab_size": cfg["demo_training"]["vocab_size"]}
    elif stage == "vocab":
        out = {"model": w["model"], "tokenizer": tokenizer_path(cfg, w["model"])}
    elif stage == "translation":
        draft, target = pair_models(w["pair"])
        out = {"draft": draft, "target": target, "draft_tokenizer": tokenizer_path(cfg, draft),
               "target_tokenizer": tokenizer_path(cfg, target), "texts": list(cfg["translation_test_texts"])}
    elif stage == "demo_model":
        m = cfg["models"][w["model"]]
        t = cfg["demo_training"]
        role = m["demo"]
        out = {**_dataset(cfg, t["dataset"]), "model": _model(cfg, w["model"]), "role": role,
               "tokenizer": tokenizer_path(cfg, w["model"]),
               # only this role's step count: retraining the draft must not retrain the target
               "training": {"steps": t[f"{role}_steps"], "batch_size": t["batch_size"],
                            "learning_rate": t["learning_rate"], "seed": t["seed"]}}
    elif stage == "distill":
        d = cfg["models"][w["model"]]["distill"]
        out = {**_dataset(cfg, d["dataset"]), "split": d["split"], "model": _model(cfg, w["model"]),
               "draft": _model(cfg, d["draft"]), "target": _model(cfg, d["target"]),
               "settings": {k: v for k, v in d.items() if k not in ("draft", "target", "dataset", "split")}}
    elif stage == "generate":
        out = {**_samples(cfg, w["dataset"]), **_shard(cfg, w["shard"]), "model": _model(cfg, w["model"]),
               "decoding": decoding(cfg, w["decoding"])}
    elif stage in ("score", "speculative"):
        draft, target = pair_models(w["pair"])
        out = {**_samples(cfg, w["dataset"]), "draft": _model(cfg, draft), "target": _model(cfg, target),
               "decoding": decoding(cfg, w["decoding"])}
        if stage == "score":   # the cap of target_rank (trees.py): changing it rescores
            out["rank_k"] = rank_k(cfg)
        if stage == "speculative":
            out.update(_shard(cfg, w["shard"]), gamma=int(w["gamma"]))
            limit = cfg["speculative"]["greedy_samples"]
            if limit is not None and not cfg["decodings"][w["decoding"]]["do_sample"]:
                out["max_samples"] = -(-limit // cfg["shards"])  # the greedy check's share of this shard
            if cfg["decodings"][w["decoding"]]["do_sample"]:
                # a greedy draft proposes its argmax whatever the setting: it must not rerun greedy loops
                out["draft_sampling"] = cfg["speculative"]["draft_sampling"]
    elif stage == "score_ablation":   # the score job's spec (same passes, same rank_k) + the ablation
        a = ablations.configured(cfg)[w["ablation"]]
        out = {**spec(cfg, "score", dataset=w["dataset"], pair=w["pair"], decoding=w["decoding"]),
               "ablation": ablations.job_entry(w["ablation"], a)}
    elif stage == "timing":
        draft, target = pair_models(w["pair"])
        t = cfg["timing"]
        out = {**_samples(cfg, w["dataset"]), "draft": _model(cfg, draft), "target": _model(cfg, target),
               "decoding": decoding(cfg, w["decoding"]), "clips": t["samples"], "reps": t["reps"],
               **timing_gammas(cfg)}
        if cfg["decodings"][w["decoding"]]["do_sample"]:   # the loop drafts as the loop jobs do
            out["draft_sampling"] = cfg["speculative"]["draft_sampling"]
    elif stage == "acceptance":
        out = {"runs": [asdict(r) for r in runs(cfg)], "gammas": list(cfg["gammas"]), "bootstrap": cfg["bootstrap"],
               "comparisons": comparisons(cfg)}
        ab = ablation_runs(cfg)
        if ab:   # only when configured: a config without ablations keeps its tables' fingerprint
            out["ablation_runs"] = [asdict(r) for r in ab]
        out["trees"] = tree_settings(cfg)
        g = grounding.spec_entry(cfg)   # the grounding classes' ablations and thresholds
        if g:   # only when configured: a config without classes keeps its tables' fingerprint
            out["grounding"] = g
    elif stage == "report":
        out = {"runs": [asdict(r) for r in runs(cfg)]}
    elif stage == "report_html":
        rs = runs(cfg)
        out = {"runs": [asdict(r) for r in rs], "bootstrap": cfg["bootstrap"],
               "manifests": {d: f"results/data/{d}/manifest.parquet" for d in sorted({r.dataset for r in rs})}}
    else:
        raise ValueError(f"unknown stage {stage!r} (known: {', '.join(WILDCARDS)})")
    return json.loads(json.dumps(out, sort_keys=True, default=str))


# ---------------------------------------------------------------------------------- every job
def all_jobs(cfg: dict) -> Iterator[tuple[str, dict]]:
    """(stage, wildcards) of every job the config can plan."""
    datasets, models, decs = evaluated(cfg), sorted(cfg["models"]), sorted(cfg["decodings"])
    shards = range(cfg["shards"])
    for d in sorted(cfg["datasets"]):  # built for a distillation too; measured only when evaluated
        if cfg["datasets"][d]["kind"] == "demo":
            yield "demo_data", {"dataset": d}
        if cfg["datasets"][d]["kind"] == CLIPS:
            yield "build_clips", {"dataset": d}
        if d in datasets:
            yield "manifest", {"dataset": d}
    demo_models = [m for m in models if cfg["models"][m].get("demo")]
    if demo_models:
        yield "demo_tokenizers", {}
    for m in models:
        yield "vocab", {"model": m}
    for m in demo_models:
        yield "demo_model", {"model": m}
    for m in models:
        if cfg["models"][m].get("distill"):
            yield "distill", {"model": m}
    for p in pairs(cfg):
        yield "translation", {"pair": p}
    for d in datasets:
        for m in models:
            for dec in decs:
                for k in shards:
                    yield "generate", {"dataset": d, "model": m, "decoding": dec, "shard": k}
        for p in pairs(cfg):
            for dec in decs:
                yield "score", {"dataset": d, "pair": p, "decoding": dec}
                for g in loop_gammas(cfg, dec):
                    for k in shards:
                        yield "speculative", {"dataset": d, "pair": p, "decoding": dec, "gamma": g, "shard": k}
                yield "timing", {"dataset": d, "pair": p, "decoding": dec}
    for j in ablation_jobs(cfg):
        yield "score_ablation", j
    yield "acceptance", {}
    yield "report", {}
    yield "report_html", {}
