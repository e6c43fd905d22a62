"""results/report.md: the number to quote, beside the seed's, and what explains the gap."""
from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl

from .explain import by_position, by_reason, disagreement_table
from .specs import Run
from .translation import TokenMap


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def md_table(df: pl.DataFrame, columns: list[str]) -> str:
    cols = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.select(cols).iter_rows():
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def render(summary: pl.DataFrame, loop: pl.DataFrame, cost: pl.DataFrame, stats: dict[str, dict],
           explained: dict[str, tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]]) -> str:
    # Predicted columns are shown under a "(predicted)" header so no table presents a model's
    # prediction as a measurement.
    predicted = ("iid_token_acceptance", "iid_tau", "expected_speedup_iid", "speedup_iid",
                 "latency_speedup", "best_gamma", "best_gamma_lo", "best_gamma_hi")

    def labelled(df: pl.DataFrame, columns: list[str], also=()) -> tuple[pl.DataFrame, list[str]]:
        names = {c: f"{c} (predicted)" for c in (*predicted, *also) if c in df.columns}
        return df.rename(names), [names.get(c, c) for c in columns]

    out = ["# specalign report", ""]
    out += ["## Acceptance beside the seed's measure", "",
            "Measured: `token_acceptance_rate`, `tau`, `leviathan_alpha`, `c`, `loop_*` (and their `_lo`/`_hi`,",
            "95% bootstrap intervals over samples). Greedy rows are the exact replay of the draft-verify loop from",
            "one teacher-forced pass; sampled rows are the real loop where it ran at that gamma, and where it did",
            "not (`method` = `iid_from_alpha`) nothing was measured and the measured columns are empty.",
            "Predicted by the i.i.d. model from alpha (and c): `iid_*`, `expected_speedup_iid`, `latency_speedup`,",
            "`best_gamma*`, marked (predicted) in the tables. `leviathan_alpha` is the expected per-token",
            "acceptance. `positional_match_rate` is the seed note's number: two independent outputs compared",
            "position by position — not an acceptance rate.", ""]
    headline = summary.filter(pl.col("gamma") == summary["gamma"].min()) if summary.height else summary
    out.append(md_table(headline, ["dataset", "draft", "target", "decoding", "leviathan_alpha",
                                   "leviathan_alpha_lo", "leviathan_alpha_hi", "positional_match_rate",
                                   "mapped_mass"]))
    out += ["", "### Per lookahead gamma: measured", "",
            "`token_acceptance_rate` is vLLM's (accepted / drafted, every proposal): the draft always proposes",
            "gamma tokens, so proposals drafted past the end of the answer (`post_eos_drafted`) count as",
            "rejections. `token_acceptance_rate_in_answer` leaves them out; per-position rates never offer them.", ""]
    out.append(md_table(summary, ["dataset", "draft", "target", "decoding", "gamma", "method",
                                  "token_acceptance_rate", "token_acceptance_rate_lo", "token_acceptance_rate_hi",
                                  "token_acceptance_rate_in_answer", "post_eos_drafted", "tau", "tau_lo", "tau_hi",
                                  "loop_token_acceptance_rate", "loop_tau", "c", "c_lo", "c_hi"]))
    out += ["", "### Per lookahead gamma: predicted by the i.i.d. model", "",
            "From `leviathan_alpha` and the measured `c`, beside the measured numbers they predict.",
            "`best_gamma_lo` / `best_gamma_hi` are the best gamma at `c_hi` / `c_lo`: where they differ, timing",
            "noise alone could change `best_gamma` (0 = no gamma gives a speedup).", ""]
    pred, cols = labelled(summary, ["dataset", "draft", "target", "decoding", "gamma", "method",
                                    "token_acceptance_rate", "iid_token_acceptance", "tau", "iid_tau",
                                    "expected_speedup_iid", "latency_speedup", "best_gamma", "best_gamma_lo",
                                    "best_gamma_hi"])
    out.append(md_table(pred, cols))
    if loop.height:
        out += ["", "## The real draft-verify loop against the replay", "",
                "For greedy decoding the loop's rounds must equal the replay's exactly and its output must be the",
                "target's greedy output; `verify_flip_rate` counts rounds where the chunked verification's argmax",
                "differed from step-by-step decoding (near-ties in low precision), `draft_flip_rate` rounds where",
                "the draft's step-by-step proposals differed from its one-pass argmax: where the rounds differ",
                "from the replay, they say which model's numerics flipped.", ""]
        out.append(md_table(loop, ["dataset", "draft", "target", "decoding", "gamma", "rounds_identical", "output_equals_target",
                                   "loop_token_acceptance_rate", "replay_token_acceptance_rate",
                                   "verify_flip_rate", "draft_flip_rate", "measured_speedup"]))
    if cost.height:
        out += ["", "## Cost model", "",
                "Measured: c = draft decode time / target decode time per token, from the generation stage, with",
                "its 95% bootstrap interval over samples (`c_lo`, `c_hi`), and the decode times. Predicted by the",
                "i.i.d. model from alpha and c: tokens per call, the speedups and the best gamma (`best_gamma_lo`",
                "at `c_hi`, `best_gamma_hi` at `c_lo`). No gamma gives a speedup when alpha <= c: two models of",
                "the same size (c ~ 1) cannot speed each other up.", ""]
        pred, cols = labelled(cost, ["dataset", "draft", "target", "decoding", "gamma", "alpha", "c", "c_lo", "c_hi",
                                     "tokens_per_call", "speedup_iid", "latency_speedup", "best_gamma",
                                     "best_gamma_lo", "best_gamma_hi", "draft_decode_ms", "target_decode_ms"],
                              also=("tokens_per_call",))  # cost_model.csv's is the i.i.d. E[tokens per call]
        out.append(md_table(pred, cols))
    ranking = draft_ranking(summary, loop)
    if ranking.height:
        out += ["", "## Which draft pays off", "",
                "Every draft of a target, ranked by the best predicted speedup over the replayed gammas",
                "(`best_predicted_speedup`, at `best_predicted_gamma`: the i.i.d. model from the measured alpha",
                "and c) beside the best speedup the real loop measured (`best_measured_speedup`, at",
                "`best_measured_gamma`; empty where no loop ran). A draft pays off where the measured speedup",
                "exceeds 1; the measured one includes Python overhead per call that the prediction leaves out.", ""]
        pred, cols = labelled(ranking, ["dataset", "target", "decoding", "rank", "draft", "leviathan_alpha",
                                        "leviathan_alpha_lo", "leviathan_alpha_hi", "c", "c_lo", "c_hi",
                                        "best_predicted_gamma", "best_predicted_speedup", "best_measured_gamma",
                                        "best_measured_speedup"],
                              also=("best_predicted_gamma", "best_predicted_speedup"))
        out.append(md_table(pred, cols))
    out += ["", "## Vocabularies", ""]
    for pair, s in stats.items():
        out.append(f"- **{pair}**: draft {s['draft_size']} ids, target {s['target_size']} ids, "
                   f"{s['overlap_pct']:.1f}% of the draft shared; target-only added tokens: "
                   f"{', '.join(s['target_added']) or 'none'}; kinds {s['kind_counts']}; "
                   f"round trip {s['round_trip']}")
    out += ["", "## Where and why the draft disagrees", ""]
    for run, (top, reasons, positions) in explained.items():
        out += [f"### {run}", "", "Most frequent disagreements (target token vs the draft's choice given the",
                "target's own prefix):", ""]
        out.append(md_table(top.head(10), ["target_text", "draft_text", "count", "share_of_mismatches",
                                           "mean_position", "reason"]))
        out += ["", "Why:", ""]
        out.append(md_table(reasons, ["reason", "count", "share"]))
        out += ["", "Mismatch rate by answer position:", ""]
        out.append(md_table(positions.head(16), ["position", "n", "mismatch_rate"]))
        out.append("")
    return "\n".join(out) + "\n"


def draft_ranking(summary: pl.DataFrame, loop: pl.DataFrame) -> pl.DataFrame:
    """Per dataset x target x decoding, the drafts ranked by their best predicted speedup
    (max over gammas of expected_speedup_iid), with the best speedup the real loop measured.

    A draft without a prediction (no c: e.g. its free-running answers ended at the first token, so no
    decode step was timed) is still listed, last, with its alpha and an empty speedup."""
    keys = ["dataset", "target", "decoding", "draft"]
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


def build_report(runs: list[Run], inputs) -> tuple[str, str]:
    """(report.md, disagreements.csv) from the acceptance tables, translation stats and scores.

    `inputs`: the report rule's inputs (summary, loop, cost CSVs; translation stats files)."""
    stats = {Path(p).name.removesuffix(".stats.json"): json.loads(Path(p).read_text()) for p in inputs.stats}
    explained, tables = {}, []
    for r in runs:
        scores = pl.read_parquet(r.scores)
        vocab = pl.read_parquet(r.target_vocab, columns=["id", "text"])
        text = dict(zip(vocab["id"].to_list(), vocab["text"].to_list()))
        reachable = TokenMap.from_table(r.translation, None, None).reachable_ids()
        top = disagreement_table(scores, text, reachable=reachable)
        key = f"{r.dataset} · {r.draft} -> {r.target} · {r.decoding.name}"
        explained[key] = (top, by_reason(scores, reachable), by_position(scores))
        tables.append(top.with_columns(*(pl.lit(v).alias(k) for k, v in r.keys.items())))
    disagreements = pl.concat(tables).write_csv(float_precision=6) if tables else ""
    md = render(read_csv(inputs.summary), read_csv(inputs.loop), read_csv(inputs.cost), stats, explained)
    return md + distillation_section(read_csv(inputs.distillation)) + clip_datasets_section(inputs.clips), disagreements


def distillation_section(df: pl.DataFrame) -> str:
    """Before / after each distillation (per loss), with the paired bootstrap interval of the gain."""
    if not df.height:
        return ""
    return "\n".join(["", "## Distillation: before and after", "",
                      "Greedy or sampled Leviathan alpha of the original draft (`before`) and of the draft distilled",
                      "toward the target (`after`), measured on the same held-out clips along the same target streams;",
                      "`alpha_difference_lo`/`_hi`: 95% bootstrap interval of the difference, resampling clips paired.",
                      "The distilled drafts' tau, loop and speedup rows are in the tables above under their own names.",
                      "", md_table(df, ["dataset", "target", "decoding", "before", "after", "loss", "data",
                                        "n_samples", "alpha_before", "alpha_after", "alpha_difference",
                                        "alpha_difference_lo", "alpha_difference_hi"]), ""])


def clip_datasets_section(folders) -> str:
    """Clips per sequence and split of every dataset cut from raw DSEC (dsec_raw.build_clips)."""
    if not folders:
        return ""
    out = ["", "## Clip datasets cut from raw DSEC", "",
           "| dataset | duration_ms | overlap | sequence | split | windows | clips | skipped |", "|" + "---|" * 8]
    for folder in folders:
        s = json.loads((Path(folder) / "build_summary.json").read_text())
        for seq in sorted(s["windows_per_sequence"]):
            clips = s["clips_per_sequence"].get(seq, 0)
            windows = s["windows_per_sequence"][seq]
            out.append(f"| {Path(folder).name} | {s['duration_ms']} | {s['overlap']} | {seq} | {s['splits'][seq]} | "
                       f"{windows} | {clips} | {windows - clips} |")
    return "\n".join(out) + "\n"
