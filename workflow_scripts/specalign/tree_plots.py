"""The tree plots of the report: tau against the node budget, and the draft's rank of the target's token.

Each function returns a report_plots.Plot: the PNG (matplotlib, Agg backend), the figure's data
(the CSV the report writes beside the PNG, so every plotted number can be read back) and alt text.
Predicted figures are marked: the construction's expected tau is dashed, and a speedup whose verify
cost was extrapolated (the timing job never timed a pass of that many tokens) is drawn hollow.
"""
from __future__ import annotations

import polars as pl

from .report_plots import Plot, _empty, _figure, _legend, _png, _style
from .specs import run_label

KIND_STYLE = {"chain": ("-", "o"), "full": ("", "s"), "paths": ("", "^"), "constructed": ("-", "D")}


def _pair(df: pl.DataFrame) -> pl.DataFrame:
    """A `pair` label column: draft → target, with the dataset when there are several (specs.run_label)."""
    several = bool(df.height) and df["dataset"].n_unique() > 1
    labels = [run_label(k, several) for k in df.select("dataset", "draft", "target").iter_rows(named=True)]
    return df.with_columns(pl.Series("pair", labels, dtype=pl.String))


def plot_tree_budget(trees: pl.DataFrame) -> Plot:
    """Left: tau (exact replay, 95% interval) against the tree's nodes per pair: chains (line, nodes =
    gamma), full k-ary (squares), configured paths trees (triangles), constructed best trees (line),
    with the construction's expected tau dashed (predicted). Right: the predicted speedup of each
    tree (hollow: verify cost extrapolated, not measured), 1 = plain decoding."""
    cols = ["pair", "tree", "kind", "nodes", "levels", "tau", "tau_lo", "tau_hi", "expected_tau", "tau_every_start",
            "predicted_speedup", "verify_cost_source"]
    if not trees.height:
        return _empty("no tree rows (no greedy run, or no trees table)", pl.DataFrame({c: [] for c in cols}))
    fig, (ax_tau, ax_sp) = _figure(2)
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
                            label=pair)
            if kind == "constructed":
                ax_tau.plot(x, part["expected_tau"].to_numpy(), ls="--", marker=marker, mfc="none", color=color)
            sp = part.filter(pl.col("predicted_speedup").is_not_null())
            for source, fill in (("measured", color), ("interpolated", color), ("extrapolated", "none")):
                s = sp.filter(pl.col("verify_cost_source") == source)
                if s.height:
                    ax_sp.plot(s["nodes"].to_numpy(), s["predicted_speedup"].to_numpy(), ls="none", marker=marker,
                               color=color, mfc=fill)
    ax_tau.set_xscale("log", base=2)
    ax_tau.set(xlabel="tree nodes (draft tokens verified per round)", ylabel="tau (tokens per target call)",
               title="tau by tree size (exact replay)")
    ax_sp.set_xscale("log", base=2)
    ax_sp.axhline(1.0, color="grey", lw=0.8)
    ax_sp.set(xlabel="tree nodes", ylabel="speedup (predicted)", title="predicted speedup per tree")
    for ax in (ax_tau, ax_sp):
        ax.grid(alpha=0.3)
    key = [_style(f"{kind} tree" if kind != "chain" else "chain (nodes = gamma)", ls=line or "none", marker=marker)
           for kind, (line, marker) in KIND_STYLE.items()]
    key += [_style("constructed, expected tau (predicted)", ls="--", marker="D", mfc="none"),
            _style("hollow: verify cost extrapolated", ls="none", marker="o", mfc="none")]
    _legend(fig, [ax_tau, ax_sp], key)
    return Plot(_png(fig), df.select(cols),
                f"Left: tau of every replayed static tree against its node count (chains, full trees, configured "
                f"and constructed trees), with 95% intervals and the constructed trees' expected tau dashed. Right: "
                f"each tree's predicted speedup. {df['pair'].n_unique()} draft-target pairs in one colour each; the "
                f"numbers are in tree_budget.csv.")


def plot_rank_shares(ranks: pl.DataFrame, show: int = 8) -> Plot:
    """How often the target's token is the draft's 1st, 2nd, ... choice (ranks.csv), per pair and
    decoding: bars for the first `show` ranks and one for the rest (beyond, or unreachable)."""
    if not ranks.height:
        return _empty("no rank rows", pl.DataFrame({"pair": [], "decoding": [], "choice": [], "share": []}))
    fig, (ax,) = _figure(1, 7.0)
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
    _legend(fig, [ax])
    return Plot(_png(fig), data, f"Grouped bars: the share of target tokens that are the draft's 1st, 2nd, ... "
                                 f"choice (teacher forced), {len(groups)} runs in one colour each; the numbers are "
                                 f"in rank_shares.csv.")
