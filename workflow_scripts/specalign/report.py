"""results/report.md: the number to quote, beside the seed's, and what explains the gap."""
from __future__ import annotations

import math

import polars as pl


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
    out = ["# specalign report", ""]
    out += ["## Acceptance beside the seed's measure", "",
            "`token_acceptance_rate` and `tau` are what speculative decoding gets (greedy rows: exact replay of",
            "the draft-verify loop from one teacher-forced pass; sampled rows: the real loop where it ran, else",
            "the i.i.d. prediction from alpha — see `method`). `leviathan_alpha` is the expected per-token",
            "acceptance. `positional_match_rate` is the seed note's number: two independent outputs compared",
            "position by position — not an acceptance rate.", ""]
    headline = summary.filter(pl.col("gamma") == summary["gamma"].min()) if summary.height else summary
    out.append(md_table(headline, ["dataset", "draft", "target", "decoding", "leviathan_alpha",
                                   "leviathan_alpha_lo", "leviathan_alpha_hi", "positional_match_rate",
                                   "mapped_mass"]))
    out += ["", "### Per lookahead gamma", ""]
    out.append(md_table(summary, ["dataset", "draft", "target", "decoding", "gamma", "method",
                                  "token_acceptance_rate", "token_acceptance_rate_lo", "token_acceptance_rate_hi", "tau",
                                  "iid_token_acceptance", "loop_token_acceptance_rate", "c",
                                  "expected_speedup_iid", "latency_speedup", "best_gamma"]))
    if loop.height:
        out += ["", "## The real draft-verify loop against the replay", "",
                "For greedy decoding the loop's rounds must equal the replay's exactly and its output must be the",
                "target's greedy output; `verify_flip_rate` counts rounds where the chunked verification's argmax",
                "differed from step-by-step decoding (near-ties in low precision).", ""]
        out.append(md_table(loop, ["dataset", "draft", "target", "decoding", "gamma", "rounds_identical", "output_equals_target",
                                   "loop_token_acceptance_rate", "replay_token_acceptance_rate",
                                   "verify_flip_rate", "measured_speedup"]))
    if cost.height:
        out += ["", "## Cost model", "",
                "c = draft decode time / target decode time, measured in the generation stage. No gamma gives a",
                "speedup when alpha <= c: two models of the same size (c ~ 1) cannot speed each other up.", ""]
        out.append(md_table(cost, ["dataset", "draft", "target", "decoding", "gamma", "alpha", "c", "tokens_per_call", "speedup_iid",
                                   "latency_speedup", "best_gamma", "draft_decode_ms", "target_decode_ms"]))
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
