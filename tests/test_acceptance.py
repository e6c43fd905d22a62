"""Tests for specalign.acceptance, .replay, .speedup and .bootstrap: hand-worked rounds, formulas and summaries.

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
    cost_model,
    positional_match,
    positional_match_rate,
    replay_rounds_table,
    replay_summary,
    rounds_summary,
)
from specalign.bootstrap import bootstrap_ci, bootstrap_ratio_of_means_ci
from specalign.replay import Round, drafted_in_answer, per_position, replay_rounds
from specalign.speedup import best_gamma, expected_speedup, expected_tokens_per_call, iid_token_acceptance


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


def _naive_rounds(m, gamma, budget):
    """The rule walked proposal by proposal, token by token: an independent recomputation."""
    out, s, n = [], 0, len(m)
    while s < n:
        g = max(0, min(gamma, budget - s - 1))
        a = 0
        while a < g and s + a < n and m[s + a]:
            a += 1
        e = a if s + a == n else a + 1
        out.append((s, g, a, e))
        s += e
    return out


def test_batched_replay_equals_the_rule_walked_per_stream():
    # All samples advance together in `replay`; each must get exactly its own stream's rounds, whatever
    # its neighbours (runs of True must not leak across the end of one stream into the next).
    from specalign.acceptance import replay_rounds_table, streams
    from specalign.replay import replay

    rng = np.random.default_rng(77)
    data = {f"s{k:03d}": ((rng.random(n) < rng.random()).astype(int).tolist(), n + int(rng.integers(0, 4)))
            for k, n in enumerate(rng.integers(1, 30, size=60))}
    data["s999"] = ([1] * 12, 12)          # all accepted, cut by the budget
    sc = scores_frame(data)
    st = streams(sc)
    assert st.sample_ids == sorted(data)
    for gamma in (1, 2, 5, 8):
        r = replay(st, gamma)
        tbl = replay_rounds_table(sc, gamma)
        for k, sid in enumerate(st.sample_ids):
            mine = r.sample == k
            got = list(zip(r.start[mine].tolist(), r.drafted[mine].tolist(), r.accepted[mine].tolist(),
                           r.emitted[mine].tolist()))
            assert got == _naive_rounds(data[sid][0], gamma, data[sid][1]), (sid, gamma)
            part = tbl.filter(pl.col("sample_id") == sid)
            assert part["round"].to_list() == list(range(len(got)))
            assert list(zip(*(part[c].to_list() for c in ("start", "drafted", "accepted", "emitted")))) == got


def test_streams_name_the_bad_sample():
    from specalign.acceptance import streams

    sc = scores_frame({"a": ([1, 0, 1], 5), "b": ([1, 1], 5)})
    with pytest.raises(ValueError, match="sample 'b': positions are not 0..1 without gaps"):
        streams(sc.with_columns(pl.when(pl.col("sample_id") == "b").then(pl.col("position") * 2)
                                .otherwise(pl.col("position")).alias("position")))
    with pytest.raises(ValueError, match="sample 'a': max_new_tokens is not constant"):
        streams(sc.with_columns(pl.when((pl.col("sample_id") == "a") & (pl.col("position") == 2)).then(9)
                                .otherwise(pl.col("max_new_tokens")).alias("max_new_tokens")))
    with pytest.raises(ValueError, match="sample 'b': stream length 2 exceeds max_new_tokens 1"):
        streams(sc.with_columns(pl.when(pl.col("sample_id") == "b").then(1)
                                .otherwise(pl.col("max_new_tokens")).alias("max_new_tokens")))


def test_resampled_sums_are_the_sums_of_the_drawn_samples():
    # The counts-matrix product must equal summing each resample's drawn samples (the definition).
    from specalign.bootstrap import _resampled_sums

    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 50, 37).astype(float), rng.integers(1, 9, 37).astype(float)
    idx = np.random.default_rng(9).integers(0, 37, size=(200, 37))
    sa, sb = _resampled_sums([a, b], 200, 9, 0.95)
    assert np.array_equal(sa, a[idx].sum(axis=1)) and np.array_equal(sb, b[idx].sum(axis=1))


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


# Three streams ending on EOS well inside a budget of 20, gamma 6: the draft always proposes 6.
# Proposal i of a round starting at s predicts position s + i - 1; past the answer when >= N.
EOS_STREAMS = {
    "x": [1, 1, 1, 1],           # N 4: s=0: g 6, a = min(6, 4, 4) = 4, s+a == N -> e 4.
                                 #      proposals 5, 6 predict positions 4, 5 >= 4: 2 post-EOS.
    "y": [1, 1, 0, 1, 1, 1],     # N 6: s=0: g 6, a 2, e 3 (positions 0..5 all < 6: 0 post-EOS)
                                 #      s=3: g 6, a = min(6, 3, 3) = 3, e 3; 3 + 6 - 6 = 3 post-EOS.
    "z": [0, 1, 0],              # N 3: s=0: g 6, a 0, e 1; proposals 4..6 (positions 3..5): 3 post-EOS
                                 #      (proposal 3 predicts the EOS at position 2: inside, rejected).
                                 #      s=1: g 6, a = min(6, 1, 2) = 1, e 2 (the target emits the EOS);
                                 #      proposals 3..6 predict positions 3..6: 4 post-EOS.
}
# rounds (start, drafted, accepted, emitted) and, per round, the proposals inside the answer
# min(g, N - s): x 4 | y 6, 3 | z 3, 2.
EOS_ROUNDS = {"x": R((0, 6, 4, 4)), "y": R((0, 6, 2, 3), (3, 6, 3, 3)), "z": R((0, 6, 0, 1), (1, 6, 1, 2))}


def test_replay_eos_streams_hand():
    for sid, m in EOS_STREAMS.items():
        assert replay_rounds(m, 6, 20) == EOS_ROUNDS[sid]
    assert drafted_in_answer([0], [6], 4).tolist() == [4]
    assert drafted_in_answer([0, 3], [6, 6], 6).tolist() == [6, 3]
    assert drafted_in_answer([0, 1], [6, 6], 3).tolist() == [3, 2]
    # a round that starts at or after N (cannot happen in a replay) has nothing inside
    assert drafted_in_answer([5], [4], 5).tolist() == [0]


def test_per_position_excludes_proposals_past_the_end():
    # z alone (N = 3 = its emitted total): (offered up to, accepted) = (3, 0) (2, 1).
    # i=1: reached 1 / offered 2 -> 1/2; cond 1/2.
    # i=2: reached 0 / offered 2 -> 0; cond: offered & a >= 1: the second round -> 0/1 = 0.
    # i=3: reached 0 / offered 1 (the first round's proposal 3, the EOS) -> 0; cond: a >= 2: none -> NaN.
    # i=4..6: no round offers them (they predict positions >= 3) -> NaN. Counting the post-EOS
    # proposals as rejections would give 0 there instead: an artefact of where the answer ends.
    uncond, cond = per_position(EOS_ROUNDS["z"], 6)
    np.testing.assert_allclose(uncond[:3], [1 / 2, 0, 0])
    np.testing.assert_allclose(cond[:2], [1 / 2, 0])
    assert np.isnan(cond[2:]).all() and np.isnan(uncond[3:]).all()
    # the stream length given explicitly gives the same; a longer stream offers more
    for u, v in zip(per_position(EOS_ROUNDS["z"], 6, stream_length=3), (uncond, cond)):
        np.testing.assert_array_equal(u, v)
    u_long, _ = per_position(EOS_ROUNDS["z"], 6, stream_length=100)
    np.testing.assert_allclose(u_long, [1 / 2, 0, 0, 0, 0, 0])


def test_replay_summary_post_eos_hand():
    # EOS_STREAMS at gamma 6 (rounds above): 5 rounds, drafted 30, accepted 4+2+3+0+1 = 10,
    # emitted 4+6+3 = 13; post-EOS 2 + 0 + 3 + 3 + 4 = 12, inside the answer 30 - 12 = 18.
    # token_acceptance_rate (vLLM, all proposals) = 10/30; in the answer 10/18 = 5/9.
    # tau = (10 + 5)/5 = 3; tokens per call 13/5.
    # Per position over (offered up to, accepted): x (4,4) | y (6,2) (3,3) | z (3,0) (2,1):
    #   i=1: reached 4 / offered 5 = 4/5;  cond: offered & a>=0: 5 -> 4/5
    #   i=2: reached (a>=2) x y1 y2 = 3 / offered 5 = 3/5;  cond: a>=1: x y1 y2 z2 = 4 -> 3/4
    #   i=3: reached x y2 = 2 / offered (>=3) x y1 y2 z1 = 4 -> 1/2;  cond: a>=2: x y1 y2 = 3 -> 2/3
    #   i=4: reached x = 1 / offered x y1 = 2 -> 1/2;  cond: a>=3: x -> 1/1 = 1
    #        (counting post-EOS proposals: d>=4 for all 5 rounds -> 1/5, cond d>=4 & a>=3: x, y2 -> 1/2:
    #         y2 accepted the EOS and its proposal 4 lies after it)
    #   i=5: reached 0 / offered y1 = 1 -> 0;  cond: a>=4 among y1: none -> NaN (x's 5th is post-EOS)
    #   i=6: reached 0 / offered y1 -> 0;      cond: NaN
    sc = scores_frame({sid: (m, 20) for sid, m in EOS_STREAMS.items()})
    row = replay_summary(sc, [6], n_boot=200).row(0, named=True)
    assert (row["rounds"], row["drafted"], row["accepted"], row["emitted"]) == (5, 30, 10, 13)
    assert row["post_eos_drafted"] == 12
    assert row["token_acceptance_rate"] == pytest.approx(1 / 3)
    assert row["token_acceptance_rate_in_answer"] == pytest.approx(5 / 9)
    assert row["tau"] == 3.0 and row["tokens_per_call"] == pytest.approx(2.6)
    assert row["token_acceptance_rate_in_answer_lo"] <= 5 / 9 <= row["token_acceptance_rate_in_answer_hi"]
    assert [row[f"pos{i}_uncond"] for i in range(1, 7)] == pytest.approx([4 / 5, 3 / 5, 1 / 2, 1 / 2, 0, 0])
    assert [row[f"pos{i}_cond"] for i in range(1, 5)] == pytest.approx([4 / 5, 3 / 4, 2 / 3, 1])
    assert math.isnan(row["pos5_cond"]) and math.isnan(row["pos6_cond"])


def test_replay_summary_in_answer_ci_resamples_samples():
    # Two samples, each one round at gamma 4 (budget 10): "p" = [1, 1] (a 2, e 2; 2 post-EOS, in 2),
    # "q" = [0, 0] (a 0, e 1, then s=1: a 0, e 1; in min(4, 2) = 2 and min(4, 1) = 1).
    # in answer: accepted (2, 0) over (2, 3): pooled 2/5; resamples {p,p} 1, {p,q} 2/5, {q,q} 0
    # with probabilities 1/4, 1/2, 1/4 -> the 95% interval is [0, 1]. All proposals: (2, 0) over
    # (4, 8) -> [0, 1/2].
    sc = scores_frame({"p": ([1, 1], 10), "q": ([0, 0], 10)})
    row = replay_summary(sc, [4], n_boot=1000).row(0, named=True)
    assert row["token_acceptance_rate_in_answer"] == pytest.approx(2 / 5)
    assert (row["token_acceptance_rate_in_answer_lo"], row["token_acceptance_rate_in_answer_hi"]) == (0.0, 1.0)
    assert (row["token_acceptance_rate_lo"], row["token_acceptance_rate_hi"]) == (0.0, 0.5)
    assert row["post_eos_drafted"] == 2 + 2 + 3


def test_post_eos_brute_force_random():
    # Count proposal by proposal (i = 1..g predicts position s + i - 1; past the end when >= N) and
    # compare with the summary's post_eos_drafted and per-position rates, for budgets far above N.
    rng = np.random.default_rng(2024)
    streams = {f"s{k:02d}": ((rng.random(n) < 0.7).astype(int).tolist(), n + int(rng.integers(0, 12)))
               for k, n in enumerate(rng.integers(1, 25, size=15))}
    sc = scores_frame(streams)
    for gamma in (1, 3, 8):
        post = 0
        reached = np.zeros(gamma + 1)
        offered = np.zeros(gamma + 1)
        offered_cond = np.zeros(gamma + 1)
        for m, budget in streams.values():
            n = len(m)
            for r in replay_rounds(m, gamma, budget):
                for i in range(1, r.drafted + 1):
                    if r.start + i - 1 >= n:
                        post += 1
                        assert r.accepted < i           # a proposal past the end is never accepted
                        continue
                    offered[i] += 1
                    reached[i] += r.accepted >= i
                    offered_cond[i] += r.accepted >= i - 1
        row = replay_summary(sc, [gamma], n_boot=10).row(0, named=True)
        assert row["post_eos_drafted"] == post
        assert row["token_acceptance_rate_in_answer"] == pytest.approx(row["accepted"] / (row["drafted"] - post))
        for i in range(1, gamma + 1):
            want_u = reached[i] / offered[i] if offered[i] else math.nan
            want_c = reached[i] / offered_cond[i] if offered_cond[i] else math.nan
            assert row[f"pos{i}_uncond"] == pytest.approx(want_u, nan_ok=True)
            assert row[f"pos{i}_cond"] == pytest.approx(want_c, nan_ok=True)
        if gamma == 8:
            assert post > 0  # the random budgets do leave room past the answers


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


def test_bootstrap_ratio_of_means_hand():
    # c-style: per sample (ms summed over tokens, tokens) for two models. Sample 1: 2 ms / 1 token
    # vs 4 ms / 1 token; sample 2: 6 / 1 vs 4 / 1. Resamples {1,1}: 2/4 = 0.5, {1,2}: (8/2)/(8/2) = 1,
    # {2,2}: 6/4 = 1.5 with probabilities 1/4, 1/2, 1/4 -> 95% interval [0.5, 1.5].
    assert bootstrap_ratio_of_means_ci([2, 6], [1, 1], [4, 4], [1, 1], n_boot=1000, seed=0) == (0.5, 1.5)
    # Ratio of pooled means, not mean of per-sample ratios: one sample -> that sample's ratio.
    # (10 ms / 4 tokens) / (9 ms / 3 tokens) = 2.5 / 3.
    lo, hi = bootstrap_ratio_of_means_ci([10], [4], [9], [3])
    assert lo == hi == pytest.approx(2.5 / 3)
    # The same resamples as bootstrap_ci for the same seed: with a second mean of 1 it IS bootstrap_ci.
    rng = np.random.default_rng(5)
    num, den = rng.integers(0, 9, 30).astype(float), rng.integers(1, 9, 30).astype(float)
    ones = np.ones(30)
    assert bootstrap_ratio_of_means_ci(num, den, ones, ones, n_boot=400, seed=3) == bootstrap_ci(num, den, 400, 3)
    # Undefined: no sample, or no resample with tokens in both.
    assert all(math.isnan(x) for x in bootstrap_ratio_of_means_ci([], [], [], []))
    assert all(math.isnan(x) for x in bootstrap_ratio_of_means_ci([1, 2], [1, 1], [0, 0], [0, 0]))
    with pytest.raises(ValueError):
        bootstrap_ratio_of_means_ci([1, 2], [1, 1], [1], [1])


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


def test_rounds_summary_rejects_wrong_start():
    # N - start decides which proposals lie past the end: a start that is not the tokens emitted
    # before the round must fail, not move them. Second round: emitted 3 before it, start says 2.
    bad = pl.DataFrame({"sample_id": ["a", "a"], "gamma": [2, 2], "round": [0, 1], "start": [0, 2],
                        "drafted": [2, 2], "accepted": [2, 0], "emitted": [3, 1]})
    with pytest.raises(ValueError, match="start"):
        rounds_summary(bad)


def test_replay_and_rounds_summary_agree_past_eos():
    # As test_replay_and_rounds_summary_agree, with budgets far above the answers so rounds draft
    # past the EOS: the loop's stream length (its emitted total) gives the replay's N exactly.
    rng = np.random.default_rng(7)
    streams = {f"s{k:02d}": ((rng.random(n) < 0.7).astype(int).tolist(), n + 20)
               for k, n in enumerate(rng.integers(1, 20, size=10))}
    streams.update({sid: (m, 20) for sid, m in EOS_STREAMS.items()})
    sc = scores_frame(streams)
    gammas = [1, 4, 6]
    rep = replay_summary(sc, gammas, n_boot=200)
    loop = pl.concat([replay_rounds_table(sc, g) for g in gammas]).sample(fraction=1.0, shuffle=True, seed=1)
    real = rounds_summary(loop, n_boot=200)
    assert {"post_eos_drafted", "token_acceptance_rate_in_answer", "token_acceptance_rate_in_answer_lo",
            "token_acceptance_rate_in_answer_hi"} <= set(real.columns)
    assert rep.select(real.columns).equals(real)
    # gamma 1: the one proposal predicts position s < N, never past the end; larger gammas do
    assert real["post_eos_drafted"][0] == 0 and (real["post_eos_drafted"][1:] > 0).all()
    for row in real.iter_rows(named=True):
        assert row["token_acceptance_rate"] <= row["token_acceptance_rate_in_answer"] <= 1


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


def test_cost_model_c_interval_hand():
    # alpha 0.8, Dd 1, Td 20 -> c 0.05 -> best 8 (test_best_gamma). Interval (0.02, 0.3):
    # at c_hi 0.3 the speedups are 1.385, 1.525, 1.554 (gamma 3: 2.952/1.9), 1.528 -> best_gamma_lo 3;
    # at c_lo 0.02: gamma 10: 4.5705/1.2 = 3.8088, 11: 4.6564/1.22 = 3.8167, 12: 4.7251/1.24 = 3.8106
    # -> best_gamma_hi 11. Timing noise of that size moves the answer from 3 to 11.
    out = cost_model(10, 1, 100, 20, 0.8, [1, 4], new_tokens=10, c_interval=(0.02, 0.3))
    for row in out.iter_rows(named=True):
        assert row["c"] == pytest.approx(0.05) and (row["c_lo"], row["c_hi"]) == (0.02, 0.3)
        assert (row["best_gamma_lo"], row["best_gamma"], row["best_gamma_hi"]) == (3, 8, 11)
    # No interval: the columns exist, empty.
    row = cost_model(10, 1, 100, 20, 0.8, [1], new_tokens=10).row(0, named=True)
    assert math.isnan(row["c_lo"]) and math.isnan(row["c_hi"])
    assert row["best_gamma_lo"] is None and row["best_gamma_hi"] is None
    # Upper c above alpha: no gamma helps there -> 0.
    row = cost_model(10, 1, 100, 20, 0.8, [1], new_tokens=10, c_interval=(0.01, 0.9)).row(0, named=True)
    assert row["best_gamma_lo"] == 0
    with pytest.raises(ValueError):
        cost_model(10, 1, 100, 20, 0.8, [1], c_interval=(0.3, 0.02))


def test_best_gamma_does_not_increase_with_c():
    # Why best_gamma_lo (at c_hi) <= best_gamma <= best_gamma_hi (at c_lo) whenever c_lo <= c <= c_hi.
    cs = np.linspace(0, 1.2, 61)
    for a in np.linspace(0, 1, 21):
        bests = [best_gamma(a, c) for c in cs]
        assert all(x >= y for x, y in zip(bests, bests[1:])), (a, bests)


def test_run_lengths_hand_worked():
    from specalign.replay import _run_lengths

    got = _run_lengths(np.array([1, 1, 0, 1, 0, 0, 1, 1, 1], dtype=bool)).tolist()
    assert got == [2, 1, 0, 1, 0, 0, 3, 2, 1]
    assert _run_lengths(np.zeros(0, dtype=bool)).tolist() == []
