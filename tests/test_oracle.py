"""Tests for specalign.oracle: the router across drafts and the per-round oracle gamma, hand-worked.

Every replay below follows docs/architecture.md's rule (s: tokens emitted, N: stream length, B: budget):
    fixed gamma:   g = min(gamma, B - s - 1); a = min(g, run of matches from s, N - s)
    oracle gamma:  g = a = min(run of matches from s, cap, B - s - 1)
    emitted = a if s + a == N else a + 1
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from specalign import acceptance as acc
from specalign import artifacts, oracle
from specalign import replay as rp
from specalign.specs import Decoding, Run

BUDGET = 16


def scores_frame(matches: dict[str, list[int]], summin: float | None = None, tokens=None) -> pl.DataFrame:
    """A scores table: target token 10 + position (or `tokens`), greedy summin = match unless given."""
    rows = []
    for sid, m in matches.items():
        for j, bit in enumerate(m):
            tok = (tokens or {}).get(sid, [10 + k for k in range(len(m))])[j]
            rows.append({"sample_id": sid, "position": j, "target_token": tok, "draft_token": tok if bit else 1,
                         "draft_argmax_id": tok if bit else 1, "match": bool(bit), "draft_logprob": -0.1,
                         "target_logprob": -0.1, "summin": float(bit) if summin is None else summin,
                         "mapped_mass": 1.0, "target_prob_of_draft_argmax": float(bit),
                         "is_eos": j == len(m) - 1, "max_new_tokens": BUDGET})
    return pl.from_arrow(artifacts.table("scores", rows))


def streams(matches: list[int], budget: int = BUDGET) -> rp.Streams:
    return rp.Streams.one([bool(b) for b in matches], budget)


def summary(rounds: rp.Rounds) -> dict:
    return oracle._round_columns(rounds, n_boot=10)


# ---------------------------------------------------------------------------------- oracle gamma
def time_at(row: dict, c: float) -> float:
    """The round cost model's time (target steps): rounds + c * drafted."""
    return row["rounds"] + c * row["drafted"]


def test_oracle_gamma_hand():
    # matches 1 1 0 1 1 1 (N 6, the last token EOS).
    # fixed gamma 1: s0 a1 e2 | s2 a0 e1 | s3 a1 e2 | s5 a1 accepted EOS e1 -> 4 rounds, drafted 4, accepted 3
    # fixed gamma 3: s0 a2 e3 | s3 a3 accepted EOS e3 -> 2 rounds, drafted 6, accepted 5, tau 7/2, 3 per call
    # oracle cap 3: s0 g = min(run 2, 3, N-s-1 = 5) = 2, e3 | s3 g = min(3, 3, 2) = 2, e3 (the EOS comes from
    #   the verify pass) -> 2 rounds, drafted = accepted = 4: 3 tokens per call as fixed 3, 2 draft steps fewer
    # oracle cap 1: s0 g1 e2 | s2 g0 e1 | s3 g1 e2 | s5 g = min(1, 1, 0) = 0, e1 -> 4 rounds, drafted 2
    m = [1, 1, 0, 1, 1, 1]
    fixed1, fixed3 = summary(rp.replay(streams(m), 1)), summary(rp.replay(streams(m), 3))
    assert (fixed1["rounds"], fixed1["drafted"], fixed1["accepted"]) == (4, 4, 3)
    assert (fixed3["rounds"], fixed3["drafted"], fixed3["accepted"]) == (2, 6, 5)
    o3 = oracle.oracle_gamma_replay(streams(m), 3)
    assert o3.drafted.tolist() == [2, 2] and o3.accepted.tolist() == [2, 2] and o3.emitted.tolist() == [3, 3]
    s3 = summary(o3)
    assert s3["tokens_per_call"] == fixed3["tokens_per_call"] == 3.0 and s3["token_acceptance_rate"] == 1.0
    # tau counts a bonus token after fixed 3's accepted EOS that is never emitted: 3.5 against the oracle's 3
    assert (fixed3["tau"], s3["tau"]) == (3.5, 3.0)
    assert time_at(s3, 0.5) == 4.0 and time_at(fixed3, 0.5) == 5.0
    o1 = oracle.oracle_gamma_replay(streams(m), 1)
    assert o1.start.tolist() == [0, 2, 3, 5] and o1.drafted.tolist() == [1, 0, 1, 0]
    s1 = summary(o1)
    assert (s1["rounds"], s1["drafted"], s1["accepted"]) == (4, 2, 2)
    assert s1["tokens_per_call"] == fixed1["tokens_per_call"] == 1.5


def test_oracle_gamma_unbounded_takes_whole_runs():
    # matches 1 1 1 1 1 0 1 (N 7). cap 3: s0 g3 e4 | s4 g1 e2 | s6 g = min(1, 3, 0) = 0, e1 -> 3 rounds, drafted 4.
    # unbounded: s0 g5 e6 (the target's own token at position 5 from the verify pass) | s6 g0 e1 -> 2 rounds.
    m = [1, 1, 1, 1, 1, 0, 1]
    capped = summary(oracle.oracle_gamma_replay(streams(m), 3))
    free = summary(oracle.oracle_gamma_replay(streams(m), None))
    assert (capped["rounds"], capped["drafted"], capped["tokens_per_call"]) == (3, 4, pytest.approx(7 / 3))
    assert (free["rounds"], free["drafted"], free["tokens_per_call"]) == (2, 5, 3.5)


def test_oracle_gamma_respects_length_budget():
    # a stream cut at the budget (N = B = 4, every token matched): g = min(run 4, B - 0 - 1 = 3, N - 0 - 1 = 3)
    # = 3, e 4: one round, 3 accepted (the last token is the verify pass's own)
    r = oracle.oracle_gamma_replay(streams([1, 1, 1, 1], budget=4), None)
    assert (r.drafted.tolist(), r.emitted.tolist()) == ([3], [4])


def random_streams(rng, n_clips: int, p: float, budget: int = 12) -> rp.Streams:
    """Clips of random lengths (some cut at the budget) with i.i.d. match bits at rate p."""
    lengths = rng.integers(1, budget + 1, size=n_clips)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    matches = rng.random(int(offsets[-1])) < p
    return rp.Streams([f"s{k:03d}" for k in range(n_clips)], offsets, matches,
                       np.full(n_clips, budget, dtype=np.int64))


@pytest.mark.parametrize("seed", range(6))
def test_oracle_gamma_is_the_fastest_policy_at_every_cost(seed):
    rng = np.random.default_rng(seed)
    st = random_streams(rng, 40, p=[0.3, 0.6, 0.9][seed % 3])
    for cap in (1, 3, 5):
        o = summary(oracle.oracle_gamma_replay(st, cap))
        assert o["accepted"] == o["drafted"] and o["emitted"] == o["rounds"] + o["drafted"]   # nothing wasted
        fixed = [summary(rp.replay(st, g)) for g in range(1, cap + 1)]
        # the oracle's rounds at its cap are the fixed cap's (a = min(gamma, run) in both)
        assert o["rounds"] == fixed[-1]["rounds"]
        for f in fixed:
            assert o["emitted"] == f["emitted"]           # the same tokens, in no more target calls
            assert o["rounds"] <= f["rounds"] and o["tokens_per_call"] >= f["tokens_per_call"]
            for c in (0.0, 0.25, 0.5, 0.9, 1.0):
                assert time_at(o, c) <= time_at(f, c) + 1e-9


# ---------------------------------------------------------------------------------- router
# Two clips, N 4, gamma 2:
#   x: draft a 1111 -> s0 a2 e3 | s3 a1 EOS e1: 2 rounds, accepted 3.   draft b 0000 -> 4 rounds, accepted 0.
#   y: draft a 0101 -> s0 a0 e1 | s1 a1 e2 | s3 a1 EOS e1: 3 rounds, accepted 2.
#      draft b 1101 -> s0 a2 e3 | s3 a1 EOS e1: 2 rounds, accepted 3.
# a alone: 5 rounds, 5 accepted, tau 10/5 = 2; b alone: 6 rounds, 3 accepted, tau 9/6 = 1.5.
# router: x -> a, y -> b: 4 rounds, 6 accepted, tau 10/4 = 2.5, tokens_per_call 8/4 = 2.
ROUTER_A = {"x": [1, 1, 1, 1], "y": [0, 1, 0, 1]}
ROUTER_B = {"x": [0, 0, 0, 0], "y": [1, 1, 0, 1]}


def test_router_hand():
    sa, sb = acc.streams(scores_frame(ROUTER_A)), acc.streams(scores_frame(ROUTER_B))
    ra, rb = rp.replay(sa, 2), rp.replay(sb, 2)
    routed = oracle.route({"a": ra, "b": rb})
    assert routed.drafts == ["a", "b"] and routed.choice.tolist() == [0, 1]
    s = summary(routed.rounds)
    assert (s["rounds"], s["accepted"], s["emitted"]) == (4, 6, 8)
    assert s["tau"] == pytest.approx(2.5) and s["tokens_per_call"] == pytest.approx(2.0)
    assert summary(ra)["tau"] == pytest.approx(2.0) and summary(rb)["tau"] == pytest.approx(1.5)
    # the routed rounds are the chosen drafts' own, clip by clip, in round order
    assert routed.rounds.sample.tolist() == [0, 0, 1, 1] and routed.rounds.start.tolist() == [0, 3, 0, 3]


def test_router_alpha_is_the_per_clip_best_summin():
    # x: a 4, b 0 -> 4; y: a 2, b 3 -> 3: (4 + 3) / 8. The drafts alone: 6/8 and 4/8.
    both = {"a": scores_frame(ROUTER_A), "b": scores_frame(ROUTER_B)}
    assert oracle.routed_alpha(both) == pytest.approx(7 / 8)


def test_router_tie_goes_to_more_accepted():
    # N 2, gamma 1. "a" 0 0: s0 a0 e1 | s1 a0 e1 -> 2 rounds, accepted 0, tau 1.
    #               "b" 0 1: s0 a0 e1 | s1 a1 accepted EOS e1 -> 2 rounds, accepted 1, tau 3/2.
    # Equal rounds: "b" (more accepted), although "a" comes first by name; picking "a" would give the
    # router tau 1 < b's 3/2.
    ra = rp.replay(streams([0, 0]), 1)
    rb = rp.replay(streams([0, 1]), 1)
    routed = oracle.route({"a": ra, "b": rb})
    assert routed.choice.tolist() == [1]
    assert summary(routed.rounds)["tau"] == pytest.approx(1.5)


@pytest.mark.parametrize("seed", range(6))
def test_router_dominates_every_draft(seed):
    rng = np.random.default_rng(100 + seed)
    base = random_streams(rng, 30, p=0.5)
    drafts = {}
    for k, p in enumerate((0.2, 0.5, 0.8)):   # three drafts along the same streams
        m = rng.random(len(base.matches)) < p
        drafts[f"d{k}"] = rp.Streams(base.sample_ids, base.offsets, m, base.budgets)
    for g in (1, 2, 4, 7):
        per = {n: rp.replay(s, g) for n, s in drafts.items()}
        r = summary(oracle.route(per).rounds)
        for n in per:
            d = summary(per[n])
            assert r["tau"] >= d["tau"] - 1e-12 and r["tokens_per_call"] >= d["tokens_per_call"] - 1e-12
            assert r["rounds"] <= d["rounds"]


def test_shared_scores_refuses_different_streams():
    a = scores_frame({"x": [1, 0]})
    b = scores_frame({"x": [1, 0]}, tokens={"x": [10, 99]})
    with pytest.raises(ValueError, match="same target streams"):
        oracle.shared_scores({"a": a, "b": b})


def test_shared_scores_keeps_clips_every_draft_scored():
    a = scores_frame({"x": [1, 0], "y": [1]})
    b = scores_frame({"x": [0, 0]})
    out = oracle.shared_scores({"a": a, "b": b})
    assert out["a"]["sample_id"].unique().to_list() == ["x"]


# ---------------------------------------------------------------------------------- rows / table
def write_run(tmp_path, draft: str, matches: dict, decoding: Decoding, summin=None) -> Run:
    path = tmp_path / f"{draft}_{decoding.name}.parquet"
    artifacts.write_parquet(artifacts.table("scores", scores_frame(matches, summin).to_dicts()), path, "scores")
    return Run(dataset="toy", pair=f"{draft}__tg", draft=draft, target="tg", decoding=decoding,
               scores=str(path), translation="", target_vocab="")


def test_oracle_table_greedy_hand(tmp_path):
    greedy = Decoding("greedy", max_new_tokens=BUDGET)
    runs = [write_run(tmp_path, "a", ROUTER_A, greedy), write_run(tmp_path, "b", ROUTER_B, greedy)]
    t = oracle.oracle_table(runs, [1, 2], n_boot=20)
    assert t.columns == list(oracle.COLUMNS)
    router = t.filter((pl.col("kind") == "oracle_router") & (pl.col("gamma") == 2)).row(0, named=True)
    assert router["draft"] == oracle.ROUTER and router["is_bound"] and router["candidates"] == "a,b"
    assert router["routed"] == "a:1,b:1" and router["tau"] == pytest.approx(2.5)
    assert router["leviathan_alpha"] == pytest.approx(7 / 8)
    measured = t.filter(pl.col("kind") == "measured")
    assert not measured["is_bound"].any() and measured.height == 4
    a2 = measured.filter((pl.col("draft") == "a") & (pl.col("gamma") == 2)).row(0, named=True)
    assert a2["tau"] == pytest.approx(2.0) and a2["leviathan_alpha"] == pytest.approx(6 / 8)
    # draft a's oracle gamma, cap 2: x: s0 g2 e3 | s3 g = min(1, 2, N-s-1 = 0) = 0, e1;
    # y: s0 g0 e1 | s1 g1 e2 | s3 g0 e1 -> 5 rounds, drafted = accepted = 3, 8 tokens: 1.6 per call, as
    # fixed gamma 2 (5 rounds), which drafted 10.
    og = t.filter((pl.col("kind") == "oracle_gamma") & (pl.col("draft") == "a") & (pl.col("gamma_cap") == 2))
    og = og.row(0, named=True)
    assert (og["rounds"], og["drafted"], og["accepted"], og["emitted"]) == (5, 3, 3, 8)
    assert og["tokens_per_call"] == pytest.approx(1.6) and a2["tokens_per_call"] == pytest.approx(1.6)
    assert og["mean_gamma"] == pytest.approx(0.6) and og["token_acceptance_rate"] == 1.0
    assert og["gamma"] is None and og["c"] is None and og["speedup_at_c"] is None   # no c given
    # one unbounded row per draft too (gamma_cap empty)
    assert t.filter((pl.col("kind") == "oracle_gamma") & pl.col("gamma_cap").is_null()).height == 2


def test_oracle_table_sampled_fills_alpha_only(tmp_path):
    sampled = Decoding("sampled", do_sample=True, max_new_tokens=BUDGET)
    runs = [write_run(tmp_path, "a", ROUTER_A, sampled, summin=0.25),
            write_run(tmp_path, "b", ROUTER_B, sampled, summin=0.5)]
    t = oracle.oracle_table(runs, [2], n_boot=20)
    assert set(t["kind"]) == {"measured", "oracle_router"}      # no oracle gamma under sampling
    assert set(t["method"]) == {"summin_expectation"}
    assert t["rounds"].is_null().all() and t["tau"].is_null().all()
    router = t.filter(pl.col("kind") == "oracle_router").row(0, named=True)
    assert router["leviathan_alpha"] == pytest.approx(0.5) and router["routed"] is None


def test_single_draft_has_no_router_rows(tmp_path):
    greedy = Decoding("greedy", max_new_tokens=BUDGET)
    t = oracle.oracle_table([write_run(tmp_path, "a", ROUTER_A, greedy)], [2], n_boot=20)
    assert set(t["kind"]) == {"measured", "oracle_gamma"}


def test_empty_table_has_every_column():
    assert oracle.oracle_table([], [1], n_boot=10).columns == list(oracle.COLUMNS)


def test_speedup_at_c_hand(tmp_path):
    # c: a 0.5, b 0.25 (time = rounds + c * drafted, 8 tokens in all).
    # a, fixed gamma 1: x: s0 a1 e2 | s2 a1 e2 (s + a = 3 != 4); y: s0 a0 e1 | s1 a1 e2 | s3 a1 EOS e1
    #   -> 5 rounds, drafted 5: 8 / (5 + 2.5) = 16/15. fixed gamma 2: 5 rounds, drafted 10: 8 / 10 = 0.8.
    # a's oracle gamma (cap 2): 5 rounds, drafted 3: 8 / 6.5 = 16/13, against the best fixed (gamma 1) 16/15.
    # router at gamma 2 (x -> a: 2 rounds, drafted 4; y -> b: 2 rounds, drafted 4):
    #   4 rounds + 0.5 * 4 + 0.25 * 4 = 7 -> 8/7.
    greedy = Decoding("greedy", max_new_tokens=BUDGET)
    runs = [write_run(tmp_path, "a", ROUTER_A, greedy), write_run(tmp_path, "b", ROUTER_B, greedy)]
    costs = {("toy", "a", "tg", "greedy"): 0.5, ("toy", "b", "tg", "greedy"): 0.25}
    t = oracle.oracle_table(runs, [1, 2], n_boot=20, costs=costs)
    a = {r["gamma"]: r for r in t.filter((pl.col("kind") == "measured") & (pl.col("draft") == "a")).iter_rows(named=True)}
    assert a[1]["speedup_at_c"] == pytest.approx(16 / 15) and a[2]["speedup_at_c"] == pytest.approx(0.8)
    assert a[1]["c"] == 0.5
    og = t.filter((pl.col("kind") == "oracle_gamma") & (pl.col("draft") == "a") & (pl.col("gamma_cap") == 2)).row(
        0, named=True)
    assert og["speedup_at_c"] == pytest.approx(16 / 13)
    assert (og["best_fixed_gamma"], og["best_fixed_speedup_at_c"]) == (1, pytest.approx(16 / 15))
    router = t.filter((pl.col("kind") == "oracle_router") & (pl.col("gamma") == 2)).row(0, named=True)
    assert router["speedup_at_c"] == pytest.approx(8 / 7) and router["c"] is None


def test_run_costs_from_the_summary():
    s = pl.DataFrame({"dataset": ["d"] * 3, "draft": ["a", "a", "b"], "target": ["t"] * 3,
                      "decoding": ["greedy"] * 3, "gamma": [1, 2, 1], "c": [0.5, 0.5, None],
                      "ablation": [None, None, None]}, schema_overrides={"ablation": pl.String})
    assert oracle.run_costs(s) == {("d", "a", "t", "greedy"): 0.5}
    assert oracle.run_costs(pl.DataFrame()) == {}
