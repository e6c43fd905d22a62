"""Tree drafting replayed from one teacher-forced pass: exact acceptance of any static tree.

Why one pass is enough for a greedy target. The accepted path of a tree round is the target's
greedy path, and the draft's distribution at each tree node on that path is exactly the
teacher-forced one (the draft's context there is `draft_prompt + t2d(y_<j)`, scoring's rule). So
with r_j = the scores' `target_rank` (the rank of the target's token y_j among the draft's
proposals given the target's prefix, scoring.target_ranks), a round starting at s accepts the
longest prefix y_s .. y_{s+m-1} whose rank sequence (r_s, .., r_{s+m-1}) is a path of the tree.
The rest is the chain's rule (docs/architecture.md, "Greedy round replay"), verbatim, with the run
of matches replaced by that path length and gamma by the tree's depth:

    g = max(0, min(depth, max_new_tokens - s - 1))     # the tree pruned to depth g
    a = min(g, longest tree path along r_s, r_s+1, .., N - s)
    emitted = a if s + a == N else a + 1               # accepted EOS: no bonus token
    drafted = the pruned tree's nodes

The chain of length gamma is the tree of width 1 and depth gamma (its only path is 0, 0, ..):
rank 0 is `match`, so it reproduces `replay.replay` exactly (tests/test_trees.py).

A tree is a set of rank paths, closed under prefixes (Medusa / EAGLE write theirs so): node
(0, 1) is the draft's second proposal after its first. A full k-ary tree of depth d holds every
path of ranks < k up to length d. `tree_loop.py` runs such a tree with real draft passes and
the target's greedy verification; its rounds equal this replay's.

Exactness and its limit. Exact for greedy decoding and STATIC trees (the tree's shape fixed
before the round). A dynamic tree that picks its nodes by the draft's probabilities off the
accepted path (EAGLE-2's expansion by confidence) needs distributions this pass never computed
(the draft's at prefixes the target did not take): replaying it from ranks is an approximation,
and must be labelled so. Sampled decodings are not replayed: tree speculative sampling
(SpecInfer's multi-draft acceptance) accepts a different token set than the greedy path walk.

Best tree for a node budget (`construct`): from the measured acceptance by (depth, rank)
a(d, r) = P(r at depth d | the path so far accepted), with "accepted so far" = the previous
ranks all within the scored top rank_k, the expected accepted length of a tree under the
independence assumption (Medusa's) is sum over its nodes p of prod_d a(d, p_d); every factor is
<= 1, so a node's value never exceeds its parent's and best-first growth from the root picks the
N nodes of largest value: the optimum for that model. Its expectation (`expected_tau`, a
prediction) is reported beside the exact replay of the chosen tree (the truth): the gap is what
the independence assumption costs.

No models: numpy, and polars only where a scores table is read (rank_streams).
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from . import acceptance as acc
from .replay import Round, Rounds, Streams, _check_gamma, _lockstep_rounds

MAX_NODES = 4096   # a verify pass over more than this many tree tokens is no deployment anyone runs
KINDS = ("chain", "full", "paths", "constructed")


@dataclass(frozen=True)
class Tree:
    """A static draft tree: every node's rank path, sorted by (length, path)."""

    name: str
    kind: str                                   # chain | full | paths | constructed
    paths: tuple[tuple[int, ...], ...]
    width: int | None = None                    # chain / full trees: children per node
    budget: int | None = None                   # constructed trees: the node budget asked for
    expected_accepted: float | None = None      # constructed trees: the construction's expectation

    @property
    def nodes(self) -> int:
        return len(self.paths)

    @property
    def depth(self) -> int:
        return max((len(p) for p in self.paths), default=0)

    @property
    def max_rank(self) -> int:
        return max((max(p) for p in self.paths), default=-1)

    def nodes_upto(self) -> np.ndarray:
        """n[g] = nodes at depth <= g, g = 0..depth: what a round pruned to depth g drafts."""
        per_depth = np.bincount([len(p) for p in self.paths], minlength=self.depth + 1)
        return np.cumsum(per_depth).astype(np.int64)

    def child_table(self) -> np.ndarray:
        """table[node, r]: the child of `node` at rank r (-1: none); node 0 is the root, node i + 1 is
        paths[i]; column max_rank + 1 is "any rank beyond the tree" (always -1)."""
        index = {(): 0, **{p: i + 1 for i, p in enumerate(self.paths)}}
        table = np.full((self.nodes + 1, self.max_rank + 2), -1, dtype=np.int64)
        for p, i in index.items():
            if p:
                table[index[p[:-1]], p[-1]] = i
        return table


def chain(gamma: int) -> Tree:
    """The chain of length gamma: width 1, depth gamma."""
    g = _check_gamma(gamma)
    return Tree(f"chain{g}", "chain", tuple((0,) * i for i in range(1, g + 1)), width=1)


def full_tree(width: int, depth: int, name: str | None = None, key: str = "trees") -> Tree:
    """Every rank path of ranks < width up to length depth."""
    for what, v in (("width", width), ("depth", depth)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{key}: {what} must be an integer >= 1, got {v!r}")
    nodes = sum(int(width) ** i for i in range(1, int(depth) + 1))
    if nodes > MAX_NODES:
        raise ValueError(f"{key}: width {width} and depth {depth} make {nodes} nodes, more than {MAX_NODES}")
    paths = tuple(p for d in range(1, int(depth) + 1) for p in itertools.product(range(int(width)), repeat=d))
    kind = "chain" if width == 1 else "full"
    return Tree(name or f"w{width}d{depth}", kind, paths, width=int(width))


def paths_tree(paths: Sequence[Sequence[int]], name: str, key: str = "trees") -> Tree:
    """A tree from its rank paths; every prefix of a path must be a path (Medusa's convention),
    so that the tree the loop expands is the one written down."""
    ps = []
    for p in paths:
        t = tuple(p)
        if not t or any(isinstance(r, bool) or int(r) != r or r < 0 for r in t):
            raise ValueError(f"{key}.paths: {list(p)!r} is not a non-empty list of ranks >= 0")
        ps.append(tuple(int(r) for r in t))
    if len(set(ps)) != len(ps):
        dup = next(p for p in ps if ps.count(p) > 1)
        raise ValueError(f"{key}.paths: {list(dup)} is listed twice")
    have = set(ps)
    for p in ps:
        if len(p) > 1 and p[:-1] not in have:
            raise ValueError(f"{key}.paths: {list(p)} needs its parent {list(p[:-1])} in the list")
    if len(ps) > MAX_NODES:
        raise ValueError(f"{key}.paths: {len(ps)} nodes, more than {MAX_NODES}")
    return Tree(name, "paths", tuple(sorted(ps, key=lambda p: (len(p), p))))


def from_config(name: str, entry: Mapping, rank_k: int) -> Tree:
    """One `trees:` entry ({width, depth} or {paths}), checked; its ranks must lie below rank_k
    (scoring.rank_k: a rank at the cap means "not within the scored top rank_k")."""
    key = f"trees.{name}"
    if "paths" in entry:
        tree = paths_tree(entry["paths"], name, key)
    else:
        tree = full_tree(entry["width"], entry["depth"], name, key)
    if tree.max_rank >= rank_k:
        raise ValueError(f"{key}: uses rank {tree.max_rank}, but scoring.rank_k is {rank_k}: ranks at or beyond "
                         "it are not recorded; raise scoring.rank_k or narrow the tree")
    return tree


# --------------------------------------------------------------------------------------------
# Rank streams and the replay
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankStreams:
    """Many samples' target ranks, concatenated like replay.Streams (sample_id order)."""

    streams: Streams
    ranks: np.ndarray       # int64 per position; rank_k where beyond the cap


def rank_streams(scores: pl.DataFrame, source: str = "scores") -> RankStreams:
    """The scores' target_rank in the order of acceptance.streams (which checks the positions)."""
    if "target_rank" not in scores.columns or scores["target_rank"].null_count():
        raise ValueError(f"{source}: no target_rank (scored before trees existed): rerun the score job")
    st = acc.streams(scores)
    ranks = scores.sort("sample_id", "position")["target_rank"].to_numpy().astype(np.int64)
    if (ranks == 0).tolist() != st.matches.tolist():
        raise ValueError(f"{source}: target_rank == 0 must hold exactly where match does")
    return RankStreams(st, ranks)


def path_lengths(rs: RankStreams, tree: Tree) -> np.ndarray:
    """L[j] = the longest m such that (r_j .. r_{j+m-1}) is a path of the tree, never crossing
    j's stream end: a round starting at j accepts min(g, L[j]). One numpy step per tree level."""
    st = rs.streams
    n = len(rs.ranks)
    ends = np.repeat(st.offsets[1:], st.lengths)
    table = tree.child_table()
    beyond = table.shape[1] - 1
    idx = np.arange(n, dtype=np.int64)
    node = np.zeros(n, dtype=np.int64)
    length = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    for t in range(tree.depth):
        pos = idx + t
        ok = alive & (pos < ends)
        r = np.minimum(rs.ranks[np.minimum(pos, n - 1)], beyond) if n else rs.ranks
        nxt = np.where(ok, table[node, r], -1)
        alive = nxt >= 0
        node = np.where(alive, nxt, 0)
        length += alive
    return length


def replay_tree(rs: RankStreams, tree: Tree) -> Rounds:
    """Rounds of greedy tree speculative decoding along every stream (the module doc's rule; the
    loop of replay.replay with the tree's path lengths for the runs of matches)."""
    st = rs.streams
    n = st.lengths
    first = st.offsets[:-1]
    longest = path_lengths(rs, tree)
    upto = tree.nodes_upto()

    def step(active, sa):
        g = np.maximum(0, np.minimum(tree.depth, st.budgets[active] - sa - 1))
        a = np.minimum(g, longest[first[active] + sa])
        return upto[g], a, np.where(sa + a == n[active], a, a + 1)

    return _lockstep_rounds(st.sample_ids, n, step)


def replay_tree_rounds(ranks: Sequence[int], tree: Tree, max_new_tokens: int) -> list[Round]:
    """`replay_tree` along one stream of target ranks, as Round records."""
    r = np.asarray(ranks, dtype=np.int64).reshape(-1)
    rs = RankStreams(Streams.one(r == 0, max_new_tokens), r)
    out = replay_tree(rs, tree)
    return [Round(int(a), int(b), int(c), int(d))
            for a, b, c, d in zip(out.start, out.drafted, out.accepted, out.emitted)]


# --------------------------------------------------------------------------------------------
# The best tree for a node budget
# --------------------------------------------------------------------------------------------


def depth_rank_acceptance(rs: RankStreams, max_depth: int, rank_k: int) -> np.ndarray:
    """a[d - 1, r] = P(rank r at depth d | the d - 1 ranks before it were within the top rank_k),
    over every position of every stream as a round start (Medusa's calibration: every position),
    d = 1..max_depth, r = 0..rank_k - 1. 0 where no start reaches depth d."""
    st = rs.streams
    n = len(rs.ranks)
    ends = np.repeat(st.offsets[1:], st.lengths)
    idx = np.arange(n, dtype=np.int64)
    a = np.zeros((max(0, max_depth), rank_k))
    reached = np.ones(n, dtype=bool)   # the ranks of depths < d were all within the top rank_k
    for d in range(1, max_depth + 1):
        pos = idx + d - 1
        here = reached & (pos < ends)
        if not here.any():
            break
        r = rs.ranks[pos[here]]
        a[d - 1] = np.bincount(r[r < rank_k], minlength=rank_k)[:rank_k] / here.sum()
        reached = here.copy()
        reached[here] = r < rank_k
    return a


def construct(a: np.ndarray, budget: int, name: str | None = None) -> Tree:
    """The tree of at most `budget` nodes maximising sum over nodes of prod_d a[d - 1, p_d]
    (best-first from the root: a child's value never exceeds its parent's, so the `budget` largest
    values form a tree). Ties go to the shorter, then the lexicographically smaller path. Stops
    early when no node adds anything (value 0). `expected_accepted` holds the sum."""
    if isinstance(budget, bool) or int(budget) != budget or budget < 1:
        raise ValueError(f"tree_budgets: a node budget must be an integer >= 1, got {budget!r}")
    max_depth, k = a.shape
    heap = [(-float(a[0, r]), 1, (r,)) for r in range(k)] if max_depth else []
    heapq.heapify(heap)
    chosen: list[tuple[int, ...]] = []
    total = 0.0
    while heap and len(chosen) < budget:
        neg, depth, path = heapq.heappop(heap)
        if -neg <= 0.0:
            break
        chosen.append(path)
        total += -neg
        if depth < max_depth:
            for r in range(k):
                heapq.heappush(heap, (neg * float(a[depth, r]), depth + 1, path + (r,)))
    return Tree(name or f"best{int(budget)}", "constructed", tuple(sorted(chosen, key=lambda p: (len(p), p))),
                budget=int(budget), expected_accepted=total)


def config_trees(trees_cfg: Mapping[str, Mapping], gammas: Sequence[int], rank_k: int) -> list[Tree]:
    """The chain of every gamma (chain{g}), then the configured trees by name."""
    out = [chain(g) for g in sorted(set(int(g) for g in gammas))]
    taken = {t.name for t in out}
    for name in sorted(trees_cfg):
        if name in taken:
            raise ValueError(f"trees.{name}: the name is taken by the chain of that gamma; rename the tree")
        out.append(from_config(name, trees_cfg[name], rank_k))
    return out
