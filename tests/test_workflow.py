"""The workflow through the real snakemake CLI on a tiny demo config.

One session-wide run (shared_demo_run) builds everything (demo clips, tokenizers, two trained tiny
models, generation, scoring, the real loop, acceptance, report); the tests check
every artifact's schema and the invariants, then use dry runs of config edits to
check that exactly the touched stages would rerun.
"""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from workflow_helpers import copy_workflow, planned_jobs, shared_demo_run, snakemake, tiny_config, write_config

from specalign.artifacts import SCHEMAS, SUMMARY_COLUMNS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The session's one local run of the tiny config (tests/workflow_helpers.py), shared with
    tests/test_faults.py and tests/test_slurm.py. Tests here that edit it restore it."""
    return shared_demo_run(tmp_path_factory)


def test_config_typo_names_the_key_and_runs_nothing(tmp_path):
    wd = copy_workflow(tmp_path)
    cfg = tiny_config()
    cfg["gamas"] = [1, 2]
    write_config(wd, cfg)
    proc = snakemake(wd, "-n", check=False)
    assert proc.returncode != 0
    assert "gamas" in proc.stdout + proc.stderr
    assert not (wd / "results" / "demo_data").exists()


def test_config_wrong_type_and_bad_reference_are_named(tmp_path):
    wd = copy_workflow(tmp_path)
    cfg = tiny_config()
    cfg["shards"] = "two"
    write_config(wd, cfg)
    proc = snakemake(wd, "-n", check=False)
    assert proc.returncode != 0 and "two" in proc.stdout + proc.stderr
    cfg = tiny_config()
    cfg["pairs"] = [{"draft": "no_such_model", "target": "demo_target"}]
    write_config(wd, cfg)
    proc = snakemake(wd, "-n", check=False)
    assert proc.returncode != 0 and "pairs[0].draft" in proc.stdout + proc.stderr


def _check_parquet(path: Path, name: str) -> pl.DataFrame:
    schema = pq.read_schema(path)
    assert schema.remove_metadata() == SCHEMAS[name], path
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert meta["specalign.artifact"] == name
    assert "torch" in json.loads(meta["specalign.versions"])
    return pl.read_parquet(path)


def test_every_artifact_has_its_schema(demo_run):
    res = demo_run / "results"
    manifest = _check_parquet(res / "data/demo/manifest.parquet", "manifest")
    assert manifest.height == 6 and manifest["split"].unique().to_list() == ["test"]
    assert _check_parquet(res / "data/demo/errors.parquet", "errors").height == 0
    for m in ("demo_target", "demo_draft"):
        _check_parquet(res / f"vocab/{m}.parquet", "vocab")
    _check_parquet(res / "translation/demo_draft__demo_target.parquet", "translation")
    for m in ("demo_target", "demo_draft"):
        for dec in ("greedy", "sampled"):
            shards = [_check_parquet(res / f"generate/demo/{m}/{dec}/shard{k}.parquet", "tokens") for k in (0, 1)]
            ids = [set(s["sample_id"].unique()) for s in shards]
            assert not ids[0] & ids[1], "a sample in two shards"
            assert ids[0] | ids[1] == set(manifest["sample_id"]), "a sample in no shard"
            for s in shards:
                per = s.group_by("sample_id").agg(pl.col("position").sort())
                for pos in per["position"]:
                    assert pos.to_list() == list(range(len(pos)))
    for dec in ("greedy", "sampled"):
        scores = _check_parquet(res / f"score/demo/demo_draft__demo_target/{dec}.parquet", "scores")
        assert scores["summin"].is_between(0, 1 + 1e-6).all()
        for g in (1, 3):
            for k in (0, 1):
                _check_parquet(res / f"speculative/demo/demo_draft__demo_target/{dec}/g{g}/shard{k}.parquet",
                               "rounds")
        # the paired timing job: 2 clips (timing.samples) x every kind, one device for the whole table
        t = _check_parquet(res / f"timing/demo/demo_draft__demo_target/{dec}.parquet", "timing")
        assert t["sample_id"].n_unique() == 2 and t["device"].n_unique() == 1
        assert set(t["kind"].unique()) == {"draft_prefill", "target_prefill", "draft_step", "target_step", "verify",
                                           "loop", "target_only"}
        assert sorted(t.filter(pl.col("kind") == "verify")["gamma"].unique()) == [1, 2, 3]
        assert sorted(t.filter(pl.col("kind") == "loop")["gamma"].unique()) == [1, 3]
    stats = json.loads((res / "translation/demo_draft__demo_target.stats.json").read_text())
    assert stats["target_added"] == ["<image>", "<video>", "<pad>"]
    assert stats["overlap_pct"] == 100.0 and stats["draft_only"] == 0


def test_summary_invariants(demo_run):
    s = pl.read_csv(demo_run / "results/acceptance/summary.csv")
    assert s.columns[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS
    assert s.height == 2 * 3  # decodings x gammas
    greedy = s.filter(pl.col("decoding") == "greedy")
    assert (greedy["method"] == "greedy_replay").all()
    for row in s.iter_rows(named=True):
        if row["method"] == "iid_from_alpha":  # nothing measured; the prediction is in iid_tau
            assert row["token_acceptance_rate"] is None and row["tau"] is None
            assert 1 <= row["iid_tau"] <= row["gamma"] + 1 + 1e-9
        else:
            assert 0 <= row["token_acceptance_rate"] <= 1
            assert 1 <= row["tau"] <= row["gamma"] + 1 + 1e-9
        assert 0 <= row["leviathan_alpha"] <= 1 and 0 <= row["positional_match_rate"] <= 1
        if row["drafted"] is not None:
            assert row["accepted"] <= row["drafted"]
        # every timing column from the run's one timing job, on one named device
        assert row["device"] and row["c_lo"] <= row["c"] <= row["c_hi"] and row["verify_cost"] > 0
        assert (row["measured_speedup"] is not None) == (row["gamma"] in (1, 3))   # the loop timed at 1, 3
        if row["method"] != "iid_from_alpha":     # measured rounds: the cost model's prediction exists
            assert row["predicted_speedup"] > 0


def test_loop_agrees_with_replay_exactly(demo_run):
    loop = pl.read_csv(demo_run / "results/acceptance/loop_vs_replay.csv")
    greedy = loop.filter(pl.col("decoding") == "greedy")
    assert greedy.height == 2
    assert greedy["rounds_identical"].all(), greedy
    assert greedy["output_equals_target"].all(), greedy
    assert (greedy["loop_accepted"] == greedy["replay_accepted"]).all()
    report = (demo_run / "results/report.md").read_text()
    assert "positional_match_rate" in report and "Where and why" in report
    # the measured payoff per deployment: a row per run x timed gamma (1, 3), each with its verdict
    section = report.split("## Does the draft pay off: measured in one job")[1].split("\n#")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| demo |")]
    assert len(rows) == 2 * 2 and sum("chain, gamma 1" in r for r in rows) == 2, section
    assert all(any(w in r for w in ("pays off", "does not pay off", "cannot tell")) for r in rows)


def test_histograms_and_profiles(demo_run):
    import yaml
    from jsonschema import validate

    acc = demo_run / "results/acceptance"
    s = pl.read_csv(acc / "summary.csv")
    h = pl.read_csv(acc / "histograms.csv")
    # each replay row's histogram sums to its rounds and reproduces its accepted count
    replay = s.filter(pl.col("method") == "greedy_replay")
    per = (h.filter(pl.col("method") == "greedy_replay").group_by("decoding", "gamma")
           .agg(pl.col("rounds").sum().alias("h_rounds"), (pl.col("accepted") * pl.col("rounds")).sum().alias("h_acc")))
    j = replay.join(per, on=["decoding", "gamma"], how="left")
    assert j.height == 3 and (j["h_rounds"] == j["rounds"]).all() and (j["h_acc"] == j["accepted"]).all()
    # loop histograms at every gamma the loop ran, greedy and sampled
    assert sorted(h.filter(pl.col("method") == "loop").select("decoding", "gamma").unique().rows()) == [
        ("greedy", 1), ("greedy", 3), ("sampled", 1), ("sampled", 3)]
    assert pl.read_csv(acc / "histogram_checks.csv")["passed"].all()
    assert "marginal" in pl.read_csv(acc / "per_position.csv").columns
    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "schemas/profile.schema.yaml").read_text())
    files = sorted(p.name for p in (acc / "profiles").glob("*.json"))   # (snakemake adds a timestamp file)
    assert files == ["demo__demo_draft__demo_target__greedy.json", "demo__demo_draft__demo_target__sampled.json"]
    for name in files:
        profile = json.loads((acc / "profiles" / name).read_text())
        validate(profile, schema)
        assert all(e["checks"]["passed"] for e in profile["gammas"])
    assert [e["gamma"] for e in json.loads((acc / "profiles" / files[1]).read_text())["gammas"]] == [1, 3]


def test_nothing_to_do_after_a_complete_run(demo_run):
    assert planned_jobs(demo_run) == {}


def test_reordered_config_reruns_nothing(demo_run):
    cfg = tiny_config()
    write_config(demo_run, dict(reversed(list(cfg.items()))))
    try:
        assert planned_jobs(demo_run) == {}
    finally:
        write_config(demo_run, cfg)


def test_gamma_edit_reruns_only_acceptance_and_report(demo_run):
    cfg = tiny_config()
    cfg["gammas"] = [1, 2, 3, 4]
    write_config(demo_run, cfg)
    try:
        assert planned_jobs(demo_run) == {"acceptance": 1, "report": 1, "report_html": 1, "all": 1}
    finally:
        write_config(demo_run, tiny_config())
    assert planned_jobs(demo_run) == {}  # reverting the edit reruns nothing


def test_decoding_edit_reruns_only_that_preset(demo_run):
    cfg = tiny_config()
    cfg["decodings"]["sampled"]["temperature"] = 0.9
    write_config(demo_run, cfg)
    try:
        # 2 models x 2 shards of generation, its scoring, its 2 loop gammas x 2 shards, its timing, the tables
        assert planned_jobs(demo_run) == {"generate": 4, "score": 1, "speculative": 4, "timing": 1, "acceptance": 1,
                                          "report": 1, "report_html": 1, "all": 1}
    finally:
        write_config(demo_run, tiny_config())


def planned_after_editing(run: Path, module: str) -> dict[str, int]:
    """The dry run's job counts while package module `module` of the run's copy is edited."""
    path = run / "workflow_scripts/specalign" / module
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        return planned_jobs(run)
    finally:
        path.write_text(original)


def test_module_edit_reruns_the_stages_that_import_it(demo_run):
    """Imports are followed transitively (rules/common.smk `script_modules`)."""
    # translation.py (the token map, with its id-space projections) is imported by the translation
    # rule, the score rule, the loop and the timing job, and by the report (reachable ids)
    assert planned_after_editing(demo_run, "translation.py") == {"translation": 1, "score": 2, "speculative": 8,
                                                                 "timing": 2, "acceptance": 1, "report": 1,
                                                                 "report_html": 1, "all": 1}
    # scoring.py by the score rule and, for its one-pass draft check (draft_flip), by the loop (and so by the
    # timing job, which runs the loop)
    assert planned_after_editing(demo_run, "scoring.py") == {"score": 2, "speculative": 8, "timing": 2,
                                                             "acceptance": 1, "report": 1, "report_html": 1,
                                                             "all": 1}


def test_added_pair_runs_only_its_jobs(demo_run):
    """Video-LLaVA as its own draft (the note's option A), added to the config: its translation,
    scoring and loop jobs plus the tables; nothing already computed reruns."""
    cfg = tiny_config()
    cfg["pairs"].append({"draft": "demo_target", "target": "demo_target"})
    write_config(demo_run, cfg)
    try:
        # 1 translation, 2 decodings x (1 score + 2 loop gammas x 2 shards + 1 timing), then the tables
        assert planned_jobs(demo_run) == {"translation": 1, "score": 2, "speculative": 8, "timing": 2,
                                          "acceptance": 1, "report": 1, "report_html": 1, "all": 1}
    finally:
        write_config(demo_run, tiny_config())


def test_summary_module_edit_reruns_only_the_tables(demo_run):
    assert planned_after_editing(demo_run, "summary.py") == {"acceptance": 1, "report": 1, "report_html": 1, "all": 1}
