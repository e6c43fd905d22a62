"""The page's figures: drafts compared on shared axes, each figure's data kept beside it.

Every function returns a `Plot`: the PNG (matplotlib, Agg backend), the table of every number it
draws (written as CSV beside the PNG, so whoever re-plots reads the same numbers) and alt text.
Comparisons share axes: each run (dataset x draft x target x decoding) is one colour on one set of
axes, the same colour in every figure (`RunColours`), instead of a panel per run, so the page's
height does not grow with the number of runs. Legends sit outside the data, right of the axes.

Measured and predicted are told apart in every figure: measured values are solid lines or filled
markers with their 95% bootstrap intervals; a model's prediction (the i.i.d. model, payoff.py's
cost model, the tree construction's independence) is dashed or hollow and says "(predicted)" in
its legend entry and in its data's column name.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import polars as pl

from .divergence import ATTRIBUTES, Divergence
from .report_format import num
from .specs import Run, run_label
from .speedup import expected_speedup

# plot key -> (file name under results/report/, title)
PLOTS: dict[str, tuple[str, str]] = {
    "speedup": ("speedup_grid.png", "Measured speedup against gamma, and every run on the predicted (alpha, c) map"),
    "gamma": ("acceptance_vs_gamma.png", "Acceptance and tau against gamma"),
    "temperature": ("acceptance_vs_temperature.png", "Acceptance against temperature"),
    "per_position": ("per_position.png", "Conditional acceptance per draft position"),
    "trees": ("tree_budget.png", "Tau against the tree's node budget, and the trees' predicted speedup"),
    "ranks": ("rank_shares.png", "How often the target's token is the draft's 1st, 2nd, ... choice"),
    "divergence": ("first_divergence.png", "First divergence (the seed's measure) beside teacher-forced acceptance"),
    "disagreements": ("disagreements.png", "Acceptance by target token class"),
    "attributes": ("sample_attributes.png", "Acceptance against sample attributes"),
}

ALPHA_GRID = np.linspace(0.0, 0.99, 100)   # the (alpha, c) map's axes
MAX_GAMMA = 16                             # the map's speedup: the best gamma up to this


@dataclass
class Plot:
    png: bytes
    data: pl.DataFrame   # every number drawn, one row per point (the CSV beside the PNG)
    alt: str             # what the figure shows, in words


class RunColours:
    """One colour per run, the same in every figure (runs in the page's order)."""

    def __init__(self, runs: Sequence[Run]):
        import matplotlib

        cmap = matplotlib.colormaps["tab10" if len(runs) <= 10 else "tab20"]
        self.with_dataset = len({r.dataset for r in runs}) > 1
        self.labels = {self.key(r.keys): r.label(self.with_dataset) for r in runs}
        self.colours = {k: cmap(i % cmap.N) for i, k in enumerate(self.labels)}
        self.by_label = {self.labels[k]: c for k, c in self.colours.items()}

    @staticmethod
    def key(keys) -> tuple:
        return tuple(str(keys[k]) for k in ("dataset", "draft", "target", "decoding"))

    def __call__(self, keys) -> tuple:
        return self.colours.get(self.key(keys), (0.3, 0.3, 0.3, 1.0))

    def label(self, keys) -> str:
        return self.labels.get(self.key(keys), " · ".join(self.key(keys)))


# ------------------------------------------------------------------------------------ helpers
def _figure(cols: int, w: float = 4.6, h: float = 3.0, legend: bool = True):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * cols + (2.6 if legend else 0), h), dpi=100, layout="constrained")
    return fig, list(fig.subplots(1, cols, squeeze=False)[0])


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _legend(fig, axes, extra: Sequence = (), colours: "RunColours | None" = None) -> None:
    """One legend for the figure, outside the axes (right): the runs' entries (a run's entry is its
    colour, whatever line style the first artist drawn for it had), then the style key."""
    handles, labels, seen = [], [], set()
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in seen:
                seen.add(lab)
                run_colour = colours.by_label.get(lab) if colours is not None else None
                handles.append(_style(lab, color=run_colour, marker="o") if run_colour is not None else h)
                labels.append(lab)
    for h in extra:
        handles.append(h)
        labels.append(h.get_label())
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)


def _style(label: str, **kw):
    from matplotlib.lines import Line2D

    return Line2D([], [], label=label, color=kw.pop("color", "0.3"), **kw)


def _empty(message: str, data: pl.DataFrame | None = None) -> Plot:
    fig, (ax,) = _figure(1, 6, 1.2, legend=False)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    return Plot(_png(fig), data if data is not None else pl.DataFrame({"note": [message]}), f"No figure: {message}.")


def _rows(df: pl.DataFrame, keys) -> pl.DataFrame:
    out = df
    for k, v in keys.items():
        if k in out.columns:
            out = out.filter(pl.col(k).cast(pl.String) == str(v))
    return out


def _each_run(runs: Sequence[Run], df: pl.DataFrame, colours: RunColours):
    """(run, its rows of `df` by gamma, its colour, its label) for every run with rows."""
    for run in runs:
        rows = _rows(df, run.keys).sort("gamma")
        if rows.height:
            yield run, rows, colours(run.keys), colours.label(run.keys)


def _err(lo, v, hi):
    lo, v, hi = (np.asarray([num(x) for x in a], dtype=float) for a in (lo, v, hi))
    return np.vstack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])


def _integer_ticks(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for x in axes:
        x.xaxis.set_major_locator(MaxNLocator(integer=True))


def _with_label(df: pl.DataFrame, colours: RunColours) -> pl.DataFrame:
    """`df` with a leading `run` column: the run's label (specs.run_label)."""
    labels = [colours.label(r) for r in df.select([c for c in ("dataset", "draft", "target", "decoding")
                                                   if c in df.columns]).iter_rows(named=True)]
    return df.with_columns(pl.Series("run", labels, dtype=pl.String)).select("run", pl.exclude("run"))


def _select(df: pl.DataFrame, cols: Sequence[str]) -> pl.DataFrame:
    return df.select([c for c in cols if c in df.columns])


def _alt(what: str, runs: int, csv_hint: str) -> str:
    return f"{what} {runs} run{'s' if runs != 1 else ''} in one colour each; the numbers are in {csv_hint}."


def temperature(run: Run) -> float:
    """The decoding's temperature; greedy decoding is temperature 0."""
    return 0.0 if run.decoding.greedy else float(run.decoding.temperature)


# ------------------------------------------------------------------------------------ figures
def plot_speedup(runs: Sequence[Run], summary: pl.DataFrame, colours: RunColours) -> Plot:
    """Left: the real loop's measured speedup per gamma (the paired timing job's, 95% CI), the i.i.d.
    prediction at the measured c dashed. Right: the i.i.d. model's best speedup over gamma <= 16 on the
    (alpha, c) plane (predicted; contour 1 in black), each run a point at its measured alpha and c with
    their intervals: a run below the black line is predicted to pay off."""
    if not summary.height:
        return _empty("no summary rows")
    fig, (left, right) = _figure(2)
    rows = []
    for run, s, col, lab in _each_run(runs, summary, colours):
        if "measured_speedup" in s.columns:
            m = s.filter(pl.col("measured_speedup").is_not_null())
            if m.height:
                left.errorbar(m["gamma"], m["measured_speedup"], capsize=3, marker="o", color=col, label=lab,
                              yerr=_err(m["measured_speedup_lo"], m["measured_speedup"], m["measured_speedup_hi"]))
        if "expected_speedup_iid" in s.columns and s["expected_speedup_iid"].drop_nulls().len():
            left.plot(s["gamma"], s["expected_speedup_iid"], ls="--", lw=1, color=col, label=lab)
        r = s.row(0, named=True)
        a, c = num(r.get("leviathan_alpha")), num(r.get("c"))
        if math.isfinite(a) and math.isfinite(c):
            right.errorbar([a], [c], fmt="o", color=col, capsize=3, label=lab,
                           xerr=_err([r.get("leviathan_alpha_lo")], [a], [r.get("leviathan_alpha_hi")]),
                           yerr=_err([r.get("c_lo")], [c], [r.get("c_hi")]))
        rows.append(_select(s, ["dataset", "draft", "target", "decoding", "gamma", "measured_speedup",
                                "measured_speedup_lo", "measured_speedup_hi", "device", "expected_speedup_iid",
                                "leviathan_alpha", "leviathan_alpha_lo", "leviathan_alpha_hi", "c", "c_lo", "c_hi"]))
    if not left.get_legend_handles_labels()[0]:
        left.text(0.5, 0.5, "no run was timed and no c measured", ha="center", transform=left.transAxes)
    left.axhline(1.0, color="k", lw=0.8)
    left.set(xlabel="gamma (draft tokens per round)", ylabel="speedup over target only",
             title="the loop's speedup per gamma")
    left.grid(alpha=0.3)
    _integer_ticks(left)
    cs = [num(x) for df in rows for k in ("c", "c_hi") if k in df.columns for x in df[k].to_list()]
    c_top = max([1.25, *(1.1 * x for x in cs if math.isfinite(x))])
    c_grid = np.linspace(0.02, c_top, 80)
    grid = np.array([[max(expected_speedup(float(a), g, float(c)) for g in range(1, MAX_GAMMA + 1))
                      for a in ALPHA_GRID] for c in c_grid])
    im = right.pcolormesh(ALPHA_GRID, c_grid, grid, cmap="RdYlGn", vmin=0, vmax=max(2.0, float(grid.max())),
                          shading="nearest", alpha=0.55)
    right.contour(ALPHA_GRID, c_grid, grid, levels=[1.0], colors="k", linewidths=1.2)
    fig.colorbar(im, ax=right, label="speedup (predicted)")
    right.set(xlabel="leviathan_alpha (measured)", ylabel="c: draft / target step (measured)",
              xlim=(0, 1), ylim=(0, c_top), title="runs on the predicted (alpha, c) map")
    _legend(fig, [left, right], [_style("measured, 95% CI", marker="o"), _style("predicted (i.i.d.)", ls="--"),
                                 _style("speedup 1 (predicted)", color="k")], colours)
    data = _with_label(pl.concat(rows, how="diagonal_relaxed"), colours) if rows else pl.DataFrame()
    return Plot(_png(fig), data, _alt("Left: measured speedup of the draft-verify loop against gamma, with 95% "
                                      "intervals, and the i.i.d. prediction dashed. Right: a predicted speedup map "
                                      "over alpha and c with the break-even contour, each run placed at its measured "
                                      "alpha and c.", len(rows), "speedup_grid.csv"))


def plot_gamma(runs: Sequence[Run], summary: pl.DataFrame, colours: RunColours) -> Plot:
    """Left: the token acceptance rate per gamma (measured, CI), the i.i.d. prediction dashed, alpha
    (measured) as a dotted level. Right: tau per gamma, measured and predicted."""
    if not summary.height:
        return _empty("no summary rows")
    fig, (a, t) = _figure(2)
    rows = []
    for run, s, col, lab in _each_run(runs, summary, colours):
        a.axhline(num(s["leviathan_alpha"][0]), color=col, ls=":", lw=1.2)
        m = s.filter(pl.col("token_acceptance_rate").is_not_null())
        if m.height:
            a.errorbar(m["gamma"], m["token_acceptance_rate"], capsize=3, marker="o", color=col, label=lab,
                       yerr=_err(m["token_acceptance_rate_lo"], m["token_acceptance_rate"],
                                 m["token_acceptance_rate_hi"]))
        a.plot(s["gamma"], s["iid_token_acceptance"], ls="--", lw=1, color=col, label=lab)
        m = s.filter(pl.col("tau").is_not_null())
        if m.height:
            t.errorbar(m["gamma"], m["tau"], yerr=_err(m["tau_lo"], m["tau"], m["tau_hi"]), capsize=3, marker="o",
                       color=col, label=lab)
        t.plot(s["gamma"], s["iid_tau"], ls="--", lw=1, color=col, label=lab)
        rows.append(_select(s, ["dataset", "draft", "target", "decoding", "gamma", "method", "leviathan_alpha",
                                "leviathan_alpha_lo", "leviathan_alpha_hi", "token_acceptance_rate",
                                "token_acceptance_rate_lo", "token_acceptance_rate_hi", "iid_token_acceptance",
                                "tau", "tau_lo", "tau_hi", "iid_tau"]))
    a.set(xlabel="gamma (draft tokens per round)", ylabel="acceptance", ylim=(-0.02, 1.05),
          title="token acceptance rate (alpha dotted)")
    t.set(xlabel="gamma (draft tokens per round)", ylabel="tau (accepted + 1 per round)", title="tau")
    t.set_ylim(bottom=0.9)
    for x in (a, t):
        x.grid(alpha=0.3)
    _integer_ticks(a, t)
    _legend(fig, [a, t], [_style("measured, 95% CI", marker="o"), _style("predicted (i.i.d.)", ls="--"),
                          _style("leviathan_alpha (measured)", ls=":")], colours)
    data = _with_label(pl.concat(rows, how="diagonal_relaxed"), colours) if rows else pl.DataFrame()
    return Plot(_png(fig), data, _alt("Left: token acceptance rate against gamma, measured with 95% intervals, "
                                      "the i.i.d. prediction dashed and alpha dotted. Right: tau against gamma, "
                                      "measured and predicted.", len(rows), "acceptance_vs_gamma.csv"))


def plot_temperature(runs: Sequence[Run], summary: pl.DataFrame, colours: RunColours) -> Plot:
    """Alpha (measured, CI) and tau at the smallest gamma against the decoding's temperature, one
    line per pair (the pair's colour is its first run's)."""
    if not summary.height:
        return _empty("no summary rows")
    fig, (a, t) = _figure(2)
    pairs: dict[tuple, list[Run]] = {}
    for r in runs:
        pairs.setdefault((r.dataset, r.draft, r.target), []).append(r)
    rows = []
    for (ds, draft, target), mine in pairs.items():
        mine = sorted(mine, key=temperature)
        col = colours(mine[0].keys)
        lab = run_label({"dataset": ds, "draft": draft, "target": target}, colours.with_dataset)
        pts = []
        for r in mine:
            s = _rows(summary, r.keys).sort("gamma")
            if s.height:
                row = s.row(0, named=True)
                pts.append({"dataset": ds, "draft": draft, "target": target, "decoding": r.decoding.name,
                            "temperature": temperature(r), "gamma": row["gamma"],
                            **{k: row.get(k) for k in ("leviathan_alpha", "leviathan_alpha_lo", "leviathan_alpha_hi",
                                                       "tau", "tau_lo", "tau_hi")}})
        if not pts:
            continue
        p = pl.DataFrame(pts, infer_schema_length=None)
        a.errorbar(p["temperature"], p["leviathan_alpha"], capsize=3, marker="o", color=col, label=lab,
                   yerr=_err(p["leviathan_alpha_lo"], p["leviathan_alpha"], p["leviathan_alpha_hi"]))
        m = p.filter(pl.col("tau").is_not_null())
        if m.height:
            t.errorbar(m["temperature"], m["tau"], yerr=_err(m["tau_lo"], m["tau"], m["tau_hi"]), capsize=3,
                       marker="o", color=col, label=lab)
        rows.append(p)
    a.set(xlabel="temperature (greedy = 0)", ylabel="leviathan_alpha", ylim=(-0.02, 1.05),
          title="alpha against temperature (measured)")
    t.set(xlabel="temperature (greedy = 0)", ylabel="tau at the smallest gamma",
          title="tau against temperature (measured)")
    for x in (a, t):
        x.grid(alpha=0.3)
    _legend(fig, [a, t])
    data = pl.concat(rows, how="diagonal_relaxed") if rows else pl.DataFrame()
    return Plot(_png(fig), data, f"Alpha and tau against the decoding temperature, measured with 95% intervals, "
                                 f"{len(rows)} draft-target pairs in one colour each; the numbers are in "
                                 "acceptance_vs_temperature.csv.")


def plot_per_position(runs: Sequence[Run], per_position: pl.DataFrame, summary: pl.DataFrame,
                      colours: RunColours) -> Plot:
    """P(accept position i | accepted i-1) at each run's largest gamma (measured), alpha dashed: the
    i.i.d. model predicts alpha at every position."""
    if not per_position.height:
        return _empty("no per-position rows")
    fig, (x,) = _figure(1, 6.0)
    rows, top = [], 1
    for run in runs:
        p = _rows(per_position, run.keys)
        if not p.height:
            continue
        g = int(p["gamma"].max())
        q = p.filter((pl.col("gamma") == g) & pl.col("conditional").is_not_null()).sort("position")
        col, lab = colours(run.keys), colours.label(run.keys)
        if q.height:
            x.plot(q["position"], q["conditional"], marker="o", color=col, label=f"{lab} (gamma {g})")
            top = max(top, g)
            rows.append(_select(q, ["dataset", "draft", "target", "decoding", "gamma", "position", "method",
                                    "conditional"]))
        s = _rows(summary, run.keys)
        if s.height:
            x.axhline(num(s["leviathan_alpha"][0]), color=col, ls="--", lw=0.8)
    x.set(xlabel="draft position i in the round", ylabel="P(accept i | accepted i-1)", ylim=(-0.02, 1.05),
          title="conditional acceptance, largest gamma")
    x.set_xlim(0.5, top + 0.5)
    x.set_xticks(range(1, top + 1))
    x.grid(alpha=0.3)
    _legend(fig, [x], [_style("measured", marker="o"), _style("i.i.d.: alpha everywhere (predicted)", ls="--")],
            colours)
    data = _with_label(pl.concat(rows, how="diagonal_relaxed"), colours) if rows else pl.DataFrame()
    return Plot(_png(fig), data, _alt("Conditional acceptance per draft position at each run's largest gamma, "
                                      "measured, with alpha dashed as the i.i.d. prediction.", len(rows),
                                      "per_position.csv (every gamma in results/acceptance/per_position.csv)"))


def plot_divergence(analyses: Sequence[Divergence], colours: RunColours) -> Plot:
    """Left: the share of samples whose two free-running answers are still identical up to each
    position (where the seed's positional comparison stops meaning anything). Right: per position,
    the teacher-forced argmax match (measured, what speculative decoding gets) solid, the seed's
    free-running positional match dotted."""
    if not analyses:
        return _empty("no runs")
    fig, (left, right) = _figure(2)
    rows = []
    for d in analyses:
        col, lab = colours(d.run.keys), colours.label(d.run.keys)
        pos, tf = d.positional, d.teacher_forced
        if pos.height:
            left.plot(pos["position"], pos["still_identical"], color=col, label=lab)
            right.plot(pos["position"], pos["positional_match_rate"], color=col, ls=":", marker="x", ms=4)
        if tf.height:
            right.plot(tf["position"], tf["match_rate"], color=col, marker="o", ms=3, label=lab)
        part = (_select(tf, ["position", "match_rate", "match_rate_lo", "match_rate_hi", "mean_summin"])
                .join(_select(pos, ["position", "positional_match_rate", "positional_match_rate_lo",
                                    "positional_match_rate_hi", "still_identical"]), on="position", how="full",
                      coalesce=True) if tf.height and pos.height else tf if tf.height else pos)
        if part.height:
            rows.append(part.sort("position").with_columns(*(pl.lit(v).alias(k) for k, v in d.run.keys.items())))
    left.set(xlabel="answer position", ylabel="share of samples", ylim=(-0.02, 1.05),
             title="free-running answers still identical")
    right.set(xlabel="answer position", ylabel="rate", ylim=(-0.02, 1.05),
              title="teacher-forced vs positional match")
    for x in (left, right):
        x.grid(alpha=0.3)
    _integer_ticks(left, right)
    _legend(fig, [left, right], [_style("teacher-forced match (measured)", marker="o"),
                                 _style("positional match, free-running (the seed's)", ls=":", marker="x")], colours)
    data = (_with_label(pl.concat(rows, how="diagonal_relaxed"), colours).select(
        "run", "dataset", "draft", "target", "decoding", pl.exclude("run", "dataset", "draft", "target", "decoding"))
        if rows else pl.DataFrame())
    return Plot(_png(fig), data, _alt("Left: share of samples whose free-running answers are still identical by "
                                      "position. Right: teacher-forced match rate by position beside the seed's "
                                      "positional match.", len(analyses), "first_divergence.csv"))


def plot_disagreements(analyses: Sequence[Divergence], colours: RunColours) -> Plot:
    """Teacher-forced argmax match by the class of the target token (divergence.TOKEN_CLASSES), runs
    as grouped bars with 95% CIs; the class's share of the run's target tokens under each group."""
    if not analyses:
        return _empty("no runs")
    fig, (ax,) = _figure(1, 7.5)
    parts = [d.classes.with_columns(*(pl.lit(v).alias(k) for k, v in d.run.keys.items()))
             for d in analyses if d.classes.height]
    if not parts:
        return _empty("no token classes")
    data = _with_label(pl.concat(parts, how="diagonal_relaxed"), colours)
    classes = data["token_class"].unique(maintain_order=True).to_list()
    width = 0.8 / len(analyses)
    for k, d in enumerate(analyses):
        c = d.classes
        if not c.height:
            continue
        idx = [classes.index(x) + k * width - 0.4 + width / 2 for x in c["token_class"]]
        ax.bar(idx, c["match_rate"], width, color=colours(d.run.keys), label=colours.label(d.run.keys),
               yerr=_err(c["match_rate_lo"], c["match_rate"], c["match_rate_hi"]), capsize=2)
    ax.set_xticks(range(len(classes)), classes)
    ax.set(ylabel="teacher-forced argmax match (measured)", ylim=(0, 1.1),
           title="acceptance by the class of the target's token")
    ax.grid(alpha=0.3, axis="y")
    _legend(fig, [ax], colours=colours)
    return Plot(_png(fig), _select(data, ["run", "dataset", "draft", "target", "decoding", "token_class", "n",
                                          "n_samples", "match_rate", "match_rate_lo", "match_rate_hi",
                                          "mean_summin", "mean_summin_lo", "mean_summin_hi"]),
                _alt("Grouped bars: teacher-forced match rate by target token class with 95% intervals,",
                     len(parts), "disagreements.csv"))


def plot_attributes(analyses: Sequence[Divergence], colours: RunColours) -> Plot:
    """Teacher-forced match against each sample attribute of the manifest (numeric ones in quantile
    bins), one panel per attribute, runs as series on shared axes, 95% CIs."""
    parts = [d.attributes.with_columns(*(pl.lit(v).alias(k) for k, v in d.run.keys.items()))
             for d in analyses if d.attributes.height]
    if not parts:
        return _empty("no sample attributes")
    data = _with_label(pl.concat(parts, how="diagonal_relaxed"), colours)
    attrs = [a for a in ATTRIBUTES if a in set(data["attribute"].to_list())]
    fig, axes = _figure(len(attrs), 3.6)
    n = len(analyses)
    for ax, attr in zip(axes, attrs):
        sub = data.filter(pl.col("attribute") == attr).sort("order")
        groups = sub["group"].unique(maintain_order=True).to_list()
        for k, d in enumerate(analyses):
            p = _rows(sub, d.run.keys)
            if not p.height:
                continue
            xs = [groups.index(g) + (k - (n - 1) / 2) * 0.6 / max(n, 1) for g in p["group"]]
            ax.errorbar(xs, p["match_rate"], capsize=2, marker="o", ls="none", color=colours(d.run.keys),
                        label=colours.label(d.run.keys),
                        yerr=_err(p["match_rate_lo"], p["match_rate"], p["match_rate_hi"]))
        ax.set_xticks(range(len(groups)), [g if len(g) <= 18 else g[:17] + "…" for g in groups], fontsize=7,
                      rotation=20)
        ax.set(xlabel=attr, ylim=(-0.02, 1.05), title=attr)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("teacher-forced match (measured)")
    _legend(fig, axes, colours=colours)
    return Plot(_png(fig), data, _alt("Teacher-forced match rate against the samples' duration, event count and "
                                      "question, with 95% intervals,", len(parts), "sample_attributes.csv"))


__all__ = ["PLOTS", "Plot", "RunColours", "plot_attributes", "plot_disagreements", "plot_divergence", "plot_gamma",
           "plot_per_position", "plot_speedup", "plot_temperature", "temperature"]
