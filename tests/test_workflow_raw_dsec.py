"""Raw DSEC sequences through the whole workflow: one config entry, one clip dataset per duration.

A copy of the session's demo run gets a `dsec_raw` dataset (two sequences in the raw DSEC
layout written by tests/test_dsec_raw.py's writer: one train, one test) with durations
[1000, 2000] ms. The dry run plans exactly the new datasets' jobs (the demo's trained models
and streams are reused); the run builds both clip datasets and measures both in summary.csv;
adding a third duration then plans only that duration's jobs.
"""
from __future__ import annotations

import polars as pl
import pytest
from test_dsec_raw import EVENT_GAP, _events, _image_times, write_raw_sequence
from workflow_helpers import (
    CLONE_TRIGGERS,
    clone_run,
    planned_jobs,
    shared_demo_run,
    snakemake,
    tiny_config,
    write_config,
)

pytestmark = pytest.mark.slow

# score_ablation: .test/config.yaml's two greedy ablations (blank events, the mean frame) of the one pair
PER_DATASET = {"build_clips": 1, "manifest": 1, "generate": 8, "score": 2, "speculative": 8, "timing": 2,
               "score_ablation": 2}


def jobs_for(n_datasets: int) -> dict[str, int]:
    out = {rule: n * n_datasets for rule, n in PER_DATASET.items()}
    out.update(acceptance=1, report=1, report_html=1, all=1)
    return out


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory):
    wd = clone_run(shared_demo_run(tmp_path_factory), tmp_path_factory.mktemp("raw_run"))
    raw = wd / "raw_dsec"
    write_raw_sequence(raw, "seq_train", _image_times(), _events(1))
    write_raw_sequence(raw, "seq_test", _image_times(), _events(2, EVENT_GAP))
    cfg = tiny_config()
    cfg["datasets"]["dsec"] = {"kind": "dsec_raw", "root": str(raw), "split": "test",
                               "sequences": {"seq_train": "train", "seq_test": "test"}, "durations_ms": [1000, 2000]}
    write_config(wd, cfg)
    return wd, cfg


def test_durations_are_datasets_and_only_new_ones_are_built(raw_run):
    wd, cfg = raw_run
    assert planned_jobs(wd, *CLONE_TRIGGERS) == jobs_for(2)
    snakemake(wd, *CLONE_TRIGGERS)
    summary = pl.read_csv(wd / "results/acceptance/summary.csv")
    assert set(summary["dataset"]) == {"demo", "dsec_1000ms", "dsec_2000ms"}
    for d, clips in (("dsec_1000ms", 1000), ("dsec_2000ms", 2000)):
        manifest = pl.read_parquet(wd / f"results/data/{d}/manifest.parquet")
        # the test split is the test sequence only, and every clip is that long (events span it)
        assert manifest.height > 0 and manifest["split"].unique().to_list() == ["test"]
        assert manifest["sample_id"].str.starts_with("seq_test/").all()
        assert (manifest["duration_ms"] <= clips).all()
        rows = summary.filter(pl.col("dataset") == d)
        assert (rows["n_samples"] == manifest.height).all()
    errors = pl.read_parquet(wd / "results/clips/dsec_1000ms.errors.parquet")
    # seq_test has no events in EVENT_GAP: its 1 s windows inside the gap are errors, not clips
    assert errors.height > 0 and errors["sample_id"].str.starts_with("seq_test/").all()
    assert errors["error"].str.contains("event").all()
    cfg["datasets"]["dsec"]["durations_ms"] = [1000, 2000, 500]
    write_config(wd, cfg)
    assert planned_jobs(wd, *CLONE_TRIGGERS) == jobs_for(1)
