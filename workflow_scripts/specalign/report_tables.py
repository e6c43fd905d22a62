"""The tables both reports read (results/report.md and the page results/report/index.html):
which columns are predicted, the plain runs, the payoff per deployment with its verdict, the
headline row per run, the draft ranking, the ablation, tree, grounding and oracle selections.

Measured and predicted stay apart: PREDICTED names every column a model fills (the i.i.d. model's,
payoff.py's cost model's); the reports mark those "(predicted)" (report_format.labelled) and no
function here ever writes a prediction into a measured column.
"""
from __future__ import annotations

import polars as pl

from .report_format import missing

KEYS = ["dataset", "draft", "target", "decoding"]


# Columns a model predicts (the i.i.d. model, and payoff.py's cost model on measured inputs): every
# report shows them under a "(predicted)" header, so no table presents a prediction as a measurement.
PREDICTED = ("iid_token_acceptance", "iid_tau", "expected_speedup_iid", "speedup_iid", "latency_speedup",
             "best_gamma", "best_gamma_lo", "best_gamma_hi", "predicted_speedup", "predicted_speedup_overlapped",
             "predicted_speedup_steady", "free_draft_tokens", "break_even_alpha", "speedup_at_c",
             "best_fixed_speedup_at_c", "best_predicted_gamma", "best_predicted_speedup", "best_tree_predicted_speedup",
             "expected_tau")


PAYOFF_COLUMNS = ["dataset", "draft", "target", "decoding", "deployment", "gamma", "draft_sampling", "device",
                  "measured_speedup", "measured_speedup_lo", "measured_speedup_hi", "verdict", "c", "c_lo", "c_hi",
                  "verify_cost", "leviathan_alpha", "alpha_argmax", "predicted_speedup",
                  "predicted_speedup_overlapped", "break_even_alpha"]


def plain_runs(df: pl.DataFrame) -> pl.DataFrame:
    """The rows of the plain runs: an input ablation's rows (its `ablation` column set) are a diagnosis
    scored along the same streams, not a deployable draft, and have their own section."""
    if df.height and "ablation" in df.columns:
        return df.filter(pl.col("ablation").is_null())
    return df


def verdict(speedup, lo, hi) -> str:
    """Words for a measured speedup and its 95% interval: only an interval wholly above (below) 1 decides."""
    if missing(speedup):
        return "not timed"
    if missing(lo) or missing(hi):
        return "cannot tell (no interval)"
    if lo > 1:
        return "pays off"
    if hi < 1:
        return "does not pay off"
    return "cannot tell (interval straddles 1)"


def payoff_table(summary: pl.DataFrame, trees: pl.DataFrame | None = None) -> pl.DataFrame:
    """The payoff per run and deployment mode: one row per dataset x draft x target x decoding x gamma at
    which the paired timing job timed the loop against plain decoding (summary.csv's measured_speedup,
    with its interval over clips and the device it ran on), its verdict, the measured acceptance it comes
    from, and the cost model's predictions beside it (marked predicted). With `trees` (trees.csv), each
    run's best tree by predicted speedup joins as a row of its own: no tree loop is timed, so its
    measured columns are empty and its verdict says so."""
    summary = plain_runs(summary)
    if not summary.height or "measured_speedup" not in summary.columns:
        return pl.DataFrame()
    rows = summary.filter(pl.col("measured_speedup").is_not_null())
    if not rows.height:
        return pl.DataFrame()
    rows = rows.with_columns(
        pl.format("chain, gamma {}", pl.col("gamma")).alias("deployment"),
        pl.struct("measured_speedup", "measured_speedup_lo", "measured_speedup_hi")
        .map_elements(lambda r: verdict(r["measured_speedup"], r["measured_speedup_lo"], r["measured_speedup_hi"]),
                      return_dtype=pl.String).alias("verdict"))
    out = rows.select([c for c in PAYOFF_COLUMNS if c in rows.columns])
    best = best_trees(trees)
    if best.height:
        alphas = summary.group_by(KEYS).agg(*(pl.col(c).first() for c in ("leviathan_alpha", "alpha_argmax")
                                              if c in summary.columns))
        tree_rows = best.join(alphas, on=KEYS, how="left").with_columns(
            pl.format("tree {} ({} nodes, depth {})", pl.col("tree"), pl.col("nodes"), pl.col("levels"))
            .alias("deployment"),
            pl.lit("argmax").alias("draft_sampling"),
            pl.lit("not timed (predicted only)").alias("verdict"))
        tree_rows = tree_rows.select([c for c in out.columns if c in tree_rows.columns])
        out = pl.concat([out, tree_rows], how="diagonal_relaxed")
    return out.sort(["dataset", "target", "decoding", "draft"], maintain_order=True)


def best_trees(trees: pl.DataFrame | None) -> pl.DataFrame:
    """Per run, the tree of trees.csv with the highest predicted speedup (ties: fewer nodes). Chains are
    left out: a chain is the chain deployment the timing job measures, listed as such."""
    if trees is None or not trees.height or "predicted_speedup" not in trees.columns:
        return pl.DataFrame()
    branching = trees.filter(pl.col("kind") != "chain") if "kind" in trees.columns else trees
    return (branching.filter(pl.col("predicted_speedup").is_not_null())
            .sort(["predicted_speedup", "nodes"], descending=[True, False])
            .group_by(KEYS, maintain_order=True).first().sort(KEYS))


ABLATION_COLUMNS = ["dataset", "draft", "target", "decoding", "ablation", "plain_alpha", "leviathan_alpha",
                    "leviathan_alpha_lo", "leviathan_alpha_hi", "alpha_change", "tau", "plain_tau"]


def ablation_table(summary: pl.DataFrame) -> pl.DataFrame:
    """Each input ablation's alpha (with its interval) beside its plain run's, at the smallest gamma of
    each (alpha does not depend on gamma), and tau at the largest gamma beside the plain run's."""
    if not summary.height or "ablation" not in summary.columns:
        return pl.DataFrame()
    abl = summary.filter(pl.col("ablation").is_not_null())
    if not abl.height:
        return pl.DataFrame()
    keys = KEYS
    g_lo, g_hi = summary["gamma"].min(), summary["gamma"].max()
    plain = plain_runs(summary)
    base = (plain.filter(pl.col("gamma") == g_lo).select(*keys, pl.col("leviathan_alpha").alias("plain_alpha"))
            .join(plain.filter(pl.col("gamma") == g_hi).select(*keys, pl.col("tau").alias("plain_tau")), on=keys,
                  how="left"))
    taus = abl.filter(pl.col("gamma") == g_hi).select(*keys, "ablation", "tau")
    rows = (abl.filter(pl.col("gamma") == g_lo).drop("tau").join(taus, on=[*keys, "ablation"], how="left")
            .join(base, on=keys, how="left")
            .with_columns((pl.col("leviathan_alpha") - pl.col("plain_alpha")).alias("alpha_change")))
    return rows.select(ABLATION_COLUMNS).sort([*keys, "ablation"])


TREE_COLUMNS = ["dataset", "draft", "target", "decoding", "tree", "kind", "nodes", "levels", "tau", "tau_lo", "tau_hi",
                "tau_every_start", "expected_tau", "verify_cost", "verify_cost_source", "predicted_speedup"]


GROUNDING_COLUMNS = ["dataset", "draft", "target", "decoding", "grounding", "tokens", "token_share", "match_rate",
                     "match_rate_lo", "match_rate_hi", "mismatches", "mismatch_share", "mismatch_share_lo",
                     "mismatch_share_hi", "mean_rgb_drop", "mean_event_drop"]


ORACLE_COLUMNS = ["dataset", "target", "decoding", "draft", "kind", "gamma", "gamma_cap", "candidates", "routed",
                  "rounds", "drafted", "tau", "tokens_per_call", "mean_gamma", "leviathan_alpha", "c", "speedup_at_c",
                  "best_fixed_gamma", "best_fixed_speedup_at_c"]


def oracle_bounds(oracle: pl.DataFrame | None) -> pl.DataFrame:
    """oracle.csv's bound rows (the router across drafts, the per-round oracle gamma): the measured rows
    they stand beside are the summary's."""
    if oracle is None or not oracle.height or "is_bound" not in oracle.columns:
        return pl.DataFrame()
    return oracle.filter(pl.col("is_bound"))


def draft_ranking(summary: pl.DataFrame, loop: pl.DataFrame) -> pl.DataFrame:
    """Per dataset x target x decoding, the drafts ranked by their best predicted speedup
    (max over gammas of expected_speedup_iid), with the best speedup the real loop measured.

    A draft without a prediction (no c: e.g. its free-running answers ended at the first token, so no
    decode step was timed) is still listed, last, with its alpha and an empty speedup."""
    keys = ["dataset", "target", "decoding", "draft"]
    summary = plain_runs(summary)
    if not summary.height or "expected_speedup_iid" not in summary.columns:
        return pl.DataFrame()
    measured_cols = [c for c in ("leviathan_alpha", "leviathan_alpha_lo", "leviathan_alpha_hi", "c", "c_lo", "c_hi")
                     if c in summary.columns]
    best = (summary.sort(pl.col("expected_speedup_iid").fill_null(float("-inf")), descending=True)
            .group_by(keys, maintain_order=True)
            .agg(pl.col("gamma").first().alias("best_predicted_gamma"),
                 pl.col("expected_speedup_iid").first().alias("best_predicted_speedup"),
                 *(pl.col(c).first() for c in measured_cols))
            .with_columns(pl.when(pl.col("best_predicted_speedup").is_null()).then(None)
                          .otherwise(pl.col("best_predicted_gamma")).alias("best_predicted_gamma")))
    if loop.height and "measured_speedup" in loop.columns:
        measured = (loop.filter(pl.col("measured_speedup").is_not_null())
                    .sort("measured_speedup", descending=True).group_by(keys, maintain_order=True)
                    .agg(pl.col("gamma").first().alias("best_measured_gamma"),
                         pl.col("measured_speedup").first().alias("best_measured_speedup")))
        best = best.join(measured, on=keys, how="left")
    return (best.sort(["dataset", "target", "decoding", "best_predicted_speedup"], descending=[False, False, False, True],
                      nulls_last=True)
            .with_columns(pl.col("best_predicted_speedup").fill_null(float("-inf"))
                          .rank("ordinal", descending=True).over(["dataset", "target", "decoding"])
                          .cast(pl.Int64).alias("rank")))


def read_csv(path) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema_length=None)
    except pl.exceptions.NoDataError:  # a table with no rows is written as an empty file
        return pl.DataFrame()


HEADLINE_COLUMNS = ["dataset", "draft", "target", "decoding", "leviathan_alpha", "leviathan_alpha_lo",
                    "leviathan_alpha_hi", "gamma", "chosen_by", "tau", "tau_lo", "tau_hi", "measured_speedup",
                    "measured_speedup_lo", "measured_speedup_hi", "device", "verdict", "break_even_alpha",
                    "predicted_speedup", "best_tree", "best_tree_tau", "best_tree_predicted_speedup"]


def headline_table(summary: pl.DataFrame, trees: pl.DataFrame | None = None) -> pl.DataFrame:
    """The answer first: one row per plain run (dataset x draft x target x decoding).

    The deployment is the chain gamma the paired timing job found fastest (`chosen_by` "measured"), or,
    where the loop was not timed, the gamma of the best i.i.d. prediction ("predicted"; its measured
    speedup stays empty and the verdict says "not timed"). Measured: alpha and its interval, tau at that
    gamma, the measured speedup with its interval over clips and its device, the best tree's replayed
    tau. Predicted (PREDICTED): break_even_alpha, the cost model's predicted_speedup at that gamma and
    the best tree's predicted speedup (no tree loop is timed)."""
    summary = plain_runs(summary)
    if not summary.height:
        return pl.DataFrame()
    rows = []
    best = best_trees(trees)
    for (ds, draft, target, dec), part in summary.group_by(KEYS, maintain_order=True):
        part = part.sort("gamma")
        first = part.row(0, named=True)
        timed = (part.filter(pl.col("measured_speedup").is_not_null()) if "measured_speedup" in part.columns
                 else part.clear())
        if timed.height:
            pick, chosen = timed.sort("measured_speedup", descending=True).row(0, named=True), "measured"
        elif "expected_speedup_iid" in part.columns and part["expected_speedup_iid"].drop_nulls().len():
            pick = part.sort(pl.col("expected_speedup_iid").fill_null(float("-inf")), descending=True).row(0, named=True)
            chosen = "predicted"
        else:
            pick, chosen = part.row(part.height - 1, named=True), "largest gamma"
        row = {"dataset": ds, "draft": draft, "target": target, "decoding": dec,
               **{k: first.get(k) for k in ("leviathan_alpha", "leviathan_alpha_lo", "leviathan_alpha_hi")},
               "gamma": pick["gamma"], "chosen_by": chosen,
               **{k: pick.get(k) for k in ("tau", "tau_lo", "tau_hi", "measured_speedup", "measured_speedup_lo",
                                           "measured_speedup_hi", "device", "break_even_alpha", "predicted_speedup")}}
        row["verdict"] = verdict(row["measured_speedup"], row["measured_speedup_lo"], row["measured_speedup_hi"])
        tree = (best.filter((pl.col("dataset") == ds) & (pl.col("draft") == draft) & (pl.col("target") == target)
                            & (pl.col("decoding") == dec)) if best.height else best)
        if tree.height:
            t = tree.row(0, named=True)
            row.update(best_tree=f"{t['tree']} ({t['nodes']} node{'s' if t['nodes'] != 1 else ''})", best_tree_tau=t.get("tau"),
                       best_tree_predicted_speedup=t.get("predicted_speedup"))
        rows.append(row)
    out = pl.DataFrame(rows, infer_schema_length=None)
    for c in HEADLINE_COLUMNS:
        if c not in out.columns:
            out = out.with_columns(pl.lit(None).alias(c))
    return out.select(HEADLINE_COLUMNS).sort(["dataset", "target", "decoding", "draft"], maintain_order=True)
