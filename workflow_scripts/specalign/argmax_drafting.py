"""Acceptance as serving engines run it: the draft proposes its argmax.

vLLM V1, SGLang and TensorRT-LLM draft the draft's argmax by default
(shared/reference/deployment-conventions.md): the proposal distribution is one-hot, so a
proposed token x is accepted with probability p_target(x), not with Leviathan's
sum_x min(p(x), q(x)). Under a sampled decoding the two differ, and neither bounds the other
(scoring.py's module doc has the two directions), so both are reported:

- `alpha_argmax` = the pooled mean of the scores' `target_prob_of_draft_argmax` over the
  target's stream, with its 95% bootstrap interval over samples, computed exactly as
  `leviathan_alpha` is from `summin` (acceptance.replay_summary: per-sample sums and counts,
  `bootstrap.bootstrap_ci`, the same seed, so the same resamples). Greedy: it equals
  leviathan_alpha (both are the match rate).
- the real loop's `draft_sampling` ("sample" | "argmax", the rounds artifact's column) per
  gamma, so that no row mixes loops that drafted differently.
"""
from __future__ import annotations

import math

import polars as pl
import pyarrow.parquet as pq

from .bootstrap import N_BOOT, bootstrap_ci
from .specs import Run

COLUMN = "target_prob_of_draft_argmax"


def alpha_argmax(scores: pl.DataFrame, n_boot: int = N_BOOT, seed: int = 0, source: str = "") -> dict:
    """{"alpha_argmax", "alpha_argmax_lo", "alpha_argmax_hi"} of a "scores" table (`source`: its
    file, for the error). All null when the column holds no value (a table built without it:
    nothing measured); an error when the column is missing from a file (written before it
    existed) or only partly filled."""
    empty = {"alpha_argmax": None, "alpha_argmax_lo": None, "alpha_argmax_hi": None}
    if COLUMN not in scores.columns:
        raise ValueError(f"{source or 'scores'}: no {COLUMN} column (written before it existed): "
                         "rerun the score stage")
    nulls = scores[COLUMN].null_count()
    if scores.height == 0 or nulls == scores.height:
        return empty
    if nulls:
        raise ValueError(f"{source or 'scores'}: {COLUMN} is null on {nulls} of {scores.height} positions")
    per = (scores.group_by("sample_id")
           .agg(pl.col(COLUMN).cast(pl.Float64).sum().alias("s"), pl.len().alias("n"))
           .sort("sample_id"))
    n = float(per["n"].sum())
    alpha = float(per["s"].sum()) / n if n else math.nan
    lo, hi = bootstrap_ci(per["s"].to_numpy(), per["n"].to_numpy(), n_boot, seed)
    return {"alpha_argmax": alpha, "alpha_argmax_lo": lo, "alpha_argmax_hi": hi}


def loop_draft_samplings(run: Run) -> dict[int, str]:
    """gamma -> how the run's real loop drafted at that gamma ("sample" | "argmax"), from its rounds
    files. A file without the column (or with nulls / "") was written before the setting existed, when
    a sampled decoding's draft always sampled and a greedy one took its argmax. Refuses, naming the
    files, when the shards of one gamma disagree: their rounds would pool two different loops."""
    fallback = "argmax" if run.decoding.greedy else "sample"
    seen: dict[int, dict[str, list[str]]] = {}
    for f in run.rounds:
        has = "draft_sampling" in pq.read_schema(f).names
        df = pl.read_parquet(f, columns=["gamma", "draft_sampling"] if has else ["gamma"])
        col = pl.col("draft_sampling")
        ds = pl.when(col.is_null() | (col == "")).then(pl.lit(fallback)).otherwise(col) if has else pl.lit(fallback)
        for g, how in df.select(pl.col("gamma"), ds.alias("how")).unique().iter_rows():
            files = seen.setdefault(int(g), {}).setdefault(how, [])
            if f not in files:
                files.append(f)
    out = {}
    for g, by in sorted(seen.items()):
        if len(by) > 1:
            parts = "; ".join(f"{how}: {', '.join(files)}" for how, files in sorted(by.items()))
            raise ValueError(f"{run.dataset} {run.pair} {run.decoding.name} gamma {g}: the loop's rounds mix "
                             f"draft_sampling values ({parts}); rerun the speculative stage for this decoding")
        out[g] = next(iter(by))
    return out
