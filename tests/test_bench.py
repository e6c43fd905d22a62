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
import math
import os
import statistics
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
    assert res["sections_done"] == ["build", "cost", "reference", "noise", "loop", "flips", "bandwidth", "drafts"]
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


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bandwidth_section(tiny_run):
    """Prefill / decode at every batch and context length, beside the bound from the ASSUMED bandwidth."""
    res, stdout, _ = tiny_run
    args, bw = res["args"], res["bandwidth"]
    assert bw["assumed_bandwidth_gbs"] == args["bandwidth_gbs"] == 4800.0 and "ASSUMED" in bw["bandwidth_note"]
    assert list(bw["batches"]) == [str(b) for b in args["batches"]] == ["1", "4"]
    assert list(bw["context"]) == [str(L) for L in args["context_lens"]] == ["16", "64"]
    assert _finite_positive(bw["weight_bytes"]) and _finite_positive(bw["bound_ms"])
    assert bw["bound_ms"] == pytest.approx(bw["weight_bytes"] / (bw["assumed_bandwidth_gbs"] * 1e9) * 1000.0)
    for b, r in bw["batches"].items():
        for key in ("prefill_ms", "prefill_tokens_per_s", "decode_step_ms", "decode_ms_per_token",
                    "decode_tokens_per_s", "bound_ms", "pct_of_bound", "bound_ms_with_kv", "pct_of_bound_with_kv"):
            assert _finite_positive(r[key]), (b, key)
        assert r["decode_ms_per_token"] == pytest.approx(r["decode_step_ms"] / int(b))
        assert r["pct_of_bound"] == pytest.approx(100.0 * r["bound_ms"] / r["decode_step_ms"])
        assert r["bound_ms_with_kv"] > r["bound_ms"]
    for L, r in bw["context"].items():
        assert r["prompt_len"] == int(L)
        for key in ("prefill_ms", "prefill_tokens_per_s", "decode_ms_per_token", "pct_of_bound", "bound_ms_with_kv"):
            assert _finite_positive(r[key]), (L, key)
        assert r["pct_of_bound"] == pytest.approx(100.0 * r["bound_ms"] / r["decode_ms_per_token"])
    assert "bandwidth bound" in stdout and "ctx 64" in stdout and "batch 4" in stdout


def leviathan_closed_form(alpha: float, gamma: int, c: float) -> float:
    """Leviathan et al.'s Theorem 3.8, (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1)): the closed form
    of the geometric sum specalign.speedup (which the bench imports) adds up term by term."""
    return (1 - alpha ** (gamma + 1)) / ((1 - alpha) * (gamma * c + 1))


def best_gamma_by_search(alpha: float, c: float) -> int:
    """The gamma in 1..16 of the highest closed-form speedup (the smallest on a tie), 0 if none beats 1."""
    speedups = {g: leviathan_closed_form(alpha, g, c) for g in range(1, 17)}
    g = max(speedups, key=lambda k: (speedups[k], -k))
    return g if alpha > c and speedups[g] > 1.0 else 0


def test_drafts_section(tiny_run):
    """Every variant made from a copy of the target: c and decode ms recomputed from the raw step timings
    the bench stores; the i.i.d. prediction at the assumed alpha against the closed form and a search over
    gamma; the truncated draft has fewer layers."""
    res, stdout, _ = tiny_run
    args, dr = res["args"], res["drafts"]
    assert dr["assumed_alpha"] == args["alpha"] == 0.9 and "ASSUMED" in dr["alpha_note"]
    assert dr["iid_model"] == "specalign.speedup"
    target_ms = dr["target"]["decode_ms"]
    assert _finite_positive(target_ms) and dr["target"]["layers"] == res["shape"]["num_hidden_layers"]
    target_steps = dr["target"]["decode_steps_ms"]
    assert len(target_steps) == 2 * dr["decode_steps"]  # 2 prompts x decode_steps timed steps each
    assert target_ms == pytest.approx(statistics.median(target_steps))
    alpha = dr["assumed_alpha"]
    assert args["quant_methods"] == ["int8_dynamic"] and args["truncate_layers"] == [1]
    assert set(dr["variants"]) == {"quant_int8_dynamic", "layers1"}
    computed = 0
    for name, v in dr["variants"].items():
        if "error" in v:  # a failed method is recorded, not raised; truncation never fails here
            assert v["kind"] == "quantization" and isinstance(v["error"], str) and v["error"], name
            continue
        assert _finite_positive(v["decode_ms"]) and _finite_positive(v["c"]), name
        assert v["target_ms"] == target_ms
        steps = v["decode_steps_ms"]
        assert len(steps) == len(target_steps) and all(_finite_positive(s) for s in steps), name
        assert v["decode_ms"] == pytest.approx(statistics.median(steps)), name
        assert v["c"] == pytest.approx(statistics.median(steps) / statistics.median(target_steps)), name
        want_g = best_gamma_by_search(alpha, v["c"])
        assert v["best_gamma"] == want_g, name
        want = leviathan_closed_form(alpha, want_g, v["c"]) if want_g else 1.0
        assert v["predicted_speedup_iid"] == pytest.approx(want) and _finite_positive(v["predicted_speedup_iid"])
        for g, sp in v["predicted_speedup_by_gamma"].items():
            assert sp == pytest.approx(leviathan_closed_form(alpha, int(g), v["c"]))
        computed += 1
    trunc = dr["variants"]["layers1"]
    assert "error" not in trunc and trunc["layers"] == 1 < dr["target"]["layers"]
    assert dr["variants"]["quant_int8_dynamic"].get("layers", dr["target"]["layers"]) == dr["target"]["layers"]
    assert computed >= 1
    assert "drafts from the target" in stdout and "layers1" in stdout


def test_the_iid_model_at_hand_worked_values():
    """The i.i.d. model the bench reports (specalign.speedup) at values worked by hand: alpha 0.5, gamma 2,
    c 0.5 -> (1 + 0.5 + 0.25) / 2 = 0.875; alpha 0.9, c 0.1 -> gamma 10 is best, (1 - 0.9^11) / (0.1 x 2)
    = 3.430947 (gamma 9: 3.428008, gamma 11: 3.417002); alpha <= c -> 0 (no gamma beats plain decoding)."""
    from specalign.speedup import best_gamma, expected_speedup

    assert expected_speedup(0.5, 2, 0.5) == pytest.approx(0.875)
    assert best_gamma(0.9, 0.1) == 10
    assert expected_speedup(0.9, 10, 0.1) == pytest.approx(3.430947, abs=1e-6)
    assert expected_speedup(0.9, 9, 0.1) == pytest.approx(3.428008, abs=1e-6)
    assert expected_speedup(0.9, 11, 0.1) == pytest.approx(3.417002, abs=1e-6)
    assert best_gamma(0.5, 0.6) == 0 and best_gamma(0.5, 0.5) == 0


def test_the_bench_formulas_import_without_polars():
    """The GPU image has no polars: the replay rule and the i.i.d. model the bench (and bench/gpu_smoke.py)
    import from the package, specalign.replay and specalign.speedup, must not need it. Hand-worked: matches
    1 1 0 1, gamma 2, budget 4 -> s=0: g=2, a=2, emitted 3; s=3: g=min(2, 4-3-1)=0, a=0 -> accepted [2, 0]."""
    code = ("import sys; sys.modules['polars'] = None\n"
            "from specalign.replay import replay_rounds\n"
            "from specalign.speedup import expected_speedup\n"
            "print([r.accepted for r in replay_rounds([1, 1, 0, 1], 2, 4)], expected_speedup(0.5, 2, 0.5))")
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow_scripts"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[2,", "0]", "0.875"]


def test_a_failing_variant_is_recorded_not_raised(tmp_path):
    """A quantization method that cannot run (a CUDA method on the CPU) leaves its error string; the error is
    the device refusal, never an ImportError (a missing package would fail every machine, not this one)."""
    bench = load_bench()
    argv = ["--tiny", "--out", str(tmp_path), "--prompts", "1", "--loop-prompts", "1", "--gammas", "1",
            "--chunks", "1", "--new-tokens", "4", "--batches", "1", "--context-lens", "8",
            "--quant-methods", "int8_weight", "--truncate-layers", "1"]
    assert bench.main(argv) == 0
    res = json.loads((tmp_path / "gpu_bench.json").read_text())
    v = res["drafts"]["variants"]
    assert res["sections_done"][-1] == "drafts"
    assert v["quant_int8_weight"]["error"] == ("ValueError: int8_weight runs on cuda, but model 'quant_int8_weight' "
                                               "is on cpu")
    steps, target_steps = v["layers1"]["decode_steps_ms"], res["drafts"]["target"]["decode_steps_ms"]
    assert v["layers1"]["c"] == pytest.approx(statistics.median(steps) / statistics.median(target_steps))


def test_budget_skips_work_and_still_writes_the_json(tmp_path):
    bench = load_bench()
    assert bench.main(["--tiny", "--out", str(tmp_path), "--budget-s", "0", "--prompts", "2"]) == 0
    res = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert res["sections_done"][-3:] == ["flips", "bandwidth", "drafts"]
    assert res["bandwidth"]["batches"] == {} and res["bandwidth"]["context"] == {}
    assert res["drafts"]["variants"] == {} and res["drafts"]["target"] == {}
    assert any(s.startswith("bandwidth") for s in res["skipped"]) and any(s.startswith("drafts") for s in res["skipped"])
    assert res["skipped"] and res["reference"]["streams"] == 0
    assert all(d["gammas"] == {} for d in res["loop"].values())


def test_timing_stability_quick_run_reports_what_it_measured(tmp_path):
    """bench/timing_stability.py --quick (one busy process): its medians are the medians of its runs,
    each paired c lies in its own interval, and the two-job cross ratios are the quotients it says."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "timing_stability.py"), "--quick", "--busy", "1",
                           "--out", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads((tmp_path / "timing_stability.json").read_text())
    for cond in ("alone", "busy"):
        runs = out["runs"][cond]
        assert len(runs) == out["settings"]["rounds"]
        for r in runs:
            assert r["c_lo"] <= r["c"] <= r["c_hi"] and r["c"] > 0
        for f, v in out["median"][cond].items():
            assert v == statistics.median(r[f] for r in runs), f
    a, b = out["median"]["alone"], out["median"]["busy"]
    assert math.isclose(out["two_job_alone"], a["draft_job_decode_ms"] / a["target_job_decode_ms"])
    assert math.isclose(out["two_job_cross"]["draft alone / target busy"],
                        a["draft_job_decode_ms"] / b["target_job_decode_ms"])
    assert "busy/alone" in proc.stdout and out["device"] in proc.stdout
