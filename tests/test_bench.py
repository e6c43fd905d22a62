"""bench/gpu_bench.py on the CPU (`--tiny`: a 2-layer 64-wide Llama in fp32).

The GPU run (7B shape, bf16) cannot happen here; this checks that the script runs end to
end through specalign's own generation / scoring / speculative code, writes every field
the GPU run will, and that the fp32 numbers are exact: no verification flips, loop output
== the target's greedy stream, loop accepted counts == the teacher-forced replay. Ratios
and counts only, never wall-clock values.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "gpu_bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--out", str(out)], cwd=out, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "gpu_bench.json").read_text()), proc.stdout, out


def test_every_section_ran_and_wrote_its_fields(tiny_run):
    res, stdout, out = tiny_run
    args = res["args"]
    assert res["sections_done"] == ["build", "cost", "reference", "noise", "loop", "flips"]
    assert res["skipped"] == []
    assert res["env"]["dtype"] == "float32" and res["shape"]["hidden_size"] == 64
    drafts = ["noisy", f"layers{args['draft_layers']}"]
    assert set(res["cost"]) == {"target", *drafts}
    for c in res["cost"].values():
        assert c["decode_ms"] > 0 and c["c"] > 0
        assert set(c["prefill_ms"]) == {str(L) for L in args["prefill_lens"]}
    assert res["cost"]["target"]["c"] == 1.0
    assert res["reference"]["streams"] == args["prompts"]
    assert res["noise_calibration"] and res["noise"] > 0
    assert set(res["loop"]) == set(drafts)
    for d in res["loop"].values():
        assert 0 <= d["greedy_match_rate"] <= 1
        assert list(d["gammas"]) == [str(g) for g in args["gammas"]]
        for g, a in d["gammas"].items():
            for key in ("loop_tokens_per_s", "target_only_tokens_per_s", "speedup", "token_acceptance_rate", "tau",
                        "predicted_speedup_iid", "draft_ms", "verify_ms", "rounds", "drafted", "accepted"):
                assert key in a, key
            assert a["emitted"] == args["loop_prompts"] * args["new_tokens"]  # EOS disabled: full streams
            assert 0 <= a["token_acceptance_rate"] <= 1
            assert 1 <= a["tau"] <= int(g) + 1
            assert a["speedup"] > 0 and a["loop_tokens_per_s"] > 0
    assert set(res["flips"]) == {str(k) for k in args["chunks"]}
    assert (out / "gpu_bench.txt").read_text().strip() in stdout


def test_fp32_is_exact(tiny_run):
    """No chunked-vs-step-by-step flips; the loop reproduces the target's greedy stream and the replay."""
    res, _, _ = tiny_run
    args = res["args"]
    for k, c in res["flips"].items():
        assert c["positions"] == args["prompts"] * args["new_tokens"], k
        assert c["flips"] == 0 and c["flip_rate"] == 0.0, k
    for d in res["loop"].values():
        for a in d["gammas"].values():
            assert a["outputs_equal_reference"] == a["samples"] == args["loop_prompts"]
            assert a["replay_equal"] == a["samples"]
            assert a["first_divergence"] == []
    # the noisy copy is the high-acceptance draft, as on the GPU
    assert res["loop"]["noisy"]["greedy_match_rate"] >= 0.6


def test_budget_skips_work_and_still_writes_the_json(tmp_path):
    bench = load_bench()
    assert bench.main(["--tiny", "--out", str(tmp_path), "--budget-s", "0", "--prompts", "2"]) == 0
    res = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert res["sections_done"][-1] == "flips"
    assert res["skipped"] and res["reference"]["streams"] == 0
    assert all(d["gammas"] == {} for d in res["loop"].values())


def test_local_replay_is_the_workflow_rule():
    """The fallback used where polars is missing equals specalign.acceptance.replay_rounds."""
    from specalign.acceptance import replay_rounds

    bench = load_bench()
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 30)
        budget = rng.randint(n, n + 3)
        m = [rng.random() < 0.7 for _ in range(n)]
        for gamma in (1, 2, 3, 5, 8):
            want = [(r.start, r.drafted, r.accepted, r.emitted) for r in replay_rounds(m, gamma, budget)]
            got = [(r.start, r.drafted, r.accepted, r.emitted) for r in bench._replay_rounds_local(m, gamma, budget)]
            assert got == want
