"""The tiny demo workflow on a real SLURM controller (`bash .ci/slurm.sh start`).

The user-facing profile `profiles/slurm` is used as it is; only what a 2-CPU, 4 GB test
node cannot grant is overridden on the command line (CI_OVERRIDES): memory, CPUs and
run time per job, fewer jobs at once, no retries, faster first status poll. One demo
model is marked `gpu: true`, so its jobs ask SLURM for one of the node's two fake GPUs
(the computation itself stays on the CPU: `device` is not changed).

Checks: the run completes; every job was submitted with sbatch and ran under the SLURM
job id it was submitted with (each rule log records SLURM_JOB_ID); GPU jobs were
submitted with --gpus=1 and got CUDA_VISIBLE_DEVICES, the others with no --gpus at all;
and every result equals the session's local run (tests/workflow_helpers.py):
manifest, vocabularies, translation, token streams, scores, loop rounds (timing
columns and Parquet metadata aside) and summary.csv's numbers.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from workflow_helpers import (
    artifact_table,
    copy_workflow,
    shared_demo_run,
    snakemake,
    summary_numbers,
    tiny_config,
    write_config,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

GPU_MODEL = "demo_draft"
GPU_RULES = {"generate", "score", "speculative", "timing"}   # rules whose resources come from `gpu_of`
RULES_WITH_JOBS = {"demo_data", "manifest", "demo_tokenizers", "vocab", "translation", "demo_model", "generate",
                   "score", "score_ablation", "speculative", "timing", "acceptance", "report", "report_html"}
SMALL = {"mem_mb": 800, "cpus_per_task": 1, "runtime": 15}
CI_OVERRIDES = [
    "--jobs", "4",                                   # the node has 2 CPUs: SLURM queues the rest
    "--retries", "0",                                # a failure here is a bug, not a preemption
    "--latency-wait", "5",                           # one node: outputs are visible at once
    "--slurm-init-seconds-before-status-checks", "2",
    "--verbose",                                     # prints each sbatch call (checked below)
    "--default-resources", "slurm_partition=debug", "gpu=0",
    *[f"{k}={v}" for k, v in SMALL.items()],
    "--set-resources",                               # replaces the rules' planned memory and the profile's CPUs
    *[f"{rule}:{k}={v}" for rule in sorted(RULES_WITH_JOBS) for k, v in SMALL.items()],
]


def _cluster_problem() -> str | None:
    """Why the SLURM tests cannot run here, or None."""
    for tool in ("sinfo", "sbatch", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            return f"{tool} not found: no SLURM client here (CI starts a one-node cluster: bash .ci/slurm.sh start)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
        nodes = subprocess.run(["sinfo", "-h", "-p", "debug", "-o", "%T %G"], capture_output=True, text=True,
                               timeout=20)
    except subprocess.TimeoutExpired:
        return "scontrol ping / sinfo timed out: the SLURM controller is not answering"
    if "UP" not in ping.stdout:
        return f"SLURM controller not up (scontrol ping: {(ping.stdout + ping.stderr).strip().splitlines()[:1]})"
    states = nodes.stdout.split()
    if not states or not states[0].startswith(("idle", "mixed", "allocated")):
        return f"no usable node in partition debug (sinfo: {(nodes.stdout + nodes.stderr).strip()!r})"
    if "gpu" not in nodes.stdout:
        return f"partition debug has no GPU gres (sinfo: {nodes.stdout.strip()!r}); see .ci/slurm.sh"
    return None


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)
    wd = copy_workflow(tmp_path_factory.mktemp("slurm_run"))
    cfg = tiny_config()
    cfg["models"][GPU_MODEL]["gpu"] = True  # scheduling only: the model still runs on its `device` (cpu)
    write_config(wd, cfg)
    proc = snakemake(wd, "--workflow-profile", "profiles/slurm", *CI_OVERRIDES, timeout=900)
    (wd / "snakemake.out").write_text(proc.stdout + proc.stderr)
    return wd, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    return shared_demo_run(tmp_path_factory)


def _submissions(output: str) -> dict[str, tuple[str, str]]:
    """SLURM job id -> (rule, sbatch call), from the executor's --verbose output.

    A call's `--output .../rule_X/WILDCARDS/%j.log` and the submission line's
    `(log: .../rule_X/WILDCARDS/<id>.log)` pair them up."""
    calls = {}
    for call in re.findall(r"sbatch call: (sbatch .*)", output):
        log = re.search(r"--output '?(\S+?/%j\.log)'?\s", call)
        assert log, call
        calls[log.group(1)] = call
    out = {}
    for jobid, log in re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", output):
        key = str(Path(log).parent / "%j.log")
        match = [c for k, c in calls.items() if k == key or k.endswith("/" + key) or key.endswith("/" + k)]
        assert len(match) == 1, (log, list(calls)[:3])
        rule = re.search(r"/rule_([a-z_]+)/", key)
        assert rule, key
        out[jobid] = (rule.group(1), match[0])
    assert out and len(out) == len(calls), (len(out), len(calls))
    return out


def _rule_logs(wd: Path) -> dict[Path, str]:
    return {p: p.read_text() for p in (wd / "logs").rglob("*.log")}


def test_every_job_ran_under_slurm(slurm_run):
    wd, output = slurm_run
    subs = _submissions(output)
    rules = {rule for rule, _ in subs.values()}
    assert rules == RULES_WITH_JOBS, rules
    # every job but `all` (2 of them timing: 1 pair x 2 decodings; 2 input ablations, greedy), none twice (no
    # retries, no resubmission)
    assert len(subs) == 33
    seen = {}
    for path, text in _rule_logs(wd).items():
        m = re.search(r"SLURM_JOB_ID=(\d+) SLURM_JOB_NODELIST=(\S*) CUDA_VISIBLE_DEVICES=(\S*)", text)
        assert m, f"{path} does not say it ran under SLURM:\n{text[:500]}"
        seen[path] = m.groups()
    assert len(seen) == len(subs)
    assert {jobid for jobid, _, _ in seen.values()} == set(subs), "a log names a job id that was not submitted"
    assert {node for _, node, _ in seen.values()} == {"localhost"}


def _wants_gpu(log: Path) -> bool:
    """From a rule log's path (logs/{rule}/{dataset}/{model or pair}/...): does the job run GPU_MODEL?"""
    parts = log.parts
    return parts[0] in GPU_RULES and GPU_MODEL in parts[2].split("__")


def test_gpu_jobs_ask_for_a_gpu_and_get_one(slurm_run):
    wd, output = slurm_run
    subs = _submissions(output)
    n_gpu = 0
    for path, text in _rule_logs(wd).items():
        jobid, _, cvd = re.search(r"SLURM_JOB_ID=(\d+) SLURM_JOB_NODELIST=(\S*) CUDA_VISIBLE_DEVICES=(\S*)",
                                  text).groups()
        rule, call = subs[jobid]
        gpus = re.findall(r"--gpus=(\S+)", call)
        if _wants_gpu(path.relative_to(wd / "logs")):
            n_gpu += 1
            assert gpus == ["1"], f"{path}: {call}"
            assert cvd in ("0", "1"), f"{path}: GPU job without a (fake) GPU: CUDA_VISIBLE_DEVICES={cvd!r}"
        else:
            assert gpus == [], f"{path}: a job without a GPU was submitted with --gpus: {call}"
            assert cvd == "", f"{path}: CPU job got CUDA_VISIBLE_DEVICES={cvd!r}"
    # the draft: 2 decodings x 2 shards of generation, 2 scorings, 2 decodings x 2 loop gammas x 2 shards,
    # the 2 ablation scorings (logs/score/.../greedy.{ablation}.log) and the 2 paired timing jobs (one per decoding)
    assert n_gpu == 4 + 2 + 8 + 2 + 2


def _parquets(run: Path) -> list[Path]:
    res = run / "results"
    return sorted(p.relative_to(run) for p in res.rglob("*.parquet")
                  if not p.relative_to(res).parts[0].startswith((".", "demo_models", "demo_tokenizers")))


def test_results_equal_the_local_run(slurm_run, local_run):
    wd, _ = slurm_run
    files = _parquets(local_run)
    assert files == _parquets(wd)
    kinds = {p.parts[1] for p in files}
    assert {"data", "vocab", "translation", "generate", "score", "speculative"} <= kinds, kinds
    for rel in files:
        ours, theirs = artifact_table(wd / rel), artifact_table(local_run / rel)
        assert ours.schema == theirs.schema, rel
        assert ours.equals(theirs), f"{rel}: the SLURM run differs from the local run"
    ours, theirs = summary_numbers(wd / "results/acceptance/summary.csv"), \
        summary_numbers(local_run / "results/acceptance/summary.csv")
    assert ours.columns == theirs.columns
    assert ours.equals(theirs, null_equal=True), pl.concat([ours, theirs], how="vertical")
