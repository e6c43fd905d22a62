"""The tree tables of rule acceptance: trees.csv, tree_histograms.csv, ranks.csv.

- `trees.csv`, one row per run x tree, GREEDY runs only (the replay is exact there; sampled
  decodings are left out: tree speculative sampling is not the greedy path walk, trees.py).
  Trees: the chain of every gamma (chain{g}: width 1, depth g; its rows equal summary.csv's
  greedy_replay rows), the configured `trees:`, and per node budget N of `tree_budgets` the
  constructed tree best{N} (trees.construct). Columns:
  - tree, kind (chain | full | paths | constructed), width, depth (chain / full trees only: empty for
    paths and constructed trees, as the config writes them), levels (the tree's depth whatever its
    kind: draft passes per round), nodes, budget (constructed), paths (the rank paths, JSON);
  - MEASURED (exact replay): n_samples, rounds, drafted (nodes of the depth-capped trees), accepted,
    emitted, tau, tokens_per_call, node_acceptance_rate (accepted / drafted), *_lo / *_hi (95%
    bootstrap over samples, bootstrap.bootstrap_ci);
  - PREDICTED: expected_tau (constructed trees: 1 + the construction's expected accepted length under
    the independence assumption, beside the replayed tau); MEASURED beside it, tau_every_start: 1 + the
    mean accepted length of a round started at every position (trees.path_lengths, capped at the
    depth), the quantity the construction estimates without assuming independence: expected_tau -
    tau_every_start is what independence costs, tau_every_start - tau what the rounds' real start
    positions (and the length budget) change;
  - cost, from the run's ONE paired timing job (timing.py): device, c, verify_tokens (nodes + 1: the
    tree's one verify pass), verify_cost (that pass / one target decode step) and verify_cost_source:
    `measured` where the timing job timed a verify pass of nodes + 1 tokens, `interpolated` between two
    timed sizes (the job times stages.TREE_VERIFY_SIZES for the trees), `extrapolated` (a least-squares
    line through the measured ones) beyond them, empty without timings; then PREDICTED by
    payoff.predict with gamma = levels (one draft pass per level, costed as one draft decode step
    each: tree attention's wider passes are approximated as one step) and the tree's measured
    marginals P(accepted >= i): round_cost, predicted_speedup (prefills sequential),
    predicted_speedup_overlapped, predicted_speedup_steady; best_tree / best_chain: the run's highest
    predicted_speedup among all its trees / among its chains.
- `tree_histograms.csv`: per run x tree, rounds by accepted length (0..levels).
- `ranks.csv`: per run (every decoding: for a sampled one, the rank of the target's sampled token),
  how often the target's token is the draft's 1st, 2nd, ... choice: rank, positions, share; rank =
  rank_k means beyond the scored top rank_k or unreachable.
"""
from __future__ import annotations

import json
import math
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from . import payoff, timing
from . import trees as T
from .bootstrap import bootstrap_ci
from .replay import Rounds, _ratio
from .specs import Run

KEYS = ("dataset", "draft", "target", "decoding")


def _verify_cost(tim: dict, nodes: int) -> tuple[float | None, str | None]:
    """(verify cost of nodes + 1 tokens, measured | interpolated | extrapolated); (None, None) without
    verify timings. Between two timed sizes: the straight line between them (the timing job times the
    trees' sizes, stages.TREE_VERIFY_SIZES); beyond them: the least-squares line through all."""
    measured = {int(k): v["verify_cost"] for k, v in tim["verify"].items() if math.isfinite(v["verify_cost"])}
    if nodes in measured:
        return measured[nodes], "measured"
    if not measured:
        return None, None
    ks = np.array(sorted(measured), dtype=np.float64)
    vs = np.array([measured[int(k)] for k in ks])
    if ks[0] < nodes < ks[-1]:
        return float(np.interp(nodes, ks, vs)), "interpolated"
    # one point: the cost is taken as flat; more: the least-squares line in the token count
    slope, icept = (0.0, float(vs[0])) if len(ks) < 2 else np.polyfit(ks, vs, 1)
    return max(float(icept + slope * nodes), 0.0), "extrapolated"


def _cost_columns(tim: dict | None, tree: T.Tree, accepted: np.ndarray, mean_len: float | None) -> dict:
    out = dict.fromkeys(("device", "c", "verify_cost", "verify_cost_source", "round_cost", "predicted_speedup",
                         "predicted_speedup_overlapped", "predicted_speedup_steady"))
    out["verify_tokens"] = tree.nodes + 1
    if tim is None:
        return out
    out["device"], out["c"] = tim["device"], tim["c"]
    v, source = _verify_cost(tim, tree.nodes)
    out["verify_cost"], out["verify_cost_source"] = v, source
    step = tim["target_step_ms"]
    if v is None or not (math.isfinite(step) and step > 0 and math.isfinite(tim["c"])) or not len(accepted):
        return out
    overhead = tim["round_overhead_ms"] if math.isfinite(tim["round_overhead_ms"]) else 0.0
    o = max(0.0, overhead) / step
    p = payoff.predict(tree.depth, payoff.marginals(accepted, tree.depth), tim["c"], v, o,
                       tim["draft_prefill_ms"] / step, tim["target_prefill_ms"] / step, mean_len or 1.0)
    out.update(round_cost=p.round_cost, predicted_speedup=p.speedup_sequential,
               predicted_speedup_overlapped=p.speedup_overlapped, predicted_speedup_steady=p.steady_speedup)
    return out


def tree_row(keys: dict, tree: T.Tree, rounds: Rounds, n_boot: int, seed: int = 0) -> dict:
    """The replay's measured columns for one tree (the core of a trees.csv row)."""
    a, e, d = (rounds.per_sample(x) for x in (rounds.accepted, rounds.emitted, rounds.drafted))
    r = rounds.per_sample(None)
    n_rounds, accepted = len(rounds.sample), int(rounds.accepted.sum())
    row = {**keys, "tree": tree.name, "kind": tree.kind,
           "width": tree.width if tree.kind in ("chain", "full") else None,
           "depth": tree.depth if tree.kind in ("chain", "full") else None,
           "levels": tree.depth, "nodes": tree.nodes, "budget": tree.budget,
           "paths": json.dumps([list(p) for p in tree.paths], separators=(",", ":")),
           "exact": True, "n_samples": len(rounds.sample_ids), "rounds": n_rounds,
           "drafted": int(rounds.drafted.sum()), "accepted": accepted, "emitted": int(rounds.emitted.sum()),
           "tau": _ratio(accepted + n_rounds, n_rounds),
           "tokens_per_call": _ratio(rounds.emitted.sum(), n_rounds),
           "node_acceptance_rate": _ratio(accepted, rounds.drafted.sum())}
    row["tau_lo"], row["tau_hi"] = bootstrap_ci(a + r, r, n_boot, seed)
    row["tokens_per_call_lo"], row["tokens_per_call_hi"] = bootstrap_ci(e, r, n_boot, seed)
    row["node_acceptance_rate_lo"], row["node_acceptance_rate_hi"] = bootstrap_ci(a, d, n_boot, seed)
    row["expected_tau"] = None if tree.expected_accepted is None else 1.0 + tree.expected_accepted
    return row


def tau_every_start(rs: T.RankStreams, tree: T.Tree) -> float:
    """1 + the mean over every stream position of the accepted length of a round starting there."""
    lengths = T.path_lengths(rs, tree)
    return 1.0 + float(lengths.mean()) if len(lengths) else float("nan")


def rank_rows(keys: dict, scores: pl.DataFrame, rank_k: int) -> list[dict]:
    """How often the target's token is the draft's 1st, 2nd, ... choice (rank rank_k: beyond / unreachable)."""
    ranks = np.minimum(scores["target_rank"].to_numpy().astype(np.int64), rank_k)
    counts = np.bincount(ranks, minlength=rank_k + 1)
    total = int(counts.sum())
    return [{**keys, "rank": r, "positions": int(c), "share": _ratio(c, total), "rank_k": rank_k}
            for r, c in enumerate(counts)]


def run_tree_tables(run: Run, trees: Sequence[T.Tree], budgets: Sequence[int], rank_k: int,
                    n_boot: int) -> tuple[list[dict], list[dict], list[dict]]:
    """(trees.csv rows, tree_histograms.csv rows, ranks.csv rows) of one run."""
    scores = pl.read_parquet(run.scores)
    if "target_rank" not in scores.columns:
        raise ValueError(f"{run.scores}: no target_rank column (scored before trees existed): rerun its score job")
    keys = run.keys
    ranks = rank_rows(keys, scores, rank_k)
    if not run.decoding.greedy or scores.height == 0:
        return [], [], ranks
    rs = T.rank_streams(scores, run.scores)
    a = T.depth_rank_acceptance(rs, int(max(rs.streams.lengths.max(), 1)), rank_k)
    all_trees = list(trees) + [T.construct(a, b) for b in sorted(set(budgets))]
    tim = timing.summarise(pl.read_parquet(run.timing), n_boot) if run.timing else None
    mean_len = float(rs.streams.lengths.mean())
    rows, hist = [], []
    for tree in all_trees:
        rounds = T.replay_tree(rs, tree)
        row = tree_row(keys, tree, rounds, n_boot)
        row["tau_every_start"] = tau_every_start(rs, tree)
        row.update(_cost_columns(tim, tree, rounds.accepted, mean_len))
        rows.append(row)
        counts = np.bincount(rounds.accepted, minlength=tree.depth + 1)
        hist += [{**keys, "tree": tree.name, "accepted": j, "rounds": int(c)} for j, c in enumerate(counts)]
    for col, kinds in (("best_tree", None), ("best_chain", ("chain",))):
        pool = [r for r in rows if r["predicted_speedup"] is not None and (kinds is None or r["kind"] in kinds)]
        best = max(pool, key=lambda r: r["predicted_speedup"])["tree"] if pool else None
        for r in rows:
            r[col] = None if best is None else r["tree"] == best
    return rows, hist, ranks


def tree_tables(runs: Sequence[Run], gammas: Sequence[int], trees_cfg: Mapping[str, Mapping],
                budgets: Sequence[int], rank_k: int, n_boot: int) -> dict[str, pl.DataFrame]:
    """{"trees", "tree_histograms", "ranks"}: every run's rows (module doc)."""
    trees = T.config_trees(trees_cfg, gammas, rank_k)
    out: dict[str, list] = {"trees": [], "tree_histograms": [], "ranks": []}
    for run in runs:
        for name, part in zip(out, run_tree_tables(run, trees, budgets, rank_k, n_boot)):
            out[name].extend(part)
    return {name: pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
            for name, rows in out.items()}
