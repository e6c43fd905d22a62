"""Tests for specalign.summary: which number goes in which row and column of results/acceptance/*.csv.

One tiny hand-built run (every artifact written through artifacts.table / write_parquet) whose
numbers are worked out by hand in the comments, from the replay rule of docs/architecture.md:
    g = max(0, min(gamma, max_new_tokens - s - 1)); a = min(g, run of True from s, N - s);
    emitted = a if s + a == N else a + 1; s += emitted.
Proposal i (1-based) of a round starting at s predicts position s + i - 1: past the answer when >= N.
"""
from __future__ import annotations

import math

import polars as pl
import pytest

from specalign import artifacts
from specalign.artifacts import SUMMARY_COLUMNS
from specalign.report import render
from specalign.specs import Decoding, Run
from specalign.summary import acceptance_tables

EOS = 2
BUDGET = 16
# target streams (target ids) and the teacher-forced matches of the draft along them
TARGET = {"a": [5, 6, EOS], "b": [5, 8, EOS]}
MATCH = {"a": [1, 1, 1], "b": [1, 0, 1]}
# free-running draft streams (draft ids = target ids: identity translation)
DRAFT = {"a": [5, 6, EOS], "b": [5, EOS]}
# decode_ms per position (position 0 comes from the prefill: 0); the generation jobs' timings, which
# no ratio of the tables uses any more (they came from two jobs)
DRAFT_MS = {"a": [0, 2, 2], "b": [0, 3]}
TARGET_MS = {"a": [0, 5, 5], "b": [0, 4, 4]}
# The run's paired timing job (timing.py), two reps per clip: draft steps a 2, 2 / b 3, 3 ms, target
# steps a 5, 5 / b 4, 4 ms. c = sum of per-clip mean draft steps / sum of target ones = (2 + 3) / (5 + 4)
# = 5/9. Resamples of the two clips: {a,a} 4/10 = 0.4, {a,b} 5/9, {b,b} 6/8 = 0.75, probabilities
# 1/4, 1/2, 1/4 -> 95% interval [0.4, 0.75].
C, C_LO, C_HI = 5 / 9, 0.4, 0.75
STEP_MS = {"draft_step": {"a": 2.0, "b": 3.0}, "target_step": {"a": 5.0, "b": 4.0}}
# verify passes (ms) at gamma 2 and 4: verify_cost[2] = (6 + 6) / 9 = 4/3, verify_cost[4] = (7.5 + 8) / 9
VERIFY_MS = {2: {"a": 6.0, "b": 6.0}, 4: {"a": 7.5, "b": 8.0}}
# the loop at gamma 4 (one rep each): (loop ms, its forward ms, rounds, plain decoding ms).
# measured_speedup = (36 + 44) / (30 + 40) = 8/7; resamples {a,a} 1.2, {b,b} 1.1 -> [1.1, 1.2].
# round overhead = ((30 - 27) + (40 - 34)) / (1 + 2) = 3 ms.
LOOP_MS = {"a": (30.0, 27.0, 1, 36.0), "b": (40.0, 34.0, 2, 44.0)}


def timing_rows(device: str = "cpu (toy)") -> list[dict]:
    """The timing artifact's rows of the run (see STEP_MS, VERIFY_MS, LOOP_MS)."""
    base = {"position": 1, "context": 5, "rounds": 0, "device": device, "dtype": "float32", "torch_threads": 1}
    rows = []
    for sid in ("a", "b"):
        for rep in range(2):
            rows += [{**base, "sample_id": sid, "kind": k, "rep": rep, "gamma": 0, "tokens": 4, "ms": ms,
                      "forward_ms": ms} for k, ms in (("draft_prefill", 10.0), ("target_prefill", 20.0))]
            rows += [{**base, "sample_id": sid, "kind": k, "rep": rep, "gamma": 0, "tokens": 1, "ms": v[sid],
                      "forward_ms": v[sid]} for k, v in STEP_MS.items()]
            rows += [{**base, "sample_id": sid, "kind": "verify", "rep": rep, "gamma": k, "tokens": k + 1,
                      "ms": v[sid], "forward_ms": v[sid]} for k, v in VERIFY_MS.items()]
        loop, fwd, rounds, plain = LOOP_MS[sid]
        rows += [{**base, "sample_id": sid, "kind": "loop", "rep": 0, "gamma": 4, "tokens": 3, "ms": loop,
                  "forward_ms": fwd, "rounds": rounds},
                 {**base, "sample_id": sid, "kind": "target_only", "rep": 0, "gamma": 4, "tokens": 3, "ms": plain,
                  "forward_ms": plain}]
    return rows

# The loop's rounds at gamma 4 = the replay's (N = 3 for both samples, budget 16):
#   a: s=0: g 4, a = min(4, 3, 3) = 3, s+a == N -> e 3.   Proposal 4 predicts position 3: post-EOS 1.
#   b: s=0: g 4, a 1, e 2 (the target's 8).              Proposal 4 predicts position 3: post-EOS 1.
#      s=2: g = min(4, 16-2-1) = 4, a = min(4, 1, 1) = 1, s+a == N -> e 1 (accepted EOS).
#           Proposals 2..4 predict positions 3..5: post-EOS 3.
ROUNDS_G4 = {"a": [(0, 4, 3, 3, [5, 6, EOS])], "b": [(0, 4, 1, 2, [5, 8]), (2, 4, 1, 1, [EOS])]}


def write_run(tmp_path, decoding: Decoding, summin: float | None) -> Run:
    """The artifacts of one run; summin None = greedy (summin = match), else that value everywhere."""
    d = tmp_path / decoding.name
    d.mkdir()
    scores = [{"sample_id": sid, "position": j, "target_token": t, "draft_token": t if MATCH[sid][j] else 7,
               "draft_argmax_id": t if MATCH[sid][j] else 7, "match": bool(MATCH[sid][j]), "draft_logprob": -0.1,
               "target_logprob": -0.1, "summin": float(MATCH[sid][j]) if summin is None else summin,
               "mapped_mass": 1.0, "is_eos": t == EOS, "max_new_tokens": BUDGET}
              for sid, ts in TARGET.items() for j, t in enumerate(ts)]
    artifacts.write_parquet(artifacts.table("scores", scores), d / "scores.parquet", "scores")

    def tokens(streams, ms, prefill, path):
        rows = [{"sample_id": sid, "position": j, "token_id": t, "logprob": -0.1,
                 "prefill_ms": prefill, "decode_ms": float(ms[sid][j]), "finish_reason": "eos",
                 "prompt_tokens": 4, "peak_mem_mb": 0.0}
                for sid, ts in streams.items() for j, t in enumerate(ts)]
        artifacts.write_parquet(artifacts.table("tokens", rows), path, "tokens")
        return str(path)

    rounds = [{"sample_id": sid, "gamma": 4, "round": k, "start": s, "drafted": g, "accepted": a, "emitted": e,
               "tokens": toks, "draft_ms": 1.0, "verify_ms": 2.0, "verify_flip": False, "draft_flip": False, "target_only_ms": 9.0}
              for sid, rs in ROUNDS_G4.items() for k, (s, g, a, e, toks) in enumerate(rs)]
    artifacts.write_parquet(artifacts.table("rounds", rounds), d / "rounds.parquet", "rounds")
    translation = [{"draft_id": i, "draft_token": str(i), "kind": "exact", "target_ids": [i], "target_tokens": [str(i)]}
                   for i in range(10)]
    artifacts.write_parquet(artifacts.table("translation", translation), d / "translation.parquet", "translation")
    return Run(dataset="toy", pair="dr__tg", draft="dr", target="tg", decoding=decoding,
               scores=str(d / "scores.parquet"), translation=str(d / "translation.parquet"),
               target_vocab=str(d / "vocab.parquet"),
               draft_tokens=[tokens(DRAFT, DRAFT_MS, 10.0, d / "draft.parquet")],
               target_tokens=[tokens(TARGET, TARGET_MS, 20.0, d / "target.parquet")],
               rounds=[str(d / "rounds.parquet")], timing=timing_path(d))


def timing_path(d) -> str:
    artifacts.write_parquet(artifacts.table("timing", timing_rows()), d / "timing.parquet", "timing")
    return str(d / "timing.parquet")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("summary")
    greedy = write_run(tmp, Decoding("greedy", max_new_tokens=BUDGET), None)
    sampled = write_run(tmp, Decoding("sampled", do_sample=True, max_new_tokens=BUDGET), 0.5)
    return acceptance_tables([greedy, sampled], [2, 4], n_boot=1000), greedy


def rows(df: pl.DataFrame, decoding: str) -> dict[int, dict]:
    return {r["gamma"]: r for r in df.filter(pl.col("decoding") == decoding).iter_rows(named=True)}


def test_post_eos_columns_hand(tables):
    t, _ = tables
    g = rows(t["summary"], "greedy")
    # gamma 4 (ROUNDS_G4): 3 rounds, drafted 12, accepted 3 + 1 + 1 = 5, emitted 6; post-EOS 1 + 1 + 3 = 5.
    # token_acceptance_rate (vLLM, every proposal) 5/12; in the answer 5/(12 - 5) = 5/7; tau (5 + 3)/3.
    r = g[4]
    assert r["method"] == "greedy_replay"
    assert (r["rounds"], r["drafted"], r["accepted"], r["post_eos_drafted"]) == (3, 12, 5, 5)
    assert r["token_acceptance_rate"] == pytest.approx(5 / 12)
    assert r["token_acceptance_rate_in_answer"] == pytest.approx(5 / 7)
    assert r["tau"] == pytest.approx(8 / 3) and r["tokens_per_call"] == pytest.approx(2.0)
    # resamples {a,a} 6/6 = 1, {b,b} 4/8 = 1/2 (in the answer) -> the interval's ends
    assert (r["token_acceptance_rate_in_answer_lo"], r["token_acceptance_rate_in_answer_hi"]) == (0.5, 1.0)
    # gamma 2: a: s=0: g 2, a 2, s+a = 2 != 3 -> e 3 (proposals at positions 0, 1: none past).
    #          b: s=0: g 2, a 1, e 2 | s=2: g 2, a 1, accepted EOS, e 1; proposal 2 -> position 3: 1 past.
    # drafted 6, accepted 4, post-EOS 1 -> 4/6 and 4/5.
    r = g[2]
    assert (r["drafted"], r["accepted"], r["post_eos_drafted"]) == (6, 4, 1)
    assert r["token_acceptance_rate"] == pytest.approx(4 / 6)
    assert r["token_acceptance_rate_in_answer"] == pytest.approx(4 / 5)


def test_per_position_excludes_post_eos_hand(tables):
    t, _ = tables
    pp = t["per_position"].filter((pl.col("decoding") == "greedy") & (pl.col("gamma") == 4)).sort("position")
    # Rounds (offered up to = min(g, N - s), accepted): a (3, 3) | b (3, 1) (1, 1).
    # i=1: reached 3 / offered 3 -> 1;         cond 1
    # i=2: reached (a>=2) 1 / offered 2 -> 1/2; cond: offered & a>=1: 2 -> 1/2
    # i=3: reached 1 / offered 2 -> 1/2;        cond: offered & a>=2: a -> 1
    # i=4: no round offers position 4 inside an answer of 3 tokens -> NaN (counting the post-EOS
    #      proposals as rejections read 0/3 and 0/1 here: where answers end, not acceptance).
    assert pp["unconditional"].to_list()[:3] == pytest.approx([1, 1 / 2, 1 / 2])
    assert pp["conditional"].to_list()[:3] == pytest.approx([1, 1 / 2, 1])
    assert math.isnan(pp["unconditional"][3]) and math.isnan(pp["conditional"][3])


def test_loop_and_replay_give_identical_numbers(tables):
    # The sampled run's loop rounds at gamma 4 are the greedy replay's rounds: its measured columns
    # (N = each sample's emitted total) must be the replay's (N = the scored stream's length).
    t, _ = tables
    rep, loop = rows(t["summary"], "greedy")[4], rows(t["summary"], "sampled")[4]
    assert loop["method"] == "loop"
    for k in ("rounds", "drafted", "accepted", "post_eos_drafted", "token_acceptance_rate",
              "token_acceptance_rate_in_answer", "token_acceptance_rate_in_answer_lo",
              "token_acceptance_rate_in_answer_hi", "tau", "tau_lo", "tau_hi", "tokens_per_call"):
        assert loop[k] == rep[k], k
    pp = t["per_position"].filter(pl.col("gamma") == 4).sort("decoding", "position")
    g, s = pp.filter(pl.col("decoding") == "greedy"), pp.filter(pl.col("decoding") == "sampled")
    assert g.select("unconditional", "conditional").equals(s.select("unconditional", "conditional"))
    lvr = t["loop"].filter(pl.col("decoding") == "greedy")
    assert lvr["rounds_identical"].to_list() == [True] and lvr["output_equals_target"].to_list() == [True]


def test_histograms_marginals_and_checks_hand(tables):
    # Accepted per round: greedy replay gamma 2: a 2 | b 1, 1; gamma 4 (= ROUNDS_G4, the loop's, in
    # both runs): a 3 | b 1, 1. Histograms (accepted 0..gamma): [0, 2, 1] and [0, 2, 0, 1, 0].
    t, _ = tables
    h = t["histograms"]
    assert h.columns == ["dataset", "draft", "target", "decoding", "gamma", "method", "accepted", "rounds"]
    got = {k: g.sort("accepted")["rounds"].to_list()
           for k, g in h.group_by(["decoding", "gamma", "method"], maintain_order=True)}
    assert got == {("greedy", 2, "greedy_replay"): [0, 2, 1], ("greedy", 4, "greedy_replay"): [0, 2, 0, 1, 0],
                   ("greedy", 4, "loop"): [0, 2, 0, 1, 0], ("sampled", 4, "loop"): [0, 2, 0, 1, 0]}
    # marginal P(a >= i) over all 3 rounds: [1, 1/3, 1/3, 0] (the offered-only `unconditional`:
    # [1, 1/2, 1/2, NaN], test_per_position_excludes_post_eos_hand); 1 + sum = 8/3 = tau.
    pp = t["per_position"].filter((pl.col("decoding") == "greedy") & (pl.col("gamma") == 4)).sort("position")
    assert pp["marginal"].to_list() == pytest.approx([1, 1 / 3, 1 / 3, 0])
    assert pp["conditional_from_marginal"].to_list() == pytest.approx([1, 1 / 3, 1, 0])
    assert 1 + sum(pp["marginal"]) == pytest.approx(rows(t["summary"], "greedy")[4]["tau"])
    iid = t["per_position"].filter((pl.col("decoding") == "sampled") & (pl.col("gamma") == 2))
    assert iid["marginal"].is_null().all()   # iid_from_alpha: nothing measured
    c = t["histogram_checks"]
    assert c.height == 4 and c["passed"].all()
    assert c.filter(pl.col("method") == "loop")["histogram_accepted"].to_list() == [5, 5]


def test_iid_rows_leave_measured_columns_null(tables):
    t, _ = tables
    s = rows(t["summary"], "sampled")
    # sampled, no loop at gamma 2: nothing measured the rounds.
    r = s[2]
    assert r["method"] == "iid_from_alpha"
    for k in ("rounds", "drafted", "accepted", "token_acceptance_rate", "tau", "tokens_per_call",
              "token_acceptance_rate_lo", "token_acceptance_rate_hi", "tau_lo", "tau_hi",
              "token_acceptance_rate_in_answer", "post_eos_drafted"):
        assert r[k] is None, k
    assert r["n_samples"] == 2  # the samples alpha was measured on
    # alpha = mean summin = 0.5. Predictions at gamma 2: iid_tau = 1 + 0.5 + 0.25 = 1.75,
    # iid_token_acceptance = (0.5 + 0.25) / 2 = 0.375.
    assert r["leviathan_alpha"] == pytest.approx(0.5)
    assert r["iid_tau"] == pytest.approx(1.75) and r["iid_token_acceptance"] == pytest.approx(0.375)
    # The loop row carries the prediction beside its measurement: gamma 4, iid_tau
    # 1 + 0.5 + 0.25 + 0.125 + 0.0625 = 1.9375, iid_token_acceptance 0.9375 / 4; measured tau 8/3.
    r = s[4]
    assert r["tau"] == pytest.approx(8 / 3) and r["iid_tau"] == pytest.approx(1.9375)
    assert r["iid_token_acceptance"] == pytest.approx(0.9375 / 4)
    # Greedy rows too: alpha 5/6 (5 matches of 6), gamma 4.
    r = rows(t["summary"], "greedy")[4]
    assert r["iid_tau"] == pytest.approx(sum((5 / 6) ** k for k in range(5)))
    # Per-position rows of an iid row: nothing measured either.
    pp = t["per_position"].filter((pl.col("decoding") == "sampled") & (pl.col("gamma") == 2))
    assert pp["unconditional"].is_null().all() and pp["conditional"].is_null().all()
    assert t["summary"].columns[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS


def test_timing_columns_hand(tables):
    """c, verify cost, overhead and the measured speedup come from the run's timing job alone."""
    t, _ = tables
    # best gamma, greedy (alpha 5/6): at c = 5/9 speedups 1.179, 1.188 (gamma 2: 2.5278/2.1111), 1.143 -> 2;
    # at c_hi 0.75: 1.048, 1.011 -> 1; at c_lo 0.4: 1.310, 1.404, 1.412 (gamma 3: 3.1065/2.2), 1.380 -> 3.
    # sampled (alpha 0.5): c >= alpha -> 0; at c_hi 0; at c_lo 0.4: gamma 1 1.5/1.4 = 1.071,
    # gamma 2 1.75/1.8 < 1 -> 1.
    want = {"greedy": (1, 2, 3), "sampled": (0, 0, 1)}
    for dec, (lo, best, hi) in want.items():
        for r in rows(t["summary"], dec).values():
            assert (r["c"], r["c_lo"], r["c_hi"]) == (pytest.approx(C), pytest.approx(C_LO), pytest.approx(C_HI))
            assert (r["best_gamma_lo"], r["best_gamma"], r["best_gamma_hi"]) == (lo, best, hi)
            assert r["device"] == "cpu (toy)"
            assert r["round_overhead_ms"] == pytest.approx(3.0)
        cost = t["cost"].filter(pl.col("decoding") == dec)
        assert cost["c_lo"].to_list() == pytest.approx([C_LO] * 2)
        assert cost["c_hi"].to_list() == pytest.approx([C_HI] * 2)
        assert (cost["best_gamma_lo"] == lo).all() and (cost["best_gamma_hi"] == hi).all()
        # the prefills and steps: means over clips of the timing job's own passes
        assert cost["target_prefill_ms"].to_list() == [20.0, 20.0] and cost["target_step_ms"].to_list() == [4.5, 4.5]
    g = rows(t["summary"], "greedy")
    assert g[2]["verify_cost"] == pytest.approx(4 / 3) and g[4]["verify_cost"] == pytest.approx(15.5 / 9)
    # the loop was timed at gamma 4 only: measured there, null at gamma 2
    assert g[4]["measured_speedup"] == pytest.approx(8 / 7)
    assert (g[4]["measured_speedup_lo"], g[4]["measured_speedup_hi"]) == (pytest.approx(1.1), pytest.approx(1.2))
    assert g[2]["measured_speedup"] is None
    loop = t["loop"].filter(pl.col("decoding") == "greedy").row(0, named=True)
    assert loop["measured_speedup"] == pytest.approx(8 / 7)   # the timing job's, not loop job / generation job
    # predicted at greedy gamma 4 from the replay's rounds: accepted 3, 1, 1 -> marginals 1, 1/3, 1/3, 0 and
    # E = 8/3 (= tau); a round costs 4 c + v(4) + o = (20 + 15.5) / 9 + 3 / 4.5 = 41.5 / 9 target steps
    assert g[4]["predicted_speedup_steady"] == pytest.approx((8 / 3) / (41.5 / 9))
    # sequential prefill, L = 3 (mean answer): (T_p + L) / (D_p + T_p + L / E * R), prefills 10 and 20 ms / 4.5
    assert g[4]["predicted_speedup"] == pytest.approx((20 / 4.5 + 3) / (30 / 4.5 + 3 / (8 / 3) * 41.5 / 9))
    # break-even: 1 + a + ... + a^4 = R
    a = g[4]["break_even_alpha"]
    assert sum(a ** k for k in range(5)) == pytest.approx(41.5 / 9)
    # sampled at gamma 2 (no loop rounds): no measured marginals, so no predicted speedup. Break-even needs
    # none, but a round of 2 proposals costs 2 c + v(2) + o = 10/9 + 4/3 + 2/3 = 28/9 > 3 target steps, more
    # than it can ever yield (gamma + 1 = 3 tokens): no alpha pays off, at either decoding
    s2 = rows(t["summary"], "sampled")[2]
    assert s2["predicted_speedup"] is None and s2["break_even_alpha"] is None and g[2]["break_even_alpha"] is None
    # greedy gamma 2: accepted 2, 1, 1 -> marginals 1, 1/3, E = 7/3 (= tau (4 + 3) / 3): 21/28 of a plain step
    assert g[2]["predicted_speedup_steady"] == pytest.approx(0.75)


def test_timings_of_two_devices_are_refused(tmp_path):
    run = write_run(tmp_path, Decoding("greedy", max_new_tokens=BUDGET), None)
    rows_ = timing_rows() + [{**r, "sample_id": "c", "device": "NVIDIA H100"} for r in timing_rows()[:8]]
    artifacts.write_parquet(artifacts.table("timing", rows_), run.timing, "timing")
    with pytest.raises(ValueError, match=r"'NVIDIA H100' and 'cpu \(toy\)'"):
        acceptance_tables([run], [2], n_boot=50)


def test_render_labels_predictions(tables):
    t, _ = tables
    md = render(t["summary"], t["loop"], t["cost"], {}, {})
    headers = [line for line in md.splitlines() if line.startswith("| dataset")]
    cells = [c.strip() for h in headers for c in h.strip("|").split("|")]
    for col in ("iid_tau", "iid_token_acceptance", "expected_speedup_iid", "latency_speedup", "best_gamma",
                "best_gamma_lo", "best_gamma_hi", "speedup_iid"):
        assert f"{col} (predicted)" in cells, col
        assert col not in cells, f"{col} shown without its label"
    for col in ("token_acceptance_rate", "tau", "c", "c_lo", "c_hi", "token_acceptance_rate_in_answer"):
        assert col in cells and f"{col} (predicted)" not in cells
    # the iid row's measured cells are empty ("—"); the prediction is in its labelled column
    measured = table_rows(md, "### Per lookahead gamma: measured")
    predicted = table_rows(md, "### Per lookahead gamma: predicted by the i.i.d. model")
    iid = [r for r in measured if r["method"] == "iid_from_alpha"]
    assert len(iid) == 1 and iid[0]["token_acceptance_rate"] == "—" and iid[0]["tau"] == "—"
    iid = [r for r in predicted if r["method"] == "iid_from_alpha"]
    assert iid[0]["iid_tau (predicted)"] == "1.750" and iid[0]["tau"] == "—"


def table_rows(md: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first markdown table after `heading`, as {header: cell}."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line == heading)
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
        elif table:
            break
    header, body = table[0], table[2:]
    return [dict(zip(header, r)) for r in body]


def test_draft_ranking_by_hand():
    """Ranked by the best predicted speedup over gammas; a draft without one (no c) is listed last."""
    from specalign.report_tables import draft_ranking

    k = {"dataset": "d", "target": "t", "decoding": "greedy"}
    summary = pl.DataFrame([
        {**k, "draft": "a", "gamma": 1, "expected_speedup_iid": 1.2, "leviathan_alpha": 0.6, "c": 0.2},
        {**k, "draft": "a", "gamma": 2, "expected_speedup_iid": 1.5, "leviathan_alpha": 0.6, "c": 0.2},
        {**k, "draft": "b", "gamma": 1, "expected_speedup_iid": None, "leviathan_alpha": 0.9, "c": None},
        {**k, "draft": "c", "gamma": 1, "expected_speedup_iid": 1.3, "leviathan_alpha": 0.7, "c": 0.3}])
    loop = pl.DataFrame([{**k, "draft": "b", "gamma": 4, "measured_speedup": 0.8}])
    r = draft_ranking(summary, loop)
    assert r.select("rank", "draft", "best_predicted_gamma", "best_predicted_speedup", "best_measured_speedup").rows() \
        == [(1, "a", 2, 1.5, None), (2, "c", 1, 1.3, None), (3, "b", None, None, 0.8)]


def test_alpha_argmax_and_draft_sampling_hand(tmp_path):
    """alpha_argmax = the pooled mean of target_prob_of_draft_argmax, its interval over samples as
    leviathan_alpha's: a 0.9 at its 3 positions, b 0.3 at its 3 -> (2.7 + 0.9) / 6 = 0.6;
    resamples {a,a} 0.9, {a,b} 0.6, {b,b} 0.3 (probabilities 1/4, 1/2, 1/4) -> [0.3, 0.9].
    Every row and loop row says how its loop drafted; shards of one gamma that drafted differently
    are refused, naming the files; rounds written without the column are what the loop did then."""
    import dataclasses

    run = write_run(tmp_path, Decoding("sampled", do_sample=True, max_new_tokens=BUDGET), 0.5)
    scores = pl.read_parquet(run.scores).with_columns(
        pl.when(pl.col("sample_id") == "a").then(0.9).otherwise(0.3).alias("target_prob_of_draft_argmax"))
    artifacts.write_parquet(scores.to_arrow(), run.scores, "scores")
    # written without a draft_sampling: the loop sampled from q (all it could do before the setting)
    t = acceptance_tables([run], [2, 4], n_boot=1000)
    r = rows(t["summary"], "sampled")
    assert r[4]["alpha_argmax"] == pytest.approx(0.6) and r[4]["leviathan_alpha"] == pytest.approx(0.5)
    assert (r[4]["alpha_argmax_lo"], r[4]["alpha_argmax_hi"]) == pytest.approx((0.3, 0.9))
    assert r[2]["alpha_argmax"] == r[4]["alpha_argmax"]            # per position: the same for every gamma
    assert (r[4]["draft_sampling"], r[2]["draft_sampling"]) == ("sample", None)  # gamma 2: no loop ran
    assert t["loop"]["draft_sampling"].to_list() == ["sample"]
    assert t["loop"]["draft_flip_rate"].to_list() == [None]  # the sample rule has no argmax to flip
    assert t["summary"].columns.index("alpha_argmax") == t["summary"].columns.index("leviathan_alpha") + 1

    rounds = pl.read_parquet(run.rounds[0]).with_columns(pl.lit("argmax").alias("draft_sampling"))
    artifacts.write_parquet(rounds.to_arrow(), run.rounds[0], "rounds")
    t = acceptance_tables([run], [4], n_boot=50)
    assert rows(t["summary"], "sampled")[4]["draft_sampling"] == "argmax"
    assert t["loop"]["draft_sampling"].to_list() == ["argmax"]
    assert t["loop"]["draft_flip_rate"].to_list() == [0.0]   # argmax drafting: the draft's flip check ran

    # two shards (a | b) of the same gamma, one drafted argmax, the other sampled
    shards = [tmp_path / "shard0.parquet", tmp_path / "shard1.parquet"]
    for f, sid, how in zip(shards, "ab", ("argmax", "sample")):
        part = rounds.filter(pl.col("sample_id") == sid).with_columns(pl.lit(how).alias("draft_sampling"))
        artifacts.write_parquet(part.to_arrow(), f, "rounds")
    assert acceptance_tables([dataclasses.replace(run, rounds=(str(shards[0]),))], [4], n_boot=50)["loop"].height
    other = shards[1]
    mixed = dataclasses.replace(run, rounds=tuple(map(str, shards)))
    with pytest.raises(ValueError, match=f"gamma 4: the loop's rounds mix draft_sampling.*{other}"):
        acceptance_tables([mixed], [4], n_boot=50)
