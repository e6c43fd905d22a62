"""Tests for specalign.histograms: accepted-length histograms, the marginal / conditional rates they
imply, and the checks, on small round lists worked out by hand from the replay rule of
docs/architecture.md:
    g = max(0, min(gamma, max_new_tokens - s - 1)); a = min(g, run of True from s, N - s);
    emitted = a if s + a == N else a + 1; s += emitted.
"""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from specalign import histograms as H
from specalign import replay as rp

# Stream of N = 8 matches, budget 100, gamma 2:
#   s=0: run 2 -> a 2, e 3 | s=3: run 3 -> a 2, e 3 | s=6: run 0 -> a 0, e 1
#   s=7: run 1 (the stream's end) -> a 1, s + a == N: accepted EOS, e 1.
MATCHES = [1, 1, 0, 1, 1, 1, 0, 1]
ACCEPTED_G2 = [2, 2, 0, 1]


def replayed(matches, gamma, budget):
    return [r.accepted for r in rp.replay_rounds(matches, gamma, budget)]


def test_histogram_marginals_conditionals_hand():
    assert replayed(MATCHES, 2, 100) == ACCEPTED_G2
    h = H.histogram(ACCEPTED_G2, 2)
    assert h.tolist() == [1, 1, 2]                       # one round accepted 0, one 1, two 2
    # P(a >= 1) = 3/4, P(a >= 2) = 2/4; conditional P(2 | 1) = (1/2) / (3/4) = 2/3
    assert H.marginals(h) == pytest.approx([3 / 4, 1 / 2])
    assert H.conditionals(H.marginals(h)) == pytest.approx([3 / 4, 2 / 3])
    # tau = (accepted 5 + rounds 4) / 4 = 9/4 = 1 + 3/4 + 1/2
    assert H.mean_accepted_length(h) == pytest.approx(9 / 4)
    # per_position's offered-only rate differs at position 2: rounds offering it inside the answer are
    # those with N - s >= 2 (s = 0, 3, 6; not s = 7) -> 2 reached / 3 offered, not the marginal's 2 / 4.
    rounds = rp.replay_rounds(MATCHES, 2, 100)
    uncond, _ = rp.per_position(rounds, 2)
    assert uncond == pytest.approx([3 / 4, 2 / 3])


def test_budget_capped_round_counts_as_not_accepted():
    # N = budget = 5, all match, gamma 3: s=0: g = min(3, 4) = 3, a 3, e 4 | s=4: g = min(3, 0) = 0, a 0, e 1.
    accepted = replayed([1] * 5, 3, 5)
    assert accepted == [3, 0]
    h = H.histogram(accepted, 3)
    assert h.tolist() == [1, 0, 0, 1]
    # engine convention: the capped round accepted nothing -> every marginal 1/2; tau (3 + 2) / 2 = 2.5
    assert H.marginals(h) == pytest.approx([0.5, 0.5, 0.5])
    assert H.conditionals(H.marginals(h)) == pytest.approx([0.5, 1.0, 1.0])
    assert H.mean_accepted_length(h) == pytest.approx(2.5) == 1 + sum(H.marginals(h))
    # offered-only: the capped round offered nothing, so position 1 is 1/1 there
    uncond, _ = rp.per_position(rp.replay_rounds([1] * 5, 3, 5), 3)
    assert uncond[0] == 1.0


def test_conditionals_undefined_after_a_zero_marginal():
    # no round accepted 2 or more: P(3 | 2) has nothing to condition on
    m = H.marginals(H.histogram([0, 1, 1], 3))
    assert m == pytest.approx([2 / 3, 0, 0])
    c = H.conditionals(m)
    assert c[:2] == pytest.approx([2 / 3, 0]) and math.isnan(c[2])
    assert np.isnan(H.marginals([0, 0, 0])).all() and math.isnan(H.mean_accepted_length([0, 0, 0]))


def test_marginal_is_the_product_of_conditionals_and_tau_identity_on_random_streams():
    rng = np.random.default_rng(0)
    for trial in range(50):
        n, budget, gamma = int(rng.integers(1, 40)), 40, int(rng.integers(1, 7))
        matches = rng.random(n) < rng.random()
        rounds = rp.replay_rounds(matches, gamma, budget)
        h = H.histogram([r.accepted for r in rounds], gamma)
        m = H.marginals(h)
        # independent computation: count rounds by hand
        a = np.array([r.accepted for r in rounds])
        assert m == pytest.approx([np.mean(a >= i) for i in range(1, gamma + 1)])
        c = H.conditionals(m)
        prod = np.cumprod(np.nan_to_num(c, nan=0.0))
        assert prod == pytest.approx(m)
        tau = (a.sum() + len(a)) / len(a)
        assert H.check(h, len(a), int(a.sum()), tau)["passed"], trial


def test_check_catches_each_disagreement():
    h = H.histogram(ACCEPTED_G2, 2)
    ok = H.check(h, 4, 5, 9 / 4)
    assert ok["passed"] and ok["histogram_rounds"] == 4 and ok["histogram_accepted"] == 5
    assert ok["mean_accepted_length"] == pytest.approx(9 / 4)
    assert not H.check(h, 5, 5, 9 / 4)["histogram_sums_to_rounds"]
    assert not H.check(h, 4, 6, 9 / 4)["histogram_reproduces_accepted"]
    bad = H.check(h, 4, 5, 9 / 4 + 1e-6)
    assert not bad["mean_consistent"] and not bad["passed"]
    missing = H.check(h, None, None, None)
    assert not (missing["histogram_sums_to_rounds"] or missing["mean_consistent"] or missing["passed"])
    assert not H.check([0, 0, 0], 0, 0, None)["marginals_non_increasing"]   # nothing measured


def test_histogram_rejects_accepted_outside_range():
    with pytest.raises(ValueError, match=r"loop rounds: accepted 3 \(round 1\) lies outside 0..2"):
        H.histogram([1, 3], 2, "loop rounds")
    with pytest.raises(ValueError, match="outside"):
        H.histogram([-1], 2)


def test_tables_join_marginals_keep_order_and_check_against_summary():
    keys = {"dataset": "d", "draft": "dr", "target": "tg", "decoding": "greedy"}
    hist = H.frame(H.histogram_rows(keys, 2, "greedy_replay", [1, 1, 2])
                   + H.histogram_rows(keys, 2, "loop", [1, 1, 2]))
    assert hist["rounds"].to_list() == [1, 1, 2, 1, 1, 2] and hist["accepted"].to_list() == [0, 1, 2] * 2
    # per_position rows in an order the join must keep, one with no histogram (iid_from_alpha)
    pp = pl.DataFrame([{**keys, "gamma": 2, "position": i, "method": m, "unconditional": 0.0, "conditional": 0.0}
                       for m, i in (("greedy_replay", 2), ("iid_from_alpha", 1), ("greedy_replay", 1))])
    out = H.with_marginals(pp, hist)
    assert out.columns == [*pp.columns, "marginal", "conditional_from_marginal"]
    assert out["position"].to_list() == [2, 1, 1] and out["method"].to_list() == pp["method"].to_list()
    assert out["marginal"].to_list()[0] == pytest.approx(1 / 2) and out["marginal"][1] is None
    assert out["conditional_from_marginal"].to_list()[2] == pytest.approx(3 / 4)
    summary = pl.DataFrame([{**keys, "gamma": 2, "method": "greedy_replay", "rounds": 4, "accepted": 5,
                             "tau": 9 / 4, "loop_tau": 9 / 4}])
    loop = pl.DataFrame([{**keys, "gamma": 2, "loop_rounds": 4, "loop_accepted": 4}])   # off by one
    chk = H.checks(hist, summary, loop)
    by = {r["method"]: r for r in chk.iter_rows(named=True)}
    assert by["greedy_replay"]["passed"]
    assert not by["loop"]["histogram_reproduces_accepted"] and not by["loop"]["passed"]
    assert by["loop"]["mean_consistent"]    # its tau is the summary's loop_tau


def test_groups_rejects_a_histogram_with_missing_values():
    keys = {"dataset": "d", "draft": "dr", "target": "tg", "decoding": "greedy"}
    hist = H.frame(H.histogram_rows(keys, 2, "loop", [1, 1, 2])[:2])
    with pytest.raises(ValueError, match=r"accepted values \[0, 1\] are not 0..2"):
        H.groups(hist)
