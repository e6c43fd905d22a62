"""Per-round accepted-length histograms, the per-position rates they imply, and their checks.

Serving engines report speculative decoding as a histogram over verify rounds: index j = the
number of rounds that accepted exactly j draft tokens (vLLM `acceptance_histogram`, SGLang
`spec_accept_histogram`, TensorRT-LLM per request; shared/reference/deployment-conventions.md).
This module computes the same histogram from our rounds (the greedy replay's and the real loop's)
and derives from it, exactly:

- marginal_i = P(accepted >= i) over EVERY round, i = 1..gamma (the survival function; what
  vLLM's `synthetic_acceptance_rates` takes, and NVIDIA's `marginal_accept_rates`);
- conditional_from_marginal_i = marginal_i / marginal_(i-1) (marginal_0 = 1): P(i accepted |
  i-1 accepted), so the marginals are the products of these (NVIDIA's `conditional_accept_rates`);
- mean accepted length (the bonus token included) = 1 + sum_j j h_j / rounds = 1 + sum_i marginal_i.

Why not per_position.csv's existing `unconditional` / `conditional`: those count, at position i,
only the rounds that OFFERED a proposal at i inside the answer (replay.py, "Proposals past the
end of the answer"), so they measure agreement where agreement was possible. The engine convention
counts every round: a position the round did not propose (the length budget capped g) or that lies
past the answer's end counts as not accepted. Only the engine convention makes
1 + sum marginals = tau, and only it is what an engine's histogram (and its simulator) holds.
Both are kept, under different names.

The checks compare the histogram with the summary's numbers, which come from the same rounds by
another path (acceptance._summarise_gamma): the histogram sums to the row's rounds, sum_j j h_j is
its accepted count, 1 + sum marginals is its tau (exact up to float rounding), and the marginals
never increase (NVIDIA's profile checks; a histogram's survival cannot increase, so a failure there
means the table was edited or mis-joined).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import polars as pl

from . import acceptance as acc
from .replay import replay
from .specs import Run

KEYS = ["dataset", "draft", "target", "decoding"]
# Histogram and summary come from the same integer rounds, so the mean check is exact but for float
# rounding: a tolerance this small fails on any real disagreement (NVIDIA's profile check uses 0.02
# because its mean comes from a separate measurement).
MEAN_TOLERANCE = 1e-9

HISTOGRAM_SCHEMA = {"dataset": pl.String, "draft": pl.String, "target": pl.String, "decoding": pl.String,
                    "gamma": pl.Int64, "method": pl.String, "accepted": pl.Int64, "rounds": pl.Int64}
CHECK_SCHEMA = {"dataset": pl.String, "draft": pl.String, "target": pl.String, "decoding": pl.String,
                "gamma": pl.Int64, "method": pl.String, "rounds": pl.Int64, "histogram_rounds": pl.Int64,
                "accepted": pl.Int64, "histogram_accepted": pl.Int64, "tau": pl.Float64,
                "mean_accepted_length": pl.Float64, "histogram_sums_to_rounds": pl.Boolean,
                "histogram_reproduces_accepted": pl.Boolean, "mean_consistent": pl.Boolean,
                "marginals_non_increasing": pl.Boolean, "passed": pl.Boolean}


# --------------------------------------------------------------------------------------------
# The arithmetic (one gamma, one histogram)
# --------------------------------------------------------------------------------------------


def histogram(accepted: Sequence[int], gamma: int, what: str = "rounds") -> np.ndarray:
    """h[j] = number of rounds with exactly j accepted draft tokens, j = 0..gamma (int64, length gamma + 1).

    A round accepting fewer than gamma because the length budget capped its proposal still counts
    at its own j (that is what an engine's histogram records). An accepted count outside 0..gamma
    is an error naming `what` (the rounds cannot belong to this gamma).
    """
    gamma = int(gamma)
    if gamma < 1:
        raise ValueError(f"{what}: gamma must be >= 1, got {gamma}")
    a = np.asarray(accepted, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero((a < 0) | (a > gamma))
    if bad.size:
        raise ValueError(f"{what}: accepted {int(a[bad[0]])} (round {int(bad[0])}) lies outside 0..{gamma}")
    return np.bincount(a, minlength=gamma + 1)


def marginals(hist: Sequence[int]) -> np.ndarray:
    """marginal[i-1] = P(accepted >= i) = sum_{j >= i} h_j / sum_j h_j, i = 1..gamma (NaN without rounds)."""
    h = np.asarray(hist, dtype=np.float64).reshape(-1)
    total = h.sum()
    if total == 0:
        return np.full(len(h) - 1, np.nan)
    survival = np.cumsum(h[::-1])[::-1]          # survival[i] = sum_{j >= i} h_j
    return survival[1:] / total


def conditionals(marginal: Sequence[float]) -> np.ndarray:
    """P(position i accepted | position i-1 accepted) = marginal_i / marginal_(i-1), marginal_0 = 1.

    NaN where no round reached i-1 (nothing to condition on). Their running product is the marginal.
    """
    m = np.asarray(marginal, dtype=np.float64).reshape(-1)
    prev = np.concatenate([[1.0], m[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev > 0, m / np.where(prev > 0, prev, 1.0), np.nan)


def mean_accepted_length(hist: Sequence[int]) -> float:
    """1 + sum_j j h_j / rounds: tau (acceptance-metrics.md section 3, the bonus token included); NaN without rounds."""
    h = np.asarray(hist, dtype=np.int64).reshape(-1)
    rounds = int(h.sum())
    return 1.0 + float(np.dot(np.arange(len(h)), h)) / rounds if rounds else math.nan


def check(hist: Sequence[int], rounds: int | None, accepted: int | None, tau: float | None,
          tolerance: float = MEAN_TOLERANCE) -> dict:
    """The histogram against the summary's rounds, accepted count and tau (None: not known -> check fails).

    mean_consistent compares tau with 1 + sum of the marginals (the engines' identity), not with
    mean_accepted_length(hist): that would compare the histogram with itself.
    """
    h = np.asarray(hist, dtype=np.int64).reshape(-1)
    m = marginals(h)
    h_rounds = int(h.sum())
    h_accepted = int(np.dot(np.arange(len(h)), h))
    mean = 1.0 + float(np.sum(m)) if h_rounds else math.nan
    out = {
        "rounds": rounds, "histogram_rounds": h_rounds, "accepted": accepted, "histogram_accepted": h_accepted,
        "tau": tau, "mean_accepted_length": mean,
        "histogram_sums_to_rounds": rounds is not None and h_rounds == int(rounds),
        "histogram_reproduces_accepted": accepted is not None and h_accepted == int(accepted),
        "mean_consistent": _finite(tau) and _finite(mean) and abs(mean - float(tau)) <= tolerance,
        # NaN marginals (no rounds) are not "non-increasing": nothing was measured
        "marginals_non_increasing": bool(h_rounds) and bool(np.all(np.diff(m) <= 0)),
    }
    out["passed"] = all(out[k] for k in ("histogram_sums_to_rounds", "histogram_reproduces_accepted",
                                         "mean_consistent", "marginals_non_increasing"))
    return out


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


# --------------------------------------------------------------------------------------------
# Tables (results/acceptance/histograms.csv, histogram_checks.csv, per_position's marginal)
# --------------------------------------------------------------------------------------------


def histogram_rows(keys: dict, gamma: int, method: str, hist: Sequence[int]) -> list[dict]:
    """One long-format row per accepted = 0..gamma (zeros included: a row per possible outcome)."""
    return [{**{k: keys[k] for k in KEYS}, "gamma": int(gamma), "method": method, "accepted": j, "rounds": int(n)}
            for j, n in enumerate(hist)]


def run_histograms(run: Run, gammas: Sequence[int]) -> pl.DataFrame:
    """One run's histograms: the greedy replay's at every gamma of `gammas` and every gamma the loop
    ran (greedy decodings only: sampled rounds are not determined by the teacher-forced pass), and
    the real loop's at every gamma it ran (`method` loop, any decoding)."""
    rows: list[dict] = []
    loop_gammas: list[int] = []
    loops = None
    if run.rounds:
        loops = pl.read_parquet(list(run.rounds), columns=["sample_id", "gamma", "accepted"])
        loop_gammas = sorted(int(g) for g in loops["gamma"].unique().to_list())
    if run.decoding.greedy:
        scores = pl.read_parquet(run.scores, columns=["sample_id", "position", "match", "max_new_tokens"])
        streams = acc.streams(scores)
        for g in sorted(set(int(x) for x in gammas) | set(loop_gammas)):
            r = replay(streams, g)
            rows += histogram_rows(run.keys, g, "greedy_replay", histogram(r.accepted, g, f"{run.scores} (replay)"))
    for g in loop_gammas:
        part = loops.filter(pl.col("gamma") == g)["accepted"].to_numpy()
        rows += histogram_rows(run.keys, g, "loop", histogram(part, g, f"{run.pair} {run.decoding.name} loop rounds"))
    return frame(rows)


def frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=HISTOGRAM_SCHEMA, orient="row")


def groups(histograms: pl.DataFrame) -> list[tuple[dict, np.ndarray]]:
    """Each (dataset, draft, target, decoding, gamma, method) of a histograms table with its h (ordered by accepted)."""
    if not histograms.height:
        return []
    by = [*KEYS, "gamma", "method"]
    g = (histograms.sort([*by, "accepted"]).group_by(by, maintain_order=True)
         .agg(pl.col("accepted"), pl.col("rounds")))
    out = []
    for row in g.iter_rows(named=True):
        if row["accepted"] != list(range(row["gamma"] + 1)):
            raise ValueError(f"histogram {[row[k] for k in by]}: accepted values {row['accepted']} are not "
                             f"0..{row['gamma']} once each")
        out.append(({k: row[k] for k in by}, np.asarray(row["rounds"], dtype=np.int64)))
    return out


def per_position_rates(histograms: pl.DataFrame) -> pl.DataFrame:
    """Per (keys, gamma, method, position i = 1..gamma): marginal and conditional_from_marginal."""
    rows = []
    for key, h in groups(histograms):
        m = marginals(h)
        for i, (mi, ci) in enumerate(zip(m, conditionals(m)), start=1):
            rows.append({**key, "position": i, "marginal": float(mi), "conditional_from_marginal": float(ci)})
    schema = {**{k: HISTOGRAM_SCHEMA[k] for k in [*KEYS, "gamma", "method"]}, "position": pl.Int64,
              "marginal": pl.Float64, "conditional_from_marginal": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def with_marginals(per_position: pl.DataFrame, histograms: pl.DataFrame) -> pl.DataFrame:
    """per_position.csv with `marginal` and `conditional_from_marginal` beside its columns, row order kept;
    null where the row's method has no histogram (iid_from_alpha: nothing was measured)."""
    if not per_position.height:
        return per_position
    rates = per_position_rates(histograms)
    on = [*KEYS, "gamma", "method", "position"]
    left = per_position.with_row_index("_row")
    cast = [pl.col(c).cast(rates.schema[c]) for c in on]
    return (left.with_columns(cast).join(rates, on=on, how="left").sort("_row").drop("_row"))


def checks(histograms: pl.DataFrame, summary: pl.DataFrame, loop: pl.DataFrame) -> pl.DataFrame:
    """One row per histogram: its checks against the summary (greedy_replay rows: the summary row's
    rounds, accepted, tau) or the loop table (loop rows: loop_rounds, loop_accepted, and the
    summary's loop_tau at that gamma). A histogram whose row is missing there fails its checks."""
    def index(df: pl.DataFrame, method: str | None) -> dict:
        if not df.height:
            return {}
        if method is not None:
            df = df.filter(pl.col("method") == method)
        return {tuple(r[k] for k in [*KEYS, "gamma"]): r for r in df.iter_rows(named=True)}

    replay_rows, loop_rows, any_rows = index(summary, "greedy_replay"), index(loop, None), index(summary, None)
    rows = []
    for key, h in groups(histograms):
        k = tuple(key[c] for c in [*KEYS, "gamma"])
        if key["method"] == "greedy_replay":
            s = replay_rows.get(k, {})
            rounds, accepted, tau = s.get("rounds"), s.get("accepted"), s.get("tau")
        else:
            lp = loop_rows.get(k, {})
            rounds, accepted = lp.get("loop_rounds"), lp.get("loop_accepted")
            tau = any_rows.get(k, {}).get("loop_tau")
        rows.append({**key, **check(h, rounds, accepted, tau)})
    return pl.DataFrame(rows, schema=CHECK_SCHEMA, orient="row")
