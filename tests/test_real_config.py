"""config/real_models.yaml plans the real 7B run: a dry run through the snakemake CLI.

The 7B checkpoints are not inputs of the DAG (nothing model-related is a file the
workflow tracks, except demo models), so the dry run must succeed with every model
path pointing at a directory that does not exist. The dataset is a tiny folder in the
DSEC layout (the demo generator writes exactly that layout), with the instruction
JSON renamed to the real builds' name and every entry's "split" set to the folder
name, as the real builds do.

Everything runs in a private copy of the workflow in a temporary directory.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from workflow_helpers import copy_workflow

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
REAL_CONFIG = REPO / "config" / "real_models.yaml"
GPU_RULES = ("generate", "score", "score_ablation", "speculative", "timing", "distill")
DEMO_RULES = ("demo_data", "demo_tokenizers", "demo_model")
# The command README.md "Running on the real models" gives (plus -n and the profile).
CLI = ("--configfile", "config/real_models.yaml")


def real_config() -> dict:
    return yaml.safe_load(REAL_CONFIG.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A private workflow copy whose config/real_models.yaml points at a tiny DSEC-layout folder
    and at model directories that do not exist."""
    from specalign.demo_data import DemoSpec, build_demo_dataset

    wd = copy_workflow(tmp_path_factory.mktemp("real"))
    cfg = real_config()
    for ds in cfg["datasets"].values():
        root = wd / "data" / Path(ds["root"]).name       # e.g. .../my_egpt_dsec_seq_1s
        build_demo_dataset(root, DemoSpec(n_train=1, n_test=2, size=16, frames=4))
        entries = json.loads((root / "instructions.json").read_text())
        for e in entries:                                 # the real builds: split = the folder name
            e["split"] = root.name
        (root / "instructions.json").unlink()
        (root / ds["instructions"]).write_text(json.dumps(entries))
        ds["root"] = str(root)
    for m in cfg["models"].values():
        if m.get("path"):                                 # drafts made from a model have no checkpoint of their own
            m["path"] = str(wd / "absent" / Path(m["path"]).name)
            assert not Path(m["path"]).exists()
    (wd / "config").mkdir()
    (wd / "config" / "real_models.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return wd


def run_snakemake(wd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([SNAKEMAKE, *args], cwd=wd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _items(line: str, key: str) -> dict[str, str]:
    return dict(i.strip().split("=", 1) for i in line.strip()[len(key):].split(", "))


def planned(stdout: str, with_wildcards: bool = False) -> list[tuple]:
    """(rule, resources) - or (rule, resources, wildcards) - of every job block of a dry run's output."""
    jobs, rule, wildcards = [], None, {}
    for line in stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            rule, wildcards = m.group(1), {}
        elif rule and line.strip().startswith("wildcards:"):
            wildcards = _items(line, "wildcards:")
        elif rule and line.strip().startswith("resources:"):
            res = _items(line, "resources:")
            jobs.append((rule, res, wildcards) if with_wildcards else (rule, res))
            rule = None
    return jobs


def expected_counts(cfg: dict) -> dict[str, int]:
    models = {m for p in cfg["pairs"] for m in (p["draft"], p["target"])}
    n_ds = sum(1 for d in cfg["datasets"].values() if d.get("evaluate", True))  # the train set is only trained on
    n_dec, n_pairs = len(cfg["decodings"]), len(cfg["pairs"])
    spec = cfg["speculative"]
    return {
        "manifest": n_ds,
        "vocab": len(cfg["models"]),
        "translation": n_pairs,
        "generate": n_ds * len(models) * n_dec * cfg["shards"],
        "score": n_ds * n_pairs * n_dec,
        # greedy: the loop is a check at greedy_gammas (default [4]); sampled: at every loop gamma
        "distill": sum(1 for m in cfg["models"].values() if m.get("distill")),
        "speculative": n_ds * n_pairs * cfg["shards"] * sum(
            len(spec.get("greedy_gammas", [4]) if not cfg["decodings"][d].get("do_sample") else spec["gammas"])
            for d in spec["decodings"]),
        "timing": n_ds * n_pairs * n_dec,   # the paired timing job: one per dataset x pair x decoding
        # an input ablation: one score job per pair whose draft (side draft) or target it names, per decoding
        "score_ablation": n_ds * sum(
            len(a.get("decodings") or cfg["decodings"]) * sum(
                1 for p in cfg["pairs"] if p["draft" if a["side"] == "draft" else "target"] in a["models"])
            for a in cfg.get("ablations", {}).values()),
        "acceptance": 1,
        "report": 1,
        "report_html": 1,
        "all": 1,
    }


def check_plan(stdout: str, cfg: dict) -> list[tuple[str, dict[str, str]]]:
    jobs = planned(stdout)
    counts: dict[str, int] = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    assert counts == expected_counts(cfg)
    assert not set(counts) & set(DEMO_RULES)
    for rule, res in jobs:
        assert res.get("gpu") == ("1" if rule in GPU_RULES else "0"), (rule, res)
    return jobs


def test_the_real_config_is_what_the_issue_asks_for():
    cfg = real_config()
    assert {n: d["kind"] for n, d in cfg["datasets"].items()} == {"dsec_1s": "dsec", "dsec_1s_train": "dsec"}
    test, train = cfg["datasets"]["dsec_1s"], cfg["datasets"]["dsec_1s_train"]
    assert test["split"] is None and train["split"] is None and test["root"] != train["root"]
    assert train["evaluate"] is False and "evaluate" not in test   # trained on only; the test set is measured
    assert len(cfg["questions"]) == 5
    assert {n: m["family"] for n, m in cfg["models"].items()} == {
        "eventgpt_7b": "eventgpt", "video_llava_7b": "video_llava", "llava15_7b": "llava",
        "eventgpt_7b_distilled": "eventgpt", "video_llava_7b_int8": "video_llava", "video_llava_7b_8l": "video_llava"}
    checkpoints = ("eventgpt_7b", "video_llava_7b", "llava15_7b")
    for name in checkpoints:
        m = cfg["models"][name]
        assert (m["dtype"], m["device"], m["gpu"]) == ("bfloat16", "cuda", True)
        assert "demo" not in m and Path(m["path"]).is_absolute()
    for name in set(cfg["models"]) - set(checkpoints):  # made from one: dtype, device and gpu are inherited
        assert not {"dtype", "device", "gpu", "path"} & set(cfg["models"][name]), name
    distill = cfg["models"]["eventgpt_7b_distilled"]["distill"]
    assert (distill["draft"], distill["target"], distill["dataset"]) == ("eventgpt_7b", "video_llava_7b",
                                                                         "dsec_1s_train")
    assert distill["split"] == Path(train["root"]).name and distill["lora_r"]  # the real builds' entry split
    assert cfg["models"]["video_llava_7b_int8"]["quantization"] == "int8_weight"  # CUDA, no extra needed
    assert cfg["models"]["video_llava_7b_8l"]["layers"] == 8
    assert [(p["draft"], p["target"]) for p in cfg["pairs"]] == [
        ("eventgpt_7b", "video_llava_7b"), ("eventgpt_7b", "llava15_7b"), ("video_llava_7b", "video_llava_7b"),
        ("eventgpt_7b_distilled", "video_llava_7b"), ("video_llava_7b_int8", "video_llava_7b"),
        ("video_llava_7b_8l", "video_llava_7b")]
    assert cfg["decodings"]["sampled"]["temperature"] == 0.6 and cfg["decodings"]["sampled"]["top_p"] == 1.0
    assert cfg["decodings"]["greedy"]["do_sample"] is False
    assert cfg["speculative"]["gammas"] == [1, 2, 4, 8]
    assert "greedy_gammas" not in cfg["speculative"]  # the schema default: the greedy check at gamma 4


def test_dry_run_default_profile(workdir):
    """The local command (profiles/default is picked up by itself): GPU stages ask for gpu=1."""
    proc = run_snakemake(workdir, "-n", "--cores", "2", *CLI)
    check_plan(proc.stdout, real_config())
    # The job specs the workflow wrote at parse time: the drafts made from a model run as it does.
    fp = workdir / "results" / ".fingerprints"
    read = lambda *parts: json.loads(fp.joinpath(*parts).read_text())  # noqa: E731
    for model in ("video_llava_7b_int8", "video_llava_7b_8l", "eventgpt_7b_distilled"):
        spec = read("generate", "dsec_1s", model, "greedy", "0.json")["model"]
        assert (spec["dtype"], spec["device"]) == ("bfloat16", "cuda"), (model, spec)
    distill = read("distill", "eventgpt_7b_distilled.json")
    for role in ("model", "draft", "target"):
        assert (distill[role]["dtype"], distill[role]["device"]) == ("bfloat16", "cuda"), role
    score = read("score", "dsec_1s", "video_llava_7b_int8__video_llava_7b", "sampled.json")
    assert score["draft"]["quantization"] == "int8_weight" and score["draft"]["device"] == "cuda"


def test_dry_run_slurm_profile(workdir):
    """The cluster command: the slurm executor plans (no cluster needed for -n) with the profile's resources."""
    from specalign import plan

    proc = run_snakemake(workdir, "-n", "--workflow-profile", "profiles/slurm", *CLI)
    check_plan(proc.stdout, real_config())
    # every job asks sbatch for the memory its resource plan predicts (the profile sets none)
    plans = plan.plan_jobs(plan.load_config(workdir / "config" / "real_models.yaml"))
    seen = set()
    for rule, res, wildcards in planned(proc.stdout, with_wildcards=True):
        if rule == "all":
            continue
        assert int(res["mem_mb"]) == plan.mem_mb(plans, rule, wildcards), (rule, wildcards, res)
        if rule in GPU_RULES:  # a 7B model: staged on the host
            assert int(res["mem_mb"]) > 8000 and int(res["cpus_per_task"]) >= 4, (rule, res)
            seen.add(rule)
    assert seen == set(GPU_RULES)
    # an ablation's job is its pair's score job with one input changed: the same plan
    for rule, res, wildcards in planned(proc.stdout, with_wildcards=True):
        if rule == "score_ablation":
            w = {k: v for k, v in wildcards.items() if k != "ablation"}
            a, b = plans[plan.job_key(rule, wildcards)], plans[plan.job_key("score", w)]
            assert (a.devices, a.host) == (b.devices, b.host), (wildcards, a, b)


def test_manifest_of_a_dsec_layout_folder(workdir):
    """The one stage that needs no model runs for real: the instruction file name, split null
    and the 5 questions select and label every clip."""
    cfg = real_config()
    name = "dsec_1s"
    # the target first: --configfile takes every word after it as a config file
    run_snakemake(workdir, f"results/data/{name}/manifest.parquet", "--cores", "1", *CLI)
    manifest = pl.read_parquet(workdir / f"results/data/{name}/manifest.parquet")
    assert manifest.height == 3
    assert set(manifest["question"]) <= set(cfg["questions"])
    assert not (workdir / "results" / "demo_data").exists()


def test_a_named_config_replaces_the_demo(workdir):
    """The Snakefile loads config.yaml only when no --configfile is given, so a named config is not
    merged into the demo's: no demo dataset or model is planned beside the real ones."""
    proc = run_snakemake(workdir, "-n", "--cores", "2", "--configfile", "config/real_models.yaml")
    rules = {rule for rule, _ in planned(proc.stdout)}
    assert "generate" in rules and not rules & {"demo_data", "demo_tokenizers", "demo_model"}


def _leaves(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        for i, v in enumerate(obj):
            yield from _leaves(v, prefix + (i,))
    else:
        yield prefix, obj


def test_readme_section_shows_this_config():
    """README "Running on the real models" shows the command and a key part of the config that is
    really in config/real_models.yaml (every value it shows)."""
    text = (REPO / "README.md").read_text()
    assert "## Running on the real models" in text
    section = text.split("## Running on the real models", 1)[1]
    assert "--configfile config/real_models.yaml --cores all" in section
    shown = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    cfg = real_config()
    for path, value in _leaves(shown):
        node = cfg
        for key in path:
            node = node[key]
        assert node == value, (path, value, node)
