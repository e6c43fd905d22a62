"""The greedy replay rule: speculative rounds replayed from teacher-forced matches (numpy only).

The rule (docs/architecture.md, "Greedy round replay") is the exact one the loop uses: with s the
tokens emitted before a round and N the stream's length,

    g = max(0, min(gamma, max_new_tokens - s - 1))   # never propose past the length budget
    a = min(g, run of True from s, N - s)             # N - s: an accepted EOS ends the stream
    emitted = a if s + a == N else a + 1              # accepted EOS: no bonus token

`replay` applies it to many streams at once (`Streams` in, `Rounds` out); `replay_rounds` is the
same function on one stream, as `Round` records. `_lockstep_rounds` is the loop that advances every
stream together; the oracle gamma (oracle.py) and tree (trees.py) replays run their own rule in it. Teacher forcing makes the replay exact for greedy
decoding, so a replay and a real loop reduce to the same `Rounds` form and are summarised by the one
function acceptance._summarise_gamma.

Proposals past the end of the answer. The draft always proposes g = min(gamma,
max_new_tokens - s - 1) tokens; it does not know where the answer ends. In a round starting at
s, proposal i (1-based) predicts the token at position s + i - 1 of the stream of length N; when
s + i - 1 >= N it predicts a token after the stream's last one (after an accepted or emitted EOS)
and can never be accepted. Such a round has max(0, s + g - N) of them (`post_eos_drafted`). vLLM's
acceptance rate counts them as rejections (kept as `token_acceptance_rate`); the per-position
tables do not offer them (otherwise the last positions measure where answers end, not whether
the draft agrees), and `token_acceptance_rate_in_answer` leaves them out of the denominator.
A stream cut at the length budget has none: the g cap keeps s + g <= max_new_tokens - 1 = N - 1.
`drafted_in_answer` counts the proposals inside the answer; `per_position` offers only those.

Every number here is MEASURED (counted from matches or rounds). numpy only, no polars: the GPU
benchmark imports it on an image without polars.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def _ratio(num: float, den: float) -> float:
    # NaN (not 0, not an error) where nothing was observed: an empty denominator is "no data".
    return float(num) / float(den) if den else float("nan")


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


def _lockstep_rounds(sample_ids: Sequence[str], n: np.ndarray, step) -> Rounds:
    """Every stream's rounds at once: all samples advance together, one round per step, numpy over the
    samples still running (those with s < N; N = n[k]), so the cost is about max rounds per sample steps.

    `step(active, s)` gives, for the samples `active` at their starts `s`, the round's (drafted,
    accepted, emitted) arrays: the one place a replay's rule differs (the chain's, the oracle gamma's, a
    tree's). Rounds come back ordered by sample, then round.
    """
    s = np.zeros(len(n), dtype=np.int64)
    active = np.flatnonzero(n > 0)
    steps = []
    while active.size:
        sa = s[active]
        d, a, e = step(active, sa)
        steps.append((active, sa, d, a, e))
        s[active] = sa + e
        active = active[s[active] < n[active]]
    if not steps:
        z = np.zeros(0, dtype=np.int64)
        return Rounds(list(sample_ids), z, z, z, z, z, n)
    cols = [np.concatenate(c) for c in zip(*steps)]
    order = np.argsort(cols[0], kind="stable")   # steps are rounds: stable keeps each sample's in order
    sample, start, drafted, accepted, emitted = (c[order] for c in cols)
    return Rounds(list(sample_ids), sample, start, drafted, accepted, emitted, n)


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

    def step(active, sa):
        g = np.maximum(0, np.minimum(gamma, streams.budgets[active] - sa - 1))
        a = np.minimum(g, run[first[active] + sa])
        return g, a, np.where(sa + a == n[active], a, a + 1)

    return _lockstep_rounds(streams.sample_ids, n, step)


def replay_rounds(matches: Sequence[bool], gamma: int, max_new_tokens: int) -> list[Round]:
    """Rounds of greedy speculative decoding along one target stream of length N = len(matches):
    `replay` of a single stream (the same rule), as Round records."""
    r = replay(Streams.one(matches, max_new_tokens), gamma)
    return [Round(int(a), int(b), int(c), int(d)) for a, b, c, d in zip(r.start, r.drafted, r.accepted, r.emitted)]


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
