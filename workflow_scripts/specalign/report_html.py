"""results/report/index.html: the answer first, then the evidence, on one self-contained page.

One HTML file with everything inside it: the plots are PNGs (report_plots.py, tree_plots.py)
embedded as base64 `data:` URIs, the style sheet is inline, there is no script, no font and no link
to fetch, so the page opens offline, from an e-mail or inside `snakemake --report`. The rule also
writes each PNG beside it with its data as CSV (same name, `.csv`), and `summary.md`: the same
answer table and sections in the same order, in Markdown.

The page opens on the answer: one table, a row per run (dataset x draft x target x decoding) at its
deployment (the chain gamma the paired timing job found fastest), with alpha, tau, the measured
speedup with its interval and device, the verdict in words, and the predicted break-even alpha and
best tree beside them (report_tables.headline_table). Then a navigation list, then one section per
question, each showing one figure row (every run on shared axes) and folding the rest (more figures,
every table, the per-sample answers) into <details>: the page stays a few screens tall whatever the
number of runs.

What is measured and what is predicted is kept apart everywhere: a predicted figure
(report_tables.PREDICTED) is drawn dashed or hollow and labelled "(predicted)", in plots and in
tables; a measured column is never filled by a prediction.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Mapping, Sequence

import polars as pl

from .bootstrap import N_BOOT
from .divergence import Divergence, analyse_run
from .html_tables import MAX_SAMPLES, html_table, samples_html
from .report_format import ci, fmt, labelled, md_table, shown
from .report_plots import (
    PLOTS,
    Plot,
    RunColours,
    plot_attributes,
    plot_disagreements,
    plot_divergence,
    plot_gamma,
    plot_per_position,
    plot_speedup,
    plot_temperature,
    temperature,
)
from .report_tables import (
    ABLATION_COLUMNS,
    GROUNDING_COLUMNS,
    HEADLINE_COLUMNS,
    ORACLE_COLUMNS,
    PAYOFF_COLUMNS,
    PREDICTED,
    TREE_COLUMNS,
    ablation_table,
    draft_ranking,
    headline_table,
    oracle_bounds,
    payoff_table,
    plain_runs,
    read_csv,
)
from .specs import Run, run_label
from .tree_plots import plot_rank_shares, plot_tree_budget

RANKING_COLUMNS = ["dataset", "target", "decoding", "rank", "draft", "leviathan_alpha", "leviathan_alpha_lo",
                   "leviathan_alpha_hi", "c", "c_lo", "c_hi", "best_predicted_gamma", "best_predicted_speedup",
                   "best_measured_gamma", "best_measured_speedup"]
SUMMARY_COLUMNS = ["dataset", "draft", "target", "decoding", "gamma", "method", "leviathan_alpha",
                   "leviathan_alpha_lo", "leviathan_alpha_hi", "token_acceptance_rate", "token_acceptance_rate_lo",
                   "token_acceptance_rate_hi", "tau", "tau_lo", "tau_hi", "positional_match_rate",
                   "iid_token_acceptance", "iid_tau", "c", "c_lo", "c_hi", "expected_speedup_iid", "latency_speedup",
                   "best_gamma", "best_gamma_lo", "best_gamma_hi"]
LOOP_COLUMNS = ["dataset", "draft", "target", "decoding", "gamma", "rounds_identical", "output_equals_target",
                "loop_token_acceptance_rate", "replay_token_acceptance_rate", "verify_flip_rate", "measured_speedup",
                "device"]

# section id -> heading, in the page's order (the navigation list and summary.md follow it)
SECTIONS = {
    "payoff": "Does the draft pay off",
    "acceptance": "Acceptance against gamma, temperature and position",
    "trees": "Trees: the draft's 2nd and 3rd choices",
    "why": "Why the draft disagrees",
    "inputs": "What the acceptance comes from: ablations, grounding, oracle bounds",
    "samples": "Samples: draft and target side by side",
}

CAPTIONS = {
    "speedup": "Left: the real loop's speedup over target-only decoding per gamma, measured in each run's paired "
               "timing job (one device, one job; 95% CI over clips), the i.i.d. prediction at the measured c "
               "dashed. Right: the i.i.d. model's best speedup (predicted) over the measured alpha and c; each run "
               "sits at its measured alpha and c with their 95% CIs: below the black line it is predicted to pay off.",
    "gamma": "Token acceptance rate (vLLM's: accepted / drafted) and tau (accepted + 1 per round) per gamma, "
             "measured with 95% bootstrap CIs over clips; the i.i.d. model's predictions dashed; Leviathan alpha "
             "(measured, independent of gamma) dotted.",
    "temperature": "Alpha and tau at the smallest gamma against the decoding's temperature (greedy = 0), one line "
                   "per draft → target pair, measured with 95% CIs.",
    "per_position": "P(the draft's i-th token is accepted | the (i-1)-th was) at each run's largest gamma, "
                    "measured; the i.i.d. model predicts alpha at every position (dashed). Every gamma: "
                    "per_position.csv of the acceptance stage.",
    "trees": "Left: tau of each static tree (exact greedy replay, 95% CI) against its nodes: chains, full k-ary, "
             "configured and constructed trees, the constructed trees' expected tau under independence dashed "
             "(predicted). Right: each tree's predicted speedup (hollow: verify cost extrapolated beyond the timed sizes).",
    "ranks": "The rank of the target's token among the draft's proposals given the target's prefix (teacher "
             "forced): rank 1 is a chain's acceptance; ranks 2, 3, ... are what a tree can add.",
    "divergence": "Left: the share of samples whose two free-running answers are still identical up to each position "
                  "(the seed note compared those answers position by position). Right: the seed's positional match "
                  "(dotted) falls to chance after the first difference, while the draft, given the target's prefix as "
                  "speculative decoding does, keeps the teacher-forced match (solid): why the seed's 4-7% was the "
                  "wrong number.",
    "disagreements": "Teacher-forced argmax match by the class of the target token (special/EOS, punctuation, number, "
                     "function word, content word; divergence.py), 95% CIs over clips. The top disagreements with "
                     "example contexts are in the tables below.",
    "attributes": "Teacher-forced match against the manifest's sample attributes (numeric ones in quantile bins), "
                  "95% bootstrap CIs over the samples of each group.",
}


@dataclass
class HtmlReport:
    html: str
    markdown: str
    plots: dict[str, Plot]   # plot key (PLOTS) -> the PNG, its data and alt text


# ------------------------------------------------------------------------------------ the answer
def lede(headline: pl.DataFrame) -> str:
    """One sentence above the answer table (Markdown emphasis only): how many timed runs pay off."""
    if not headline.height:
        return "**Does the draft pay off?** No acceptance rows were measured, so this report cannot say."
    verdicts = headline["verdict"].to_list()
    timed = [v for v in verdicts if v != "not timed"]
    if not timed:
        return (f"**Does the draft pay off?** None of the {len(verdicts)} runs was timed (no paired timing job ran), "
                "so no speedup was measured: the answer table gives the measured acceptance and what the models "
                "predict.")
    pays = sum(v == "pays off" for v in timed)
    cannot = sum(v.startswith("cannot tell") for v in timed)
    text = (f"**Does the draft pay off?** In {pays} of {len(timed)} timed runs the real draft-verify loop was faster "
            f"than target-only decoding with its whole 95% interval above 1")
    if cannot:
        text += f"; {cannot} cannot tell (the interval straddles 1)"
    if len(timed) < len(verdicts):
        text += f"; {len(verdicts) - len(timed)} not timed"
    return text + (". Each speedup was timed in one job per run, both models on one device, interleaved on the same "
                   "clips.")


def headline_cells(headline: pl.DataFrame, with_dataset: bool) -> list[dict[str, str]]:
    """The answer table's cells, as the page and summary.md write them (the test reads them back)."""
    out = []
    for r in headline.iter_rows(named=True):
        deployment = f"chain, gamma {r['gamma']}" + {"measured": " (fastest timed)",
                                                       "predicted": " (best predicted; not timed)",
                                                       "largest gamma": " (largest replayed; not timed)"}[r["chosen_by"]]
        speed = ci(r["measured_speedup"], r["measured_speedup_lo"], r["measured_speedup_hi"], 2)
        out.append({
            "run": run_label(r, with_dataset),
            "alpha (measured)": ci(r["leviathan_alpha"], r["leviathan_alpha_lo"], r["leviathan_alpha_hi"]),
            "deployment": deployment,
            "tau (measured)": ci(r["tau"], r["tau_lo"], r["tau_hi"], 2),
            "speedup (measured)": "not timed" if speed == "—" else f"{speed}×",
            "device": fmt(r["device"]),
            "verdict": r["verdict"],
            "break-even alpha (predicted)": fmt(r["break_even_alpha"]),
            "speedup (predicted)": fmt(r["predicted_speedup"], 2),
            "best tree, tau (measured)": "—" if r["best_tree"] is None else
            f"{r['best_tree']}: {fmt(r['best_tree_tau'], 2)}",
            "best tree speedup (predicted)": fmt(r["best_tree_predicted_speedup"], 2),
        })
    return out


def _verdict_class(v: str) -> str:
    return {"pays off": "yes", "does not pay off": "no"}.get(v, "maybe")


def answer_html(headline: pl.DataFrame, with_dataset: bool) -> str:
    cells = headline_cells(headline, with_dataset)
    if not cells:
        return "<p><em>no rows</em></p>"
    cols = list(cells[0])
    head = "".join(f'<th class="pred">{html.escape(c)}</th>' if "(predicted)" in c else f"<th>{html.escape(c)}</th>"
                   for c in cols)
    rows = []
    for row in cells:
        tds = []
        for c in cols:
            cls = ("pred" if "(predicted)" in c else f"verdict {_verdict_class(row[c])}" if c == "verdict" else "")
            tds.append(f'<td class="{cls}">{html.escape(row[c])}</td>' if cls else f"<td>{html.escape(row[c])}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return ('<div class="scroll"><table class="answer" id="answer"><tr>' + head + "</tr>\n" + "\n".join(rows)
            + "</table></div>")


# ------------------------------------------------------------------------------------ HTML
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1rem auto;max-width:1320px;color:#222;
line-height:1.4;padding:0 1rem}
h1{font-size:1.45rem;margin:.4rem 0}h2{font-size:1.2rem;border-bottom:1px solid #ccc;padding-bottom:.15rem;
margin:1.2rem 0 .4rem}h3{font-size:1rem;margin:.8rem 0 .3rem}
p.lede{background:#f3f7fb;border-left:4px solid #3b6ea5;padding:.5rem .8rem;margin:.4rem 0}
nav ol{display:flex;flex-wrap:wrap;gap:.2rem 1.4rem;padding-left:1.2rem;margin:.4rem 0;font-size:.9rem}
table{border-collapse:collapse;margin:.4rem 0;font-size:.8rem}
th,td{border:1px solid #ccc;padding:.2rem .4rem;text-align:left;vertical-align:top}
th{background:#eee}th.pred,td.pred{background:#fff6e0;font-style:italic}
table.answer{font-size:.86rem}td.verdict{font-weight:600}td.yes{background:#dff3df}td.no{background:#f8dddd}
td.maybe{background:#eeeeee}
figure{margin:.4rem 0}figure img{max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.8rem;color:#444}
details{margin:.3rem 0}details>summary{cursor:pointer;color:#2a5a8a;font-size:.9rem}
details[open]>summary{margin-bottom:.4rem}
.tok{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
mark{padding:0 1px;margin:0 1px;border-radius:2px}mark.tf{background:#ffb3b3}mark.pos{background:#ffd27f}
mark.unmapped{background:#ccc}.legend span{margin-right:1rem}.scroll{overflow-x:auto;max-width:100%}
p.note{font-size:.85rem;margin:.3rem 0}
"""


def _md_to_html(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if k % 2 else p for k, p in enumerate(parts))


def _figure_html(key: str, plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    name, title = PLOTS[key]
    csv = name.removesuffix(".png") + ".csv"
    return (f'<figure id="plot-{key}"><img src="data:image/png;base64,{data}" alt="{html.escape(plot.alt)}">'
            f"<figcaption><strong>{html.escape(title)}.</strong> {html.escape(CAPTIONS[key])} Data: "
            f"<code>{html.escape(csv)}</code> beside <code>{html.escape(name)}</code>.</figcaption></figure>")


def _fold(summary: str, *parts: str) -> str:
    body = [p for p in parts if p]
    if not body:
        return ""
    return f"<details><summary>{html.escape(summary)}</summary>\n" + "\n".join(body) + "\n</details>"


def _top_table(d: Divergence) -> pl.DataFrame:
    if not d.top.height:
        return d.top
    return d.top.with_columns(pl.col("target_text").map_elements(shown, return_dtype=pl.String),
                              pl.col("draft_text").map_elements(shown, return_dtype=pl.String))


def ablation_sentence(ablations: pl.DataFrame, with_dataset: bool) -> str:
    """The input ablations at a glance: the one that moved alpha most, measured against its plain run."""
    moved = ablations.filter(pl.col("alpha_change").is_not_null()) if ablations.height else ablations
    if not moved.height:
        return ""
    r = moved.sort(pl.col("alpha_change").abs(), descending=True).row(0, named=True)
    return (f"Of {ablations.height} input ablations, {r['ablation']} moved alpha most: "
            f"{run_label(r, with_dataset)}, {fmt(r['plain_alpha'])} → {fmt(r['leviathan_alpha'])} "
            f"({r['alpha_change']:+.3f}; 95% CI of the ablated alpha {fmt(r['leviathan_alpha_lo'])}–"
            f"{fmt(r['leviathan_alpha_hi'])}). Measured; diagnoses, not deployable drafts.")


def _inputs(ablations: pl.DataFrame, grounding: pl.DataFrame | None,
            oracle: pl.DataFrame | None) -> dict[str, list[str]]:
    """The ablation, grounding and oracle tables that have rows, by what they are (none: empty)."""
    out = {}
    if ablations.height:
        out["input ablations"] = ["<h3>Input ablations</h3>",
                "<p class=note>The draft (or the target) scored again along the target's plain stream with one input "
                "taken away or scrambled: alpha beside the plain run's. A target-side ablation leaves greedy alpha "
                "unchanged by construction. Diagnoses, not deployable drafts.</p>",
                html_table(ablations, ABLATION_COLUMNS)]
    if grounding is not None and grounding.height:
        out["grounding classes"] = ["<h3>Grounding classes: which misses no event-only draft can fix</h3>",
                "<p class=note>Each target token classed by two input ablations' log-probability drops (the target "
                "without its frames, the draft without its events): language (what a distillation can fix), "
                "event-grounded, RGB-only (no event draft can fix these from its input) or both; measured, with 95% "
                "CIs over clips.</p>", html_table(grounding, GROUNDING_COLUMNS)]
    bounds = oracle_bounds(oracle)
    if bounds.height:
        out["oracle bounds"] = ["<h3>Oracle bounds (not deployable)</h3>",
                "<p class=note>From the stored match bits: a router sending each clip to the target's best draft for "
                "it, and a per-round oracle lookahead that proposes exactly what the target accepts. Greedy runs "
                "only.</p>", html_table(bounds, ORACLE_COLUMNS)]
    return out


def render_html(runs: Sequence[Run], summary: pl.DataFrame, loop: pl.DataFrame, analyses: Sequence[Divergence],
                manifests: Mapping[str, pl.DataFrame], plots: Mapping[str, Plot], headline: pl.DataFrame,
                max_samples: int = MAX_SAMPLES, trees: pl.DataFrame | None = None,
                ablations: pl.DataFrame | None = None, grounding: pl.DataFrame | None = None,
                oracle: pl.DataFrame | None = None) -> str:
    fig = {k: _figure_html(k, plots[k]) for k in PLOTS}
    with_dataset = len({r.dataset for r in runs}) > 1
    ablations = ablations if ablations is not None else pl.DataFrame()
    inputs = _inputs(ablations, grounding, oracle)
    sections = [k for k in SECTIONS if k != "inputs" or inputs]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>specalign report</title>", f"<style>{CSS}</style></head><body>",
           "<h1>specalign: does the draft pay off, and why not</h1>",
           f'<p class="lede">{_md_to_html(lede(headline))}</p>', answer_html(headline, with_dataset),
           '<p class="legend note"><span>Measured columns: plain.</span><span><em>Predicted</em> (a model: the i.i.d. '
           "model, the cost model, the tree construction): shaded, marked (predicted).</span><span>Intervals: 95% "
           "bootstrap over clips.</span></p>",
           '<nav aria-label="sections"><ol>' + "".join(f'<li><a href="#{k}">{html.escape(SECTIONS[k])}</a></li>'
                                                     for k in sections) + "</ol></nav>"]

    def section(key: str, *body: str) -> None:
        out.extend([f'<section id="{key}"><h2>{html.escape(SECTIONS[key])}</h2>', *body, "</section>"])

    temps = pl.DataFrame([{**r.keys, "temperature": temperature(r)} for r in runs]) if runs else pl.DataFrame()
    ranking = draft_ranking(summary, loop) if summary.height else pl.DataFrame()
    section("payoff", fig["speedup"],
            _fold("Tables: the payoff per deployment, the drafts ranked, the loop against the replay",
                  "<h3>Measured payoff per deployment (the paired timing job: one device, one job)</h3>",
                  html_table(payoff_table(summary, trees), PAYOFF_COLUMNS),
                  "<h3>Which draft pays off: ranked by the best predicted speedup</h3>",
                  html_table(ranking, RANKING_COLUMNS),
                  "<h3>The real loop against the replay (measured)</h3>", html_table(loop, LOOP_COLUMNS)))
    section("acceptance", fig["gamma"],
            _fold("More: against temperature, per draft position, and every summary row",
                  fig["temperature"], html_table(temps, ["dataset", "draft", "target", "decoding", "temperature"]),
                  fig["per_position"], "<h3>Every summary row</h3>", html_table(summary, SUMMARY_COLUMNS)))
    section("trees", fig["trees"],
            _fold("More: the draft's rank of the target's token, and every tree", fig["ranks"],
                  html_table(trees if trees is not None else pl.DataFrame(), TREE_COLUMNS)))
    per_run = []
    for d in analyses:
        per_run += [f"<h3>{html.escape(d.run.label(with_dataset))}</h3>",
                    "<p class=note>First divergence of the free-running answers (the seed's measure):</p>",
                    html_table(d.distribution, ["first_divergence", "n", "share", "cumulative_share"],
                               names={"first_divergence": "first divergence (empty: identical)"}),
                    "<p class=note>Top teacher-forced disagreements, with the preceding target text of two "
                    "examples:</p>",
                    html_table(_top_table(d), ["target_text", "draft_text", "count", "share_of_mismatches",
                                               "mean_position", "reason", "example_1", "example_1_at", "example_2",
                                               "example_2_at"],
                               names={"example_1": "example 1: preceding target text",
                                      "example_2": "example 2: preceding target text"},
                               mono=("target_text", "draft_text", "example_1", "example_2")),
                    html_table(d.classes, ["token_class", "n", "n_samples", "match_rate", "match_rate_lo",
                                           "match_rate_hi", "mean_summin", "mean_summin_lo", "mean_summin_hi"]),
                    html_table(d.attributes, ["attribute", "group", "n_samples", "n", "match_rate", "match_rate_lo",
                                              "match_rate_hi", "mean_summin", "mean_summin_lo", "mean_summin_hi"])]
    section("why", fig["divergence"],
            _fold("More: acceptance by token class and by sample attribute", fig["disagreements"], fig["attributes"]),
            _fold("Tables per run: first divergence, top disagreements, token classes, sample attributes", *per_run))
    if inputs:
        glance = ablation_sentence(ablations, with_dataset)
        section("inputs", f"<p>{html.escape(glance)}</p>" if glance else "",
                _fold("Tables: " + ", ".join(inputs), *(part for parts in inputs.values() for part in parts)))
    samples = []
    for d in analyses:
        samples += [f"<h3>{html.escape(d.run.label(with_dataset))}</h3>",
                    samples_html(d, manifests.get(d.run.dataset), max_samples)]
    section("samples", _fold(
        f"Answers of {len(analyses)} runs, disagreeing tokens marked",
        '<p class="legend note"><span><mark class="tf">target token</mark> the draft, given the target\'s own '
        "prefix, proposed another token (teacher-forced mismatch; hover for it)</span>"
        '<span><mark class="pos">draft token</mark> differs from the target\'s at the same position '
        "(free-running, the seed's comparison)</span>"
        '<span><mark class="unmapped">draft token</mark> has no target id</span></p>', *samples))
    out += ["</body></html>"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------ Markdown
def render_markdown(runs: Sequence[Run], summary: pl.DataFrame, loop: pl.DataFrame,
                    analyses: Sequence[Divergence], headline: pl.DataFrame, trees: pl.DataFrame | None = None,
                    ablations: pl.DataFrame | None = None) -> str:
    """summary.md: the page's answer table and sections in the page's order, the plots linked with their CSVs."""
    with_dataset = len({r.dataset for r in runs}) > 1

    def table(df: pl.DataFrame, columns: list[str]) -> list[str]:
        if not df.height:
            return ["_no rows_", ""]
        d, cols = labelled(df, columns, PREDICTED)
        return [md_table(d, cols), ""]

    def plots(*keys: str) -> list[str]:
        return [f"- ![{PLOTS[k][1]}]({PLOTS[k][0]}) (data: `{PLOTS[k][0].removesuffix('.png')}.csv`)"
                for k in keys] + [""]

    cells = headline_cells(headline, with_dataset)
    out = ["# specalign: does the draft pay off, and why not", "", lede(headline), ""]
    if cells:
        cols = list(cells[0])
        out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(c[k].replace("|", "\\|") for k in cols) + " |" for c in cells]
    out += ["", "Measured columns are plain; predicted ones say (predicted). Intervals: 95% bootstrap over clips. "
            "The full page: `index.html` (self-contained). The same table with raw columns: section 1.", ""]
    out += [f"## 1. {SECTIONS['payoff']}", "", *plots("speedup"), *table(headline, HEADLINE_COLUMNS),
            "### Measured payoff per deployment (the paired timing job: one device, one job)", "",
            *table(payoff_table(summary, trees), PAYOFF_COLUMNS), "### Which draft pays off", "",
            *table(draft_ranking(summary, loop) if summary.height else pl.DataFrame(), RANKING_COLUMNS)]
    out += [f"## 2. {SECTIONS['acceptance']}", "", *plots("gamma", "temperature", "per_position")]
    out += [f"## 3. {SECTIONS['trees']}", "", *plots("trees", "ranks")]
    out += [f"## 4. {SECTIONS['why']}", "", *plots("divergence", "disagreements", "attributes")]
    for d in analyses:
        top = _top_table(d)
        out += [f"### {d.run.label(with_dataset)}", "", "Top teacher-forced disagreements:", "",
                *table(top, ["target_text", "draft_text", "count", "share_of_mismatches", "reason", "example_1"]),
                "Acceptance by target token class:", "",
                *table(d.classes, ["token_class", "n", "match_rate", "match_rate_lo", "match_rate_hi"])]
    if ablations is not None and ablations.height:
        out += [f"## 5. {SECTIONS['inputs']}", "", ablation_sentence(ablations, with_dataset), "",
                "Input ablations: alpha beside the plain run's.", "",
                *table(ablations, ABLATION_COLUMNS)]
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------------ the job
def build_html_report(runs: Sequence[Run], inputs, manifests: Mapping[str, str], n_boot: int = N_BOOT,
                      max_samples: int = MAX_SAMPLES) -> HtmlReport:
    """Everything the report_html rule writes, from its inputs.

    `inputs`: the acceptance CSVs as attributes `summary`, `per_position`, `loop` (and, where the rule
    has them, `trees`, `ranks`, `grounding`, `oracle`); `manifests`: dataset -> manifest Parquet; the
    runs name every other artifact (stages.runs)."""
    summary_all = read_csv(inputs.summary)
    # the plain runs everywhere; the input ablations' rows have their own table (report_tables.ablation_table)
    summary, per_position = plain_runs(summary_all), plain_runs(read_csv(inputs.per_position))
    ablations = ablation_table(summary_all)
    loop = read_csv(inputs.loop)
    trees = read_csv(inputs.trees) if hasattr(inputs, "trees") else pl.DataFrame()
    ranks = read_csv(inputs.ranks) if hasattr(inputs, "ranks") else pl.DataFrame()
    grounding = read_csv(inputs.grounding) if hasattr(inputs, "grounding") else None
    oracle = read_csv(inputs.oracle) if hasattr(inputs, "oracle") else None
    man = {ds: pl.read_parquet(p) for ds, p in manifests.items()}
    analyses = [analyse_run(r, man.get(r.dataset), n_boot=n_boot) for r in runs]
    colours = RunColours(runs)
    plots = {
        "speedup": plot_speedup(runs, summary, colours),
        "gamma": plot_gamma(runs, summary, colours),
        "temperature": plot_temperature(runs, summary, colours),
        "per_position": plot_per_position(runs, per_position, summary, colours),
        "trees": plot_tree_budget(trees),
        "ranks": plot_rank_shares(ranks),
        "divergence": plot_divergence(analyses, colours),
        "disagreements": plot_disagreements(analyses, colours),
        "attributes": plot_attributes(analyses, colours),
    }
    headline = headline_table(summary, trees)
    page = render_html(runs, summary, loop, analyses, man, plots, headline, max_samples, trees=trees,
                       ablations=ablations, grounding=grounding, oracle=oracle)
    md = render_markdown(runs, summary, loop, analyses, headline, trees=trees, ablations=ablations)
    return HtmlReport(html=page, markdown=md, plots=plots)


__all__ = ["PLOTS", "SECTIONS", "HtmlReport", "build_html_report", "headline_cells", "lede"]
