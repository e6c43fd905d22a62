"""Percentile bootstrap intervals over SAMPLES: the package's one resampling engine (numpy only).

Samples (prompts, clips), not rounds or tokens, are the independent units; every interval draws
its resamples in one place (`_resampled_sums`), so intervals with the same seed and number of
samples resample the same sample sets. CI_LEVEL is the level of every *_lo / *_hi column.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

CI_LEVEL = 0.95   # the level of every *_lo / *_hi column
N_BOOT = 1000     # bootstrap resamples used by the summaries unless told otherwise


def bootstrap_ci(per_sample_num: Sequence[float], per_sample_den: Sequence[float], n_boot: int = N_BOOT,
                 seed: int = 0, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap CI of the pooled ratio sum(num) / sum(den), resampling SAMPLES.

    Samples (prompts), not rounds or tokens, are the independent units: rounds of one answer are
    correlated, so resampling rounds would give intervals that are too narrow. The same seed gives
    the same interval. Resamples whose denominator sums to 0 are dropped (their ratio is undefined);
    (nan, nan) when there is no sample or no resample is defined.
    """
    sums = _resampled_sums([per_sample_num, per_sample_den], n_boot, seed, level)
    if sums is None:
        return float("nan"), float("nan")
    bnum, bden = sums
    ok = bden != 0
    return _percentile_interval(bnum[ok] / bden[ok] if ok.any() else np.zeros(0), level)


def bootstrap_ratio_of_means_ci(num_a: Sequence[float], den_a: Sequence[float], num_b: Sequence[float],
                                den_b: Sequence[float], n_boot: int = N_BOOT, seed: int = 0,
                                level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap CI of (sum num_a / sum den_a) / (sum num_b / sum den_b), resampling SAMPLES.

    The ratio of two pooled means measured on the same samples (e.g. c = mean draft decode ms per
    token / mean target decode ms per token: per sample, num = summed ms, den = tokens). It draws
    exactly the resamples bootstrap_ci draws for the same seed and number of samples (one engine),
    and drops resamples where a pooled mean is undefined (a zero token count) or the denominator
    mean is 0. (nan, nan) when there is no sample or no resample is defined.
    """
    sums = _resampled_sums([num_a, den_a, num_b, den_b], n_boot, seed, level)
    if sums is None:
        return float("nan"), float("nan")
    na, da, nb, db = sums
    ok = (da != 0) & (db != 0) & (nb != 0)
    if not ok.any():
        return float("nan"), float("nan")
    return _percentile_interval((na[ok] / da[ok]) / (nb[ok] / db[ok]), level)


def bootstrap_paired_difference_ci(num_after: Sequence[float], num_before: Sequence[float],
                                   den: Sequence[float], n_boot: int = N_BOOT, seed: int = 0,
                                   level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap CI of sum(num_after) / sum(den) - sum(num_before) / sum(den), resampling
    SAMPLES paired: both rates are measured on the same samples and positions (two drafts scored
    along the same target streams), so each resample keeps a sample's before and after together
    and the interval is of the difference itself, far narrower than two independent intervals."""
    sums = _resampled_sums([num_after, num_before, den], n_boot, seed, level)
    if sums is None:
        return float("nan"), float("nan")
    a, b, d = sums
    ok = d != 0
    return _percentile_interval((a[ok] - b[ok]) / d[ok] if ok.any() else np.zeros(0), level)


def _resampled_sums(columns: Sequence[Sequence[float]], n_boot: int, seed: int,
                    level: float) -> list[np.ndarray] | None:
    """Per-sample columns summed over each bootstrap resample of the samples (the same draws for all).

    The one place resamples are drawn: `default_rng(seed).integers(0, n, (n_boot, n))`, so every
    interval of the package with the same seed and number of samples resamples the same sample sets.
    None when there is nothing to resample.
    """
    arrays = [np.asarray(c, dtype=np.float64).reshape(-1) for c in columns]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"per-sample columns differ in length: {[a.shape for a in arrays]}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n = len(arrays[0])
    if n == 0 or n_boot < 1:
        return None
    counts = _resample_counts(n, int(n_boot), int(seed))
    sums = counts @ np.stack(arrays, axis=1)     # (n_boot, columns): each resample's column sums
    return list(sums.T)


@functools.lru_cache(maxsize=4)
def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """counts[b, k]: how often resample b drew sample k, for the draws
    `default_rng(seed).integers(0, n, (n_boot, n))`. One summary draws the same resamples for every
    interval of every gamma, so they are drawn once (read-only), and a resample's sums are one
    matrix product instead of a gather per column."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    flat = (idx + n * np.arange(n_boot)[:, None]).reshape(-1)
    counts = np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
    counts.setflags(write=False)
    return counts


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    if not len(values):
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)
