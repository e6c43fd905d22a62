"""Tests for specalign.payoff: the cost model's formulas, worked by hand (times in target decode steps)."""
from __future__ import annotations

import math

import pytest

from specalign import payoff, speedup


def test_marginals_and_tokens_per_round_hand():
    # rounds accepting 3, 1, 1, 0 of gamma 4: P(a >= 1) = 3/4, P(a >= 2) = 1/4, P(a >= 3) = 1/4, P(a >= 4) = 0
    m = payoff.marginals([3, 1, 1, 0], 4)
    assert m == [0.75, 0.25, 0.25, 0.0]
    # E = 1 + 5/4 = tau = (accepted + rounds) / rounds = (5 + 4) / 4
    assert payoff.tokens_per_round(m) == pytest.approx(9 / 4)
    # non-increasing: P(a >= i) can only fall with i
    assert all(a >= b for a, b in zip(m, m[1:]))
    with pytest.raises(ValueError, match="no rounds"):
        payoff.marginals([], 2)
    with pytest.raises(ValueError, match=r"P\(accepted >= 2\)"):
        payoff.tokens_per_round([0.5, 1.5])
    with pytest.raises(ValueError, match=r"P\(accepted >= 1\)"):
        payoff.tokens_per_round([math.nan])


def test_iid_marginals_give_leviathans_tokens_per_call():
    # under the i.i.d. model the marginals are alpha^i, and 1 + their sum is Leviathan's E
    for alpha in (0.0, 0.3, 0.8, 1.0):
        for g in (1, 2, 5):
            m = payoff.iid_marginals(alpha, g)
            assert payoff.tokens_per_round(m) == pytest.approx(speedup.expected_tokens_per_call(alpha, g))


def test_predict_hand():
    # gamma 2, marginals 0.8 / 0.5 -> E = 2.3; c 0.1, verify 1.5, overhead 0.2 -> R = 0.2 + 1.5 + 0.2 = 1.9.
    # D_p = 2, T_p = 10, L = 20 target steps:
    #   target_only = 10 + 20 = 30; the rounds: 20 / 2.3 * 1.9 = 16.5217...
    #   sequential  = 2 + 10 + 16.5217 = 28.5217 -> 1.05183
    #   overlapped: F = (10 - 2) / 0.1 = 80 free draft steps, 2 used (0.2): 10 + 16.5217 - 0.2 = 26.3217 -> 1.13974
    p = payoff.predict(2, [0.8, 0.5], c=0.1, verify_cost=1.5, overhead=0.2, draft_prefill=2, target_prefill=10,
                       new_tokens=20)
    assert p.tokens_per_round == pytest.approx(2.3) and p.round_cost == pytest.approx(1.9)
    assert p.steady_speedup == pytest.approx(2.3 / 1.9)
    assert p.speedup_sequential == pytest.approx(1.05183, abs=1e-5)
    assert p.speedup_overlapped == pytest.approx(1.13974, abs=1e-5)
    assert p.free_draft_tokens == pytest.approx(80.0)


def test_overlap_buys_nothing_when_the_draft_prefills_longer():
    # D_p = 12 > T_p = 10: no free draft step; overlapped = max(12, 10) + rounds, sequential = 22 + rounds
    p = payoff.predict(1, [0.5], c=0.5, verify_cost=1.0, overhead=0.0, draft_prefill=12, target_prefill=10,
                       new_tokens=6)
    rounds = 6 / 1.5 * 1.5   # E = 1.5, R = 1.5
    assert p.free_draft_tokens == 0.0
    assert p.speedup_overlapped == pytest.approx(16 / (12 + rounds))
    assert p.speedup_sequential == pytest.approx(16 / (22 + rounds))


def test_seed_authors_free_tokens():
    # EventGPT prefill 83 ms, Video-LLaVA 316 ms, an 11.1 ms draft step at a 30 ms target step:
    # (316 - 83) / 11.1 = 20.99 free draft tokens (the seed author's ~21)
    p = payoff.predict(4, [0.5] * 4, c=11.1 / 30, verify_cost=1.2, overhead=0.0, draft_prefill=83 / 30,
                       target_prefill=316 / 30, new_tokens=64)
    assert p.free_draft_tokens == pytest.approx(233 / 11.1)


def test_long_answers_tend_to_the_steady_state():
    p = payoff.predict(3, [0.9, 0.7, 0.4], c=0.2, verify_cost=1.3, overhead=0.1, draft_prefill=5, target_prefill=40,
                       new_tokens=1e9)
    assert p.speedup_sequential == pytest.approx(p.steady_speedup, rel=1e-6)
    assert p.speedup_overlapped == pytest.approx(p.steady_speedup, rel=1e-6)
    # Leviathan's i.i.d. speedup is the special case v = 1, o = 0 with geometric marginals
    q = payoff.predict(3, payoff.iid_marginals(0.7, 3), c=0.2, verify_cost=1.0, overhead=0.0, draft_prefill=0,
                       target_prefill=0, new_tokens=1e9)
    assert q.steady_speedup == pytest.approx(speedup.expected_speedup(0.7, 3, 0.2))


def test_break_even_alpha_hand():
    # gamma 1, c 0.5, v 1: R = 1.5 = 1 + alpha -> 0.5
    assert payoff.break_even_alpha(1, 0.5, 1.0, 0.0) == pytest.approx(0.5, abs=1e-9)
    # gamma 2, c 0, v 1.75: 1 + a + a^2 = 1.75 -> a = 0.5
    assert payoff.break_even_alpha(2, 0.0, 1.75, 0.0) == pytest.approx(0.5, abs=1e-9)
    # R <= 1: every alpha pays, even 0
    assert payoff.break_even_alpha(1, 0.0, 1.0, 0.0) == 0.0
    # R = 2.5 > gamma + 1 = 2: no alpha pays
    assert payoff.break_even_alpha(1, 1.5, 1.0, 0.0) is None
    # at the break-even alpha the predicted steady-state speedup with i.i.d. marginals is 1
    a = payoff.break_even_alpha(4, 0.3, 1.4, 0.25)
    p = payoff.predict(4, payoff.iid_marginals(a, 4), c=0.3, verify_cost=1.4, overhead=0.25, draft_prefill=0,
                       target_prefill=0, new_tokens=100)
    assert p.steady_speedup == pytest.approx(1.0, abs=1e-9)
    # a costlier verify pass needs a higher acceptance
    assert payoff.break_even_alpha(4, 0.3, 2.0, 0.25) > a


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="gamma 2 needs 2 marginals"):
        payoff.predict(2, [0.5], 0.1, 1.0, 0.0, 1, 1, 10)
    with pytest.raises(ValueError, match="c must be"):
        payoff.round_cost(2, -0.1, 1.0, 0.0)
    with pytest.raises(ValueError, match="verify_cost must be"):
        payoff.round_cost(2, 0.1, math.nan, 0.0)


def test_run_columns_hand():
    tim = {"device": "cpu (x)", "c": 0.5, "target_step_ms": 10.0, "draft_prefill_ms": 20.0, "target_prefill_ms": 50.0,
           "round_overhead_ms": 1.0, "round_overhead_ms_lo": 0.5, "round_overhead_ms_hi": 1.5,
           "verify": {1: {"verify_cost": 1.3, "verify_cost_lo": 1.2, "verify_cost_hi": 1.4}},
           "loop": {1: {"measured_speedup": 0.9, "measured_speedup_lo": 0.8, "measured_speedup_hi": 1.0}}}
    cols = payoff.run_columns(tim, 1, [0.6], new_tokens=10)
    # R = 0.5 + 1.3 + 1 ms / 10 ms = 1.9 target steps; E = 1.6; break-even 1 + alpha = 1.9
    assert cols["predicted_speedup_steady"] == pytest.approx(1.6 / 1.9)
    assert cols["break_even_alpha"] == pytest.approx(0.9, abs=1e-9)
    # prefills 2 and 5 target steps, L = 10: (5 + 10) / (2 + 5 + 10 / 1.6 * 1.9)
    assert cols["predicted_speedup"] == pytest.approx(15 / (7 + 10 / 1.6 * 1.9))
    assert (cols["measured_speedup"], cols["device"], cols["verify_cost"]) == (0.9, "cpu (x)", 1.3)
    # a gamma whose verify pass was not timed: nothing measured, nothing predicted
    cols = payoff.run_columns(tim, 2, [0.6, 0.3], new_tokens=10)
    assert cols["verify_cost"] is None and cols["predicted_speedup"] is None and cols["measured_speedup"] is None
