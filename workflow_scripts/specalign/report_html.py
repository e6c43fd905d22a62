"""results/report/index.html: the whole answer on one self-contained page, and its plots.

One HTML file with everything inside it: the plots are PNGs rendered by matplotlib (Agg backend)
and embedded as base64 `data:` URIs, the style sheet is inline, there is no script, no font and no
link to fetch, so the page opens offline, from an e-mail or inside `snakemake --report`. The same
PNGs are also written as separate files beside it (results/report/*.png, the report rule's
`report(...)` outputs), and `summary.md` carries the page's answer and tables in Markdown (built
with report.py's table helpers, like results/report.md).

What is measured and what is predicted is kept apart everywhere: a predicted figure (the i.i.d.
model's iid_*, expected_speedup_iid, latency_speedup, best_gamma*; the cost model's predicted_speedup*,
break_even_alpha) is drawn dashed or hatched and
labelled "(predicted)", in plots and in tables; a measured column is never filled by a prediction.

Sections (all runs of the job spec: dataset x draft x target x decoding):
  answer        does the draft pay off, by how much, with what interval (summary.csv, loop_vs_replay.csv)
  gamma         alpha, token acceptance and tau against gamma, with bootstrap intervals
  temperature   alpha and tau against the decoding temperature (greedy = 0)
  speedup       predicted speedup over a (gamma, c) grid, the measured c (c_lo..c_hi) marked, beside
                the measured loop speedup
  per_position  conditional acceptance per draft position (per_position.csv)
  divergence    the seed's free-running first divergence beside teacher-forced acceptance by position
  disagreements the top (target, draft) disagreements and acceptance by token class (divergence.py)
  attributes    acceptance against duration, event count and question, with intervals
  samples       draft and target answers side by side, disagreeing tokens highlighted
"""
from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from . import acceptance as acc
from .divergence import TOKEN_CLASSES, Divergence, analyse_run
from .report import (
    ABLATION_COLUMNS,
    GROUNDING_COLUMNS,
    ORACLE_COLUMNS,
    PAYOFF_COLUMNS,
    TREE_COLUMNS,
    _labelled,
    ablation_table,
    draft_ranking,
    md_table,
    oracle_bounds,
    payoff_table,
    plain_runs,
    read_csv,
)
from .report import PREDICTED as MODEL_PREDICTED
from .specs import Run

# plot key -> (file name under results/report/, title)
PLOTS: dict[str, tuple[str, str]] = {
    "gamma": ("acceptance_vs_gamma.png", "Acceptance and tau against gamma"),
    "temperature": ("acceptance_vs_temperature.png", "Acceptance against temperature"),
    "speedup": ("speedup_grid.png", "Predicted speedup over (gamma, c) beside the measured loop speedup"),
    "per_position": ("per_position.png", "Conditional acceptance per draft position"),
    "divergence": ("first_divergence.png", "First divergence (the seed's measure) beside teacher-forced acceptance"),
    "disagreements": ("disagreements.png", "Top disagreements and acceptance by token class"),
    "attributes": ("sample_attributes.png", "Acceptance against sample attributes"),
    "trees": ("tree_budget.png", "Tau against the tree's node budget, and the trees' predicted speedup"),
    "ranks": ("rank_shares.png", "How often the target's token is the draft's 1st, 2nd, ... choice"),
}

PREDICTED = (*MODEL_PREDICTED, "best_predicted_gamma", "best_predicted_speedup")

GAMMA_GRID = 8           # the speedup grid's gammas: 1..max(8, largest configured)
C_GRID = np.linspace(0.02, 1.25, 60)   # widened per run to reach past the measured c_hi
MAX_SAMPLES = 24         # samples per run in the side-by-side table

KEYS = ["dataset", "draft", "target", "decoding"]


@dataclass
class HtmlReport:
    html: str
    markdown: str
    plots: dict[str, bytes]   # plot key (PLOTS) -> PNG bytes


# ------------------------------------------------------------------------------------ helpers
def temperature(run: Run) -> float:
    """The decoding's temperature; greedy decoding is temperature 0."""
    return 0.0 if run.decoding.greedy else float(run.decoding.temperature)


def _rows(df: pl.DataFrame, keys: Mapping[str, Any]) -> pl.DataFrame:
    if not df.height:
        return df
    out = df
    for k, v in keys.items():
        if k in out.columns:
            out = out.filter(pl.col(k).cast(pl.String) == str(v))
    return out


def _f(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _ci(v, lo, hi, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if lo is None or hi is None or any(isinstance(x, float) and math.isnan(x) for x in (lo, hi)):
        return _f(v, digits)
    return f"{_f(v, digits)} (95% CI {_f(lo, digits)}–{_f(hi, digits)})"


def shown(text: str | None) -> str:
    """A token's text as a plot or table label: quoted, whitespace and control characters visible."""
    if text is None:
        return "<unmapped>"
    return '"' + "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text) + '"'


def visible(text: str | None) -> str:
    """Token text for the page: whitespace kept, control characters written as escapes, newline as ⏎."""
    if text is None:
        return ""
    return "".join(ch if ch.isprintable() else "⏎" if ch == "\n" else repr(ch)[1:-1] for ch in text)


def run_label(run: Run, datasets: int = 1) -> str:
    base = f"{run.draft} → {run.target} · {run.decoding.name}"
    return f"{run.dataset} · {base}" if datasets > 1 else base


# ------------------------------------------------------------------------------------ plots
def _figure(rows: int, cols: int, w: float = 5.6, h: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * cols, h * rows), dpi=100, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _empty(message: str) -> bytes:
    fig, ax = _figure(1, 1, 6, 1.6)
    ax[0, 0].axis("off")
    ax[0, 0].text(0.5, 0.5, message, ha="center", va="center", fontsize=11, wrap=True)
    return _png(fig)


def _err(lo, v, hi):
    lo, v, hi = (np.asarray([_num(x) for x in a], dtype=float) for a in (lo, v, hi))
    return np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])


def _integer_ticks(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for x in axes:
        x.xaxis.set_major_locator(MaxNLocator(integer=True))


def _colors(n: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_gamma(runs: Sequence[Run], summary: pl.DataFrame, label) -> bytes:
    """Left: alpha (measured, independent of gamma: a band) and the token acceptance rate per gamma
    (measured, error bars), with the i.i.d. prediction dashed. Right: tau, measured and predicted."""
    if not summary.height:
        return _empty("no summary rows")
    fig, ax = _figure(1, 2)
    a, t = ax[0, 0], ax[0, 1]
    for run, col in zip(runs, _colors(len(runs))):
        s = _rows(summary, run.keys).sort("gamma")
        if not s.height:
            continue
        g = s["gamma"].to_numpy()
        alpha, lo, hi = (_num(s[c][0]) for c in ("leviathan_alpha", "leviathan_alpha_lo", "leviathan_alpha_hi"))
        a.axhline(alpha, color=col, lw=1.2, alpha=0.9)
        a.axhspan(lo, hi, color=col, alpha=0.12)
        m = s.filter(pl.col("token_acceptance_rate").is_not_null())
        if m.height:
            a.errorbar(m["gamma"], m["token_acceptance_rate"],
                       yerr=_err(m["token_acceptance_rate_lo"], m["token_acceptance_rate"],
                                 m["token_acceptance_rate_hi"]),
                       color=col, marker="o", capsize=3, label=f"{label(run)}: token acceptance (measured)")
        a.plot(g, s["iid_token_acceptance"], color=col, ls="--", lw=1,
               label=f"{label(run)}: iid_token_acceptance (predicted)")
        a.plot([], [], color=col, lw=1.2, label=f"{label(run)}: leviathan_alpha {alpha:.3f} (measured, band = CI)")
        m = s.filter(pl.col("tau").is_not_null())
        if m.height:
            t.errorbar(m["gamma"], m["tau"], yerr=_err(m["tau_lo"], m["tau"], m["tau_hi"]), color=col, marker="o",
                       capsize=3, label=f"{label(run)}: tau (measured, {m['method'][0]})")
        t.plot(g, s["iid_tau"], color=col, ls="--", lw=1, label=f"{label(run)}: iid_tau (predicted)")
    a.set(xlabel="gamma (draft tokens per round)", ylabel="acceptance", ylim=(-0.02, 1.05),
          title="alpha and token acceptance rate")
    t.set(xlabel="gamma (draft tokens per round)", ylabel="tau (accepted + 1 per round)", title="tau")
    t.set_ylim(bottom=0.9)
    gs = sorted(summary["gamma"].unique().to_list())
    for x in (a, t):
        x.set_xlim(min(gs) - 0.5, max(gs) + 0.5)
        x.set_xticks(gs)
    for x in (a, t):
        x.grid(alpha=0.3)
        x.legend(fontsize=7, loc="best")
    return _png(fig)


def plot_temperature(runs: Sequence[Run], summary: pl.DataFrame, label) -> bytes:
    """Alpha (measured, with CI) and tau at each gamma measured at every temperature, per pair."""
    if not summary.height:
        return _empty("no summary rows")
    fig, ax = _figure(1, 2)
    a, t = ax[0, 0], ax[0, 1]
    pairs = sorted({(r.dataset, r.draft, r.target) for r in runs})
    for (ds, draft, target), col in zip(pairs, _colors(len(pairs))):
        mine = sorted((r for r in runs if (r.dataset, r.draft, r.target) == (ds, draft, target)), key=temperature)
        name = f"{draft} → {target}" + (f" ({ds})" if len({r.dataset for r in runs}) > 1 else "")
        pts = []
        for r in mine:
            s = _rows(summary, r.keys)
            if s.height:
                pts.append((temperature(r), s["leviathan_alpha"][0], s["leviathan_alpha_lo"][0],
                            s["leviathan_alpha_hi"][0], r.decoding.name))
        if pts:
            x, v, lo, hi, names = zip(*pts)
            a.errorbar(x, v, yerr=_err(lo, v, hi), color=col, marker="o", capsize=3,
                       label=f"{name}: leviathan_alpha (measured)")
            for xi, vi, n in zip(x, v, names):
                a.annotate(n, (xi, _num(vi)), textcoords="offset points", xytext=(4, 4), fontsize=7)
        # tau at the gammas measured under every decoding of this pair
        per = [_rows(summary, r.keys).filter(pl.col("tau").is_not_null()) for r in mine]
        common = sorted(set.intersection(*[set(p["gamma"].to_list()) for p in per])) if per else []
        for g, marker in zip(common, "os^Dvp<>"):
            vals = [p.filter(pl.col("gamma") == g).row(0, named=True) for p in per]
            x = [temperature(r) for r in mine]
            t.errorbar(x, [v["tau"] for v in vals], yerr=_err([v["tau_lo"] for v in vals], [v["tau"] for v in vals],
                                                              [v["tau_hi"] for v in vals]),
                       color=col, marker=marker, capsize=3, label=f"{name}: tau at gamma {g} (measured)")
    a.set(xlabel="temperature (greedy = 0)", ylabel="leviathan_alpha", ylim=(-0.02, 1.05),
          title="alpha against temperature")
    t.set(xlabel="temperature (greedy = 0)", ylabel="tau", title="tau against temperature")
    for x in (a, t):
        x.grid(alpha=0.3)
        if x.get_legend_handles_labels()[0]:
            x.legend(fontsize=7, loc="best")
    return _png(fig)


def plot_speedup(runs: Sequence[Run], summary: pl.DataFrame, loop: pl.DataFrame, label) -> bytes:
    """Per run: the i.i.d. model's speedup over gamma x c (predicted; contour at 1), the measured c
    and its interval marked; beside it the measured loop speedup per gamma and the predicted one
    at the measured c."""
    shown_runs = [r for r in runs if _rows(summary, r.keys).height]
    if not shown_runs:
        return _empty("no summary rows")
    fig, ax = _figure(len(shown_runs), 2)
    max_g = max([GAMMA_GRID, *summary["gamma"].to_list()])
    gammas = np.arange(1, max_g + 1)
    for row, run in enumerate(shown_runs):
        s = _rows(summary, run.keys).sort("gamma")
        alpha = _num(s["leviathan_alpha"][0])
        h, b = ax[row, 0], ax[row, 1]
        c = _num(s["c"][0]) if "c" in s.columns else math.nan
        c_top = max([C_GRID[-1], *(1.1 * _num(s[k][0]) for k in ("c", "c_hi") if k in s.columns
                                  and math.isfinite(_num(s[k][0])))])
        cs = np.linspace(C_GRID[0], c_top, len(C_GRID))   # the grid reaches past the measured c's interval
        if math.isfinite(alpha):
            grid = np.array([[acc.expected_speedup(alpha, int(g), float(x)) for g in gammas] for x in cs])
            im = h.pcolormesh(gammas, cs, grid, cmap="RdYlGn", vmin=0, vmax=max(2.0, float(grid.max())),
                              shading="nearest")
            if grid.min() < 1 < grid.max():
                h.contour(gammas, cs, grid, levels=[1.0], colors="k", linewidths=1)
            fig.colorbar(im, ax=h, label="speedup (predicted, i.i.d.)")
        if math.isfinite(c):
            lo, hi = _num(s["c_lo"][0]), _num(s["c_hi"][0])
            h.axhline(c, color="k", ls="-", lw=1.5, label=f"c measured {c:.2f}")
            if math.isfinite(lo) and math.isfinite(hi):
                h.axhspan(lo, hi, color="k", alpha=0.15, label=f"c 95% CI {lo:.2f}–{hi:.2f}")
            h.legend(fontsize=7, loc="upper right")
        h.set(xlabel="gamma", ylabel="c = draft / target decode time",
              title=f"{label(run)}\npredicted speedup at alpha {alpha:.3f} (contour: 1)")
        lp = _rows(loop, run.keys).sort("gamma") if loop.height else loop
        if lp.height and "measured_speedup" in lp.columns:
            b.bar(lp["gamma"].to_numpy() - 0.2, lp["measured_speedup"].fill_null(float("nan")).to_numpy(), width=0.4,
                  color="tab:blue", label="loop speedup (measured)")
        if "expected_speedup_iid" in s.columns and s["expected_speedup_iid"].drop_nulls().len():
            b.bar(s["gamma"].to_numpy() + 0.2, s["expected_speedup_iid"].fill_null(float("nan")).to_numpy(),
                  width=0.4, color="none", edgecolor="tab:gray", hatch="//",
                  label="expected_speedup_iid at measured c (predicted)")
        b.axhline(1.0, color="k", lw=0.8)
        tops = [v for col, df in (("measured_speedup", lp), ("expected_speedup_iid", s)) if col in df.columns
                for v in df[col].drop_nulls().to_list()]
        b.set_ylim(0, 1.25 * max([1.0, *tops]))
        b.set(xlabel="gamma", ylabel="speedup over target-only decoding", title="measured beside predicted")
        if b.get_legend_handles_labels()[0]:
            b.legend(fontsize=7)
        else:
            b.text(0.5, 0.5, "no loop ran and no c was measured", ha="center", transform=b.transAxes)
        b.grid(alpha=0.3, axis="y")
        _integer_ticks(h, b)
    return _png(fig)


def plot_per_position(runs: Sequence[Run], per_position: pl.DataFrame, summary: pl.DataFrame, label) -> bytes:
    if not per_position.height:
        return _empty("no per-position rows")
    shown_runs = [r for r in runs if _rows(per_position, r.keys).height]
    if not shown_runs:
        return _empty("no per-position rows")
    cols = min(3, len(shown_runs))
    rows = -(-len(shown_runs) // cols)
    fig, ax = _figure(rows, cols, 5.0, 3.4)
    for k, run in enumerate(shown_runs):
        x = ax[k // cols, k % cols]
        p = _rows(per_position, run.keys)
        gs = sorted(p["gamma"].unique().to_list())
        for g, col in zip(gs, _colors(len(gs))):
            q = p.filter((pl.col("gamma") == g) & pl.col("conditional").is_not_null()).sort("position")
            if q.height:
                x.plot(q["position"], q["conditional"], marker="o", color=col,
                       label=f"gamma {g} (measured, {q['method'][0]})")
        s = _rows(summary, run.keys)
        if s.height:
            x.axhline(_num(s["leviathan_alpha"][0]), color="k", ls="--", lw=1,
                      label="i.i.d.: alpha at every position (predicted)")
        x.set(xlabel="draft position i in the round", ylabel="P(accept i | accepted i-1)", ylim=(-0.02, 1.05),
              title=label(run))
        top = max(gs) if gs else 1
        x.set_xlim(0.5, top + 0.5)
        x.set_xticks(range(1, top + 1))
        x.grid(alpha=0.3)
        x.legend(fontsize=7)
    for k in range(len(shown_runs), rows * cols):
        ax[k // cols, k % cols].axis("off")
    return _png(fig)


def plot_divergence(analyses: Sequence[Divergence], label) -> bytes:
    """Left: where the two free-running answers first differ (the seed's measure stops making sense
    after it). Right: per answer position, the seed's positional match against the teacher-forced
    acceptance the draft really gets there."""
    if not analyses:
        return _empty("no runs")
    fig, ax = _figure(len(analyses), 2)
    for row, d in enumerate(analyses):
        left, right = ax[row, 0], ax[row, 1]
        dist = d.distribution
        diverged = dist.filter(pl.col("first_divergence").is_not_null())
        identical = dist.filter(pl.col("first_divergence").is_null())
        if diverged.height:
            left.bar(diverged["first_divergence"], diverged["share"], color="tab:red", alpha=0.8,
                     label="first divergence at position")
        longest = int(d.first["target_len"].max() or 0) if d.first.height else 0
        if diverged.height:
            longest = max(longest, int(diverged["first_divergence"].max()) + 1)
        if identical.height:
            left.bar([longest], identical["share"], color="tab:green", label=f"identical answers (at {longest})")
        left.set_xlim(-0.6, longest + 0.6)
        left.set(xlabel="answer position of the first difference", ylabel="share of samples", ylim=(0, 1.05),
                 title=f"{label(d.run)}\nfree-running outputs: first divergence (n = {d.first.height})")
        left.legend(fontsize=7)
        left.grid(alpha=0.3, axis="y")
        tf, pos = d.teacher_forced, d.positional
        if tf.height:
            right.fill_between(tf["position"], tf["match_rate_lo"], tf["match_rate_hi"], color="tab:blue", alpha=0.15)
            right.plot(tf["position"], tf["match_rate"], color="tab:blue", marker="o",
                       label="teacher-forced argmax match (measured)")
            if not d.run.decoding.greedy:
                right.plot(tf["position"], tf["mean_summin"], color="tab:purple", marker="s",
                           label="teacher-forced mean summin (measured)")
        if pos.height:
            right.fill_between(pos["position"], pos["positional_match_rate_lo"], pos["positional_match_rate_hi"],
                               color="tab:red", alpha=0.12)
            right.plot(pos["position"], pos["positional_match_rate"], color="tab:red", marker="x",
                       label="free-running positional match (the seed's)")
            right.plot(pos["position"], pos["still_identical"], color="tab:red", ls=":",
                       label="free-running answers still identical")
        right.set(xlabel="answer position", ylabel="rate", ylim=(-0.02, 1.05),
                  title="teacher-forced acceptance vs the seed's positional match")
        right.grid(alpha=0.3)
        right.legend(fontsize=7)
        right.set_xlim(-0.5, max(longest - 0.5, 0.5))
        _integer_ticks(left, right)
    return _png(fig)


def plot_disagreements(analyses: Sequence[Divergence], label, top: int = 10) -> bytes:
    if not analyses:
        return _empty("no runs")
    fig, ax = _figure(len(analyses), 2)
    for row, d in enumerate(analyses):
        left, right = ax[row, 0], ax[row, 1]
        t = d.top.head(top)
        if t.height:
            names = [f"{shown(a)} ← draft {shown(b)}" for a, b in zip(t["target_text"], t["draft_text"])]
            y = np.arange(t.height)[::-1]
            left.barh(y, t["count"], color="tab:orange")
            left.set_yticks(y, names, fontsize=7)
            for yi, c, s in zip(y, t["count"], t["share_of_mismatches"]):
                left.text(c, yi, f" {c} ({s:.0%})", va="center", fontsize=7)
        else:
            left.text(0.5, 0.5, "no disagreement", ha="center", transform=left.transAxes)
        left.set(xlabel="positions (teacher-forced mismatches)",
                 title=f"{label(d.run)}\ntop (target token ← draft's choice) disagreements")
        cls = d.classes
        if cls.height:
            x = np.arange(cls.height)
            right.bar(x - 0.2, cls["match_rate"], width=0.4, color="tab:blue", label="argmax match (measured)",
                      yerr=_err(cls["match_rate_lo"], cls["match_rate"], cls["match_rate_hi"]), capsize=3)
            right.bar(x + 0.2, cls["mean_summin"], width=0.4, color="tab:purple", label="mean summin (measured)",
                      yerr=_err(cls["mean_summin_lo"], cls["mean_summin"], cls["mean_summin_hi"]), capsize=3)
            right.set_xticks(x, [f"{c}\nn={n}" for c, n in zip(cls["token_class"], cls["n"])], fontsize=7)
        right.set(ylabel="teacher-forced acceptance", ylim=(0, 1.1), title="acceptance by target token class")
        right.grid(alpha=0.3, axis="y")
        right.legend(fontsize=7)
    return _png(fig)


def plot_attributes(analyses: Sequence[Divergence], label) -> bytes:
    from .divergence import ATTRIBUTES

    if not analyses:
        return _empty("no runs")
    fig, ax = _figure(len(analyses), len(ATTRIBUTES), 4.6, 3.4)
    for row, d in enumerate(analyses):
        for k, attr in enumerate(ATTRIBUTES):
            x = ax[row, k]
            part = d.attributes.filter(pl.col("attribute") == attr).sort("order") if d.attributes.height else None
            if part is None or not part.height:
                x.text(0.5, 0.5, f"no {attr} in the manifest", ha="center", transform=x.transAxes)
                x.axis("off")
                continue
            pos = np.arange(part.height)
            x.errorbar(pos - 0.08, part["match_rate"], capsize=3, marker="o", ls="none", color="tab:blue",
                       yerr=_err(part["match_rate_lo"], part["match_rate"], part["match_rate_hi"]),
                       label="argmax match (measured)")
            x.errorbar(pos + 0.08, part["mean_summin"], capsize=3, marker="s", ls="none", color="tab:purple",
                       yerr=_err(part["mean_summin_lo"], part["mean_summin"], part["mean_summin_hi"]),
                       label="mean summin (measured)")
            labels = [(g if len(g) <= 22 else g[:21] + "…") + f"\n{n} samples"
                      for g, n in zip(part["group"], part["n_samples"])]
            x.set_xticks(pos, labels, fontsize=7)
            x.set(ylim=(-0.02, 1.05), xlabel=attr, ylabel="teacher-forced acceptance",
                  title=label(d.run) if k == 0 else attr)
            x.set_xlim(-0.5, part.height - 0.5)
            x.grid(alpha=0.3, axis="y")
            if k == 0:
                x.legend(fontsize=7)
    return _png(fig)


# ------------------------------------------------------------------------------------ the answer
def answer(runs: Sequence[Run], summary: pl.DataFrame, loop: pl.DataFrame, label) -> str:
    """The paragraph at the top (Markdown emphasis only): does the draft pay off, by how much, with
    what interval. Measured: alpha, c, tau and the loop's speedup (the paired timing job's, with its
    interval over clips and device); predicted (labelled): the i.i.d. speedup and best gamma."""
    ranking = draft_ranking(summary, loop) if summary.height else pl.DataFrame()
    if not ranking.height:
        return "**Does the draft pay off?** No acceptance rows were measured, so this report cannot say."
    payoff = payoff_table(summary)
    sentences, pays, timed = [], 0, 0
    for run in runs:
        rk = _rows(ranking, run.keys)
        s = _rows(summary, run.keys)
        if not rk.height or not s.height:
            continue
        r = rk.row(0, named=True)
        alpha = _ci(r.get("leviathan_alpha"), r.get("leviathan_alpha_lo"), r.get("leviathan_alpha_hi"))
        c = _ci(r.get("c"), r.get("c_lo"), r.get("c_hi"), 2)
        pred, g_p = r.get("best_predicted_speedup"), r.get("best_predicted_gamma")
        bg = s.row(0, named=True)
        text = f"**{label(run)}**: measured Leviathan alpha {alpha}, cost ratio c {c}"
        mine = _rows(payoff, run.keys) if payoff.height else payoff
        if mine.height:
            best = mine.sort("measured_speedup", descending=True).row(0, named=True)
            timed += 1
            pays += best["verdict"] == "pays off"
            at = s.filter(pl.col("gamma") == best["gamma"])
            tau = _ci(*(at[k][0] for k in ("tau", "tau_lo", "tau_hi"))) if at.height else "—"
            text += (f"; the real draft-verify loop at its best timed gamma {best['gamma']}: measured speedup "
                     f"{_ci(best['measured_speedup'], best['measured_speedup_lo'], best['measured_speedup_hi'], 2)}x "
                     f"on {best.get('device') or 'an unrecorded device'} ({best['verdict']}), tau there {tau}")
        else:
            text += "; the loop was not timed, so no speedup was measured"
        if pred is not None:
            text += (f". Predicted by the i.i.d. model: at most {pred:.2f}x (at gamma {g_p}); "
                     f"best_gamma {bg.get('best_gamma', '—')} (predicted; {bg.get('best_gamma_lo', '—')}–"
                     f"{bg.get('best_gamma_hi', '—')} over c's interval, 0 = no gamma helps)")
        sentences.append(text + ".")
    head = (f"**Does the draft pay off?** In {pays} of {timed} timed draft × decoding runs the real loop was "
            f"faster than target-only decoding with its whole 95% interval above 1. ")
    tail = (" Every speedup and c here was timed in one job per run, both models on one device, interleaved "
            "on the same clips; the measured speedup includes per-call overhead the i.i.d. prediction leaves out.")
    return head + " ".join(sentences) + tail


# ------------------------------------------------------------------------------------ HTML
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem auto;max-width:1320px;color:#222;
line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1.05rem}
p.answer{background:#f3f7fb;border-left:4px solid #3b6ea5;padding:.8rem 1rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.82rem}
th,td{border:1px solid #ccc;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#eee}th.pred,td.pred{background:#fff6e0;font-style:italic}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85rem;color:#444}
.tok{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.8rem}
mark{padding:0 1px;margin:0 1px;border-radius:2px}mark.tf{background:#ffb3b3}mark.pos{background:#ffd27f}mark.unmapped{background:#ccc}
.legend span{margin-right:1rem}.scroll{overflow-x:auto;max-width:100%}
"""


def html_table(df: pl.DataFrame, columns: Sequence[str], predicted: Sequence[str] = PREDICTED,
               names: Mapping[str, str] | None = None, mono: Sequence[str] = ()) -> str:
    """A table of `columns` (those present), predicted columns marked in header and cells; `mono`
    columns are token text (whitespace kept, monospace). Wide tables scroll inside their box."""
    cols = [c for c in columns if c in df.columns]
    if not df.height or not cols:
        return "<p><em>no rows</em></p>"
    names = dict(names or {})

    def head(c):
        n = html.escape(names.get(c, c))
        return f'<th class="pred">{n} (predicted)</th>' if c in predicted else f"<th>{n}</th>"

    out = ['<div class="scroll"><table>', "<tr>" + "".join(head(c) for c in cols) + "</tr>"]
    for row in df.select(cols).iter_rows(named=True):
        cells = []
        for c in cols:
            v = html.escape(visible(row[c]) if c in mono and isinstance(row[c], str) else _f(row[c]))
            cls = "pred" if c in predicted else "tok" if c in mono else ""
            cells.append(f'<td class="{cls}">{v}</td>' if cls else f"<td>{v}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table></div>"])


def _md_to_html(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<strong>{p}</strong>" if k % 2 else p for k, p in enumerate(parts))


def _tokens_html(ids: Sequence[int], text: Mapping[int, str], marks: Sequence[tuple[str, str] | None]) -> str:
    out = []
    for t, m in zip(ids, marks):
        piece = html.escape(visible(text.get(t, "<unmapped>")) if t >= 0 else "<unmapped>")
        if m is None:
            out.append(piece)
        else:
            cls, title = m
            out.append(f'<mark class="{cls}" title="{html.escape(title)}">{piece}</mark>')
    return "".join(out)


def samples_html(d: Divergence, manifest: pl.DataFrame | None, max_samples: int = MAX_SAMPLES) -> str:
    """Draft and target answers side by side. Target: tokens the draft, given the target's own
    prefix, would NOT have proposed (teacher-forced mismatch; hover: what it proposed). Draft (its
    free-running answer in target ids): tokens that differ from the target's at the same position."""
    refs = {}
    if manifest is not None and "reference" in manifest.columns:
        refs = dict(zip(manifest["sample_id"].to_list(), manifest["reference"].to_list()))
    first = {s: p for s, p in zip(d.first["sample_id"], d.first["first_divergence"])}
    sids = sorted(set(d.targets) | set(d.drafts))[:max_samples]
    per = {sid: part.sort("position") for (sid,), part in d.scores.group_by("sample_id")} if d.scores.height else {}
    rows = ['<div class="scroll"><table class="samples">', "<tr><th>sample</th><th>first divergence (free-running)</th>"
            "<th>target answer (teacher-forced mismatches marked)</th>"
            "<th>draft answer, free-running (positional differences marked)</th><th>reference</th></tr>"]
    for sid in sids:
        tgt = list(d.targets.get(sid, []))
        drf = list(d.drafts.get(sid, []))
        sc = per.get(sid)
        tmarks: list = [None] * len(tgt)
        if sc is not None:
            for pos, match, proposed in zip(sc["position"], sc["match"], sc["draft_token"]):
                if pos < len(tmarks) and not match:
                    tmarks[pos] = ("tf", f"teacher-forced: draft proposed {shown(d.text.get(proposed))}")
        dmarks = []
        for i, t in enumerate(drf):
            if t < 0:
                dmarks.append(("unmapped", "no target id for this draft token"))
            elif i >= len(tgt) or tgt[i] != t:
                other = shown(d.text.get(tgt[i])) if i < len(tgt) else "nothing (target answer ended)"
                dmarks.append(("pos", f"position {i}: target has {other}"))
            else:
                dmarks.append(None)
        fd = first.get(sid)
        rows.append(f"<tr><td>{html.escape(sid)}</td><td>{'identical' if fd is None else fd}</td>"
                    f'<td class="tok">{_tokens_html(tgt, d.text, tmarks)}</td>'
                    f'<td class="tok">{_tokens_html(drf, d.text, dmarks)}</td>'
                    f"<td>{html.escape(str(refs.get(sid, '') or ''))}</td></tr>")
    rows.append("</table></div>")
    more = len(set(d.targets) | set(d.drafts)) - len(sids)
    note = f"<p><em>{more} more samples not shown.</em></p>" if more > 0 else ""
    return "\n".join(rows) + note


def _figure_html(key: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    title = PLOTS[key][1]
    return (f'<figure id="plot-{key}"><img src="data:image/png;base64,{data}" alt="{html.escape(title)}">'
            f"<figcaption><strong>{html.escape(title)}.</strong> {html.escape(caption)}</figcaption></figure>")


CAPTIONS = {
    "gamma": "Left: Leviathan alpha (measured, independent of gamma; band = 95% bootstrap CI over samples) and "
             "the token acceptance rate per gamma (measured; error bars = CI), the i.i.d. prediction dashed. "
             "Right: tau (mean accepted length per round, bonus token included), measured and predicted.",
    "temperature": "Alpha and tau against the decoding's temperature (greedy = 0), measured, with 95% CIs; "
                   "tau only at gammas measured under every decoding.",
    "speedup": "Left: the i.i.d. model's speedup (1 - a^(g+1)) / ((1 - a)(g c + 1)) over gamma and c at the "
               "measured alpha (predicted; black contour: 1), with the measured c and its 95% CI. Right: the "
               "real loop's measured speedup per gamma (the paired timing job's) beside the predicted one.",
    "per_position": "P(the draft's i-th token is accepted | the (i-1)-th was), measured per gamma "
                    "(per_position.csv); the i.i.d. model predicts alpha at every position (dashed).",
    "divergence": "Left: where the two models' free-running answers first differ (the seed note compared them "
                  "position by position). Right: after that point the seed's positional match is near chance, "
                  "while the draft, re-conditioned on the target's prefix as speculative decoding does, keeps the "
                  "teacher-forced acceptance shown in blue: why the seed's 4-7% was the wrong number.",
    "disagreements": "Left: the most frequent teacher-forced disagreements (the target's token ← the draft's "
                     "argmax given the target's prefix). Right: acceptance by the class of the target token "
                     "(special/EOS, punctuation, number, function word, content word; divergence.py), 95% CIs.",
    "attributes": "Teacher-forced acceptance against the manifest's sample attributes (numeric ones in quantile "
                  "bins), 95% bootstrap CIs over the samples of each group.",
    "trees": "Left: tau of each static tree (exact greedy replay from the draft's ranks of the target's tokens, "
             "95% CI) against its nodes: chains, full k-ary trees, configured paths trees and the best tree per "
             "node budget, whose expected tau under the independence assumption is dashed (predicted). Right: "
             "each tree's predicted speedup (hollow: its verify cost extrapolated, not timed).",
    "ranks": "The rank of the target's token among the draft's proposals given the target's prefix "
             "(teacher forced, every decoding): rank 1 is a chain's acceptance; what ranks 2, 3, ... hold is "
             "what a tree can add.",
}


def render_html(runs: Sequence[Run], summary: pl.DataFrame, per_position: pl.DataFrame, cost: pl.DataFrame,
                loop: pl.DataFrame, analyses: Sequence[Divergence], manifests: Mapping[str, pl.DataFrame],
                plots: Mapping[str, bytes], answer_text: str, label, max_samples: int = MAX_SAMPLES,
                trees: pl.DataFrame | None = None, ablations: pl.DataFrame | None = None,
                grounding: pl.DataFrame | None = None, oracle: pl.DataFrame | None = None) -> str:
    fig = {k: _figure_html(k, plots[k], CAPTIONS[k]) for k in PLOTS}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           "<title>specalign report</title>", f"<style>{CSS}</style></head><body>",
           "<h1>specalign: how often the target accepts the draft's tokens, and why not</h1>",
           f'<p class="answer" id="answer">{_md_to_html(answer_text)}</p>',
           '<p class="legend"><span>Measured columns: plain.</span><span><em>Predicted</em> (i.i.d. model: iid_*, '
           "expected_speedup_iid, latency_speedup, best_gamma*): shaded, marked (predicted).</span>"
           "<span>Intervals: 95% bootstrap over samples.</span></p>"]
    ranking = draft_ranking(summary, loop) if summary.height else pl.DataFrame()
    out += ["<h2>Which draft pays off</h2>",
            html_table(ranking, ["dataset", "target", "decoding", "rank", "draft", "leviathan_alpha",
                                 "leviathan_alpha_lo", "leviathan_alpha_hi", "c", "c_lo", "c_hi",
                                 "best_predicted_gamma", "best_predicted_speedup", "best_measured_gamma",
                                 "best_measured_speedup"]),
            "<h3>Measured payoff per deployment (the paired timing job: one device, one job)</h3>",
            html_table(payoff_table(summary, trees), PAYOFF_COLUMNS)]
    out += ["<h2>Acceptance against gamma</h2>", fig["gamma"],
            html_table(summary, ["dataset", "draft", "target", "decoding", "gamma", "method", "leviathan_alpha",
                                 "leviathan_alpha_lo", "leviathan_alpha_hi", "token_acceptance_rate",
                                 "token_acceptance_rate_lo", "token_acceptance_rate_hi", "tau", "tau_lo", "tau_hi",
                                 "positional_match_rate", "iid_token_acceptance", "iid_tau"])]
    temps = pl.DataFrame([{**r.keys, "temperature": temperature(r)} for r in runs]) if runs else pl.DataFrame()
    out += ["<h2>Acceptance against temperature</h2>", fig["temperature"],
            html_table(temps, ["dataset", "draft", "target", "decoding", "temperature"])]
    out += ["<h2>Speedup: predicted over (gamma, c), measured by the loop</h2>", fig["speedup"],
            html_table(summary, ["dataset", "draft", "target", "decoding", "gamma", "c", "c_lo", "c_hi",
                                 "expected_speedup_iid", "latency_speedup", "best_gamma", "best_gamma_lo",
                                 "best_gamma_hi"]),
            "<h3>The real loop against the replay (measured)</h3>",
            html_table(loop, ["dataset", "draft", "target", "decoding", "gamma", "rounds_identical",
                              "output_equals_target", "loop_token_acceptance_rate", "replay_token_acceptance_rate",
                              "verify_flip_rate", "measured_speedup", "device"])]
    out += ["<h2>Conditional acceptance per position</h2>", fig["per_position"]]
    out += ["<h2>Trees: the draft's 2nd and 3rd choices, verified in one pass</h2>", fig["trees"], fig["ranks"],
            html_table(trees if trees is not None else pl.DataFrame(), TREE_COLUMNS,
                       predicted=(*PREDICTED, "expected_tau"))]
    if ablations is not None and ablations.height:
        out += ["<h2>Input ablations: what each input is worth</h2>",
                "<p>The draft (or the target) scored again along the target's plain stream with one input taken "
                "away or scrambled: alpha beside the plain run's. A target-side ablation leaves greedy alpha "
                "unchanged by construction. Diagnoses, not deployable drafts.</p>",
                html_table(ablations, ABLATION_COLUMNS)]
    if grounding is not None and grounding.height:
        out += ["<h2>Grounding classes: which misses no event-only draft can fix</h2>",
                "<p>Each target token classed by two input ablations' log-probability drops (the target without "
                "its frames, the draft without its events): language (what a distillation can fix), "
                "event-grounded, RGB-only (no event draft can fix these from its input) or both; the draft's "
                "match rate and share of mismatches per class, measured, with 95% CIs over clips.</p>",
                html_table(grounding, GROUNDING_COLUMNS)]
    bounds = oracle_bounds(oracle)
    if bounds.height:
        out += ["<h2>Oracle bounds (not deployable)</h2>",
                "<p>From the stored match bits: a router sending each clip to the target's best draft for it, "
                "and a per-round oracle lookahead that proposes exactly what the target accepts; beside the "
                "measured drafts above. Greedy runs only.</p>", html_table(bounds, ORACLE_COLUMNS)]
    out += ["<h2>Why the seed's number was wrong: first divergence vs teacher-forced acceptance</h2>",
            fig["divergence"]]
    for d in analyses:
        out += [f"<h3>{html.escape(label(d.run))}</h3>",
                html_table(d.distribution, ["first_divergence", "n", "share", "cumulative_share"],
                           names={"first_divergence": "first divergence (empty: identical)"})]
    out += ["<h2>What the draft gets wrong: disagreements and token classes</h2>", fig["disagreements"]]
    for d in analyses:
        top = d.top.with_columns(pl.col("target_text").map_elements(shown, return_dtype=pl.String),
                                 pl.col("draft_text").map_elements(shown, return_dtype=pl.String)) \
            if d.top.height else d.top
        out += [f"<h3>{html.escape(label(d.run))}</h3>",
                html_table(top, ["target_text", "draft_text", "count", "share_of_mismatches", "mean_position",
                                 "reason", "example_1", "example_1_at", "example_2", "example_2_at"],
                           names={"example_1": "example 1: preceding target text",
                                  "example_2": "example 2: preceding target text"},
                           mono=("target_text", "draft_text", "example_1", "example_2")),
                html_table(d.classes, ["token_class", "n", "n_samples", "match_rate", "match_rate_lo",
                                       "match_rate_hi", "mean_summin", "mean_summin_lo", "mean_summin_hi"])]
    out += ["<h2>Acceptance against sample attributes</h2>", fig["attributes"]]
    for d in analyses:
        out += [f"<h3>{html.escape(label(d.run))}</h3>",
                html_table(d.attributes, ["attribute", "group", "n_samples", "n", "match_rate", "match_rate_lo",
                                          "match_rate_hi", "mean_summin", "mean_summin_lo", "mean_summin_hi"])]
    out += ["<h2>Samples: draft and target side by side</h2>",
            '<p class="legend"><span><mark class="tf">target token</mark> the draft, given the target\'s own '
            "prefix, proposed another token (teacher-forced mismatch; hover for it)</span>"
            '<span><mark class="pos">draft token</mark> differs from the target\'s at the same position '
            "(free-running, the seed's comparison)</span>"
            '<span><mark class="unmapped">draft token</mark> has no target id</span></p>']
    for d in analyses:
        out += [f"<h3>{html.escape(label(d.run))}</h3>", samples_html(d, manifests.get(d.run.dataset), max_samples)]
    out += ["</body></html>"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------ Markdown
def render_markdown(runs: Sequence[Run], summary: pl.DataFrame, loop: pl.DataFrame,
                    analyses: Sequence[Divergence], answer_text: str, label,
                    trees: pl.DataFrame | None = None, ablations: pl.DataFrame | None = None,
                grounding: pl.DataFrame | None = None, oracle: pl.DataFrame | None = None) -> str:
    """The page's answer and tables in Markdown (report.py's md_table), the plots linked beside it."""
    def labelled(df: pl.DataFrame, columns: list[str]) -> tuple[pl.DataFrame, list[str]]:
        return _labelled(df, columns, also=PREDICTED)   # the page's set: the model's and the ranking's

    out = ["# specalign: the HTML report's summary", "", answer_text, "",
           "Measured columns are plain; columns of the i.i.d. model are marked (predicted). Intervals: 95% "
           "bootstrap over samples. The full page: `index.html` (self-contained).", "", "## Which draft pays off", ""]
    ranking = draft_ranking(summary, loop) if summary.height else pl.DataFrame()
    if ranking.height:
        df, cols = labelled(ranking, ["dataset", "target", "decoding", "rank", "draft", "leviathan_alpha",
                                      "leviathan_alpha_lo", "leviathan_alpha_hi", "c", "c_lo", "c_hi",
                                      "best_predicted_gamma", "best_predicted_speedup", "best_measured_gamma",
                                      "best_measured_speedup"])
        out.append(md_table(df, cols))
    payoff = payoff_table(summary, trees)
    if payoff.height:
        df, cols = labelled(payoff, PAYOFF_COLUMNS)
        out += ["", "### Measured payoff per deployment (the paired timing job: one device, one job)", "",
                md_table(df, cols)]
    if ablations is not None and ablations.height:
        out += ["", "## Input ablations: alpha beside the plain run's", "", md_table(ablations, ABLATION_COLUMNS)]
    out += ["", "## Plots", ""]
    out += [f"- ![{title}]({name})" for name, title in PLOTS.values()]
    for d in analyses:
        top = d.top
        if top.height:
            cell = lambda t: None if t is None else t.replace("|", "\\|").replace("\n", " ")  # noqa: E731
            top = top.with_columns(pl.col("target_text").map_elements(shown, return_dtype=pl.String),
                                   pl.col("draft_text").map_elements(shown, return_dtype=pl.String),
                                   *(pl.col(c).map_elements(cell, return_dtype=pl.String)
                                     for c in ("example_1", "example_2") if c in top.columns))
        out += ["", f"## {label(d.run)}", "", "First divergence of the free-running answers (the seed's measure; "
                "empty position: identical answers):", "",
                md_table(d.distribution, ["first_divergence", "n", "share", "cumulative_share"]), "",
                "Top teacher-forced disagreements, with the preceding target text of two examples:", "",
                md_table(top, ["target_text", "draft_text", "count", "share_of_mismatches", "reason", "example_1",
                               "example_2"]), "",
                "Acceptance by target token class:", "",
                md_table(d.classes, ["token_class", "n", "match_rate", "match_rate_lo", "match_rate_hi",
                                     "mean_summin", "mean_summin_lo", "mean_summin_hi"]), "",
                "Acceptance against sample attributes:", "",
                md_table(d.attributes, ["attribute", "group", "n_samples", "match_rate", "match_rate_lo",
                                        "match_rate_hi", "mean_summin", "mean_summin_lo", "mean_summin_hi"])]
    return "\n".join(out) + "\n"


def tree_plots(trees: pl.DataFrame, ranks: pl.DataFrame) -> dict[str, bytes]:
    """The trees' two figures (tree_plots.py draws them to files, with their data as CSV): their PNG bytes."""
    import tempfile
    from pathlib import Path

    from .tree_plots import plot_rank_shares, plot_tree_budget

    with tempfile.TemporaryDirectory() as tmp:
        return {"trees": plot_tree_budget(trees, Path(tmp) / "trees.png").read_bytes(),
                "ranks": plot_rank_shares(ranks, Path(tmp) / "ranks.png").read_bytes()}


# ------------------------------------------------------------------------------------ the job
def build_html_report(runs: Sequence[Run], inputs, manifests: Mapping[str, str], n_boot: int = acc.N_BOOT,
                      max_samples: int = MAX_SAMPLES) -> HtmlReport:
    """Everything the report_html rule writes, from its inputs.

    `inputs`: the acceptance CSVs as attributes `summary`, `per_position`, `cost`, `loop`;
    `manifests`: dataset -> manifest Parquet; the runs name every other artifact (stages.runs)."""
    summary_all = read_csv(inputs.summary)
    # the plain runs everywhere; the input ablations' rows have their own table (report.ablation_table)
    summary, per_position = plain_runs(summary_all), plain_runs(read_csv(inputs.per_position))
    ablations = ablation_table(summary_all)
    cost, loop = read_csv(inputs.cost), read_csv(inputs.loop)
    trees = read_csv(inputs.trees) if hasattr(inputs, "trees") else pl.DataFrame()
    ranks = read_csv(inputs.ranks) if hasattr(inputs, "ranks") else pl.DataFrame()
    grounding = read_csv(inputs.grounding) if hasattr(inputs, "grounding") else None
    oracle = read_csv(inputs.oracle) if hasattr(inputs, "oracle") else None
    man = {ds: pl.read_parquet(p) for ds, p in manifests.items()}
    analyses = [analyse_run(r, man.get(r.dataset), n_boot=n_boot) for r in runs]
    n_ds = len({r.dataset for r in runs})

    def label(run: Run) -> str:
        return run_label(run, n_ds)

    plots = {
        "gamma": plot_gamma(runs, summary, label),
        "temperature": plot_temperature(runs, summary, label),
        "speedup": plot_speedup(runs, summary, loop, label),
        "per_position": plot_per_position(runs, per_position, summary, label),
        "divergence": plot_divergence(analyses, label),
        "disagreements": plot_disagreements(analyses, label),
        "attributes": plot_attributes(analyses, label),
        **tree_plots(trees, ranks),
    }
    text = answer(runs, summary, loop, label)
    page = render_html(runs, summary, per_position, cost, loop, analyses, man, plots, text, label, max_samples,
                       trees=trees, ablations=ablations, grounding=grounding, oracle=oracle)
    md = render_markdown(runs, summary, loop, analyses, text, label, trees=trees, ablations=ablations)
    return HtmlReport(html=page, markdown=md, plots=plots)


__all__ = ["PLOTS", "TOKEN_CLASSES", "HtmlReport", "build_html_report", "answer", "temperature"]
