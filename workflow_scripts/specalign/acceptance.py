"""Every metric of acceptance-metrics.md as a table: replayed and real-loop rounds summarised.

Definitions come from shared/reference/acceptance-metrics.md and are used
exactly; each quantity has one function and one column name:

- Leviathan alpha: mean of summin (sum_x min(p, q)) over target positions.
- token acceptance rate = sum accepted / sum drafted (vLLM V1), every proposal counted,
  including those drafted past the end of the answer (replay.py, "Proposals past the end").
- token acceptance rate in the answer = sum accepted / (sum drafted - post_eos_drafted).
- tau = sum (accepted + 1) / rounds, the bonus token included (acceptance-metrics.md §3;
  plain decoding = 1). A round that ends the stream on an accepted EOS emits no bonus
  token, so the tokens really emitted per target call are `tokens_per_call` =
  sum emitted / rounds, which is <= tau (equal unless a stream ends on an accepted EOS).
- per-position acceptance, unconditional and conditional, over proposals inside the answer.
- the i.i.d. (Leviathan) predictions (speedup.py): tokens per target call, speedup, best gamma,
  and the token acceptance rate the i.i.d. model implies.
- the positional match rate the seed note reported, kept only to show that it
  is a different (and much smaller) number.

The seams: replay.py holds the replay rule and its vectorised form (Streams, Rounds, replay),
speedup.py the i.i.d. model and the cost model's formula, bootstrap.py the intervals; this module
turns them into polars tables.

Measured vs predicted. MEASURED (from rounds, streams or timings): token_acceptance_rate(_in_answer),
tau, tokens_per_call, per-position rates, leviathan_alpha, c and its interval. PREDICTED by the
i.i.d. model from alpha (and c): iid_token_acceptance, expected_tokens_per_call (the summary's
iid_tau), expected_speedup (expected_speedup_iid), latency_speedup, best_gamma(_lo/_hi).
A predicted number is never stored in a measured column.

Why the replay and the real loop share code: the replay of a teacher-forced
pass is exact for greedy decoding, so on identical rounds the two summaries
must agree to the last bit. Both therefore reduce their rounds to per-sample
arrays and go through the one function `_summarise_gamma`.

Pure numpy/polars: no models, so everything here is unit-testable on a CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from .bootstrap import N_BOOT, bootstrap_ci
from .replay import Rounds, Streams, _check_gamma, _per_position_arrays, _ratio, replay
from .speedup import cost_model_rows, iid_token_acceptance

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



def cost_model(draft_prefill_ms: float, draft_decode_ms: float, target_prefill_ms: float,
               target_decode_ms: float, alpha: float, gammas: Sequence[int], new_tokens: int = 64,
               max_gamma: int = 16, c_interval: tuple[float, float] | None = None) -> pl.DataFrame:
    """speedup.cost_model_rows as a table (one row per gamma): c and its interval MEASURED, the rest
    PREDICTED by the i.i.d. model; the formulas, checks and column meanings are there."""
    rows = cost_model_rows(draft_prefill_ms, draft_decode_ms, target_prefill_ms, target_decode_ms, alpha,
                           gammas, new_tokens, max_gamma, c_interval)
    schema = {"gamma": pl.Int64, "alpha": pl.Float64, "c": pl.Float64, "tokens_per_call": pl.Float64,
              "speedup_iid": pl.Float64, "target_only_ms": pl.Float64, "speculative_ms": pl.Float64,
              "latency_speedup": pl.Float64, "best_gamma": pl.Int64, "c_lo": pl.Float64, "c_hi": pl.Float64,
              "best_gamma_lo": pl.Int64, "best_gamma_hi": pl.Int64}
    return pl.DataFrame(rows, schema=schema)
