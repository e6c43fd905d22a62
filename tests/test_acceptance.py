"""Tests for specalign.acceptance: hand-worked rounds, formulas and summaries.

Every expected number below is worked out by hand in the comment above it, from the rule in
docs/architecture.md ("Greedy round replay"):
    g = max(0, min(gamma, max_new_tokens - s - 1)); a = min(g, run of True from s, N - s);
    emitted = a if s + a == N else a + 1; s += emitted.
"""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from specalign.acceptance import (
    PositionalMatch,
    Round,
    best_gamma,
    bootstrap_ci,
    cost_model,
    expected_speedup,
    expected_tokens_per_call,
    iid_token_acceptance,
    per_position,
    positional_match,
    positional_match_rate,
    replay_rounds,
    replay_rounds_table,
    replay_summary,
    rounds_summary,
)


def R(*t):
    """Round(start, drafted, accepted, emitted) tuples -> list[Round]."""
    return [Round(*x) for x in t]


def scores_frame(streams: dict[str, tuple[list[int], int]], summin: dict[str, list[float]] | None = None,
                 mapped: float = 1.0) -> pl.DataFrame:
    """A minimal "scores" artifact: {sample_id: (matches, max_new_tokens)}; greedy summin = match."""
    rows = []
    for sid, (m, budget) in streams.items():
        for j, x in enumerate(m):
            rows.append({"sample_id": sid, "position": j, "match": bool(x),
                         "summin": float(summin[sid][j]) if summin else float(x),
                         "mapped_mass": mapped, "max_new_tokens": budget})
    return pl.DataFrame(rows, schema={"sample_id": pl.String, "position": pl.Int32, "match": pl.Boolean,
                                      "summin": pl.Float32, "mapped_mass": pl.Float32, "max_new_tokens": pl.Int32})


# ------------------------------------------------------------------------------------------------
# replay_rounds: hand-worked examples
# ------------------------------------------------------------------------------------------------

# index:    0  1  2  3  4  5  6  7  8
HAND = [1, 1, 0, 1, 1, 1, 0, 0, 1]     # N = 9, max_new_tokens = 9
# run of True starting at j:  j=0:2  1:1  2:0  3:3  4:2  5:1  6:0  7:0  8:1
# Since N == max_new_tokens, g = min(gamma, 8 - s): at s = 7 g <= 1, at s = 8 g = 0.

HAND_ROUNDS = {
    # gamma 1:
    # s=0: g=1, a=min(1,2)=1, e=2 -> s=2 | s=2: g=1, a=0, e=1 -> s=3 | s=3: g=1, a=1, e=2 -> s=5
    # s=5: g=1, a=min(1,1)=1, e=2 -> s=7 | s=7: g=min(1,1)=1, a=0, e=1 -> s=8
    # s=8: g=min(1,0)=0, a=0, s+a=8 != 9 so e=1 -> s=9.
    # drafted 5, accepted 3, emitted 9, rounds 6.
    1: R((0, 1, 1, 2), (2, 1, 0, 1), (3, 1, 1, 2), (5, 1, 1, 2), (7, 1, 0, 1), (8, 0, 0, 1)),
    # gamma 2:
    # s=0: g=2, a=2, e=3 -> 3 | s=3: g=2, a=min(2,3)=2, e=3 -> 6 | s=6: g=min(2,2)=2, a=0, e=1 -> 7
    # s=7: g=min(2,1)=1, a=0, e=1 -> 8 | s=8: g=0, e=1 -> 9.  drafted 7, accepted 4, rounds 5.
    2: R((0, 2, 2, 3), (3, 2, 2, 3), (6, 2, 0, 1), (7, 1, 0, 1), (8, 0, 0, 1)),
    # gamma 3:
    # s=0: g=3, a=2, e=3 -> 3 | s=3: g=min(3,5)=3, a=3, e=4 -> 7 | s=7: g=1, a=0 -> 8 | s=8: g=0 -> 9
    # drafted 7, accepted 5, rounds 4.
    3: R((0, 3, 2, 3), (3, 3, 3, 4), (7, 1, 0, 1), (8, 0, 0, 1)),
    # gamma 4: s=0: g=4, a=2, e=3 | s=3: g=min(4,5)=4, a=3, e=4 | s=7: g=1, a=0 | s=8: g=0.
    # drafted 9, accepted 5, rounds 4.
    4: R((0, 4, 2, 3), (3, 4, 3, 4), (7, 1, 0, 1), (8, 0, 0, 1)),
    # gamma 5: s=0: g=5, a=2, e=3 | s=3: g=min(5,5)=5, a=3, e=4 | s=7: g=1 | s=8: g=0.
    # drafted 11, accepted 5, rounds 4.
    5: R((0, 5, 2, 3), (3, 5, 3, 4), (7, 1, 0, 1), (8, 0, 0, 1)),
}
HAND_TOTALS = {1: (5, 3, 6), 2: (7, 4, 5), 3: (7, 5, 4), 4: (9, 5, 4), 5: (11, 5, 4)}  # drafted, accepted, rounds


@pytest.mark.parametrize("gamma", [1, 2, 3, 4, 5])
def test_replay_hand_example(gamma):
    rounds = replay_rounds(HAND, gamma, 9)
    assert rounds == HAND_ROUNDS[gamma]
    d, a, n = HAND_TOTALS[gamma]
    assert sum(r.drafted for r in rounds) == d
    assert sum(r.accepted for r in rounds) == a
    assert len(rounds) == n
    assert sum(r.emitted for r in rounds) == 9


def test_replay_accepted_eos_has_no_bonus():
    # Stream of 3 tokens ending with EOS (y_2 = EOS), all matched, budget 10, gamma 4:
    # s=0: g=min(4, 9)=4, a=min(4, 3, N-s=3)=3, s+a=3 == N -> emitted 3 (no bonus after EOS).
    assert replay_rounds([1, 1, 1], 4, 10) == R((0, 4, 3, 3))
    # Same stream at gamma 2: s=0: g=2, a=2, s+a=2 != 3 -> e=3 (the target emits EOS itself).
    assert replay_rounds([1, 1, 1], 2, 10) == R((0, 2, 2, 3))
    # [0, 1, 1], gamma 4: s=0: a=0, e=1 -> 1 | s=1: g=4, a=min(4, 2, 2)=2, s+a=3 == N -> e=2.
    assert replay_rounds([0, 1, 1], 4, 10) == R((0, 4, 0, 1), (1, 4, 2, 2))


def test_replay_length_cap_shrinks_g():
    # All matched, N = max_new_tokens = 7 (cut at the length budget, no EOS), gamma 4:
    # s=0: g=min(4, 6)=4, a=4, e=5 -> 5 | s=5: g=min(4, 7-5-1=1)=1, a=min(1, 2, 2)=1, 6 != 7 -> e=2.
    rounds = replay_rounds([1] * 7, 4, 7)
    assert rounds == R((0, 4, 4, 5), (5, 1, 1, 2))
    # drafted 5, accepted 5: rate 1, tau 7/2.
    assert sum(r.drafted for r in rounds) == 5 and sum(r.accepted for r in rounds) == 5
    # g floored at 0: budget 1, one token -> g = min(gamma, 1-0-1) = 0, the target emits it.
    assert replay_rounds([1], 3, 1) == R((0, 0, 0, 1))


@pytest.mark.parametrize("gamma", [1, 2, 3, 5])
@pytest.mark.parametrize("extra_budget", [0, 5])
def test_replay_all_true_multiple_of_block(gamma, extra_budget):
    # N = k (gamma + 1): each round starts at s = j (gamma+1); g = gamma even in the last one
    # (max_new_tokens - s - 1 >= gamma); a = gamma; s + a = N - 1 != N -> e = gamma + 1.
    k = 3
    n = k * (gamma + 1)
    rounds = replay_rounds([True] * n, gamma, n + extra_budget)
    assert rounds == [Round(j * (gamma + 1), gamma, gamma, gamma + 1) for j in range(k)]
    acc, dr = sum(r.accepted for r in rounds), sum(r.drafted for r in rounds)
    assert acc / dr == 1.0
    assert sum(r.emitted for r in rounds) / len(rounds) == gamma + 1


@pytest.mark.parametrize("gamma", [1, 4])
def test_replay_all_false(gamma):
    # Every round accepts 0 and emits the target's token: N rounds, tau 1. With the budget above
    # N every round drafts gamma; with budget == N the last one drafts 0 (s = N-1).
    n = 6
    rounds = replay_rounds([False] * n, gamma, n + 10)
    assert rounds == [Round(s, gamma, 0, 1) for s in range(n)]
    rounds = replay_rounds([False] * n, gamma, n)
    assert [r.accepted for r in rounds] == [0] * n and [r.emitted for r in rounds] == [1] * n
    assert rounds[-1].drafted == 0


def test_replay_validation():
    with pytest.raises(ValueError):
        replay_rounds([1, 1, 1], 2, 2)      # N > max_new_tokens
    with pytest.raises(ValueError):
        replay_rounds([1], 0, 5)            # gamma >= 1
    assert replay_rounds([], 3, 5) == []    # empty stream: no round


def test_replay_invariants_random():
    rng = np.random.default_rng(1234)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        budget = n + int(rng.integers(0, 3))
        gamma = int(rng.integers(1, 9))
        m = rng.random(n) < rng.random()
        rounds = replay_rounds(m, gamma, budget)
        assert sum(r.emitted for r in rounds) == n                          # every token emitted once
        assert all(0 <= r.accepted <= r.drafted <= gamma for r in rounds)
        assert all(r.emitted in (r.accepted, r.accepted + 1) for r in rounds)
        assert [r.start for r in rounds] == list(np.cumsum([0] + [r.emitted for r in rounds[:-1]]))
        dr, ac = sum(r.drafted for r in rounds), sum(r.accepted for r in rounds)
        tau = n / len(rounds)
        if dr:
            assert 0.0 <= ac / dr <= 1.0
        assert 1.0 <= tau <= gamma + 1


# ------------------------------------------------------------------------------------------------
# i.i.d. formulas
# ------------------------------------------------------------------------------------------------


def test_expected_tokens_per_call_hand():
    # alpha 0: only the target's token -> 1 for any gamma.
    assert expected_tokens_per_call(0.0, 4) == 1.0
    # alpha 0.5, gamma 2: (1 - 0.125) / 0.5 = 1.75 (= 1 + 0.5 + 0.25).
    assert expected_tokens_per_call(0.5, 2) == pytest.approx(1.75)
    # alpha 0.5, gamma 3: (1 - 0.0625) / 0.5 = 1.875.
    assert expected_tokens_per_call(0.5, 3) == pytest.approx(1.875)
    # alpha 1: the limit gamma + 1.
    assert expected_tokens_per_call(1.0, 3) == 4.0
    # gamma 0 is plain decoding: 1 token per call.
    assert expected_tokens_per_call(0.7, 0) == 1.0
    # Continuous at alpha -> 1 (no 0/0, no cancellation).
    assert expected_tokens_per_call(1 - 1e-12, 5) == pytest.approx(6.0)
    with pytest.raises(ValueError):
        expected_tokens_per_call(1.2, 2)


def test_expected_speedup_hand():
    # alpha 0.5, gamma 2, c 0.1: 1.75 / (2*0.1 + 1) = 1.75 / 1.2 = 1.458333...
    assert expected_speedup(0.5, 2, 0.1) == pytest.approx(1.75 / 1.2)
    # alpha 0, gamma 3, c 0.2: 1 / 1.6 = 0.625 (pure overhead).
    assert expected_speedup(0.0, 3, 0.2) == pytest.approx(0.625)
    # alpha 1, gamma 3, c 0: 4 / 1 = 4.
    assert expected_speedup(1.0, 3, 0.0) == 4.0
    # Two same-size models (c = 1), alpha 1: (gamma + 1) / (gamma + 1) = 1: no speedup at best.
    assert expected_speedup(1.0, 5, 1.0) == 1.0


def test_best_gamma():
    # alpha 0.8, c 0.05: speedups 1.714, 2.218, 2.567, 2.801, 2.951, 3.040, 3.082,
    # 3.0921 (gamma 8: 4.3289/1.4), 3.078 (gamma 9) -> 8.
    assert best_gamma(0.8, 0.05) == 8
    # max_gamma caps the search.
    assert best_gamma(0.8, 0.05, max_gamma=4) == 4
    # alpha <= c: never a speedup -> 0.
    assert best_gamma(0.5, 0.5) == 0
    assert best_gamma(0.3, 1.0) == 0
    assert best_gamma(1.0, 1.0) == 0
    assert best_gamma(0.0, 0.0) == 0
    # Brute check of the theorem on a grid.
    for a in np.linspace(0, 1, 11):
        for c in np.linspace(0, 1, 11):
            if a <= c:
                assert best_gamma(a, c) == 0
                assert all(expected_speedup(a, g, c) <= 1 + 1e-12 for g in range(1, 17))


def test_iid_token_acceptance_hand():
    # alpha 0: nothing accepted.
    assert iid_token_acceptance(0.0, 3) == 0.0
    # alpha 0.5, gamma 2: 0.5 (1 - 0.25) / (2 * 0.5) = 0.375 (= (0.5 + 0.25) / 2).
    assert iid_token_acceptance(0.5, 2) == pytest.approx(0.375)
    # alpha 0.5, gamma 1: equals alpha.
    assert iid_token_acceptance(0.5, 1) == pytest.approx(0.5)
    # alpha 1: 1.
    assert iid_token_acceptance(1.0, 4) == 1.0


def test_iid_matches_simulated_replay():
    # Sanity link between the formulas and the replay: i.i.d. Bernoulli(alpha) matches on a long
    # stream give tau ~ E[tokens per call] and rate ~ iid_token_acceptance.
    rng = np.random.default_rng(7)
    alpha, gamma, n = 0.6, 3, 60000
    rounds = replay_rounds(rng.random(n) < alpha, gamma, n + 1)
    tau = n / len(rounds)
    rate = sum(r.accepted for r in rounds) / sum(r.drafted for r in rounds)
    assert tau == pytest.approx(expected_tokens_per_call(alpha, gamma), rel=0.02)
    assert rate == pytest.approx(iid_token_acceptance(alpha, gamma), rel=0.02)


# ------------------------------------------------------------------------------------------------
# per-position
# ------------------------------------------------------------------------------------------------


def test_per_position_hand():
    # (drafted, accepted): (3,0) (3,1) (3,3) (2,2) (1,1) (3,2)
    rounds = R((0, 3, 0, 1), (1, 3, 1, 2), (3, 3, 3, 4), (7, 2, 2, 3), (10, 1, 1, 2), (12, 3, 2, 3))
    uncond, cond = per_position(rounds, 4)
    # i=1: a>=1: 5 rounds; d>=1: 6 -> 5/6.  cond denominator d>=1 & a>=0: 6 -> 5/6.
    # i=2: a>=2: (3,3) (2,2) (3,2) = 3; d>=2: 5 (all but (1,1)) -> 3/5.
    #      cond: d>=2 & a>=1: (3,1) (3,3) (2,2) (3,2) = 4 -> 3/4.
    # i=3: a>=3: 1; d>=3: 4 -> 1/4.  cond: d>=3 & a>=2: (3,3) (3,2) = 2 -> 1/2.
    # i=4: nobody drafted 4 -> NaN, NaN.
    np.testing.assert_allclose(uncond[:3], [5 / 6, 3 / 5, 1 / 4])
    np.testing.assert_allclose(cond[:3], [5 / 6, 3 / 4, 1 / 2])
    assert math.isnan(uncond[3]) and math.isnan(cond[3])


def test_per_position_hand_replay():
    # HAND at gamma 3: (d, a) = (3,2) (3,3) (1,0) (0,0).
    # i=1: a>=1: 2 / d>=1: 3 -> 2/3; cond denominator d>=1 & a>=0: 3 -> 2/3.
    # i=2: a>=2: 2 / d>=2: 2 -> 1; cond: d>=2 & a>=1: 2 -> 1.
    # i=3: a>=3: 1 / d>=3: 2 -> 1/2; cond: d>=3 & a>=2: 2 -> 1/2.
    uncond, cond = per_position(HAND_ROUNDS[3], 3)
    np.testing.assert_allclose(uncond, [2 / 3, 1, 1 / 2])
    np.testing.assert_allclose(cond, [2 / 3, 1, 1 / 2])


# ------------------------------------------------------------------------------------------------
# bootstrap
# ------------------------------------------------------------------------------------------------


def test_bootstrap_contains_point_and_is_deterministic():
    rng = np.random.default_rng(3)
    den = rng.integers(5, 30, size=40).astype(float)
    num = np.floor(den * rng.random(40))
    point = num.sum() / den.sum()
    lo, hi = bootstrap_ci(num, den, n_boot=500, seed=11)
    assert lo <= point <= hi and lo < hi
    assert bootstrap_ci(num, den, n_boot=500, seed=11) == (lo, hi)
    assert bootstrap_ci(num, den, n_boot=500, seed=12) != (lo, hi)


def test_bootstrap_degenerate():
    # Identical samples: every resample has the same pooled ratio 2/3 -> lo == hi == 2/3.
    lo, hi = bootstrap_ci([2, 2, 2, 2], [3, 3, 3, 3])
    assert lo == hi == pytest.approx(2 / 3)
    # One sample: every resample is that sample.
    assert bootstrap_ci([1], [4]) == (0.25, 0.25)
    # No sample, or no defined denominator: NaN.
    assert all(math.isnan(x) for x in bootstrap_ci([], []))
    assert all(math.isnan(x) for x in bootstrap_ci([0, 0], [0, 0]))


def test_bootstrap_resamples_samples_not_rounds():
    # Two samples, 10 rounds each: one all accepted (10/10), one none (0/10). Pooled 0.5.
    # Resampling samples gives only {0, 0.5, 1} with probabilities 1/4, 1/2, 1/4, so the
    # 95% interval is [0, 1]. Resampling the 20 rounds would give roughly 0.5 +- 0.22.
    lo, hi = bootstrap_ci([10, 0], [10, 10], n_boot=1000, seed=0)
    assert (lo, hi) == (0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# summaries
# ------------------------------------------------------------------------------------------------


def test_replay_summary_hand():
    # Sample "a" = HAND (budget 9); sample "b" = [1, 1, 1] ending with an accepted EOS (budget 10).
    # gamma 1, "b": s=0: g=1, a=1, e=2 -> 2 | s=2: g=1, a=min(1,1,1)=1, s+a=3 == N -> e=1.
    #   rounds 2, drafted 2, accepted 2.   With "a" (drafted 5, accepted 3, rounds 6):
    #   drafted 7, accepted 5, rounds 8, emitted 12 -> rate 5/7, tau (5 + 8)/8 = 1.625 (the doc's
    #   sum (a_r + 1) / rounds counts a bonus for b's accepted-EOS round), tokens per call 12/8 = 1.5.
    # gamma 3, "b": s=0: g=3, a=min(3,3,3)=3, s+a == N -> e=3: 1 round, drafted 3, accepted 3.
    #   With "a" (drafted 7, accepted 5, rounds 4): drafted 10, accepted 8, rounds 5,
    #   emitted 12 -> rate 0.8, tau (8 + 5)/5 = 2.6, tokens per call 12/5 = 2.4.
    # leviathan_alpha = mean summin over 12 positions = (6 + 3) / 12 = 0.75 (greedy: summin = match).
    # per position at gamma 3, rounds (d,a): a: (3,2) (3,3) (1,0) (0,0); b: (3,3)
    #   i=1: a>=1: 3 / d>=1: 4 -> 3/4; cond same denominator 4 -> 3/4
    #   i=2: a>=2: 3 / d>=2: 3 -> 1;   cond d>=2 & a>=1: 3 -> 1
    #   i=3: a>=3: 2 / d>=3: 3 -> 2/3; cond d>=3 & a>=2: 3 -> 2/3
    sc = scores_frame({"b": ([1, 1, 1], 10), "a": (HAND, 9)}, mapped=0.9)
    out = replay_summary(sc, [1, 3], n_boot=200)
    assert out.height == 2
    g1, g3 = out.row(0, named=True), out.row(1, named=True)
    assert (g1["gamma"], g1["n_samples"], g1["rounds"], g1["drafted"], g1["accepted"], g1["emitted"]) == (1, 2, 8, 7, 5, 12)
    assert g1["token_acceptance_rate"] == pytest.approx(5 / 7) and g1["tau"] == 1.625
    assert g1["tokens_per_call"] == 1.5
    assert (g3["rounds"], g3["drafted"], g3["accepted"], g3["emitted"]) == (5, 10, 8, 12)
    assert g3["token_acceptance_rate"] == pytest.approx(0.8) and g3["tau"] == pytest.approx(2.6)
    assert g3["tokens_per_call"] == pytest.approx(2.4)
    for row in (g1, g3):
        assert row["leviathan_alpha"] == pytest.approx(0.75)
        assert row["mapped_mass"] == pytest.approx(0.9)
        assert row["leviathan_alpha_lo"] <= 0.75 <= row["leviathan_alpha_hi"]
        assert row["token_acceptance_rate_lo"] <= row["token_acceptance_rate"] <= row["token_acceptance_rate_hi"]
        assert row["tau_lo"] <= row["tau"] <= row["tau_hi"]
    # i.i.d. prediction from alpha 0.75: gamma 1 -> 0.75; gamma 3 -> (0.75 + 0.5625 + 0.421875) / 3.
    assert g1["iid_token_acceptance"] == pytest.approx(0.75)
    assert g3["iid_token_acceptance"] == pytest.approx((0.75 + 0.5625 + 0.421875) / 3)
    assert [g3[f"pos{i}_uncond"] for i in (1, 2, 3)] == pytest.approx([3 / 4, 1, 2 / 3])
    assert [g3[f"pos{i}_cond"] for i in (1, 2, 3)] == pytest.approx([3 / 4, 1, 2 / 3])
    # Positions beyond gamma are NaN; gamma 1, "a" (d,a) (1,1) (1,0) (1,1) (1,1) (1,0) (0,0), "b" (1,1) (1,1):
    #   i=1: a>=1: 5 / d>=1: 7.
    assert g1["pos1_uncond"] == pytest.approx(5 / 7)
    assert math.isnan(g1["pos2_uncond"]) and math.isnan(g1["pos3_cond"])


def test_replay_summary_uses_summin_not_match():
    # Under sampling summin is fractional; alpha is its pooled mean, independent of gamma.
    sc = scores_frame({"a": ([1, 0, 1], 5), "b": ([0], 5)},
                      summin={"a": [0.9, 0.2, 0.7], "b": [0.4]})
    out = replay_summary(sc, [2], n_boot=100)
    # (0.9 + 0.2 + 0.7 + 0.4) / 4 = 0.55
    assert out["leviathan_alpha"][0] == pytest.approx(0.55)


def test_replay_summary_validates_positions():
    sc = scores_frame({"a": ([1, 1, 1], 5)}).filter(pl.col("position") != 1)
    with pytest.raises(ValueError, match="positions"):
        replay_summary(sc, [2])


def test_replay_and_rounds_summary_agree():
    rng = np.random.default_rng(99)
    streams = {}
    for k in range(12):
        n = int(rng.integers(1, 30))
        streams[f"s{k:02d}"] = ((rng.random(n) < 0.6).astype(int).tolist(), n + int(rng.integers(0, 2)))
    sc = scores_frame(streams)
    gammas = [1, 2, 4, 6]
    rep = replay_summary(sc, gammas, n_boot=300)
    # The loop's rounds table: the replay's rounds in shuffled row order (order must not matter).
    loop = pl.concat([replay_rounds_table(sc, g) for g in gammas]).sample(fraction=1.0, shuffle=True, seed=5)
    real = rounds_summary(loop, n_boot=300)
    assert real.columns == [c for c in rep.columns if c in real.columns]
    assert set(real.columns) >= {"gamma", "n_samples", "rounds", "drafted", "accepted", "emitted",
                                 "token_acceptance_rate", "tau", "tau_lo", "tau_hi",
                                 "token_acceptance_rate_lo", "token_acceptance_rate_hi", "pos6_cond"}
    assert rep.select(real.columns).equals(real)          # identical, NaN == NaN, CIs included
    # And the invariants per gamma.
    for row in rep.iter_rows(named=True):
        assert 0 <= row["token_acceptance_rate"] <= 1
        assert 1 <= row["tau"] <= row["gamma"] + 1
        assert row["accepted"] <= row["drafted"]
        assert row["emitted"] == sum(len(m) for m, _ in streams.values())


def test_rounds_summary_rejects_broken_rounds():
    bad = pl.DataFrame({"sample_id": ["a"], "gamma": [2], "round": [0], "start": [0],
                        "drafted": [2], "accepted": [3], "emitted": [4]})
    with pytest.raises(ValueError):
        rounds_summary(bad)


# ------------------------------------------------------------------------------------------------
# positional match (the seed's measure)
# ------------------------------------------------------------------------------------------------


def test_positional_match_hand():
    # i < min(4, 3) = 3: i=0 5==5, i=1 6!=9, i=2 7==7 -> 2 matched; draft_len 4, min_len 3.
    assert positional_match([5, 6, 7, 8], [5, 9, 7]) == (2, 4, 3)
    # One shifted token ("In ..." vs "The ...") and nothing lines up afterwards.
    assert positional_match([1, 2, 3, 4], [0, 1, 2, 3]) == (0, 4, 4)


def test_positional_match_rate_pools_over_common_samples():
    draft = {"a": [5, 6, 7, 8], "b": [1, 2], "only_draft": [1, 1, 1]}
    target = {"a": [5, 9, 7], "b": [1, 2, 3, 4, 5], "only_target": [2]}
    # a: (2, 4, 3); b: (2, 2, 2) -> matched 4, draft 6, min 5; "only_*" ignored.
    res = positional_match_rate(draft, target)
    assert res == PositionalMatch(n_samples=2, matched=4, draft_tokens=6, min_tokens=5,
                                  positional_match_rate=4 / 6, positional_match_rate_min_len=4 / 5)
    assert math.isnan(positional_match_rate({}, {}).positional_match_rate)


# ------------------------------------------------------------------------------------------------
# cost model
# ------------------------------------------------------------------------------------------------


def test_cost_model_hand():
    # Dp 10, Dd 2, Tp 100, Td 20, alpha 0.5, L 10:
    # c = 2/20 = 0.1. gamma 2: E = 1.75, speedup_iid = 1.75 / 1.2.
    # target_only = 100 + 10*20 = 300; speculative = 100 + 10 + (10/1.75) * (2*2 + 20) = 110 + 137.142857 = 247.142857
    out = cost_model(10, 2, 100, 20, 0.5, [2], new_tokens=10)
    row = out.row(0, named=True)
    assert row["c"] == pytest.approx(0.1)
    assert row["tokens_per_call"] == pytest.approx(1.75)
    assert row["speedup_iid"] == pytest.approx(1.75 / 1.2)
    assert row["target_only_ms"] == pytest.approx(300.0)
    assert row["speculative_ms"] == pytest.approx(110 + 240 / 1.75)
    assert row["latency_speedup"] == pytest.approx(300 / (110 + 240 / 1.75))
    assert row["best_gamma"] == best_gamma(0.5, 0.1)


def test_cost_model_limits():
    # Long outputs: prefill vanishes and the latency ratio tends to the i.i.d. speedup.
    out = cost_model(50, 3, 500, 30, 0.8, [1, 3, 5], new_tokens=10**9)
    np.testing.assert_allclose(out["latency_speedup"].to_numpy(), out["speedup_iid"].to_numpy(), rtol=1e-5)
    # Two same-size models (c = 1): no gamma helps, best_gamma 0, latency never improves.
    out = cost_model(200, 25, 200, 25, 0.9, [1, 2, 4], new_tokens=64)
    assert (out["best_gamma"] == 0).all()
    assert (out["latency_speedup"] < 1).all()
