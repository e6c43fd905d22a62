# Helpers shared by the rules. No rule lives here.
#
# Each job's spec (what it reads of the config, resolved) comes from one pure function,
# specalign.stages.spec: it is written as the job's fingerprint (an input, so the job reruns
# exactly when its spec changes) and passed as the rule's one param, `job`.
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

from specalign import grounding  # noqa: E402
from specalign import plan as resource_plan  # noqa: E402
from specalign import stages  # noqa: E402
from specalign.config import (  # noqa: E402
    CLIPS,
    check_references,
    checkpoint_model,
    dataset_root,
    expand_datasets,
    model_path,
    tokenizer_path,
    write_fingerprint,
)

check_references(config)
expand_datasets(config)  # a dsec_raw dataset becomes one clip dataset per duration

# Relative to the working directory, so a run moved together with its workflow is still complete.
PKG = Path(os.path.relpath(Path(workflow.basedir) / "workflow_scripts" / "specalign"))

DATASETS = sorted(config["datasets"])
EVALUATED = stages.evaluated(
    config
)  # DATASETS less those only a distillation trains on
MODELS = sorted(config["models"])
DECODINGS = sorted(config["decodings"])
PAIRS = stages.pairs(config)
# input ablations (specalign.ablations): validated here, so a kind the side's model cannot take stops
# the workflow before anything runs, naming the config key
ABLATIONS = sorted(stages.ablations.configured(config))
# the ablations `grounding:` names (specalign.grounding): checked here too, the error naming the key
grounding.spec_entry(config)


wildcard_constraints:
    dataset="|".join(DATASETS),
    model="|".join(MODELS),
    decoding="|".join(DECODINGS),
    pair="|".join(PAIRS),
    ablation="|".join(ABLATIONS) or "(?!)",  # (?!) matches nothing: no ablation configured
    shard=r"\d+",
    gamma=r"\d+",


# ---- job specs: written at parse time (only when changed), one param per rule
for _stage, _w in stages.all_jobs(config):
    write_fingerprint(
        stages.fingerprint_path(_stage, **_w), stages.spec(config, _stage, **_w)
    )


# ---- the resource plan (specalign.plan): each job's predicted peak memory from its checkpoints'
# config.json; a job beyond gpu_memory_gb stops the workflow here, before anything runs.
PLAN = resource_plan.plan_jobs(config)
resource_plan.check(PLAN, config["gpu_memory_gb"])


def plan_mem_mb(stage):
    """A rule's mem_mb: its job's planned host memory with headroom (what sbatch --mem asks for)."""
    return lambda w: resource_plan.mem_mb(PLAN, stage, dict(w.items()))


def fingerprint(stage):
    return stages.fingerprint_pattern(stage)


def job_spec(stage):
    """The `job` param of a rule: its jobs' specs (read by jobs.start in the script)."""
    return lambda w: stages.spec(config, stage, **dict(w.items()))


# ---- code inputs
def _module_file(dotted):
    """specalign.a.b -> its file under PKG (module or package), or None."""
    parts = dotted.split(".")[1:]
    for cand in (
        PKG.joinpath(*parts).with_suffix(".py") if parts else None,
        PKG.joinpath(*parts, "__init__.py"),
    ):
        if cand is not None and cand.exists():
            return cand
    return None


def script_modules(script):
    """The package modules a rule script imports, transitively, lazy imports included.

    Snakemake reruns a job when its script changes but not when a module the script imports
    does, so these files are the job's inputs (relative paths: a moved run stays complete).
    """
    import ast

    found, todo = set(), [Path(workflow.basedir) / "workflow_scripts" / script]
    while todo:
        path = todo.pop()
        here = (
            ["specalign", *path.relative_to(PKG).with_suffix("").parts[:-1]]
            if path.is_relative_to(PKG)
            else []
        )
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [
                    a.name for a in node.names if a.name.split(".")[0] == "specalign"
                ]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1])
                    mod = f"{base}.{node.module}" if node.module else base
                elif node.module and node.module.split(".")[0] == "specalign":
                    mod = node.module
                else:
                    continue
                names = [mod] + [
                    f"{mod}.{a.name}" for a in node.names
                ]  # `from pkg import module`
            for name in names:
                f = _module_file(name)
                if f is not None and f not in found:
                    found.add(f)
                    todo.append(f)
    return sorted(str(f) for f in found)


# ---- input helpers
def pair_models(pair):
    return stages.pair_models(pair)


def dataset_inputs(dataset):
    """What a dataset's manifest is built from: the demo folder the workflow writes, or real files."""
    ds = config["datasets"][dataset]
    root = dataset_root(config, dataset)
    if ds["kind"] in ("demo", CLIPS):
        return [root]
    return [str(Path(root) / ds["instructions"])]


def clip_datasets():
    """The folders of the datasets cut from raw DSEC sequences (each holds build_summary.json)."""
    return [
        dataset_root(config, d)
        for d in EVALUATED
        if config["datasets"][d]["kind"] == CLIPS
    ]


def raw_inputs(wildcards):
    """The raw DSEC files a clip dataset is cut from (so a changed sequence rebuilds it)."""
    ds = config["datasets"][wildcards.dataset]
    files = ["events/left/events.h5", "images/timestamps.txt"]
    return [
        str(Path(ds["raw_root"]) / seq / f)
        for seq in sorted(ds["sequences"])
        for f in files
    ]


def demo_training_inputs(wildcards=None):
    return dataset_inputs(config["demo_training"]["dataset"])


def model_inputs(name):
    """A checkpoint the workflow writes (a demo or distilled model, or the base of a draft made
    from one) is an input; a real checkpoint is read where it is."""
    own = config["models"][checkpoint_model(config, name)]
    return [model_path(config, name)] if own.get("demo") or own.get("distill") else []


def tokenizer_inputs(name):
    own = config["models"][checkpoint_model(config, name)]
    if own.get("distill"):
        return tokenizer_inputs(own["distill"]["draft"])
    return [tokenizer_path(config, name)] if own.get("demo") else []


def distill_models(name):
    d = config["models"][name]["distill"]
    return d["draft"], d["target"]


def distill_inputs(wildcards):
    """A distillation reads its draft and target checkpoints, the train dataset, and every
    evaluated manifest (to prove that no trained clip is evaluated)."""
    d = config["models"][wildcards.model]["distill"]
    return {
        "draft": model_inputs(d["draft"]),
        "target": model_inputs(d["target"]),
        "data": dataset_inputs(d["dataset"]),
        "manifests": [f"results/data/{ds}/manifest.parquet" for ds in EVALUATED],
    }


def gpu_of(*names):
    return int(any(config["models"][n].get("gpu") for n in names))


def pair_gpu(wildcards):
    return gpu_of(*pair_models(wildcards.pair))


def pair_model_inputs(wildcards):
    draft, target = pair_models(wildcards.pair)
    return {"draft": model_inputs(draft), "target": model_inputs(target)}


def pair_tokenizer_inputs(wildcards):
    draft, target = pair_models(wildcards.pair)
    return {"draft": tokenizer_inputs(draft), "target": tokenizer_inputs(target)}


def target_tokens(wildcards):
    return stages.shard_files(
        config, wildcards.dataset, pair_models(wildcards.pair)[1], wildcards.decoding
    )


def all_outputs():
    out = ["results/acceptance/summary.csv", "results/report.md"]
    # the exported acceptance profiles (rule acceptance)
    out += ["results/acceptance/profiles"]
    out += ["results/report/index.html"]  # with its plots (rule report_html)
    out += [f"results/data/{d}/manifest.parquet" for d in EVALUATED]
    out += [f"results/vocab/{m}.parquet" for m in MODELS]
    out += [f"results/translation/{p}.parquet" for p in PAIRS]
    return out


def acceptance_inputs(wildcards):
    """Every artifact the tables read (stages.runs says which belongs to which run)."""
    runs = stages.runs(config)
    return {
        "scores": [r.scores for r in runs],
        "translation": sorted({r.translation for r in runs}),
        "tokens": sorted({f for r in runs for f in r.draft_tokens + r.target_tokens}),
        "rounds": [f for r in runs for f in r.rounds],
        # the paired timing job of each run: every cost ratio of the tables (timing.py)
        "timing": [r.timing for r in runs],
        # the input ablations' scores (stages.ablation_runs), measured like any run
        "ablation_scores": [r.scores for r in stages.ablation_runs(config)],
    }
