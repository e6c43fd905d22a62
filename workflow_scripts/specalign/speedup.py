"""The i.i.d. speed-up model (Leviathan, Kalman, Matias 2023, Eq. 1 and Thm 3.8) and the cost model.

Every output here is PREDICTED, never measured: from an acceptance alpha (Leviathan alpha, measured
elsewhere) and a cost ratio c = draft decode ms / target decode ms (measured by the timing job), the
i.i.d. model predicts

- expected_tokens_per_call(alpha, gamma): E[tokens per target call] (the summary's iid_tau),
- expected_speedup(alpha, gamma, c): the walltime speedup (expected_speedup_iid, speedup_iid),
- best_gamma(alpha, c): the gamma maximising it (best_gamma, best_gamma_lo / _hi),
- iid_token_acceptance(alpha, gamma): the token acceptance rate the model implies,
- cost_model_rows(...): per gamma, the prefill-aware latency estimate (target_only_ms,
  speculative_ms, latency_speedup) beside the above; acceptance.cost_model makes it a table.

Its inputs (alpha, c and c's interval) are MEASURED and passed in; a predicted number is never
stored in a measured column. numpy only, no polars: the GPU benchmark imports it on an image without
polars.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .replay import _check_gamma


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return alpha


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """E[tokens per target call] = (1 - alpha^(gamma+1)) / (1 - alpha); gamma + 1 at alpha = 1.

    Evaluated as the geometric sum 1 + alpha + ... + alpha^gamma, which is the same quantity
    but has no 0/0 at alpha = 1 and no cancellation just below it.
    """
    alpha = _check_alpha(alpha)
    if isinstance(gamma, bool) or int(gamma) != gamma or gamma < 0:
        raise ValueError(f"gamma must be an integer >= 0, got {gamma!r}")
    return float(sum(alpha ** k for k in range(int(gamma) + 1)))


def expected_speedup(alpha: float, gamma: int, c: float) -> float:
    """Walltime speedup under the i.i.d. model: E[tokens per call] / (gamma * c + 1)."""
    if c < 0:
        raise ValueError(f"cost ratio c must be >= 0, got {c}")
    return expected_tokens_per_call(alpha, gamma) / (gamma * float(c) + 1.0)


def best_gamma(alpha: float, c: float, max_gamma: int = 16) -> int:
    """The integer gamma in 1..max_gamma maximising the i.i.d. speedup; 0 = "no speedup".

    0 is returned when no gamma beats plain decoding (speedup 1). That is always the case when
    alpha <= c: sum_k alpha^k <= 1 + gamma*alpha <= 1 + gamma*c. We return 0 for that case
    directly so floating-point ties (e.g. alpha = c = 1 gives exactly 1) cannot flip it.
    Ties between gammas go to the smallest one (cheaper, same predicted speed).
    """
    alpha = _check_alpha(alpha)
    _check_gamma(max_gamma)
    if c < 0:
        raise ValueError(f"cost ratio c must be >= 0, got {c}")
    if alpha <= c:
        return 0
    speedups = [expected_speedup(alpha, g, c) for g in range(1, int(max_gamma) + 1)]
    best = int(np.argmax(speedups))
    return best + 1 if speedups[best] > 1.0 else 0


def iid_token_acceptance(alpha: float, gamma: int) -> float:
    """Token acceptance rate the i.i.d. model predicts: alpha (1 - alpha^gamma) / (gamma (1 - alpha)).

    = (alpha + ... + alpha^gamma) / gamma: expected accepted per round over gamma drafted. It is
    not alpha itself; shown beside the measured rate to see how far the i.i.d. model is off.
    """
    alpha = _check_alpha(alpha)
    gamma = _check_gamma(gamma)
    return float(sum(alpha ** k for k in range(1, gamma + 1)) / gamma)


def cost_model_rows(draft_prefill_ms: float, draft_decode_ms: float, target_prefill_ms: float,
                    target_decode_ms: float, alpha: float, gammas: Sequence[int], new_tokens: int = 64,
                    max_gamma: int = 16, c_interval: tuple[float, float] | None = None) -> list[dict]:
    """Per gamma: c, the i.i.d. speedup, and a prefill-aware latency estimate for L = new_tokens, as
    one dict per gamma (keys: the columns of acceptance.cost_model, in its order).

    MEASURED columns: alpha, c (= draft_decode_ms / target_decode_ms), c_lo / c_hi (the interval
    passed as `c_interval`: the workflow passes the paired timing job's, timing.summarise, so every
    time here comes from one job; NaN when not given). PREDICTED by the
    i.i.d. model from them: tokens_per_call, speedup_iid, target_only_ms, speculative_ms,
    latency_speedup, best_gamma, and best_gamma_lo = best_gamma at c_hi, best_gamma_hi =
    best_gamma at c_lo (null without an interval). best_gamma does not increase with c, so
    best_gamma_lo <= best_gamma_hi; when they differ, timing noise alone could change the answer.

    With Tp, Dp the target / draft prefill, Td, Dd their per-token decode times and
    E = expected_tokens_per_call(alpha, gamma):

        target_only_ms  = Tp + L * Td
        speculative_ms  = Tp + Dp + (L / E) * (gamma * Dd + Td)
        latency_speedup = target_only_ms / speculative_ms

    Why: speculative decoding pays both prompts' prefill once (sequentially: the draft cannot
    start before its own prompt is encoded, and with thousands of visual tokens prefill is not
    negligible), then needs about L / E target calls, each preceded by gamma draft steps. As
    L -> infinity the ratio tends to E / (gamma c + 1), the i.i.d. speedup, with c = Dd / Td.
    Approximations (stated, not hidden): a verify pass over gamma + 1 tokens is costed as one
    decode step (memory-bound regime); the draft's catch-up on the target's bonus token is
    folded into its next step; fractional calls (L / E) are kept; the length cap is ignored.
    best_gamma is the i.i.d. optimum (0 = no gamma beats plain decoding), repeated on every row.
    """
    times = {"draft_prefill_ms": draft_prefill_ms, "draft_decode_ms": draft_decode_ms,
             "target_prefill_ms": target_prefill_ms, "target_decode_ms": target_decode_ms}
    for name, v in times.items():
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite time >= 0, got {v}")
    if target_decode_ms <= 0:
        raise ValueError("target_decode_ms must be > 0: c = draft_decode / target_decode")
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    alpha = _check_alpha(alpha)
    c = float(draft_decode_ms) / float(target_decode_ms)
    best = best_gamma(alpha, c, max_gamma)
    c_lo, c_hi = (float("nan"), float("nan")) if c_interval is None else (float(c_interval[0]), float(c_interval[1]))
    for name, v in (("c_lo", c_lo), ("c_hi", c_hi)):
        if np.isfinite(v) and v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if np.isfinite(c_lo) and np.isfinite(c_hi) and c_lo > c_hi:
        raise ValueError(f"c interval is reversed: ({c_lo}, {c_hi})")
    # the faster the draft, the longer the best lookahead: the upper c gives the lower gamma
    best_lo = best_gamma(alpha, c_hi, max_gamma) if np.isfinite(c_hi) else None
    best_hi = best_gamma(alpha, c_lo, max_gamma) if np.isfinite(c_lo) else None
    rows = []
    for g in gammas:
        g = _check_gamma(g)
        e = expected_tokens_per_call(alpha, g)
        target_only = target_prefill_ms + new_tokens * target_decode_ms
        spec = target_prefill_ms + draft_prefill_ms + (new_tokens / e) * (g * draft_decode_ms + target_decode_ms)
        rows.append({"gamma": g, "alpha": alpha, "c": c, "tokens_per_call": e,
                     "speedup_iid": expected_speedup(alpha, g, c), "target_only_ms": float(target_only),
                     "speculative_ms": float(spec), "latency_speedup": float(target_only / spec),
                     "best_gamma": best, "c_lo": c_lo, "c_hi": c_hi, "best_gamma_lo": best_lo,
                     "best_gamma_hi": best_hi})
    return rows
