# Helpers shared by the rules. No rule lives here.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

from specalign.config import (  # noqa: E402
    canonical,
    check_references,
    dataset_root,
    model_path,
    model_spec_dict,
    tokenizer_path,
    write_fingerprint,
)

check_references(config)

# Relative to the working directory, so a run moved together with its workflow is still complete.
PKG = Path(os.path.relpath(Path(workflow.basedir) / "workflow_scripts" / "specalign"))
FP = "results/.fingerprints"

DATASETS = sorted(config["datasets"])
MODELS = sorted(config["models"])
DECODINGS = sorted(config["decodings"])
PAIRS = [f"{p['draft']}__{p['target']}" for p in config["pairs"]]
SHARDS = list(range(config["shards"]))


wildcard_constraints:
    dataset="|".join(DATASETS),
    model="|".join(MODELS),
    decoding="|".join(DECODINGS),
    pair="|".join(PAIRS),
    shard=r"\d+",
    gamma=r"\d+",


def _module_file(dotted):
    """specalign.a.b -> its file under PKG (module or package), or None."""
    parts = dotted.split(".")[1:]
    for cand in (PKG.joinpath(*parts).with_suffix(".py") if parts else None, PKG.joinpath(*parts, "__init__.py")):
        if cand is not None and cand.exists():
            return cand
    return None


def script_modules(script):
    """The package modules a rule script imports, transitively, lazy imports included.

    Snakemake reruns a job when its script changes but not when a module the script imports
    does, so these files are the job's inputs (relative paths: a moved run stays complete)."""
    import ast

    found, todo = set(), [Path(workflow.basedir) / "workflow_scripts" / script]
    while todo:
        path = todo.pop()
        here = ["specalign", *path.relative_to(PKG).with_suffix("").parts[:-1]] if path.is_relative_to(PKG) else []
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "specalign"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1])
                    mod = f"{base}.{node.module}" if node.module else base
                elif node.module and node.module.split(".")[0] == "specalign":
                    mod = node.module
                else:
                    continue
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]  # `from pkg import module`
            for name in names:
                f = _module_file(name)
                if f is not None and f not in found:
                    found.add(f)
                    todo.append(f)
    return sorted(str(f) for f in found)


def pair_models(pair):
    draft, target = pair.split("__")
    return draft, target


def eval_datasets():
    """Datasets the pairs are evaluated on: every configured dataset except a demo that only trains."""
    return DATASETS


# ---- per-stage fingerprints (written at parse time, only when changed) ----
def fp(stage, key, obj):
    return str(write_fingerprint(f"{FP}/{stage}/{key}.json", obj))


def _model_fp(name):
    return model_spec_dict(config, name)


for _d in DATASETS:
    _ds = config["datasets"][_d]
    if _ds["kind"] == "demo":
        fp("demo_data", _d, _ds["demo"])
    fp("manifest", _d, {"instructions": _ds["instructions"], "split": _ds["split"],
                        "root": dataset_root(config, _d), "questions": config["questions"],
                        "skip_bad_samples": config["skip_bad_samples"]})
fp("demo_tokenizers", "demo", {"vocab_size": config["demo_training"]["vocab_size"],
                               "questions": config["questions"]})
for _m in MODELS:
    fp("vocab", _m, {"tokenizer": tokenizer_path(config, _m)})
    if config["models"][_m].get("demo"):
        fp("demo_model", _m, {"training": config["demo_training"], "model": _model_fp(_m),
                              "role": config["models"][_m]["demo"]})
    for _dec in DECODINGS:
        fp("generate", f"{_m}.{_dec}", {"model": _model_fp(_m), "decoding": config["decodings"][_dec],
                                        "shards": config["shards"]})
for _p in PAIRS:
    _dr, _tg = pair_models(_p)
    fp("translation", _p, {"texts": config["translation_test_texts"],
                           "draft": tokenizer_path(config, _dr), "target": tokenizer_path(config, _tg)})
    for _dec in DECODINGS:
        fp("score", f"{_p}.{_dec}", {"draft": _model_fp(_dr), "target": _model_fp(_tg),
                                     "decoding": config["decodings"][_dec]})
fp("acceptance", "all", {"gammas": config["gammas"], "bootstrap": config["bootstrap"],
                         "speculative": config["speculative"]})


# ---- input helpers ----
def dataset_inputs(dataset):
    """What a dataset's manifest is built from: the demo folder the workflow writes, or real files."""
    ds = config["datasets"][dataset]
    root = dataset_root(config, dataset)
    if ds["kind"] == "demo":
        return [root]
    return [str(Path(root) / ds["instructions"])]


def model_inputs(name):
    """A demo model's checkpoint is a workflow output; a real checkpoint is read where it is."""
    return [model_path(config, name)] if config["models"][name].get("demo") else []


def tokenizer_inputs(name):
    m = config["models"][name]
    return [tokenizer_path(config, name)] if m.get("demo") else []


def model_json(name):
    return canonical(model_spec_dict(config, name))


def gpu_of(*names):
    return int(any(config["models"][n].get("gpu") for n in names))


def shard_files(dataset, model, decoding):
    return [f"results/generate/{dataset}/{model}/{decoding}/shard{k}.parquet" for k in SHARDS]


def all_outputs():
    out = ["results/acceptance/summary.csv", "results/report.md"]
    for d in DATASETS:
        out.append(f"results/data/{d}/manifest.parquet")
    for m in MODELS:
        out.append(f"results/vocab/{m}.parquet")
    for p in PAIRS:
        out.append(f"results/translation/{p}.parquet")
    return out


def acceptance_runs(wildcards=None):
    """One entry per dataset x pair x decoding: where its artifacts are."""
    runs = []
    for d in DATASETS:
        for p in PAIRS:
            draft, target = pair_models(p)
            for dec in DECODINGS:
                runs.append({
                    "dataset": d, "pair": p, "draft": draft, "target": target, "decoding": dec,
                    "scores": f"results/score/{d}/{p}/{dec}.parquet",
                    "translation": f"results/translation/{p}.parquet",
                    "target_vocab": f"results/vocab/{target}.parquet",
                    "draft_tokens": shard_files(d, draft, dec),
                    "target_tokens": shard_files(d, target, dec),
                    "rounds": [f"results/speculative/{d}/{p}/{dec}/g{g}/shard{k}.parquet"
                               for g in config["speculative"]["gammas"] for k in SHARDS]
                    if dec in config["speculative"]["decodings"] else [],
                })
    return runs


def acceptance_inputs(wildcards):
    files = {"scores": [], "tokens": [], "rounds": [], "translation": []}
    for r in acceptance_runs():
        files["scores"].append(r["scores"])
        files["translation"].append(r["translation"])
        files["tokens"] += r["draft_tokens"] + r["target_tokens"]
        files["rounds"] += r["rounds"]
    files["tokens"] = sorted(set(files["tokens"]))
    files["translation"] = sorted(set(files["translation"]))
    return files
