"""bench/cpu_bench.py --quick: every section runs end to end at tiny sizes.

Asserts only computed truths, never a time: every section present with its fields; the peer's
(Hugging Face assisted generation) and specalign's speculative outputs equal the target's greedy
output; the teacher-forced replay's accepted counts equal the real loop's (per sample and gamma);
the like-for-like cost ratio is the loop's time over target generation + scoring + replay, as
measured; section 4's loop rounds come from a token-by-token walk of the loop (checked by hand) and
its loop-vs-replay check fails when that walk is wrong; the workflow's job count does not depend on
the number of samples and the dry run needs no clip; every reported number is finite.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "cpu_bench.py"
SECTIONS = ["peer", "scoring", "batching", "tables", "workflow", "storage"]
# may be NaN where the kernel refuses /proc/self/clear_refs (then no per-call peak RSS is measured)
MAY_BE_NAN = {"peak_rss_mb", "peak_rss_over_start_mb"}


@pytest.fixture(scope="module")
def bench():
    """bench/cpu_bench.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("cpu_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu_bench")
    doc = out / "benchmarks.md"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--out", str(out), "--doc", str(doc)],
                          cwd=out, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((out / "cpu_bench.json").read_text()), proc.stdout, out, doc


def numbers(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, path + (str(k),))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, path + (str(i),))
    elif isinstance(obj, float) or (isinstance(obj, int) and not isinstance(obj, bool)):
        yield path, obj


def test_every_section_present(quick):
    res, stdout, out, doc = quick
    assert res["mode"] == "quick"
    assert res["sections_done"] == SECTIONS
    assert list(res["sections"]) == SECTIONS
    assert (out / "cpu_bench.txt").read_text().strip() in stdout
    text = doc.read_text()
    for heading in ("## 1. The peer", "## 2. Scoring vs generation", "## 3. Generation batching",
                    "## 4. Replay and tables at full scale", "## 5. Workflow overhead", "## 6. Storage", "## GPU"):
        assert heading in text, heading
    assert "like for like" in text
    assert "**Not measured**: no GPU machine was lent to this task" in text
    assert res["git"]["commit"] in text
    for t in res["targets"]:
        assert isinstance(t["met"], bool)
    for kind in ("tokens", "scores", "rounds"):
        assert (out / "artifacts" / (f"{kind}.parquet" if kind != "tokens" else "tokens_target.parquet")).exists()


def test_outputs_equal_the_target_greedy_output(quick):
    p = quick[0]["sections"]["peer"]
    for method in ("hf", "specalign"):
        assert p[method]["outputs_checked"] == p["prompts"] * p["reps"]
        assert p[method]["outputs_equal_target_greedy"] == p[method]["outputs_checked"], method
    r = p["replay_vs_loop"]
    assert r["loop_outputs_equal_target_greedy"] == r["counts_checked"]


def test_replayed_counts_equal_the_loop(quick):
    res = quick[0]
    r = res["sections"]["peer"]["replay_vs_loop"]
    assert r["counts_checked"] == r["prompts"] * len(r["gammas"]) * r["reps"] > 0
    assert r["counts_equal"] == r["counts_checked"]
    assert r["gammas"] == list(range(1, 9))
    t = res["sections"]["tables"]
    assert t["summary_rows"] == t["pairs"] * t["decodings"] * len(t["gammas"])
    assert t["greedy_loop_rows"] == t["pairs"] * len(t["loop_gammas"])
    assert t["greedy_loop_rows_identical"] == t["greedy_loop_output_equals_target"] == t["greedy_loop_rows"]


def test_like_for_like_ratio_counts_the_target_generation(quick):
    """The replay needs the target's stream, the loop does not: the like-for-like ratio puts the target's
    generation on the replay's side, from the seconds the JSON holds."""
    r = quick[0]["sections"]["peer"]["replay_vs_loop"]
    med = statistics.median
    gen, rep, loop = med(r["generate_s"]), med(r["replay_s"]), med(r["loop_s"])
    assert len(r["generate_s"]) == len(r["replay_s"]) == len(r["loop_s"]) == r["reps"]
    assert math.isclose(r["like_for_like_ratio"], loop / (gen + rep), rel_tol=1e-12)
    assert r["like_for_like_ratio"] < r["cost_ratio_loop_over_replay"]     # + generation, a positive time
    per, rounds = r["loop_s_per_gamma"], r["replay_rounds_s_per_gamma"]
    assert list(per) == list(rounds) == [str(g) for g in r["gammas"]]
    for i, total in enumerate(r["loop_s"]):        # the per-gamma loop times are parts of the rep's total
        assert sum(per[g][i] for g in per) <= total
    for i, total in enumerate(r["replay_s"]):      # so are scoring and the replays
        assert r["score_s"][i] + sum(rounds[g][i] for g in rounds) <= total
    for g, ratio in r["like_for_like_per_gamma"].items():
        assert math.isclose(ratio, med(per[g]) / (gen + med(r["score_s"]) + med(rounds[g])), rel_tol=1e-12)


def test_the_loop_walk_by_hand(bench):
    walk = bench.walk_greedy_loop
    # cut at the budget (N = max_new_tokens = 6), gamma 2, the draft wrong at 1 and (never looked at) 4:
    # s=0: g=2, 5 accepted, 0 != 6 rejected -> the target's 6; s=2: g=2, 7 and 8 accepted, bonus 9;
    # s=5: g = min(2, 6 - 5 - 1) = 0, the target's 10 alone
    assert walk([5, 0, 7, 8, 0, 10], [5, 6, 7, 8, 9, 10], 2, 6) == [
        (0, 2, 1, [5, 6]), (2, 2, 2, [7, 8, 9]), (5, 0, 0, [10])]
    # an accepted EOS (2) ends the stream with no bonus token; the draft still proposed g = min(4, 8 - 0 - 1)
    assert walk([5, 6, 2], [5, 6, 2], 4, 8) == [(0, 4, 3, [5, 6, 2])]
    # rejected at once every round: one token per round, each the target's, g shrinking at the budget
    assert walk([0, 0, 0], [7, 8, 9], 2, 3) == [(0, 2, 0, [7]), (1, 1, 0, [8]), (2, 0, 0, [9])]


def test_the_tables_loop_check_can_fail(bench, tmp_path, monkeypatch):
    """Section 4's loop rounds come from walk_greedy_loop, not from the replay: with a walk that drafts one
    token past the budget, the tables' greedy loop rows stop matching the replay."""
    import numpy as np
    import polars as pl

    from specalign.summary import acceptance_tables

    S = dict(bench.QUICK, tab_clips=12, tab_tokens=8, tab_shards=2, tab_boot=5)

    def greedy_loop_rows(root):
        runs, _ = bench.build_synthetic_run(root, S, np.random.default_rng(0))
        loop = acceptance_tables(runs, [1, 2], S["tab_boot"])["loop"].filter(pl.col("decoding") == "greedy")
        return loop.height, int(loop["rounds_identical"].sum()), int(loop["output_equals_target"].sum())

    rows, identical, outputs = greedy_loop_rows(tmp_path / "right")
    assert rows == len(bench.REAL_PAIRS) * len(bench.LOOP_GAMMAS) and identical == outputs == rows
    right = bench.walk_greedy_loop
    monkeypatch.setattr(bench, "walk_greedy_loop", lambda p, t, g, n: right(p, t, g, n + 1))
    # gamma 8 on 8-token streams: the first round drafts 8, not 7, in every clip; gammas 1, 2, 4: the last
    # rounds of some of the 12 clips of each pair
    rows, identical, outputs = greedy_loop_rows(tmp_path / "wrong")
    assert identical == 0 and outputs == rows      # the output is still the target's: only the rounds differ


def test_job_counts_do_not_grow_with_samples(quick):
    w = quick[0]["sections"]["workflow"]
    counts = [w["sizes"][str(n)]["jobs"] for n in w["samples"]]
    assert len(w["samples"]) == 3 and w["samples"] == sorted(w["samples"])
    assert all(c == counts[0] for c in counts) and w["job_counts_constant"] is True
    assert w["clip_files_on_disk"] == 0            # planned with no clip on disk
    assert w["plans_with_corrupt_json"] is True     # the dry run does not read the instruction JSON


def test_numbers_are_finite(quick):
    res = quick[0]
    seen = 0
    for path, x in numbers(res["sections"]):
        seen += 1
        if path[-1] in MAY_BE_NAN:
            continue
        assert math.isfinite(x), "/".join(path)
    assert seen > 50
    s = res["sections"]["storage"]
    for kind in ("tokens", "scores", "rounds"):
        assert s[kind]["tokens"] > 0 and s[kind]["bytes_per_token"] > 0 and s[kind]["marginal_bytes_per_token"] > 0


def test_render_reproduces_the_report_from_the_json(quick, tmp_path):
    """--render rewrites the Markdown from a run's JSON, measuring nothing: the same page."""
    _, _, out, doc = quick
    again = tmp_path / "again.md"
    proc = subprocess.run([sys.executable, str(BENCH), "--render", str(out / "cpu_bench.json"), "--doc", str(again)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert again.read_text() == doc.read_text()
