"""Helpers for the tests that run the workflow through the real snakemake CLI.

Imported by tests/test_workflow.py, tests/test_faults.py and tests/test_slurm.py
(not a conftest: plain functions, imported by name).

- `tiny_config()`: .test/config.yaml, the demo shrunk so a whole run takes ~2 CPU-minutes.
- `copy_workflow(dest)`: a private copy of the workflow (a test may edit its modules).
- `snakemake(workdir, *args)`: the CLI in `workdir`, failing with its output tail.
- `shared_demo_run(tmp_path_factory)`: ONE complete local run of the tiny config per
  pytest session, whichever test file asks first. Tests that change files in it must
  restore them; tests that need to break things work on `clone_run(...)` instead.
- `artifact_table`, `summary_numbers`: artifact content without provenance metadata
  and without timing columns, for "same results" comparisons.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
WORKFLOW_PARTS = ("Snakefile", "rules", "schemas", "workflow_scripts", "profiles", "report")

# Columns that measure time or memory, or say what they were measured on, not results: excluded when
# runs are compared (the same results may come from another machine or thread count).
TIMING_COLUMNS = frozenset({
    "prefill_ms", "decode_ms", "peak_mem_mb",                    # tokens
    "draft_ms", "verify_ms", "target_only_ms",                  # rounds
    "device", "torch_threads",                                  # tokens, rounds: the timings' device
    "c", "c_lo", "c_hi", "expected_speedup_iid", "latency_speedup",  # summary.csv: from the measured cost ratio
    "best_gamma", "best_gamma_lo", "best_gamma_hi",
    "loop_ms", "measured_speedup",
    # the paired timing job (timing.py): its table's timings, and every summary column taken or predicted from it
    "ms", "forward_ms", "dtype", "measured_speedup_lo", "measured_speedup_hi", "verify_cost", "verify_cost_lo",
    "verify_cost_hi", "round_overhead_ms", "round_overhead_ms_lo", "round_overhead_ms_hi", "predicted_speedup",
    "predicted_speedup_overlapped", "predicted_speedup_steady", "free_draft_tokens", "break_even_alpha",
})


def tiny_config() -> dict:
    """The committed smoke-test config, .test/config.yaml (a fresh dict each call)."""
    return yaml.safe_load((REPO / ".test" / "config.yaml").read_text())


def copy_workflow(dest: Path) -> Path:
    """A private copy of the workflow, so a test may touch its package modules."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / part)
    return dest


def job_env(workdir: Path) -> dict[str, str]:
    """The environment for a private copy: its jobs import the COPY's package.

    `specalign` is installed in editable mode pointing at the repository, so without
    PYTHONPATH a job script in a copy would import the repository's modules, not the
    copy's (a test editing its copy would test nothing, and a concurrent edit of the
    repository would leak into the run)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    pkg = str(Path(workdir).resolve() / "workflow_scripts")
    env["PYTHONPATH"] = os.pathsep.join([pkg] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def snakemake(workdir: Path, *args: str, check: bool = True, cores: str = "2",
              timeout: float = 1500) -> subprocess.CompletedProcess:
    env = job_env(workdir)
    proc = subprocess.run([SNAKEMAKE, "--cores", cores, *args], cwd=workdir, capture_output=True, text=True,
                          env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def write_config(workdir: Path, cfg: dict) -> None:
    (Path(workdir) / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run (its 'Job stats' table); `args` go to snakemake."""
    out = snakemake(workdir, "-n", *args).stdout
    if "Nothing to be done" in out:
        return {}
    return parse_job_stats(out)


def parse_job_stats(out: str) -> dict[str, int]:
    """Rule -> job count from snakemake's 'Job stats' table (also used by bench/cpu_bench.py)."""
    counts, in_table = {}, False
    for line in out.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
                counts[parts[0]] = int(parts[1])
            elif parts and parts[0] == "total":
                break
    return counts


_SHARED: dict[str, Path] = {}


def shared_demo_run(tmp_path_factory) -> Path:
    """The complete local run of `tiny_config()`, built once per pytest session."""
    if "run" not in _SHARED:
        wd = copy_workflow(tmp_path_factory.mktemp("shared_run"))
        write_config(wd, tiny_config())
        snakemake(wd)
        _SHARED["run"] = wd
    return _SHARED["run"]


def clone_run(run: Path, dest: Path) -> Path:
    """A copy of a finished run (workflow, config, results, logs, .snakemake metadata, mtimes kept).
    Run snakemake in it with `*CLONE_TRIGGERS` first: then it sees the copy as complete, so a
    test can break and rerun parts of it cheaply."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for item in Path(run).iterdir():
        if item.name == ".snakemake":
            shutil.copytree(item, dest / item.name, symlinks=True,
                            ignore=shutil.ignore_patterns("locks", "incomplete", "log", "auxiliary"))
        elif item.is_dir():
            shutil.copytree(item, dest / item.name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(item, dest / item.name)
    return dest


# Rerun triggers for a clone: all of Snakemake's but "input" (the module inputs are relative paths
# now, rules/common.smk `pkg`, so "input" would also hold; kept narrow so a clone never reruns for
# a reason unrelated to the fault a test injects); mtime, params and code are still checked.
CLONE_TRIGGERS = ("--rerun-triggers", "mtime", "params", "software-env", "code")


def artifact_table(path: Path, drop=TIMING_COLUMNS) -> pa.Table:
    """A Parquet artifact's content: no schema metadata, no timing columns."""
    tbl = pq.read_table(path)
    tbl = tbl.drop_columns([c for c in tbl.column_names if c in drop])
    return tbl.replace_schema_metadata(None)


def summary_numbers(path: Path):
    """summary.csv without timing-derived columns (a polars DataFrame)."""
    import polars as pl

    df = pl.read_csv(path)
    return df.select([c for c in df.columns if c not in TIMING_COLUMNS])
