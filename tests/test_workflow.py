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
        # verify passes at every gamma up to 3 and at the trees' sizes (stages.TREE_VERIFY_SIZES)
        assert sorted(t.filter(pl.col("kind") == "verify")["gamma"].unique()) == [1, 2, 3, 16, 32, 64]
        assert sorted(t.filter(pl.col("kind") == "loop")["gamma"].unique()) == [1, 3]
    stats = json.loads((res / "translation/demo_draft__demo_target.stats.json").read_text())
    assert stats["target_added"] == ["<image>", "<video>", "<pad>"]
    assert stats["overlap_pct"] == 100.0 and stats["draft_only"] == 0


def test_summary_invariants(demo_run):
    s = pl.read_csv(demo_run / "results/acceptance/summary.csv")
    assert s.columns[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS
    assert s.height == 2 * 3 + 2 * 3  # decodings x gammas, and the 2 greedy input ablations x gammas
    s = s.filter(pl.col("ablation").is_null())   # the plain runs (test_input_ablations: the others)
    assert s.height == 2 * 3
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
    chains = [r for r in rows if "| chain, gamma" in r]
    assert len(chains) == 2 * 2 and sum("chain, gamma 1 |" in r for r in chains) == 2, section
    assert all(any(w in r for w in ("pays off", "does not pay off", "cannot tell")) for r in chains)
    # the greedy run's best branching tree by predicted speedup (trees.csv; chains are the chain rows), its
    # measured columns empty
    trees = (pl.read_csv(demo_run / "results/acceptance/trees.csv").filter(pl.col("kind") != "chain")
             .sort("predicted_speedup", "nodes", descending=[True, False]))
    best = trees.row(0, named=True)
    # every tree's verify pass timed by the paired job or between two timed sizes (w2d2's 6 nodes: between 3 and
    # 16), none extrapolated; the chains' (1-3 nodes) timed
    source = dict(pl.read_csv(demo_run / "results/acceptance/trees.csv").select("tree", "verify_cost_source")
                  .unique().iter_rows())
    assert {source[t] for t in ("chain1", "chain2", "chain3", "p3")} == {"measured"}, source
    assert source["w2d2"] == "interpolated" and "extrapolated" not in source.values(), source
    tree_rows = [r for r in rows if "| tree " in r]
    assert len(tree_rows) == 1 and f"| tree {best['tree']} ({best['nodes']} nodes" in tree_rows[0], section
    assert "not timed (predicted only)" in tree_rows[0]
    assert "## Trees:" in report and "## Input ablations" in report
    page = (demo_run / "results/report/index.html").read_text()
    assert 'id="plot-trees"' in page and 'id="plot-ranks"' in page and "Input ablations" in page


def test_histograms_and_profiles(demo_run):
    import yaml
    from jsonschema import validate

    acc = demo_run / "results/acceptance"
    s = pl.read_csv(acc / "summary.csv").filter(pl.col("ablation").is_null())   # ablations: not deployable
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


def test_trees_replay_the_chains_and_rank_the_targets_tokens(demo_run):
    acc = demo_run / "results/acceptance"
    s = pl.read_csv(acc / "summary.csv").filter(pl.col("method") == "greedy_replay")
    if "ablation" in s.columns:   # input ablations (issue 22) are diagnoses: trees replay the plain runs
        s = s.filter(pl.col("ablation").is_null())
    t = pl.read_csv(acc / "trees.csv")
    assert t["decoding"].unique().to_list() == ["greedy"] and t["exact"].all()   # sampled: not replayed
    assert sorted(t["tree"].to_list()) == sorted(["chain1", "chain2", "chain3", "p3", "w2d2", "best4", "best8"])
    # the width-1 trees are the chains: the summary's greedy replay rows, to the last digit
    chains = t.filter(pl.col("kind") == "chain").with_columns(pl.col("depth").alias("gamma"))
    cols = ["rounds", "drafted", "accepted", "tau", "tau_lo", "tau_hi", "tokens_per_call"]
    j = chains.join(s, on=["decoding", "gamma"], suffix="_summary")
    assert j.height == 3 and (chains["width"] == 1).all()
    for c in cols:
        assert (j[c] == j[f"{c}_summary"]).all(), c
    # constructed trees: the construction's expectation beside the exact replay
    best = t.filter(pl.col("kind") == "constructed")
    assert best["expected_tau"].is_not_null().all() and (best["nodes"] <= best["budget"]).all()
    assert ((t["tau"] >= 1) & (t["tau"] <= t["levels"] + 1)).all()
    h = pl.read_csv(acc / "tree_histograms.csv").group_by("tree").agg(pl.col("rounds").sum())
    assert dict(h.iter_rows()) == dict(t.select("tree", "rounds").iter_rows())
    r = pl.read_csv(acc / "ranks.csv")
    for dec in ("greedy", "sampled"):
        part = r.filter(pl.col("decoding") == dec)
        scores = pl.read_parquet(demo_run / f"results/score/demo/demo_draft__demo_target/{dec}.parquet")
        assert part["positions"].sum() == scores.height
        assert part["share"][0] == pytest.approx(scores["match"].mean(), abs=1e-6)


def test_tree_edit_reruns_only_the_tables_and_rank_k_rescores(demo_run):
    cfg = tiny_config()
    cfg["trees"]["w3d1"] = {"width": 3, "depth": 1}
    write_config(demo_run, cfg)
    try:
        assert planned_jobs(demo_run) == {"acceptance": 1, "report": 1, "report_html": 1, "all": 1}
        cfg["scoring"] = {"rank_k": 8}
        write_config(demo_run, cfg)
        # every scoring job records the ranks (the input ablations' too, where the config has them)
        planned = {k: v for k, v in planned_jobs(demo_run).items() if k != "score_ablation"}
        assert planned == {"score": 2, "acceptance": 1, "report": 1, "report_html": 1, "all": 1}
    finally:
        write_config(demo_run, tiny_config())


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
                                                                 "timing": 2, "score_ablation": 2, "acceptance": 1,
                                                                 "report": 1, "report_html": 1, "all": 1}
    # scoring.py by the score rule and, for its one-pass draft check (draft_flip), by the loop (and so by the
    # timing job, which runs the loop)
    assert planned_after_editing(demo_run, "scoring.py") == {"score": 2, "speculative": 8, "timing": 2,
                                                             "score_ablation": 2, "acceptance": 1, "report": 1,
                                                             "report_html": 1, "all": 1}
    # ablations.py by the ablation jobs only (and events.py, which renders the blank stream, by every job
    # that prepares events)
    assert planned_after_editing(demo_run, "ablations.py") == {"score_ablation": 2, "acceptance": 1, "report": 1,
                                                               "report_html": 1, "all": 1}


def test_added_pair_runs_only_its_jobs(demo_run):
    """Video-LLaVA as its own draft (the note's option A), added to the config: its translation,
    scoring and loop jobs plus the tables; nothing already computed reruns."""
    cfg = tiny_config()
    cfg["pairs"].append({"draft": "demo_target", "target": "demo_target"})
    write_config(demo_run, cfg)
    try:
        # 1 translation, 2 decodings x (1 score + 2 loop gammas x 2 shards + 1 timing), the target-side
        # ablation (mean_frame, greedy: every pair of the target; blank_events names its draft), the tables
        assert planned_jobs(demo_run) == {"translation": 1, "score": 2, "speculative": 8, "timing": 2,
                                          "score_ablation": 1, "acceptance": 1, "report": 1, "report_html": 1,
                                          "all": 1}
    finally:
        write_config(demo_run, tiny_config())


def test_summary_module_edit_reruns_only_the_tables(demo_run):
    assert planned_after_editing(demo_run, "summary.py") == {"acceptance": 1, "report": 1, "report_html": 1, "all": 1}


def test_input_ablations(demo_run):
    """.test/config.yaml's two greedy ablations: blank events (the draft's side) and the dataset's mean frame
    (the target's), each one teacher-forced pass along the target's PLAIN stream, stored like scores."""
    res = demo_run / "results/score/demo/demo_draft__demo_target"
    plain = _check_parquet(res / "greedy.parquet", "scores")
    key = ["sample_id", "position"]
    for name, side in (("blank_events", "draft"), ("mean_frame", "target")):
        abl = _check_parquet(res / f"greedy.{name}.parquet", "scores")
        assert _check_parquet(res / f"greedy.{name}.errors.parquet", "errors").height == 0
        # along the same stream ...
        assert abl.select(*key, "target_token").equals(plain.select(*key, "target_token"))
        # ... with the other side's numbers exactly the plain pass's, and the ablated side's moved
        draft_cols, target_cols = ["draft_token", "match", "draft_logprob", "summin"], ["target_logprob"]
        same, moved = (target_cols, draft_cols) if side == "draft" else (draft_cols, target_cols)
        assert abl.select(same).equals(plain.select(same)), name
        assert not abl["draft_logprob" if side == "draft" else "target_logprob"].equals(
            plain["draft_logprob" if side == "draft" else "target_logprob"]), name
    s = pl.read_csv(demo_run / "results/acceptance/summary.csv")
    ab = s.filter(pl.col("ablation").is_not_null())
    assert sorted(ab.select("ablation", "gamma").rows()) == [(a, g) for a in ("blank_events", "mean_frame")
                                                             for g in (1, 2, 3)]
    assert (ab["decoding"] == "greedy").all() and (ab["method"] == "greedy_replay").all()
    # measured like any run from its scores; nothing of a loop, a timing job or a free-running draft
    assert (ab["leviathan_alpha_lo"] <= ab["leviathan_alpha"]).all() and ab["tau"].is_not_null().all()
    assert ab["positional_match_rate"].is_null().all() and ab["c"].is_null().all()
    blank = ab.filter(pl.col("ablation") == "blank_events").sort("gamma")
    assert blank["leviathan_alpha"][0] == pytest.approx(
        pl.read_parquet(res / "greedy.blank_events.parquet")["match"].mean())
    # a target-side ablation leaves a greedy run's matches as they were
    plain_row = s.filter(pl.col("ablation").is_null() & (pl.col("decoding") == "greedy")).sort("gamma")
    mean = ab.filter(pl.col("ablation") == "mean_frame").sort("gamma")
    assert mean["leviathan_alpha"].to_list() == plain_row["leviathan_alpha"].to_list()
    pp = pl.read_csv(demo_run / "results/acceptance/per_position.csv")
    assert pp.filter(pl.col("ablation") == "blank_events")["marginal"].is_not_null().all()


def test_grounding_classes_and_oracle_bounds(demo_run):
    """grounding.csv classes every token of the plain greedy run by the two ablations the config names; its
    mismatches are the plain scores' own, recounted here; oracle.csv's bounds stand beside measured rows."""
    acc = demo_run / "results/acceptance"
    g = pl.read_csv(acc / "grounding.csv")
    assert set(g["grounding"]) == {"language", "event_grounded", "rgb_only", "both"}
    assert (g["decoding"] == "greedy").all() and set(g["target_ablation"]) == {"mean_frame"}
    plain = pl.read_parquet(demo_run / "results/score/demo/demo_draft__demo_target/greedy.parquet")
    assert g["tokens"].sum() == plain.height and g["mismatches"].sum() == (~plain["match"]).sum()
    assert g["token_share"].sum() == pytest.approx(1.0, abs=1e-5)
    o = pl.read_csv(acc / "oracle.csv")
    assert set(o.filter(pl.col("is_bound"))["kind"]) == {"oracle_gamma"}   # one draft: no router
    og = o.filter(pl.col("kind") == "oracle_gamma")
    assert og.height and (og["decoding"] == "greedy").all()
    # an oracle lookahead never drafts a rejected token: what it drafts is what it accepts
    assert (og["drafted"] == og["accepted"]).all()
    report = (demo_run / "results/report.md").read_text()
    assert "## Grounding classes" in report and "## Oracle bounds" in report
    page = (demo_run / "results/report/index.html").read_text()
    assert "Grounding classes" in page and "Oracle bounds" in page


def test_added_ablation_runs_only_its_jobs(demo_run):
    cfg = tiny_config()
    cfg["ablations"]["reversed_events"] = {"side": "draft", "kind": "time_reversed", "decodings": ["greedy"]}
    write_config(demo_run, cfg)
    try:
        assert planned_jobs(demo_run) == {"score_ablation": 1, "acceptance": 1, "report": 1, "report_html": 1,
                                          "all": 1}
    finally:
        write_config(demo_run, tiny_config())
    assert planned_jobs(demo_run) == {}
