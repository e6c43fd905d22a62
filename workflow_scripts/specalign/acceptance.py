"""Replaying greedy speculative rounds and every metric of acceptance-metrics.md.

Definitions come from shared/reference/acceptance-metrics.md and are used
exactly; each quantity has one function and one column name:

- Leviathan alpha: mean of summin (sum_x min(p, q)) over target positions.
- token acceptance rate = sum accepted / sum drafted (vLLM V1), every proposal counted,
  including those drafted past the end of the answer (see "past the end" below).
- token acceptance rate in the answer = sum accepted / (sum drafted - post_eos_drafted).
- tau = sum (accepted + 1) / rounds, the bonus token included (acceptance-metrics.md §3;
  plain decoding = 1). A round that ends the stream on an accepted EOS emits no bonus
  token, so the tokens really emitted per target call are `tokens_per_call` =
  sum emitted / rounds, which is <= tau (equal unless a stream ends on an accepted EOS).
- per-position acceptance, unconditional and conditional, over proposals inside the answer.
- the i.i.d. (Leviathan) predictions: tokens per target call, speedup, best gamma,
  and the token acceptance rate the i.i.d. model implies.
- the positional match rate the seed note reported, kept only to show that it
  is a different (and much smaller) number.

Measured vs predicted. MEASURED (from rounds, streams or timings): token_acceptance_rate(_in_answer),
tau, tokens_per_call, per-position rates, leviathan_alpha, c and its interval. PREDICTED by the
i.i.d. model from alpha (and c): iid_token_acceptance, expected_tokens_per_call (the summary's
iid_tau), expected_speedup (expected_speedup_iid), latency_speedup, best_gamma(_lo/_hi).
A predicted number is never stored in a measured column.

Proposals past the end of the answer. The draft always proposes g = min(gamma,
max_new_tokens - s - 1) tokens; it does not know where the answer ends. In a round starting at
s, proposal i (1-based) predicts the token at position s + i - 1 of the stream of length N; when
s + i - 1 >= N it predicts a token after the stream's last one (after an accepted or emitted EOS)
and can never be accepted. Such a round has max(0, s + g - N) of them (`post_eos_drafted`). vLLM's
acceptance rate counts them as rejections (kept as `token_acceptance_rate`); the per-position
tables do not offer them (otherwise the last positions measure where answers end, not whether
the draft agrees), and `token_acceptance_rate_in_answer` leaves them out of the denominator.
A stream cut at the length budget has none: the g cap keeps s + g <= max_new_tokens - 1 = N - 1.

Why the replay and the real loop share code: the replay of a teacher-forced
pass is exact for greedy decoding, so on identical rounds the two summaries
must agree to the last bit. Both therefore reduce their rounds to per-sample
arrays and go through the one function `_summarise_gamma`.

Pure numpy/polars: no models, so everything here is unit-testable on a CPU.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import polars as pl

CI_LEVEL = 0.95   # the level of every *_lo / *_hi column
N_BOOT = 1000     # bootstrap resamples used by the summaries unless told otherwise


# --------------------------------------------------------------------------------------------
# Greedy round replay (docs/architecture.md, "Greedy round replay"): the exact rule the loop uses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Round:
    """One draft-verify round: the same four numbers the loop's "rounds" table records."""

    start: int      # s: target tokens emitted before this round
    drafted: int    # d_r = g: tokens the draft proposed (it never stops at its own EOS)
    accepted: int   # a_r: longest agreeing prefix of the proposal
    emitted: int    # a_r + 1, or a_r when an accepted EOS ends the stream (no bonus token)


def _check_gamma(gamma: int) -> int:
    if isinstance(gamma, bool) or int(gamma) != gamma or gamma < 1:
        raise ValueError(f"gamma must be an integer >= 1, got {gamma!r}")
    return int(gamma)


def _run_lengths(matches: np.ndarray, ends: np.ndarray | None = None) -> np.ndarray:
    """run[j] = number of consecutive True values starting at j (0 if matches[j] is False).

    Computed once, vectorised, so each round is O(1) instead of rescanning the stream: with
    next_false[j] the first index >= j holding False (len if none), run[j] = next_false[j] - j.
    `ends[j]` (optional): the end of j's own stream when several are concatenated; a run never
    crosses it.
    """
    m = np.asarray(matches, dtype=bool).reshape(-1)
    idx = np.arange(len(m), dtype=np.int64)
    next_false = np.minimum.accumulate(np.where(m, len(m), idx)[::-1])[::-1]
    if ends is not None:
        next_false = np.minimum(next_false, ends)
    return next_false - idx


@dataclass(frozen=True)
class Streams:
    """Many samples' teacher-forced match streams, concatenated (the replay's input).

    Sample k's matches are matches[offsets[k]:offsets[k + 1]], in position order; samples are in
    sample_id order (the order the bootstrap resamples them in).
    """

    sample_ids: list[str]
    offsets: np.ndarray     # int64, len(sample_ids) + 1
    matches: np.ndarray     # bool, offsets[-1]
    budgets: np.ndarray     # int64 per sample: the max_new_tokens its stream was generated with

    def __post_init__(self):
        lengths = np.diff(self.offsets)
        over = np.flatnonzero(lengths > self.budgets)
        if over.size:
            # The stream cannot be longer than the budget it was generated with: a longer one means
            # the scores and the budget do not belong together, and the g cap would be wrong.
            k = int(over[0])
            who = f"sample {self.sample_ids[k]!r}: " if self.sample_ids[k] else ""
            raise ValueError(f"{who}stream length {int(lengths[k])} exceeds max_new_tokens {int(self.budgets[k])}")

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @staticmethod
    def one(matches: Sequence[bool], max_new_tokens: int, sample_id: str = "") -> "Streams":
        m = np.asarray(matches, dtype=bool).reshape(-1)
        return Streams([sample_id], np.array([0, len(m)], dtype=np.int64), m,
                       np.array([int(max_new_tokens)], dtype=np.int64))


@dataclass(frozen=True)
class Rounds:
    """Rounds of many samples at one gamma as flat arrays, ordered by sample, then round.

    The common form of a replay and a real loop: both summaries reduce it with `_summarise_gamma`.
    """

    sample_ids: list[str]
    sample: np.ndarray      # per round: index into sample_ids
    start: np.ndarray
    drafted: np.ndarray
    accepted: np.ndarray
    emitted: np.ndarray
    lengths: np.ndarray     # per sample N: the replay's scored stream, the loop's emitted total

    def per_sample(self, values) -> np.ndarray:
        """Per sample, the sum of a per-round quantity (float64; exact for counts)."""
        return np.bincount(self.sample, weights=values, minlength=len(self.sample_ids))

    @property
    def in_answer(self) -> np.ndarray:
        """Per round, the proposals inside the answer (drafted minus those past the stream's end)."""
        return drafted_in_answer(self.start, self.drafted, self.lengths[self.sample])

    @property
    def round_index(self) -> np.ndarray:
        """Per round, its number within its sample (0, 1, ...)."""
        counts = np.bincount(self.sample, minlength=len(self.sample_ids))
        first = np.cumsum(counts) - counts
        return np.arange(len(self.sample), dtype=np.int64) - first[self.sample]


def replay(streams: Streams, gamma: int) -> Rounds:
    """Rounds of greedy speculative decoding along every stream at once, by the rule of
    docs/architecture.md, verbatim (s: tokens emitted before the round, N: the stream's length):

        g = max(0, min(gamma, max_new_tokens - s - 1))   # never propose past the length budget
        a = min(g, run of True from s, N - s)             # N - s: an accepted EOS ends the stream
        emitted = a if s + a == N else a + 1              # accepted EOS: no bonus token

    matches[j] = 1 iff the draft's argmax given the target prefix y_<j equals y_j (teacher forced,
    in target ids). All samples advance together, one round per step (numpy over the samples still
    running), so a table costs about max rounds per sample steps, not samples x rounds.
    """
    gamma = _check_gamma(gamma)
    n = streams.lengths
    first = streams.offsets[:-1]
    # runs capped at their own stream's end: min(run, N - s) is then just the run
    run = _run_lengths(streams.matches, np.repeat(streams.offsets[1:], n))
    s = np.zeros(len(n), dtype=np.int64)
    active = np.flatnonzero(n > 0)
    steps = []
    while active.size:
        sa = s[active]
        g = np.maximum(0, np.minimum(gamma, streams.budgets[active] - sa - 1))
        a = np.minimum(g, run[first[active] + sa])
        e = np.where(sa + a == n[active], a, a + 1)
        steps.append((active, sa, g, a, e))
        s[active] = sa + e
        active = active[s[active] < n[active]]
    if not steps:
        z = np.zeros(0, dtype=np.int64)
        return Rounds(list(streams.sample_ids), z, z, z, z, z, n)
    cols = [np.concatenate(c) for c in zip(*steps)]
    order = np.argsort(cols[0], kind="stable")   # steps are rounds: stable keeps each sample's in order
    sample, start, drafted, accepted, emitted = (c[order] for c in cols)
    return Rounds(list(streams.sample_ids), sample, start, drafted, accepted, emitted, n)


def replay_rounds(matches: Sequence[bool], gamma: int, max_new_tokens: int) -> list[Round]:
    """Rounds of greedy speculative decoding along one target stream of length N = len(matches):
    `replay` of a single stream (the same rule), as Round records."""
    r = replay(Streams.one(matches, max_new_tokens), gamma)
    return [Round(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(r.start, r.drafted, r.accepted, r.emitted)]


# --------------------------------------------------------------------------------------------
# i.i.d. model (Leviathan, Kalman, Matias 2023, Eq. 1 and Thm 3.8)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Per-position acceptance and bootstrap
# --------------------------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float:
    # NaN (not 0, not an error) where nothing was observed: an empty denominator is "no data".
    return float(num) / float(den) if den else float("nan")


def drafted_in_answer(start, drafted, length) -> np.ndarray:
    """Per round, the proposals that predict a token of the stream: min(drafted, max(0, N - start)).

    Proposal i (1-based) of a round starting at s predicts the token at position s + i - 1; it lies
    past the answer when s + i - 1 >= N (N = `length`, the stream's length), so proposals
    1..N - s are inside and the remaining max(0, s + drafted - N) are past the end (post-EOS).
    `length`: one N for all rounds, or each round's own (rounds of several streams).
    """
    start = np.asarray(start, dtype=np.int64).reshape(-1)
    drafted = np.asarray(drafted, dtype=np.int64).reshape(-1)
    return np.minimum(drafted, np.maximum(0, np.asarray(length, dtype=np.int64) - start))


def _per_position_arrays(offered_upto: np.ndarray, accepted: np.ndarray, gamma: int) -> tuple[np.ndarray, np.ndarray]:
    """offered_upto[r]: the last position the round offered (its proposals inside the answer)."""
    uncond = np.full(gamma, np.nan)
    cond = np.full(gamma, np.nan)
    for i in range(1, gamma + 1):
        reached = accepted >= i                    # accepted prefix reaches position i
        offered = offered_upto >= i                # a proposal at position i, inside the answer
        uncond[i - 1] = _ratio(np.sum(reached), np.sum(offered))
        cond[i - 1] = _ratio(np.sum(reached), np.sum(offered & (accepted >= i - 1)))
    return uncond, cond


def per_position(rounds: Sequence[Round], gamma: int,
                 stream_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(unconditional[i-1], conditional[i-1]) for positions i = 1..gamma, pooled over rounds.

    `rounds` are one sample's rounds along a stream of length N = `stream_length` (None: the sum
    of their emitted tokens, i.e. the rounds are the whole stream, as replay_rounds returns them).
    Position i of a round is offered when the draft proposed it AND it predicts a token of the
    stream (start + i - 1 < N; see drafted_in_answer): a proposal past the end is not counted.

    unconditional = #rounds with accepted >= i / #rounds offering i
    conditional   = #rounds with accepted >= i / #rounds offering i with accepted >= i-1
    NaN where the denominator is 0 (e.g. no round drafted that far inside the answer).
    """
    gamma = _check_gamma(gamma)
    start = np.array([r.start for r in rounds], dtype=np.int64)
    drafted = np.array([r.drafted for r in rounds], dtype=np.int64)
    accepted = np.array([r.accepted for r in rounds], dtype=np.int64)
    n = int(sum(r.emitted for r in rounds)) if stream_length is None else int(stream_length)
    return _per_position_arrays(drafted_in_answer(start, drafted, n), accepted, gamma)


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


# --------------------------------------------------------------------------------------------
# Summaries: one row per gamma, from a replay (scores) or from a real loop (rounds)
# --------------------------------------------------------------------------------------------


def _pos_columns(max_gamma: int) -> list[str]:
    return [f"pos{i}_{kind}" for i in range(1, max_gamma + 1) for kind in ("uncond", "cond")]


def _summarise_gamma(gamma: int, rounds: Rounds, max_gamma: int, n_boot: int, seed: int) -> dict:
    """The core columns for one gamma. Both summaries call this, so equal rounds give equal numbers.

    `rounds.sample_ids` must come in a fixed order (sorted): the bootstrap draws indices, so the
    order decides which resamples are drawn.
    """
    # Every column here is MEASURED (from the rounds); predictions are added by the callers.
    ins = rounds.in_answer                        # per round: proposals inside the answer
    d, a, e = (rounds.per_sample(x) for x in (rounds.drafted, rounds.accepted, rounds.emitted))
    r = rounds.per_sample(None)
    d_in = rounds.per_sample(ins)
    drafted, accepted, emitted, n_rounds = (int(rounds.drafted.sum()), int(rounds.accepted.sum()),
                                            int(rounds.emitted.sum()), len(rounds.sample))
    in_answer = int(ins.sum())
    row: dict = {
        "gamma": int(gamma),
        "n_samples": len(rounds.sample_ids),
        "rounds": n_rounds,
        "drafted": drafted,
        "accepted": accepted,
        "emitted": emitted,
        # vLLM's acceptance rate: accepted / drafted over ALL proposals, those drafted past the end
        # of the answer (after its EOS) included as rejections; depends on gamma and answer length.
        "token_acceptance_rate": _ratio(accepted, drafted),
        "tau": _ratio(accepted + n_rounds, n_rounds),
        "tokens_per_call": _ratio(emitted, n_rounds),
        # proposals at or after the end of the stream (start + i - 1 >= N): never acceptable
        "post_eos_drafted": drafted - in_answer,
        # accepted / proposals inside the answer: the rate without the end-of-answer artefact
        "token_acceptance_rate_in_answer": _ratio(accepted, in_answer),
    }
    row["token_acceptance_rate_lo"], row["token_acceptance_rate_hi"] = bootstrap_ci(a, d, n_boot, seed)
    row["tau_lo"], row["tau_hi"] = bootstrap_ci(a + r, r, n_boot, seed)
    row["token_acceptance_rate_in_answer_lo"], row["token_acceptance_rate_in_answer_hi"] = \
        bootstrap_ci(a, d_in, n_boot, seed)
    # per position: a proposal past the end of the answer is not offered
    uncond, cond = _per_position_arrays(ins, rounds.accepted, gamma)
    for i in range(1, max_gamma + 1):
        # Beyond this gamma no position exists: NaN keeps one column set for every row.
        row[f"pos{i}_uncond"] = float(uncond[i - 1]) if i <= gamma else float("nan")
        row[f"pos{i}_cond"] = float(cond[i - 1]) if i <= gamma else float("nan")
    return row


_CORE_SCHEMA = {
    "gamma": pl.Int64, "n_samples": pl.Int64, "rounds": pl.Int64, "drafted": pl.Int64,
    "accepted": pl.Int64, "emitted": pl.Int64, "token_acceptance_rate": pl.Float64, "tau": pl.Float64,
    "tokens_per_call": pl.Float64, "post_eos_drafted": pl.Int64, "token_acceptance_rate_in_answer": pl.Float64,
    "token_acceptance_rate_lo": pl.Float64, "token_acceptance_rate_hi": pl.Float64,
    "tau_lo": pl.Float64, "tau_hi": pl.Float64,
    "token_acceptance_rate_in_answer_lo": pl.Float64, "token_acceptance_rate_in_answer_hi": pl.Float64,
}


def _frame(rows: list[dict], extra: dict, max_gamma: int) -> pl.DataFrame:
    schema = dict(_CORE_SCHEMA)
    schema.update(extra)
    schema.update({c: pl.Float64 for c in _pos_columns(max_gamma)})
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _first_per_sample(df: pl.DataFrame) -> np.ndarray:
    """Row indices where a new sample_id starts in a frame sorted by sample_id."""
    return np.flatnonzero(df["sample_id"].ne_missing(df["sample_id"].shift(1)).fill_null(True).to_numpy())


def streams(scores: pl.DataFrame) -> Streams:
    """A "scores" table as Streams (samples sorted by sample_id, matches in position order), checked."""
    df = scores.select("sample_id", "position", "match", "max_new_tokens").sort("sample_id", "position")
    starts = _first_per_sample(df)
    offsets = np.append(starts, df.height).astype(np.int64)
    ids = df["sample_id"].gather(starts).cast(pl.String).to_list()
    pos = df["position"].to_numpy().astype(np.int64)
    want = np.arange(df.height, dtype=np.int64) - np.repeat(starts, np.diff(offsets))

    def sample_of(row) -> int:   # the sample a row belongs to
        return int(np.searchsorted(offsets, row, side="right") - 1)

    bad = np.flatnonzero(pos != want)
    if bad.size:
        # The replay walks the stream from position 0 without gaps; a hole or a duplicate
        # would silently shift every round after it.
        k = sample_of(bad[0])
        raise ValueError(f"sample {ids[k]!r}: positions are not 0..{int(offsets[k + 1] - offsets[k]) - 1} "
                         "without gaps")
    budget = df["max_new_tokens"].to_numpy().astype(np.int64)
    first_budget = np.repeat(budget[starts], np.diff(offsets))
    bad = np.flatnonzero(budget != first_budget)
    if bad.size:
        k = sample_of(bad[0])
        part = df["max_new_tokens"][int(offsets[k]):int(offsets[k + 1])]
        raise ValueError(f"sample {ids[k]!r}: max_new_tokens is not constant: {part.unique().to_list()}")
    return Streams(ids, offsets, df["match"].to_numpy().astype(bool), budget[starts])


def replay_rounds_table(scores: pl.DataFrame | Streams, gamma: int) -> pl.DataFrame:
    """The replayed rounds of every sample at one gamma, in the loop's "rounds" column names.

    Lets a replay be compared round by round with a real loop's rounds table.
    """
    r = replay(scores if isinstance(scores, Streams) else streams(scores), gamma)
    i32 = pl.Int32
    return pl.DataFrame({
        "sample_id": pl.Series(r.sample_ids, dtype=pl.String).gather(r.sample),
        "gamma": pl.Series(np.full(len(r.sample), gamma, dtype=np.int32)),
        "round": pl.Series(r.round_index, dtype=i32), "start": pl.Series(r.start, dtype=i32),
        "drafted": pl.Series(r.drafted, dtype=i32), "accepted": pl.Series(r.accepted, dtype=i32),
        "emitted": pl.Series(r.emitted, dtype=i32)})


def replay_summary(scores: pl.DataFrame, gammas: list[int], n_boot: int = N_BOOT, seed: int = 0,
                   stream_set: Streams | None = None) -> pl.DataFrame:
    """One row per gamma from a teacher-forced "scores" table (exact for greedy decoding).

    Columns: the core (gamma, n_samples, rounds, drafted, accepted, emitted,
    token_acceptance_rate, tau, post_eos_drafted, token_acceptance_rate_in_answer, their 95% CIs,
    pos{i}_uncond / pos{i}_cond for i up to max(gammas), post-EOS proposals not offered), plus
    leviathan_alpha (pooled mean of summin over all positions) with its CI,
    mapped_mass (pooled mean) and iid_token_acceptance (what the i.i.d. model predicts from
    leviathan_alpha, shown beside the measured token_acceptance_rate). `stream_set`: `streams(scores)`
    when the caller has it already.
    """
    gammas = [_check_gamma(g) for g in gammas]
    if not gammas:
        raise ValueError("gammas is empty")
    max_gamma = max(gammas)
    stream_set = streams(scores) if stream_set is None else stream_set
    # alpha is a per-position quantity, the same for every gamma: pooled over positions, CI over samples.
    per = (scores.group_by("sample_id")
           .agg(pl.col("summin").cast(pl.Float64).sum().alias("s"),
                pl.col("summin").count().alias("n"))
           .sort("sample_id"))
    alpha = _ratio(per["s"].sum(), per["n"].sum())
    alpha_lo, alpha_hi = bootstrap_ci(per["s"].to_numpy(), per["n"].to_numpy(), n_boot, seed)
    mapped = scores["mapped_mass"].cast(pl.Float64).mean() if scores.height else None
    mapped = float("nan") if mapped is None else float(mapped)
    rows = []
    for g in gammas:
        row = _summarise_gamma(g, replay(stream_set, g), max_gamma, n_boot, seed)
        row.update({
            "leviathan_alpha": alpha, "leviathan_alpha_lo": alpha_lo, "leviathan_alpha_hi": alpha_hi,
            "mapped_mass": mapped,
            "iid_token_acceptance": iid_token_acceptance(alpha, g) if np.isfinite(alpha) else float("nan"),
        })
        rows.append(row)
    extra = {"leviathan_alpha": pl.Float64, "leviathan_alpha_lo": pl.Float64, "leviathan_alpha_hi": pl.Float64,
             "mapped_mass": pl.Float64, "iid_token_acceptance": pl.Float64}
    return _frame(rows, extra, max_gamma)


def _loop_rounds(part: pl.DataFrame) -> Rounds:
    """One gamma of a loop's rounds table (sorted by sample_id, round) as Rounds."""
    starts = _first_per_sample(part)
    counts = np.diff(np.append(starts, part.height))
    sample = np.repeat(np.arange(len(starts), dtype=np.int64), counts)
    col = {c: part[c].to_numpy().astype(np.int64) for c in ("start", "drafted", "accepted", "emitted")}
    return Rounds(part["sample_id"].gather(starts).cast(pl.String).to_list(), sample, col["start"], col["drafted"],
                  col["accepted"], col["emitted"],
                  # N: the loop's stream is what it emitted
                  np.bincount(sample, weights=col["emitted"], minlength=len(starts)).astype(np.int64))


def rounds_summary(rounds: pl.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pl.DataFrame:
    """One row per gamma from a real loop's "rounds" table: the same core columns as replay_summary.

    Rounds are checked against the rule's invariants (accepted <= drafted <= gamma, emitted is
    accepted or accepted + 1, rounds numbered 0.. with start = tokens emitted before) so a broken
    loop shows up here instead of as a plausible number. A sample's stream length N (for the
    proposals past the end of the answer) is its emitted total.
    """
    gammas = sorted(int(g) for g in rounds["gamma"].unique().to_list()) if rounds.height else []
    max_gamma = max(gammas) if gammas else 0
    bad = rounds.filter(
        (pl.col("accepted") < 0) | (pl.col("accepted") > pl.col("drafted")) | (pl.col("drafted") > pl.col("gamma"))
        | ((pl.col("emitted") != pl.col("accepted")) & (pl.col("emitted") != pl.col("accepted") + 1)))
    if bad.height:
        raise ValueError(f"{bad.height} rounds break accepted <= drafted <= gamma, emitted in "
                         f"{{accepted, accepted + 1}}; first: {bad.row(0, named=True)}")
    ordered = rounds.sort(["gamma", "sample_id", "round"])
    # start must be the tokens emitted before the round: N - start decides which proposals lie
    # past the end of the answer, so a wrong start would silently move them.
    chk = ordered.with_columns(
        (pl.col("emitted").cum_sum() - pl.col("emitted")).over("gamma", "sample_id").alias("_before"),
        pl.int_range(pl.len()).over("gamma", "sample_id").alias("_k"))
    bad = chk.filter((pl.col("start") != pl.col("_before")) | (pl.col("round") != pl.col("_k")))
    if bad.height:
        raise ValueError(f"{bad.height} rounds have a start that is not the tokens emitted before them (or "
                         f"rounds not numbered 0, 1, ...); first: {bad.drop('_before', '_k').row(0, named=True)}")
    rows = [_summarise_gamma(_check_gamma(g), _loop_rounds(ordered.filter(pl.col("gamma") == g)), max_gamma,
                             n_boot, seed) for g in gammas]
    return _frame(rows, {}, max_gamma)


# --------------------------------------------------------------------------------------------
# The seed note's positional match rate (acceptance-metrics.md section 5): not an acceptance rate
# --------------------------------------------------------------------------------------------


def positional_match(draft_ids: Sequence[int], target_ids: Sequence[int]) -> tuple[int, int, int]:
    """(matched, draft_len, min_len): matched = #{i < min len : d_i == t_i}, both in target ids.

    Two free-running outputs compared index by index; after the first disagreement they drift
    apart and nothing re-synchronises them, which is why this is far below an acceptance rate.
    """
    d = np.asarray(draft_ids, dtype=np.int64).reshape(-1)
    t = np.asarray(target_ids, dtype=np.int64).reshape(-1)
    k = min(len(d), len(t))
    return int(np.sum(d[:k] == t[:k])), len(d), k


@dataclass(frozen=True)
class PositionalMatch:
    """Pooled positional match over samples present in both streams (the seed's 115/1702 style)."""

    n_samples: int
    matched: int
    draft_tokens: int
    min_tokens: int
    positional_match_rate: float           # matched / draft_tokens (the seed's alignment test)
    positional_match_rate_min_len: float   # matched / min_tokens (the seed's benchmark script)


def positional_match_rate(draft_streams: Mapping[str, Sequence[int]],
                          target_streams: Mapping[str, Sequence[int]]) -> PositionalMatch:
    """Pool positional_match over the samples present in both dicts (draft ids already mapped to target ids)."""
    matched = draft_len = min_len = n = 0
    for sid in sorted(set(draft_streams) & set(target_streams)):
        m, dl, ml = positional_match(draft_streams[sid], target_streams[sid])
        matched, draft_len, min_len, n = matched + m, draft_len + dl, min_len + ml, n + 1
    return PositionalMatch(n, matched, draft_len, min_len, _ratio(matched, draft_len), _ratio(matched, min_len))


# --------------------------------------------------------------------------------------------
# Cost model
# --------------------------------------------------------------------------------------------


def cost_model(draft_prefill_ms: float, draft_decode_ms: float, target_prefill_ms: float,
               target_decode_ms: float, alpha: float, gammas: Sequence[int], new_tokens: int = 64,
               max_gamma: int = 16, c_interval: tuple[float, float] | None = None) -> pl.DataFrame:
    """Per gamma: c, the i.i.d. speedup, and a prefill-aware latency estimate for L = new_tokens.

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
        rows.append((g, alpha, c, e, expected_speedup(alpha, g, c), float(target_only), float(spec),
                     float(target_only / spec), best, c_lo, c_hi, best_lo, best_hi))
    schema = {"gamma": pl.Int64, "alpha": pl.Float64, "c": pl.Float64, "tokens_per_call": pl.Float64,
              "speedup_iid": pl.Float64, "target_only_ms": pl.Float64, "speculative_ms": pl.Float64,
              "latency_speedup": pl.Float64, "best_gamma": pl.Int64, "c_lo": pl.Float64, "c_hi": pl.Float64,
              "best_gamma_lo": pl.Int64, "best_gamma_hi": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")
