"""bench/cpu_bench.py --quick: every section runs end to end at tiny sizes.

Asserts only computed truths, never a time: every section present with its fields; the peer's
(Hugging Face assisted generation) and specalign's speculative outputs equal the target's greedy
output; the teacher-forced replay's accepted counts equal the loop's (per sample and gamma, and in
the full tables' loop-vs-replay rows); the workflow's job count does not depend on the number of
samples and the dry run needs no clip; every reported number is finite.
"""
from __future__ import annotations

import json
import math
import os
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
