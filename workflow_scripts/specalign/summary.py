"""The acceptance tables: one run = one dataset x draft x target x decoding.

Puts together what the stages wrote — teacher-forced scores, free-running token
streams, real-loop rounds — into the rows of results/acceptance/*.csv. The metric
definitions themselves live in acceptance.py; this module only decides which
number goes in which row and column.

Measured and predicted numbers have separate columns, and a measured column never holds a
prediction (null where nothing was measured):
- MEASURED: n_samples, rounds, drafted, accepted, token_acceptance_rate(_in_answer),
  post_eos_drafted, tau, tokens_per_call, leviathan_alpha, mapped_mass, positional_match_rate,
  c (draft / target decode ms per token) with c_lo / c_hi, loop_* and their *_lo / *_hi.
- PREDICTED by the i.i.d. model (from leviathan_alpha, and c for speed): iid_token_acceptance,
  iid_tau, expected_speedup_iid, latency_speedup, best_gamma, best_gamma_lo, best_gamma_hi.
  They are on every row, beside the measurement where one exists.
"""
from __future__ import annotations

import math

import polars as pl

from . import acceptance as acc
from .artifacts import SUMMARY_COLUMNS, read_streams
from .specs import Run


def decode_per_sample(token_files: list[str]) -> pl.DataFrame:
    """Per sample (sorted): `decode_ms` summed over its decode steps and `decode_steps`, their number.

    A decode step is a token after the first (position > 0; position 0 comes from the prefill).
    Summed per sample so that both the pooled mean and its bootstrap over samples come from them.
    """
    df = pl.read_parquet(list(token_files), columns=["sample_id", "position", "decode_ms"])
    step = pl.col("position") > 0
    return (df.group_by("sample_id")
            .agg(pl.col("decode_ms").cast(pl.Float64).filter(step).sum().alias("decode_ms"),
                 step.sum().cast(pl.Int64).alias("decode_steps"))
            .sort("sample_id"))


def timings(token_files: list[str]) -> tuple[float, float]:
    """(mean prefill ms per sample, mean decode ms per token after the first, pooled over samples)."""
    df = pl.read_parquet(list(token_files), columns=["sample_id", "prefill_ms"])
    prefill = df.group_by("sample_id").agg(pl.col("prefill_ms").first())["prefill_ms"].mean()
    per = decode_per_sample(token_files)
    steps = int(per["decode_steps"].sum())
    decode = float(per["decode_ms"].sum()) / steps if steps else math.nan
    return float(prefill or math.nan), decode


def cost_ratio_ci(draft_files: list[str], target_files: list[str], n_boot: int = acc.N_BOOT,
                  seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the measured c = mean draft decode ms / mean target decode ms.

    Resamples samples (the union of both streams' samples, sorted; a sample one model lacks adds
    nothing to that model's sums), c of each resample is the ratio of the two pooled per-token
    means, i.e. exactly timings()'s point estimate on the resample; acc.bootstrap_ratio_of_means_ci,
    the same resampling engine and seed as every other interval.
    """
    d, t = decode_per_sample(draft_files), decode_per_sample(target_files)
    j = (d.join(t, on="sample_id", how="full", coalesce=True, suffix="_target")
         .fill_null(0).sort("sample_id"))
    return acc.bootstrap_ratio_of_means_ci(j["decode_ms"].to_numpy(), j["decode_steps"].to_numpy(),
                                           j["decode_ms_target"].to_numpy(), j["decode_steps_target"].to_numpy(),
                                           n_boot=n_boot, seed=seed)


UNMAPPED = -1  # a draft token the target cannot hold, in a mapped stream


def mapped_draft_streams(run: Run) -> dict[str, list[int]]:
    """The draft's free-running streams in target ids (a 1:n entry gives n ids, unmapped -> -1):
    the one mapping behind the positional match and the divergence analysis."""
    t = pl.read_parquet(run.translation, columns=["draft_id", "target_ids"]).with_columns(
        pl.col("draft_id").cast(pl.Int64),
        pl.when(pl.col("target_ids").list.len() > 0).then(pl.col("target_ids").cast(pl.List(pl.Int64)))
        .otherwise(pl.lit([UNMAPPED], dtype=pl.List(pl.Int64))).alias("target_ids"))
    tokens = pl.read_parquet(list(run.draft_tokens), columns=["sample_id", "position", "token_id"])
    g = (tokens.with_columns(pl.col("token_id").cast(pl.Int64))
         .join(t, left_on="token_id", right_on="draft_id", how="left")
         # an id outside the translation table is unmapped too
         .with_columns(pl.col("target_ids").fill_null(pl.lit([UNMAPPED], dtype=pl.List(pl.Int64))))
         .sort("sample_id", "position")
         .group_by("sample_id", maintain_order=True).agg(pl.col("target_ids").list.explode()))
    return dict(zip(g["sample_id"].to_list(), g["target_ids"].to_list()))


def positional(run: Run, targets: dict[str, list[int]]) -> acc.PositionalMatch:
    """The seed's measure: free-running draft output (mapped to target ids) vs target output."""
    return acc.positional_match_rate(mapped_draft_streams(run), targets)


TABLES = ("summary", "per_position", "cost", "loop")


def acceptance_tables(runs: list[Run], gammas: list[int], n_boot: int, log=None,
                      comparisons: list[dict] = ()) -> dict[str, pl.DataFrame]:
    """Every run's rows of the four acceptance tables (summary columns first, SUMMARY_COLUMNS),
    and the before/after rows of each distilled draft ("distillation", stages.comparisons)."""
    rows: dict[str, list] = {name: [] for name in TABLES}
    for run in runs:
        parts = run_tables(run, list(gammas), int(n_boot))
        for name, part in zip(TABLES, parts):
            rows[name].extend(part)
        if log is not None:
            log.info("%s %s: %d summary rows", run.pair, run.decoding.name, len(parts[0]))
    out = {name: _frame(rows[name], SUMMARY_COLUMNS if name == "summary" else ()) for name in TABLES}
    out["distillation"] = _frame([distillation_row(c, int(n_boot)) for c in comparisons])
    return out


def distillation_row(c: dict, n_boot: int) -> dict:
    """Leviathan alpha before and after distillation on the same clips and positions (the two drafts
    scored along the same target streams), and the paired bootstrap interval of the difference."""
    cols = ["sample_id", "position", "summin", "match"]
    before = pl.read_parquet(c["before_scores"], columns=cols)
    after = pl.read_parquet(c["after_scores"], columns=cols)
    both = before.join(after, on=["sample_id", "position"], suffix="_after", how="inner")
    if both.height != before.height or both.height != after.height:
        raise ValueError(f"{c['before']} and {c['after']} were not scored along the same target streams "
                         f"({before.height} / {after.height} positions, {both.height} shared)")
    per = (both.group_by("sample_id").agg(pl.col("summin").sum().alias("b"), pl.col("summin_after").sum().alias("a"),
                                          pl.len().alias("n")).sort("sample_id"))
    n = float(per["n"].sum())
    alpha_b, alpha_a = float(per["b"].sum()) / n, float(per["a"].sum()) / n
    lo, hi = acc.bootstrap_paired_difference_ci(per["a"].to_numpy(), per["b"].to_numpy(), per["n"].to_numpy(), n_boot)
    return {**{k: c[k] for k in ("dataset", "target", "decoding", "before", "after", "loss", "data")},
            "n_samples": per.height, "positions": int(n), "alpha_before": alpha_b, "alpha_after": alpha_a,
            "alpha_difference": alpha_a - alpha_b, "alpha_difference_lo": lo, "alpha_difference_hi": hi,
            "match_rate_before": float(both["match"].mean()), "match_rate_after": float(both["match_after"].mean())}


def _frame(rows: list[dict], first=()) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame()
    df = pl.DataFrame(rows, infer_schema_length=None)
    return df.select([*first, *[c for c in df.columns if c not in first]])


def run_tables(run: Run, gammas: list[int], n_boot: int):
    """(summary rows, per-position rows, cost rows, loop-vs-replay rows) for one run."""
    scores = pl.read_parquet(run.scores)
    loops = {}  # gamma -> the loop's rounds over all shards
    if run.rounds:
        every = pl.read_parquet(list(run.rounds))
        loops = {int(g): every.filter(pl.col("gamma") == g) for g in every["gamma"].unique().sort()}
    # every gamma the loop ran at gets a replay row too, so the two can be compared
    gammas = sorted(set(gammas) | set(loops))
    streams = acc.streams(scores)  # checked once: the replay summary and the loop check replay it
    replay = acc.replay_summary(scores, gammas, n_boot=n_boot, stream_set=streams)
    targets = read_streams(run.target_tokens)  # read once: the positional match and the loop check use it
    pm = positional(run, targets)
    d_pre, d_dec = timings(run.draft_tokens)
    t_pre, t_dec = timings(run.target_tokens)
    alpha = float(replay["leviathan_alpha"][0]) if replay.height else math.nan
    # the answers' real mean length: a length budget of 128 would understate the prefill's share
    mean_len = scores.group_by("sample_id").len()["len"].mean() if scores.height else None
    measured = [d_pre, d_dec, t_pre, t_dec, alpha]
    cost = None
    if all(math.isfinite(x) for x in measured) and mean_len:
        c_ci = cost_ratio_ci(run.draft_tokens, run.target_tokens, n_boot=n_boot)
        cost = acc.cost_model(d_pre, d_dec, t_pre, t_dec, alpha, gammas, new_tokens=max(1, round(mean_len)),
                              c_interval=c_ci)
    loop_summ = {g: acc.rounds_summary(r, n_boot=n_boot).row(0, named=True) for g, r in loops.items()}

    is_greedy = run.decoding.greedy
    summary, per_pos, loop_rows = [], [], []
    # the measured columns a row takes from its rounds (the replay's or the loop's)
    measured_cols = ("n_samples", "rounds", "drafted", "accepted", "token_acceptance_rate", "tau", "tokens_per_call")
    for row in replay.iter_rows(named=True):
        g = row["gamma"]
        out = {**run.keys, "gamma": g}
        if is_greedy:
            # exact: greedy speculative decoding replayed from the teacher-forced matches
            out.update({k: row[k] for k in measured_cols})
            out["method"] = "greedy_replay"
            ci = row
        elif g in loop_summ:
            ls = loop_summ[g]
            out.update({k: ls[k] for k in measured_cols})
            out["method"] = "loop"
            ci = ls
        else:
            # sampling without a loop run at this gamma: nothing measured the rounds, so every
            # measured column stays null; the i.i.d. prediction is in iid_* below (as on every row).
            # n_samples: the samples alpha (the prediction's input) was measured on.
            out.update({k: None for k in measured_cols})
            out["n_samples"] = row["n_samples"]
            out["method"] = "iid_from_alpha"
            ci = {}
        out["leviathan_alpha"] = row["leviathan_alpha"]
        out["positional_match_rate"] = pm.positional_match_rate
        # measured (null on iid_from_alpha rows)
        for k in ("token_acceptance_rate_lo", "token_acceptance_rate_hi", "tau_lo", "tau_hi",
                  "token_acceptance_rate_in_answer", "token_acceptance_rate_in_answer_lo",
                  "token_acceptance_rate_in_answer_hi", "post_eos_drafted"):
            out[k] = ci.get(k)
        out.update({
            "leviathan_alpha_lo": row["leviathan_alpha_lo"], "leviathan_alpha_hi": row["leviathan_alpha_hi"],
            "mapped_mass": row["mapped_mass"],
            # predicted by the i.i.d. model from leviathan_alpha, on every row
            "iid_token_acceptance": row["iid_token_acceptance"],
            "iid_tau": acc.expected_tokens_per_call(alpha, g) if math.isfinite(alpha) else None,
            "positional_match_rate_min_len": pm.positional_match_rate_min_len,
            # measured by the real loop where it ran at this gamma
            "loop_token_acceptance_rate": loop_summ[g]["token_acceptance_rate"] if g in loop_summ else None,
            "loop_tau": loop_summ[g]["tau"] if g in loop_summ else None,
        })
        if cost is not None:
            c = cost.filter(pl.col("gamma") == g).row(0, named=True)
            out.update({
                # measured: the decode-time ratio and its bootstrap interval over samples
                "c": c["c"], "c_lo": c["c_lo"], "c_hi": c["c_hi"],
                # predicted by the i.i.d. model from alpha and c (best_gamma_lo at c_hi, _hi at c_lo)
                "expected_speedup_iid": c["speedup_iid"], "latency_speedup": c["latency_speedup"],
                "best_gamma": c["best_gamma"], "best_gamma_lo": c["best_gamma_lo"],
                "best_gamma_hi": c["best_gamma_hi"]})
        summary.append(out)
        src = ci if ci else {}
        for i in range(1, g + 1):
            per_pos.append({**run.keys, "gamma": g, "position": i, "method": out["method"],
                            "unconditional": src.get(f"pos{i}_uncond"), "conditional": src.get(f"pos{i}_cond")})

    for g, r in sorted(loops.items()):
        loop_rows.append(loop_vs_replay(run, streams, r, g, is_greedy, loop_summ[g], replay, targets))
    cost_rows = [{**run.keys, **c, "draft_prefill_ms": d_pre, "draft_decode_ms": d_dec, "target_prefill_ms": t_pre,
                  "target_decode_ms": t_dec} for c in (cost.iter_rows(named=True) if cost is not None else [])]
    return summary, per_pos, cost_rows, loop_rows


def loop_vs_replay(run: Run, scores: pl.DataFrame | acc.Streams, rounds: pl.DataFrame, gamma: int, is_greedy: bool,
                   loop_summary: dict, replay: pl.DataFrame, targets: dict[str, list[int]]) -> dict:
    """Does the real loop do what the replay says? For greedy decoding it must, round for round."""
    # the greedy replay along the target's stream is comparable with the loop only under greedy decoding
    rep = replay.filter(pl.col("gamma") == gamma).row(0, named=True) if is_greedy else {}
    row = {**run.keys, "gamma": gamma, "loop_rounds": loop_summary["rounds"], "replay_rounds": rep.get("rounds"),
           "loop_accepted": loop_summary["accepted"], "replay_accepted": rep.get("accepted"),
           "loop_drafted": loop_summary["drafted"], "replay_drafted": rep.get("drafted"),
           "loop_token_acceptance_rate": loop_summary["token_acceptance_rate"],
           "replay_token_acceptance_rate": rep.get("token_acceptance_rate")}
    cols = ["sample_id", "round", "start", "drafted", "accepted", "emitted"]
    if is_greedy:
        replayed = acc.replay_rounds_table(scores, gamma).select(cols).sort("sample_id", "round")
        looped = rounds.select(cols).sort("sample_id", "round")
        row["rounds_identical"] = replayed.equals(looped)
        # greedy speculative output must be the target's greedy output
        out = rounds.sort("sample_id", "round").group_by("sample_id", maintain_order=True).agg(
            pl.col("tokens").list.explode())
        row["output_equals_target"] = all(targets.get(s) == t for s, t in zip(out["sample_id"].to_list(),
                                                                           out["tokens"].to_list()))
    else:
        row["rounds_identical"] = None
        row["output_equals_target"] = None
    # the step-by-step check runs for greedy decoding only (sampled acceptance has no argmax to flip)
    row["verify_flip_rate"] = float(rounds["verify_flip"].mean()) if is_greedy else None
    row["draft_flip_rate"] = float(rounds["draft_flip"].mean()) if is_greedy else None
    per_sample = rounds.group_by("sample_id").agg(
        # float64 sums: float32 ones depend on the order polars adds in, and reruns must be exact
        (pl.col("draft_ms").cast(pl.Float64).sum() + pl.col("verify_ms").cast(pl.Float64).sum()).alias("loop_ms"),
        pl.col("target_only_ms").first())
    row["loop_ms"] = float(per_sample["loop_ms"].sum())
    row["target_only_ms"] = float(per_sample["target_only_ms"].sum())
    row["measured_speedup"] = row["target_only_ms"] / row["loop_ms"] if row["loop_ms"] > 0 else None
    return row
