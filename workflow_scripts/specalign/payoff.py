"""Whether a draft pays off: the cost model on measured acceptance and measured costs (PREDICTED numbers).

Every input is a measurement; every output is a prediction (its column name or doc says so).
Times are in units of the target's decode step T (a single-token forward at the clip's real
context, timed in the timing job):

- c: the draft's decode step / T (same job, same clips, interleaved).
- v(gamma): the target's verify pass of gamma + 1 tokens / T (`verify_cost`; 1 at gamma = 0).
  Leviathan's model costs it as one decode step (v = 1); in a compute-bound regime it grows
  with gamma and the context, which is why it is measured per gamma.
- o: the loop's per-round overhead / T (its wall time less its timed forward passes: cache
  rollback, bookkeeping; speculative.py's draft_ms / verify_ms already hold the sampling and
  acceptance arithmetic done beside each pass).
- marginals m_i = P(accepted >= i), i = 1..gamma: the measured per-position acceptance over
  every round (`marginals`, from the replay's or the real loop's rounds: the accepted-length
  histogram's marginals). A round then yields on average E = 1 + m_1 + ... + m_gamma tokens
  (the bonus/correction token plus the accepted prefix; E = tau exactly); under the i.i.d. model m_i = alpha^i and E is Leviathan's
  (1 - alpha^(gamma+1)) / (1 - alpha), but measured marginals need not be geometric.

One round costs R = gamma c + v(gamma) + o target steps and emits E tokens, so in the steady
state (long answers) the speedup over plain decoding is E / R (`steady_speedup`).

Prefill, for an answer of L tokens (T_p, D_p the two prefills in T units):

    target_only = T_p + L
    sequential  = D_p + T_p + (L / E) R                       (the draft prefills, then the target)
    overlapped  = max(D_p, T_p) + (L / E) R - min(F, gamma) c  (both prefill at once; see below)

Overlapped is the cross-modal case: EventGPT's prefill (event frames) is far shorter than
Video-LLaVA's (8 video frames), so a draft on its own device (or stream) finishes its prefill and
drafts while the target is still prefilling. It has F = max(0, T_p - D_p) / c free draft steps
(the seed's author measured 83 ms against 316 ms: ~21 tokens at an ~11 ms draft step); a chain of
gamma proposals can use gamma of them, so the first round's drafting is hidden. (F itself is
reported: an engine that drafts a longer first chain could use more.) Approximations, stated:
fractional rounds L / E are kept, the length budget and the EOS are ignored, and every round
drafts gamma tokens.

`break_even_alpha(gamma, c, v, o)`: the i.i.d. acceptance alpha at which the steady-state
speedup is exactly 1, i.e. 1 + alpha + ... + alpha^gamma = gamma c + v + o. The left side rises
from 1 (alpha = 0) to gamma + 1 (alpha = 1), so the root is unique; 0.0 when even alpha = 0 pays
(R <= 1), None when no alpha does (R > gamma + 1). Bisection, to 1e-12.

Plain functions over floats: no polars, no torch.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence


def _finite(name: str, x: float, minimum: float = 0.0) -> float:
    x = float(x)
    if not math.isfinite(x) or x < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {x}")
    return x


def tokens_per_round(marginals: Sequence[float]) -> float:
    """E = 1 + sum of the marginals P(accepted >= i), i = 1..gamma (gamma = len(marginals)).

    Marginals must lie in [0, 1]; a NaN (a position no round offered) is an error, not a zero:
    the caller decides what an unmeasured position means."""
    m = [float(x) for x in marginals]
    for i, x in enumerate(m, 1):
        if not (0.0 <= x <= 1.0):
            raise ValueError(f"marginal P(accepted >= {i}) must lie in [0, 1], got {x}")
    return 1.0 + sum(m)


def marginals(accepted: Sequence[int], gamma: int) -> list[float]:
    """P(accepted >= i), i = 1..gamma, over rounds (`accepted`: each round's accepted count): the
    histogram's marginals. 1 + their sum is tau = (accepted + rounds) / rounds exactly. Unlike
    replay.per_position's unconditional rate, every round counts, proposals past the answer's end
    included (never accepted): E must be what a round really yields."""
    a = [int(x) for x in accepted]
    if not a:
        raise ValueError("no rounds: the marginals are undefined")
    return [sum(x >= i for x in a) / len(a) for i in range(1, int(gamma) + 1)]


def iid_marginals(alpha: float, gamma: int) -> list[float]:
    """The marginals the i.i.d. model implies: P(accepted >= i) = alpha^i."""
    alpha = _finite("alpha", alpha)
    if alpha > 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return [alpha ** i for i in range(1, int(gamma) + 1)]


def round_cost(gamma: int, c: float, verify_cost: float, overhead: float) -> float:
    """R = gamma c + v + o, in target decode steps."""
    if isinstance(gamma, bool) or int(gamma) != gamma or gamma < 0:
        raise ValueError(f"gamma must be an integer >= 0, got {gamma!r}")
    return int(gamma) * _finite("c", c) + _finite("verify_cost", verify_cost) + _finite("overhead", overhead)


@dataclass(frozen=True)
class Payoff:
    """One gamma's PREDICTED payoff (every field a prediction from measured inputs)."""

    gamma: int
    tokens_per_round: float          # E = 1 + sum of the marginals
    round_cost: float                # R, target decode steps per round
    steady_speedup: float            # E / R: long answers, prefill ignored
    speedup_sequential: float        # target_only / sequential (prefills one after the other)
    speedup_overlapped: float        # target_only / overlapped (the draft drafts while the target prefills)
    free_draft_tokens: float         # F = max(0, T_p - D_p) / c
    break_even_alpha: float | None  # i.i.d. alpha where the steady-state speedup is 1

    def as_dict(self) -> dict:
        return asdict(self)


def predict(gamma: int, marginals: Sequence[float], c: float, verify_cost: float, overhead: float,
            draft_prefill: float, target_prefill: float, new_tokens: float) -> Payoff:
    """The predicted payoff of chain speculative decoding at `gamma` (the module doc's formulas).

    All times in target decode steps: c, verify_cost (v(gamma)), overhead (o), draft_prefill (D_p),
    target_prefill (T_p); `new_tokens` = L, the answer's length in tokens."""
    if len(marginals) != gamma:
        raise ValueError(f"gamma {gamma} needs {gamma} marginals, got {len(marginals)}")
    e = tokens_per_round(marginals)
    r = round_cost(gamma, c, verify_cost, overhead)
    if r <= 0:
        raise ValueError("a round must cost something: c, verify_cost and overhead are all 0")
    dp, tp = _finite("draft_prefill", draft_prefill), _finite("target_prefill", target_prefill)
    length = _finite("new_tokens", new_tokens)
    if length <= 0:
        raise ValueError("new_tokens must be > 0")
    free = max(0.0, tp - dp) / c if c > 0 else math.inf
    target_only = tp + length
    loop = length / e * r
    sequential = dp + tp + loop
    overlapped = max(dp, tp) + loop - min(free, gamma) * c
    return Payoff(gamma=int(gamma), tokens_per_round=e, round_cost=r, steady_speedup=e / r,
                  speedup_sequential=target_only / sequential, speedup_overlapped=target_only / overlapped,
                  free_draft_tokens=free, break_even_alpha=break_even_alpha(gamma, c, verify_cost, overhead))


def break_even_alpha(gamma: int, c: float, verify_cost: float, overhead: float, tol: float = 1e-12) -> float | None:
    """The i.i.d. alpha in [0, 1] at which E(alpha) = 1 + alpha + ... + alpha^gamma equals R (see the module doc)."""
    r = round_cost(gamma, c, verify_cost, overhead)
    g = int(gamma)
    if r <= 1.0:
        return 0.0
    if r > g + 1:
        return None

    def e(a: float) -> float:
        return sum(a ** k for k in range(g + 1))

    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if e(mid) < r:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def run_columns(timing: dict, gamma: int, marginals: Sequence[float] | None, new_tokens: float | None) -> dict:
    """One gamma's timing columns of summary.csv / cost_model.csv, from ONE timing job's figures
    (`timing.summarise`) and the run's measured marginals P(accepted >= i), i = 1..gamma.

    MEASURED (timing job): device, verify_cost (+ _lo / _hi; null where that gamma's verify pass was not
    timed), round_overhead_ms (+ _lo / _hi, pooled over the loop gammas timed), measured_speedup (+ _lo /
    _hi; the loop against plain decoding on the same clips, null where the loop was not timed at gamma).
    PREDICTED (`predict`): predicted_speedup (prefills sequential), predicted_speedup_overlapped (the draft
    drafts while the target prefills), predicted_speedup_steady (long answers), free_draft_tokens,
    break_even_alpha. Null where an input was not measured (no marginals, or gamma not timed)."""
    v = timing["verify"].get(int(gamma), {})
    loop = timing["loop"].get(int(gamma), {})
    out = {"device": timing["device"],
           "verify_cost": v.get("verify_cost"), "verify_cost_lo": v.get("verify_cost_lo"),
           "verify_cost_hi": v.get("verify_cost_hi"),
           "round_overhead_ms": timing["round_overhead_ms"], "round_overhead_ms_lo": timing["round_overhead_ms_lo"],
           "round_overhead_ms_hi": timing["round_overhead_ms_hi"],
           "measured_speedup": loop.get("measured_speedup"), "measured_speedup_lo": loop.get("measured_speedup_lo"),
           "measured_speedup_hi": loop.get("measured_speedup_hi")}
    pred = dict.fromkeys(("predicted_speedup", "predicted_speedup_overlapped", "predicted_speedup_steady",
                          "free_draft_tokens", "break_even_alpha"))
    step = timing["target_step_ms"]
    # no loop timed: no overhead measured, and the model counts none (stated by the null _lo / _hi)
    overhead_ms = timing["round_overhead_ms"] if math.isfinite(timing["round_overhead_ms"]) else 0.0
    usable = (v and step and math.isfinite(step) and step > 0 and math.isfinite(timing["c"])
              and math.isfinite(v["verify_cost"]))
    if usable:
        o = max(0.0, overhead_ms) / step
        pred["break_even_alpha"] = break_even_alpha(gamma, timing["c"], v["verify_cost"], o)
        m = None if marginals is None else [float(x) if x is not None else math.nan for x in marginals]
        if m is not None and len(m) == gamma and all(math.isfinite(x) for x in m) and new_tokens:
            p = predict(gamma, m, timing["c"], v["verify_cost"], o, timing["draft_prefill_ms"] / step,
                        timing["target_prefill_ms"] / step, new_tokens)
            pred.update(predicted_speedup=p.speedup_sequential, predicted_speedup_overlapped=p.speedup_overlapped,
                        predicted_speedup_steady=p.steady_speedup, free_draft_tokens=p.free_draft_tokens)
    return {**out, **pred}
