"""The tree plots of the report: tau against the node budget, and the draft's rank of the target's token.

Each function draws one PNG (matplotlib, Agg backend, like report_html.py) from the acceptance
tables and writes the figure's data beside it as CSV (same name, `.csv`), so every plotted number
can be read back. Predicted figures are marked: the construction's expected tau is dashed, and a
speedup whose verify cost was extrapolated (the timing job never timed a pass of that many tokens)
is drawn hollow.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from .artifacts import atomic_path, write_text

KIND_STYLE = {"chain": ("-", "o"), "full": ("", "s"), "paths": ("", "^"), "constructed": ("-", "D")}


def _figure(cols: int, w: float = 5.6, h: float = 3.8):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * cols, h), dpi=100, layout="constrained")
    return fig, fig.subplots(1, cols, squeeze=False)[0]


def _save(fig, data: pl.DataFrame, png_path: str | Path) -> Path:
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    write_text(data.write_csv(float_precision=6), png_path.with_suffix(".csv"))
    return png_path


def _pair(df: pl.DataFrame) -> pl.DataFrame:
    """A `pair` label column: draft → target (with the dataset when there are several)."""
    parts = [pl.col("draft"), pl.lit(" → "), pl.col("target")]
    if df.height and df["dataset"].n_unique() > 1:
        parts = [pl.col("dataset"), pl.lit(" · "), *parts]
    return df.with_columns(pl.concat_str(parts).alias("pair"))


def plot_tree_budget(trees: pl.DataFrame, png_path: str | Path) -> Path:
    """Left: tau (exact replay, 95% interval) against the tree's nodes per pair: chains (line, nodes =
    gamma), full k-ary (squares), configured paths trees (triangles), constructed best trees (line),
    with the construction's expected tau dashed (predicted). Right: the predicted speedup of each
    tree (hollow: verify cost extrapolated, not measured), 1 = plain decoding."""
    fig, (ax_tau, ax_sp) = _figure(2)
    cols = ["pair", "tree", "kind", "nodes", "levels", "tau", "tau_lo", "tau_hi", "expected_tau", "tau_every_start",
            "predicted_speedup", "verify_cost_source"]
    if not trees.height:
        for ax in (ax_tau, ax_sp):
            ax.axis("off")
        ax_tau.text(0.5, 0.5, "no greedy runs: no tree rows", ha="center", va="center")
        return _save(fig, pl.DataFrame({c: [] for c in cols}), png_path)
    df = _pair(trees).sort("pair", "kind", "nodes")
    import matplotlib

    colors = matplotlib.colormaps["tab10"]
    for i, pair in enumerate(df["pair"].unique(maintain_order=True).to_list()):
        color = colors(i % 10)
        for kind, (line, marker) in KIND_STYLE.items():
            part = df.filter((pl.col("pair") == pair) & (pl.col("kind") == kind))
            if not part.height:
                continue
            x = part["nodes"].to_numpy()
            tau = part["tau"].to_numpy()
            err = [tau - part["tau_lo"].to_numpy(), part["tau_hi"].to_numpy() - tau]
            ax_tau.errorbar(x, tau, yerr=err, ls=line or "none", marker=marker, color=color, capsize=2,
                            label=f"{pair}: {kind}")
            if kind == "constructed":
                ax_tau.plot(x, part["expected_tau"].to_numpy(), ls="--", marker=marker, mfc="none", color=color,
                            label=f"{pair}: constructed, expected (predicted)")
            sp = part.filter(pl.col("predicted_speedup").is_not_null())
            for source, fill in (("measured", color), ("extrapolated", "none")):
                s = sp.filter(pl.col("verify_cost_source") == source)
                if s.height:
                    ax_sp.plot(s["nodes"].to_numpy(), s["predicted_speedup"].to_numpy(), ls="none", marker=marker,
                               color=color, mfc=fill, label=f"{pair}: {kind} ({source} verify cost)")
    ax_tau.set_xscale("log", base=2)
    ax_tau.set(xlabel="tree nodes (draft tokens verified per round)", ylabel="tau (tokens per target call)",
               title="acceptance by tree size (exact replay, greedy)")
    ax_sp.set_xscale("log", base=2)
    ax_sp.axhline(1.0, color="grey", lw=0.8)
    ax_sp.set(xlabel="tree nodes", ylabel="speedup (predicted)", title="predicted speedup (hollow: verify cost "
              "extrapolated)")
    for ax in (ax_tau, ax_sp):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return _save(fig, df.select(cols), png_path)


def plot_rank_shares(ranks: pl.DataFrame, png_path: str | Path, show: int = 8) -> Path:
    """How often the target's token is the draft's 1st, 2nd, ... choice (ranks.csv), per pair and
    decoding: bars for the first `show` ranks and one for the rest (beyond, or unreachable)."""
    fig, (ax,) = _figure(1, 7.0)
    if not ranks.height:
        ax.axis("off")
        ax.text(0.5, 0.5, "no rank rows", ha="center", va="center")
        return _save(fig, pl.DataFrame({"pair": [], "decoding": [], "choice": [], "share": []}), png_path)
    df = _pair(ranks).with_columns(
        pl.when(pl.col("rank") < show).then((pl.col("rank") + 1).cast(pl.String))
        .otherwise(pl.lit(f">{show}")).alias("choice"))
    data = (df.group_by("pair", "decoding", "choice", maintain_order=True)
            .agg(pl.col("positions").sum(), pl.col("share").sum()))
    groups = data.select("pair", "decoding").unique(maintain_order=True).rows()
    choices = [str(i) for i in range(1, show + 1)] + [f">{show}"]
    width = 0.8 / max(len(groups), 1)
    import matplotlib

    colors = matplotlib.colormaps["tab10"]
    for g, (pair, dec) in enumerate(groups):
        part = dict(data.filter((pl.col("pair") == pair) & (pl.col("decoding") == dec)).select("choice", "share")
                    .iter_rows())
        ax.bar([i + g * width for i in range(len(choices))], [part.get(c, 0.0) for c in choices], width,
               color=colors(g % 10), label=f"{pair} · {dec}")
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(choices))], choices)
    ax.set(xlabel="the target's token is the draft's ... choice", ylabel="share of positions",
           title="rank of the target's token among the draft's proposals (teacher forced)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _save(fig, data, png_path)
