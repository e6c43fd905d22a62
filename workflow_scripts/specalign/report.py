"""results/report.md: the number to quote, beside the seed's, and what explains the gap."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from . import report_tables as rt
from .explain import by_position, by_reason, disagreement_table
from .report_format import labelled as _with_predicted
from .report_format import md_table
from .specs import Run
from .translation import TokenMap


def labelled(df: pl.DataFrame, columns: list[str], also=()) -> tuple[pl.DataFrame, list[str]]:
    """`df` with its predicted columns (rt.PREDICTED and `also`) marked "(predicted)", and `columns` to match."""
    return _with_predicted(df, columns, (*rt.PREDICTED, *also))


def trees_section(trees: pl.DataFrame) -> list[str]:
    """report.md's trees: every replayed tree, the best per run, and the limit of the replay."""
    if trees is None or not trees.height:
        return []
    pred, cols = labelled(trees.sort(["dataset", "target", "draft", "decoding", "nodes"]), rt.TREE_COLUMNS)
    return ["## Trees: the draft's 2nd and 3rd choices, verified in one pass", "",
            "Exact greedy replay of static token trees from the scores' `target_rank` (the rank of the target's",
            "token among the draft's proposals): a round accepts the longest prefix whose rank sequence is a",
            "path of the tree. `chain{g}` rows are the chains (they equal the greedy replay rows above);",
            "`best{N}` the tree of N nodes built from the measured acceptance by (depth, rank) under the",
            "independence assumption (`expected_tau`, predicted) beside its replayed `tau` (measured) and",
            "`tau_every_start` (measured, a round started at every position). The tree's cost is predicted: one",
            "verify pass over nodes + 1 tokens (`verify_cost`, measured by the timing job where",
            "`verify_cost_source` is `measured`, else interpolated between timed sizes or extrapolated) and one",
            "draft step per level. Dynamic",
            "trees that choose nodes by off-path probabilities (EAGLE-2) are not replayed here.", "",
            md_table(pred, cols), ""]


def grounding_section(grounding: pl.DataFrame | None) -> list[str]:
    if grounding is None or not grounding.height:
        return []
    head = grounding.row(0, named=True)
    return ["## Grounding classes: which misses no event-only draft can fix", "",
            "Each target token of the plain greedy run is classed by two input ablations' log-probability drops:",
            f"RGB-grounded where the target's drops by >= {head['target_threshold_nats']:g} nats without its frames",
            f"(`{head['target_ablation']}`), event-grounded where the draft's drops by >= "
            f"{head['draft_threshold_nats']:g} nats without its events (`{head['draft_ablation']}`):",
            "`language` (neither: style and templates, what a distillation can fix), `event_grounded`, `rgb_only`",
            "(only the frames know it: no draft that sees only events can fix these from its input, the ceiling of",
            "every distillation) and `both`. Measured per class: the draft's match rate and its share of the run's",
            "mismatches, with 95% bootstrap intervals over clips. A measurement of these two ablations at these",
            "thresholds, not a causal proof.", "",
            md_table(grounding.sort(["dataset", "target", "draft", "decoding", "grounding"]), rt.GROUNDING_COLUMNS), ""]


def oracle_section(oracle: pl.DataFrame | None) -> list[str]:
    bounds = rt.oracle_bounds(oracle)
    if not bounds.height:
        return []
    pred, cols = labelled(bounds, rt.ORACLE_COLUMNS)
    return ["## Oracle bounds: what knowing the match bits in advance would give (not deployable)", "",
            "Bounds from the stored match bits, beside the measured drafts above (oracle.csv also holds those rows,",
            "`is_bound` false). `oracle_router`: each clip sent to the draft of its target that needs the fewest",
            "target calls (`routed`: clips per draft); router minus the best single draft is what routing across",
            "drafts could add. `oracle_gamma`: each round proposes exactly the tokens the target will accept",
            "(`gamma_cap`: the largest configured gamma, or empty: any lookahead): the same rounds as the fixed",
            "gamma at the cap with no wasted proposal, so its gain shows in `speedup_at_c` (predicted: emitted /",
            "(rounds + c drafted), prefills and verify length ignored) against `best_fixed_speedup_at_c`: what an",
            "adaptive lookahead could add. Small headroom: the draft itself must improve. Greedy runs only.", "",
            md_table(pred, cols), ""]


def render(summary: pl.DataFrame, loop: pl.DataFrame, cost: pl.DataFrame, stats: dict[str, dict],
           explained: dict[str, tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]],
           trees: pl.DataFrame | None = None, grounding: pl.DataFrame | None = None,
           oracle: pl.DataFrame | None = None) -> str:
    ablations = rt.ablation_table(summary)
    summary = rt.plain_runs(summary)

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
                                   "mapped_mass", "alpha_argmax", "alpha_argmax_lo", "alpha_argmax_hi"]))
    out += ["", "`alpha_argmax` is the acceptance as serving engines draft (vLLM V1, SGLang, TensorRT-LLM propose",
            "the draft's argmax; the target accepts it with probability p_target(argmax q)): equal to alpha for",
            "greedy decoding, beside Leviathan's sum-min alpha for sampled decodings.", ""]
    payoff = rt.payoff_table(summary, trees)
    if payoff.height:
        pred, cols = labelled(payoff, rt.PAYOFF_COLUMNS)
        out += ["## Does the draft pay off: measured in one job", "",
                "Per deployment mode, the real loop against plain target decoding on the same clips, both timed",
                "interleaved in the run's ONE paired timing job (`measured_speedup`, 95% bootstrap interval over",
                "the timed clips, and the `device` it ran on); `c` (draft decode step / target decode step) and",
                "`verify_cost` (the target's pass over gamma + 1 tokens / its decode step) come from the same job.",
                "The verdict reads the interval: `pays off` only where it lies wholly above 1. Predicted from the",
                "measured per-position acceptance and those costs (payoff.py): `predicted_speedup` (prefills one",
                "after the other), `predicted_speedup_overlapped` (the draft drafts while the target prefills), and",
                "`break_even_alpha` (the i.i.d. acceptance at which the steady-state speedup is 1). A tree row",
                "is the run's best tree by predicted speedup (section Trees): no tree loop is timed.", "",
                md_table(pred, cols), ""]
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
                "from the replay, they say which model's numerics flipped. `measured_speedup` is the paired",
                "timing job's (on `device`), never the loop job's time over another job's.", ""]
        out.append(md_table(loop, ["dataset", "draft", "target", "decoding", "gamma", "rounds_identical", "output_equals_target",
                                   "loop_token_acceptance_rate", "replay_token_acceptance_rate",
                                   "verify_flip_rate", "draft_flip_rate", "measured_speedup", "device"]))
    if cost.height:
        out += ["", "## Cost model", "",
                "Measured in the run's paired timing job (both models on one device, interleaved, same clips):",
                "c = draft decode step / target decode step at the clips' real context, with its 95% bootstrap",
                "interval over clips (`c_lo`, `c_hi`), the step times, `verify_cost` and the `device`. Predicted",
                "by the i.i.d. model from alpha and c: tokens per call, the speedups and the best gamma",
                "(`best_gamma_lo` at `c_hi`, `best_gamma_hi` at `c_lo`); by the cost model from the measured",
                "per-position acceptance and costs: `predicted_speedup*`, `break_even_alpha`. No gamma gives a",
                "speedup when alpha <= c: two models of the same size (c ~ 1) cannot speed each other up.", ""]
        pred, cols = labelled(cost, ["dataset", "draft", "target", "decoding", "gamma", "device", "alpha", "c", "c_lo",
                                     "c_hi", "verify_cost", "tokens_per_call", "speedup_iid", "latency_speedup",
                                     "best_gamma", "best_gamma_lo", "best_gamma_hi", "predicted_speedup",
                                     "predicted_speedup_overlapped", "break_even_alpha", "draft_step_ms",
                                     "target_step_ms"],
                              also=("tokens_per_call",))  # cost_model.csv's is the i.i.d. E[tokens per call]
        out.append(md_table(pred, cols))
    ranking = rt.draft_ranking(summary, loop)
    if ranking.height:
        out += ["", "## Which draft pays off", "",
                "Every draft of a target, ranked by the best predicted speedup over the replayed gammas",
                "(`best_predicted_speedup`, at `best_predicted_gamma`: the i.i.d. model from the measured alpha",
                "and c) beside the best speedup the real loop measured (`best_measured_speedup`, at",
                "`best_measured_gamma`; empty where the timing job did not time the loop). A draft pays off where",
                "the measured speedup exceeds 1; it includes the loop's per-call overhead that the i.i.d.",
                "prediction leaves out.", ""]
        pred, cols = labelled(ranking, ["dataset", "target", "decoding", "rank", "draft", "leviathan_alpha",
                                        "leviathan_alpha_lo", "leviathan_alpha_hi", "c", "c_lo", "c_hi",
                                        "best_predicted_gamma", "best_predicted_speedup", "best_measured_gamma",
                                        "best_measured_speedup"])
        out.append(md_table(pred, cols))
    out += [""] + trees_section(trees)
    if ablations.height:
        out += ["## Input ablations: what each input is worth", "",
                "The draft (or the target) scored again along the target's plain stream with one input taken away",
                "or scrambled (`ablation`; config `ablations:`): `leviathan_alpha` with its interval beside the",
                "plain run's (`plain_alpha`), and tau at the largest gamma beside the plain run's. A draft-side",
                "ablation's drop is what that input is worth to the draft; a target-side ablation leaves greedy",
                "alpha unchanged by construction (only the target's log-probabilities move). Diagnoses, not",
                "deployable drafts: no loop, timing or payoff is formed for them.", "",
                md_table(ablations, rt.ABLATION_COLUMNS), ""]
    out += grounding_section(grounding) + oracle_section(oracle)
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
        key = r.label(with_dataset=True)
        explained[key] = (top, by_reason(scores, reachable), by_position(scores))
        tables.append(top.with_columns(*(pl.lit(v).alias(k) for k, v in r.keys.items())))
    disagreements = pl.concat(tables).write_csv(float_precision=6) if tables else ""
    extra = {k: rt.read_csv(getattr(inputs, k)) if hasattr(inputs, k) else None for k in ("trees", "grounding", "oracle")}
    md = render(rt.read_csv(inputs.summary), rt.read_csv(inputs.loop), rt.read_csv(inputs.cost), stats, explained, **extra)
    return md + distillation_section(rt.read_csv(inputs.distillation)) + clip_datasets_section(inputs.clips), disagreements


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
