"""The acceptance tables: one run = one dataset x draft x target x decoding.

Puts together what the stages wrote — teacher-forced scores, free-running token
streams, real-loop rounds — into the rows of results/acceptance/*.csv. The metric
definitions themselves live in acceptance.py, replay.py, speedup.py and bootstrap.py; this
module only decides which number goes in which row and column.

Measured and predicted numbers have separate columns, and a measured column never holds a
prediction (null where nothing was measured):
- MEASURED: n_samples, rounds, drafted, accepted, token_acceptance_rate(_in_answer),
  post_eos_drafted, tau, tokens_per_call, leviathan_alpha, alpha_argmax (acceptance of an argmax
  draft, argmax_drafting.py), mapped_mass, positional_match_rate,
  loop_* and their *_lo / *_hi; from the run's ONE paired timing job (timing.py, never a timing of
  one job over another's): device, c (draft / target decode step) with c_lo / c_hi, verify_cost,
  round_overhead_ms, measured_speedup (the loop against plain decoding, same clips), each with
  its interval over clips.
- PREDICTED by the i.i.d. model (from leviathan_alpha, and c for speed): iid_token_acceptance,
  iid_tau, expected_speedup_iid, latency_speedup, best_gamma, best_gamma_lo, best_gamma_hi.
  They are on every row, beside the measurement where one exists.
- PREDICTED by the cost model (payoff.py) from the measured per-position acceptance and the timing
  job's costs: predicted_speedup (prefills sequential), predicted_speedup_overlapped,
  predicted_speedup_steady, free_draft_tokens, break_even_alpha (i.i.d. alpha at speedup 1).
"""
from __future__ import annotations

import math

import polars as pl

from . import acceptance as acc
from . import histograms, payoff, speedup, timing
from . import replay as rp
from .argmax_drafting import alpha_argmax, loop_draft_samplings
from .artifacts import SUMMARY_COLUMNS, read_streams
from .bootstrap import bootstrap_paired_difference_ci
from .specs import Run

# cost_model.csv: the timing job's own figures, beside the predictions made from them
TIMING_COLUMNS = ("dtype", "torch_threads", "n_clips", "reps", "draft_prefill_ms", "draft_prefill_ms_lo",
                  "draft_prefill_ms_hi", "target_prefill_ms", "target_prefill_ms_lo", "target_prefill_ms_hi",
                  "draft_step_ms", "target_step_ms")


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
                      comparisons: list[dict] = (), ablation_runs: list[Run] = ()) -> dict[str, pl.DataFrame]:
    """Every run's rows of the four acceptance tables (summary columns first, SUMMARY_COLUMNS),
    and the before/after rows of each distilled draft ("distillation", stages.comparisons).
    The input ablations' runs (stages.ablation_runs) add summary and per_position rows, their
    `ablation` column naming the ablation (null on the plain runs' rows)."""
    rows: dict[str, list] = {name: [] for name in TABLES}
    for run in runs:
        parts = run_tables(run, list(gammas), int(n_boot))
        for name, part in zip(TABLES, parts):
            rows[name].extend(part)
        if log is not None:
            log.info("%s %s: %d summary rows", run.pair, run.decoding.name, len(parts[0]))
    out = {name: _frame(rows[name], SUMMARY_COLUMNS if name == "summary" else ()) for name in TABLES}
    out["distillation"] = _frame([distillation_row(c, int(n_boot)) for c in comparisons])
    # the engines' view (histograms.py): per-round accepted-length histograms, the marginal
    # P(accepted >= i) beside per_position's offered-only rates, and their checks against the summary
    out["histograms"] = pl.concat([histograms.frame([]), *(histograms.run_histograms(r, list(gammas)) for r in runs)])
    out["per_position"] = histograms.with_marginals(out["per_position"], out["histograms"])
    out["histogram_checks"] = histograms.checks(out["histograms"], out["summary"], out["loop"])
    if ablation_runs:
        _add_ablations(out, list(ablation_runs), list(gammas), int(n_boot), log)
    return out


def _add_ablations(out: dict[str, pl.DataFrame], runs: list[Run], gammas: list[int], n_boot: int, log) -> None:
    """The ablated runs' summary and per_position rows, appended. Each is measured like a plain run from
    its scores (alpha and the replayed rounds with their intervals, per position, with the marginals of
    its own replay histograms); it has no loop, timing or free-running draft stream, so those columns
    are null. Its histograms stay out of histograms.csv and the profiles, which describe deployable runs."""
    summary, per_pos = [], []
    for run in runs:
        s, pp, _, _ = run_tables(run, gammas, n_boot)
        summary += s
        if pp:
            per_pos.append(histograms.with_marginals(_frame(pp), histograms.run_histograms(run, gammas)))
        if log is not None:
            log.info("%s %s ablation %s: %d summary rows", run.pair, run.decoding.name, run.ablation, len(s))
    out["summary"] = pl.concat([out["summary"], _frame(summary, SUMMARY_COLUMNS)], how="diagonal_relaxed")
    out["per_position"] = pl.concat([out["per_position"], *per_pos], how="diagonal_relaxed")


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
    lo, hi = bootstrap_paired_difference_ci(per["a"].to_numpy(), per["b"].to_numpy(), per["n"].to_numpy(), n_boot)
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
    # an input ablation's run (ablations.py) has no free-running draft stream: no positional match
    pm = positional(run, targets) if run.draft_tokens else None
    alpha = float(replay["leviathan_alpha"][0]) if replay.height else math.nan
    # the answers' real mean length: a length budget of 128 would understate the prefill's share
    mean_len = scores.group_by("sample_id").len()["len"].mean() if scores.height else None
    # every timing from the run's ONE paired timing job (timing.py); it refuses rows of two devices
    tim = timing.summarise(pl.read_parquet(run.timing), n_boot) if run.timing else None
    cost = None
    if tim is not None and math.isfinite(alpha) and mean_len:
        cost = acc.cost_model(tim["draft_prefill_ms"], tim["draft_step_ms"], tim["target_prefill_ms"],
                              tim["target_step_ms"], alpha, gammas, new_tokens=max(1, round(mean_len)),
                              c_interval=(tim["c_lo"], tim["c_hi"]))
    payoffs = {}   # gamma -> the timing job's measured columns and the cost model's predictions (payoff.py)
    # how each gamma's loop drafted (argmax_drafting.py; refuses shards that drafted differently before
    # their rounds are pooled), and the argmax-drafting acceptance beside alpha
    drafting = loop_draft_samplings(run) if run.rounds else {}
    aa = alpha_argmax(scores, n_boot, source=run.scores)
    loop_summ = {g: acc.rounds_summary(r, n_boot=n_boot).row(0, named=True) for g, r in loops.items()}

    is_greedy = run.decoding.greedy
    summary, per_pos, loop_rows = [], [], []
    # the measured columns a row takes from its rounds (the replay's or the loop's)
    measured_cols = ("n_samples", "rounds", "drafted", "accepted", "token_acceptance_rate", "tau", "tokens_per_call")
    for row in replay.iter_rows(named=True):
        g = row["gamma"]
        out = {**run.keys, "ablation": run.ablation, "gamma": g}
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
        # whose draft the measured columns and loop_* come from: greedy always drafts argmax
        out["draft_sampling"] = "argmax" if is_greedy else drafting.get(g)
        out["leviathan_alpha"] = row["leviathan_alpha"]
        out["alpha_argmax"] = aa["alpha_argmax"]
        out["positional_match_rate"] = pm.positional_match_rate if pm else None
        # measured (null on iid_from_alpha rows)
        for k in ("token_acceptance_rate_lo", "token_acceptance_rate_hi", "tau_lo", "tau_hi",
                  "token_acceptance_rate_in_answer", "token_acceptance_rate_in_answer_lo",
                  "token_acceptance_rate_in_answer_hi", "post_eos_drafted"):
            out[k] = ci.get(k)
        out.update({
            "leviathan_alpha_lo": row["leviathan_alpha_lo"], "leviathan_alpha_hi": row["leviathan_alpha_hi"],
            "alpha_argmax_lo": aa["alpha_argmax_lo"], "alpha_argmax_hi": aa["alpha_argmax_hi"],
            "mapped_mass": row["mapped_mass"],
            # predicted by the i.i.d. model from leviathan_alpha, on every row
            "iid_token_acceptance": row["iid_token_acceptance"],
            "iid_tau": speedup.expected_tokens_per_call(alpha, g) if math.isfinite(alpha) else None,
            "positional_match_rate_min_len": pm.positional_match_rate_min_len if pm else None,
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
            # measured per-position acceptance (marginals P(accepted >= i)) through the measured costs
            accepted = (rp.replay(streams, g).accepted if is_greedy
                        else loops[g]["accepted"].to_numpy() if g in loop_summ else None)
            marginals = payoff.marginals(accepted, g) if accepted is not None and len(accepted) else None
            payoffs[g] = payoff.run_columns(tim, g, marginals, mean_len)
            out.update(payoffs[g])
        summary.append(out)
        src = ci if ci else {}
        for i in range(1, g + 1):
            per_pos.append({**run.keys, "ablation": run.ablation, "gamma": g, "position": i, "method": out["method"],
                            "unconditional": src.get(f"pos{i}_uncond"), "conditional": src.get(f"pos{i}_cond")})

    for g, r in sorted(loops.items()):
        loop_rows.append({**run.keys, "gamma": g, "draft_sampling": drafting[g],
                          **loop_vs_replay(run, streams, r, g, is_greedy, loop_summ[g], replay, targets),
                          # the loop against plain decoding, both timed in the timing job (null: not timed at g)
                          **{k: payoffs.get(g, {}).get(k) for k in ("measured_speedup", "measured_speedup_lo",
                                                                     "measured_speedup_hi", "device")}})
    cost_rows = [] if cost is None else [
        {**run.keys, **c, **payoffs[c["gamma"]], **{k: tim[k] for k in TIMING_COLUMNS}}
        for c in cost.iter_rows(named=True)]
    return summary, per_pos, cost_rows, loop_rows


def loop_vs_replay(run: Run, scores: pl.DataFrame | rp.Streams, rounds: pl.DataFrame, gamma: int, is_greedy: bool,
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
    # the draft's side runs wherever the draft proposed its argmax (speculative.draft_sampling argmax too)
    argmax_drafted = is_greedy or ("draft_sampling" in rounds.columns
                                   and bool(rounds["draft_sampling"].eq_missing("argmax").all()))
    row["draft_flip_rate"] = float(rounds["draft_flip"].mean()) if argmax_drafted else None
    per_sample = rounds.group_by("sample_id").agg(
        # float64 sums: float32 ones depend on the order polars adds in, and reruns must be exact
        (pl.col("draft_ms").cast(pl.Float64).sum() + pl.col("verify_ms").cast(pl.Float64).sum()).alias("loop_ms"),
        pl.col("target_only_ms").first())
    # informative only: the loop job's forward time, and the target's generation-stage time of the same
    # outputs (another job). Never divided by one another: measured_speedup is the timing job's (run_tables)
    row["loop_ms"] = float(per_sample["loop_ms"].sum())
    row["target_only_ms"] = float(per_sample["target_only_ms"].sum())
    return row
