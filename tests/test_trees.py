"""specalign.trees and tree_loop: tree drafting replayed from one teacher-forced pass.

The truths checked:
(a) target_rank (scoring) is, by brute force, the index in the draft's order of the first draft id
    proposing the target's token, capped at rank_k; 0 exactly where match is;
(b) the width-1 tree of depth gamma is the chain: its rounds equal replay.replay's, exactly;
(c) hand-worked rounds for a paths tree; a full k-ary tree accepts the run of ranks < k;
(d) the construction is the optimum of its own model (brute force over all small trees);
(e) a real tree loop (real draft passes, the target's greedy verification) has the replay's rounds on
    every sample, for three tree shapes, on a same-vocabulary and a cross-vocabulary pair (with
    1:n, unwritable, unmapped and duplicate entries), and outputs the target's greedy output.
"""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import polars as pl
import pytest
import torch
from builders import EOS_ID

from specalign import acceptance as acc
from specalign import replay as rp
from specalign import trees as T
from specalign.generation import generate
from specalign.scoring import draft_order, score_sample, teacher_forced_draft
from specalign.specs import Decoding
from specalign.translation import TokenMap
from specalign.tree_loop import tree_decode

# --------------------------------------------------------------------------------------------
# pure replay
# --------------------------------------------------------------------------------------------


def _random_rank_table(rng, n_samples: int, rank_k: int = 16):
    """Demo-like synthetic streams: lengths 1..budget (short budgets hit the g cap, full-length
    streams are cut at the budget, the rest end on EOS), ranks mostly 0, some 1-3, some capped."""
    rows = []
    for k in range(n_samples):
        budget = int(rng.integers(1, 17))
        n = int(rng.integers(1, budget + 1))
        ranks = rng.choice([0, 0, 0, 0, 1, 1, 2, 3, rank_k], size=n)
        rows += [dict(sample_id=f"s{k:03d}", position=j, match=bool(r == 0), target_rank=int(r),
                      max_new_tokens=budget) for j, r in enumerate(ranks)]
    return pl.DataFrame(rows)


def test_width_one_tree_is_the_chain():
    rng = np.random.default_rng(0)
    scores = _random_rank_table(rng, 200)
    rs = T.rank_streams(scores)
    for g in range(1, 9):
        a, b = T.replay_tree(rs, T.chain(g)), rp.replay(rs.streams, g)
        for col in ("sample", "start", "drafted", "accepted", "emitted", "lengths"):
            assert getattr(a, col).tolist() == getattr(b, col).tolist(), (g, col)
        assert T.full_tree(1, g).paths == T.chain(g).paths
    # power: the table has accepted EOS rounds and capped rounds
    r = rp.replay(rs.streams, 4)
    assert ((r.emitted == r.accepted) & (r.accepted > 0)).any() and (r.drafted < 4).any()


def test_hand_worked_paths_tree():
    tree = T.paths_tree([[0], [1], [0, 1], [1, 0]], "t")
    assert (tree.nodes, tree.depth, tree.max_rank, tree.nodes_upto().tolist()) == (4, 2, 1, [0, 2, 4])
    # s=0: ranks 0, 1 -> path (0, 1), then (0, 1, 0) is none: a=2, bonus -> s=3
    # s=3: rank 2 is no child: a=0 -> s=4; s=4: (0) then (0, 0) none: a=1, 5 != 6 -> bonus -> s=6
    assert T.replay_tree_rounds([0, 1, 0, 2, 0, 0], tree, 16) == [
        rp.Round(0, 4, 2, 3), rp.Round(3, 4, 0, 1), rp.Round(4, 4, 1, 2)]
    # an accepted EOS (the stream's last token) ends it without a bonus; the budget prunes the tree:
    # budget 3 -> round 0 has g = 2 (4 nodes); round 1 at s=1 has g = 1 (2 nodes)
    assert T.replay_tree_rounds([1, 0], tree, 16) == [rp.Round(0, 4, 2, 2)]
    assert T.replay_tree_rounds([2, 1, 0], tree, 3) == [rp.Round(0, 4, 0, 1), rp.Round(1, 2, 1, 2)]


def test_full_tree_accepts_the_run_of_ranks_below_its_width():
    rng = np.random.default_rng(1)
    scores = _random_rank_table(rng, 150)
    rs = T.rank_streams(scores)
    for width, depth in ((2, 3), (3, 2), (4, 4)):
        tree = T.full_tree(width, depth)
        assert tree.nodes == sum(width ** i for i in range(1, depth + 1))
        got = T.replay_tree(rs, tree)
        # the same rounds as a chain whose "match" is rank < width, but drafting the tree's nodes
        below = rp.Streams(rs.streams.sample_ids, rs.streams.offsets, rs.ranks < width, rs.streams.budgets)
        want = rp.replay(below, depth)
        assert got.accepted.tolist() == want.accepted.tolist()
        assert got.start.tolist() == want.start.tolist()
        assert got.drafted.tolist() == tree.nodes_upto()[want.drafted].tolist()


def test_tree_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"trees.x.paths: \[1, 0\] needs its parent \[1\]"):
        T.from_config("x", {"paths": [[0], [1, 0]]}, 16)
    with pytest.raises(ValueError, match=r"trees.x.paths: \[0\] is listed twice"):
        T.from_config("x", {"paths": [[0], [0]]}, 16)
    with pytest.raises(ValueError, match=r"trees.x: uses rank 4, but scoring.rank_k is 4"):
        T.from_config("x", {"width": 5, "depth": 1}, 4)
    with pytest.raises(ValueError, match="trees.big: width 16 and depth 4"):
        T.from_config("big", {"width": 16, "depth": 4}, 16)
    with pytest.raises(ValueError, match="trees.chain2: the name is taken"):
        T.config_trees({"chain2": {"width": 2, "depth": 2}}, [2], 16)
    with pytest.raises(ValueError, match="no target_rank"):
        T.rank_streams(pl.DataFrame({"sample_id": ["a"], "position": [0], "match": [True], "max_new_tokens": [4]}))


def test_depth_rank_acceptance_hand_worked():
    # one stream, ranks 0 1 0 16 (rank_k 16), budget 8. Depth 1: every position starts:
    # ranks 0,1,0,16 -> a[0] = [2/4, 1/4, 0...]. Depth 2: starts j with j+1 < 4 and r_j < 16:
    # j=0 (r1=1), j=1 (r2=0), j=2 (r3=16) -> a[1] = [1/3, 1/3]. Depth 3: j=0 (r0, r1 < 16; r2=0), j=1
    # (r1, r2 < 16; r3=16) -> a[2] = [1/2]
    ranks = [0, 1, 0, 16]
    rs = T.RankStreams(rp.Streams.one(np.array(ranks) == 0, 8), np.array(ranks))
    a = T.depth_rank_acceptance(rs, 4, 16)
    assert a[0, :2].tolist() == [0.5, 0.25] and a[0, 2:].sum() == 0
    assert a[1, :2].tolist() == pytest.approx([1 / 3, 1 / 3]) and a[1, 2:].sum() == 0
    assert a[2, 0] == 0.5 and a[2, 1:].sum() == 0 and a[3].sum() == 0


def _all_trees(max_rank: int, max_depth: int, n: int):
    """Every prefix-closed set of n paths (ranks < max_rank, length <= max_depth), brute force."""
    universe = [p for d in range(1, max_depth + 1) for p in itertools.product(range(max_rank), repeat=d)]
    for combo in itertools.combinations(universe, n):
        s = set(combo)
        if all(len(p) == 1 or p[:-1] in s for p in combo):
            yield combo


def test_construction_is_the_optimum_of_its_model():
    rng = np.random.default_rng(3)
    for trial in range(4):
        a = rng.dirichlet(np.ones(4), size=3)[:, :3] * rng.uniform(0.5, 1.0)   # 3 depths x 3 ranks
        for n in (1, 3, 5):
            tree = T.construct(a, n)
            value = sum(np.prod([a[d, r] for d, r in enumerate(p)]) for p in tree.paths)
            best = max(sum(np.prod([a[d, r] for d, r in enumerate(p)]) for p in t) for t in _all_trees(3, 3, n))
            assert tree.nodes == n and tree.expected_accepted == pytest.approx(value)
            assert value == pytest.approx(best), (trial, n)
            assert all(len(p) == 1 or p[:-1] in set(tree.paths) for p in tree.paths)
    # a draft always right at rank 0: the chain; nothing to add once values are 0
    a = np.zeros((5, 4))
    a[:, 0] = 1.0
    assert T.construct(a, 3).paths == T.chain(3).paths and T.construct(a, 9).nodes == 5


# --------------------------------------------------------------------------------------------
# target_rank and the real tree loop on tiny models
# --------------------------------------------------------------------------------------------


def greedy(n):
    return Decoding("greedy", max_new_tokens=n)


def _cross_map(n: int, freq: list[int], f: int, g: int) -> TokenMap:
    """Identity but: target a is spelled by two draft ids (1:n); target b is unwritable; draft c is
    unmapped; draft d proposes (d, e) (first id d); draft f proposes g's target id (a duplicate of
    draft g: two draft ids propose one target token, and target f is reachable from no draft id)."""
    a, b, c, d, e = freq[:5]
    d2t = [(i,) for i in range(n)]
    d2t[c] = ()
    d2t[d] = (d, e)
    d2t[f] = (g,)
    t2d = {i: (i,) for i in range(n)}
    t2d[a] = (7, 8)
    t2d[b] = ()
    return TokenMap(d2t, t2d, kinds=["exact"] * n)


@pytest.fixture(scope="module")
def streams(tiny_target, make_prompts):
    prompts = make_prompts(tiny_target, 5, seed=31, max_len=10)
    out = {}
    for budget in (20, 4):
        out[budget] = [(p, r.token_ids) for p, r in zip(prompts, generate(tiny_target, prompts, greedy(budget)))]
    return out


@pytest.fixture(scope="module")
def cross_map(tiny_target, tiny_drafts, identity_map, streams):
    freq = [t for t, _ in Counter(t for _, y in streams[20] for t in y if t != EOS_ID).most_common(5)]
    # the duplicate where it matters: the draft's third choice f most often right behind the target's
    # token g as its second (so with f -> g, ranks 1 and 2 both propose y_j: "holes" below)
    near = Counter()
    for p, y in streams[20]:
        logits = teacher_forced_draft(tiny_drafts[0.3], p, y, identity_map)
        for j, top in enumerate(draft_order(logits, 3).tolist()):
            if top[1] == y[j] and {top[2], y[j]}.isdisjoint(freq):
                near[(top[2], y[j])] += 1
    (f, g), _ = near.most_common(1)[0]
    return _cross_map(tiny_target.text_vocab_size, freq, f, g)


def test_target_rank_by_brute_force(tiny_target, tiny_drafts, identity_map, cross_map, streams):
    draft = tiny_drafts[0.3]
    dups = 0
    for tm in (identity_map, cross_map):
        d2t = tm.first_ids(draft.text_vocab_size, tiny_target.text_vocab_size).tolist()
        for p, y in streams[20]:
            for rank_k in (16, 2):
                rows = score_sample(draft, tiny_target, p, p, y, tm, greedy(20), rank_k=rank_k)
                logits = teacher_forced_draft(draft, p, y, tm).double()
                for j, r in enumerate(rows):
                    # numpy's stable argsort of -logits: descending, ties to the lower id
                    order = np.argsort(-logits[j].numpy(), kind="stable").tolist()
                    want = next((i for i, x in enumerate(order[:rank_k]) if d2t[x] == y[j]), rank_k)
                    assert r["target_rank"] == want
                    assert (r["target_rank"] == 0) == r["match"]
                    top = [d2t[x] for x in order[:4]]
                    dups += top.count(y[j]) > 1
    assert dups, "the cross-vocabulary map must put duplicate proposals of the target's token in the top 4"


def test_draft_order_ties_go_to_the_lower_id():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.5, 3.0]])
    assert draft_order(logits, 4).tolist() == [[1, 2, 4, 0]]
    assert int(logits.argmax()) == 1


TREES = (T.full_tree(2, 3), T.paths_tree([[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 0, 1]], "medusa"),
         T.full_tree(3, 2),
         # ranks with holes: a duplicate at rank 2 of the token first proposed at rank 1 must not be
         # accepted (the rank is the first draft id's); a loop accepting any proposal of y fails here
         T.paths_tree([[0], [2], [0, 0], [0, 2], [2, 0], [2, 2]], "holes"))


@pytest.mark.parametrize("which", ["identity", "cross"])
def test_real_tree_loop_equals_the_replay(tiny_target, tiny_drafts, identity_map, cross_map, streams, which):
    draft = tiny_drafts[0.3]
    tm = identity_map if which == "identity" else cross_map
    tot = Counter()
    for budget, items in streams.items():
        for p, y in items:
            ranks = [r["target_rank"] for r in score_sample(draft, tiny_target, p, p, y, tm, greedy(budget))]
            for tree in TREES:
                out, rounds = tree_decode(draft, tiny_target, p, p, tm, tree, budget)
                assert out == y, f"{tree.name}: the tree loop's output is not the target's greedy output"
                got = [(r["start"], r["drafted"], r["accepted"], r["emitted"]) for r in rounds]
                want = [(r.start, r.drafted, r.accepted, r.emitted) for r in T.replay_tree_rounds(ranks, tree, budget)]
                assert got == want, f"{which} {tree.name} budget {budget}"
                chain = rp.replay_rounds([r == 0 for r in ranks], tree.depth, budget)
                tot["tree"] += sum(r["accepted"] for r in rounds)
                tot["chain"] += sum(r.accepted for r in chain)
                tot["accepted_eos"] += sum(r["emitted"] == r["accepted"] > 0 for r in rounds)
    # power: the trees accept off the draft's first choice, and streams end on an accepted EOS
    assert tot["tree"] > tot["chain"] > 0 and tot["accepted_eos"] > 0, tot


def test_a_loop_accepting_duplicates_is_caught(tiny_target, tiny_drafts, cross_map, streams, monkeypatch):
    """Negative control: a loop that accepts any proposal of the target's token (no duplicate rule)
    disagrees with the replay on the cross-vocabulary pair, so the test above can fail."""
    import specalign.tree_loop as tl

    def any_duplicate(draft, prompt, fed, width, d2t):
        return [d2t[x] for x in draft_order(tl._last_logits(draft, prompt, fed), width).tolist()]

    monkeypatch.setattr(tl, "_children", any_duplicate)
    draft, tree, differ = tiny_drafts[0.3], TREES[-1], 0
    for p, y in streams[20]:
        ranks = [r["target_rank"] for r in score_sample(draft, tiny_target, p, p, y, cross_map, greedy(20))]
        _, rounds = tl.tree_decode(draft, tiny_target, p, p, cross_map, tree, 20)
        differ += [r["accepted"] for r in rounds] != [r.accepted for r in T.replay_tree_rounds(ranks, tree, 20)]
    assert differ > 0


# --------------------------------------------------------------------------------------------
# the tables (tree_tables.py) on a synthetic run with a paired timing table
# --------------------------------------------------------------------------------------------


def _table_run(tmp_path, decoding: Decoding):
    from test_summary import timing_rows

    from specalign import artifacts
    from specalign.specs import Run

    rng = np.random.default_rng(7)
    syn = _random_rank_table(rng, 40)
    rows = [{**r, "target_token": 5, "draft_token": 5 if r["match"] else 7, "draft_argmax_id": 5,
             "draft_logprob": -0.1, "target_logprob": -0.1, "summin": float(r["match"]), "mapped_mass": 1.0,
             "target_prob_of_draft_argmax": float(r["match"]), "is_eos": False} for r in syn.iter_rows(named=True)]
    d = tmp_path / decoding.name
    d.mkdir()
    artifacts.write_parquet(artifacts.table("scores", rows), d / "scores.parquet", "scores")
    artifacts.write_parquet(artifacts.table("timing", timing_rows()), d / "timing.parquet", "timing")
    return Run(dataset="toy", pair="dr__tg", draft="dr", target="tg", decoding=decoding,
               scores=str(d / "scores.parquet"), translation="", target_vocab="", timing=str(d / "timing.parquet"))


def test_tree_tables(tmp_path):
    from specalign import payoff, timing
    from specalign.tree_tables import tree_tables

    run = _table_run(tmp_path, greedy(16))
    sampled = _table_run(tmp_path, Decoding("sampled", do_sample=True, max_new_tokens=16))
    cfg = {"w2": {"width": 2, "depth": 2}, "p": {"paths": [[0], [1], [0, 0]]}}
    out = tree_tables([run, sampled], [1, 2, 4], cfg, [4, 8], 16, 200)
    trees = out["trees"]
    assert trees["decoding"].unique().to_list() == ["greedy"]          # sampled runs: no tree rows
    assert trees["tree"].to_list() == ["chain1", "chain2", "chain4", "p", "w2", "best4", "best8"]
    scores = pl.read_parquet(run.scores)
    replay = acc.replay_summary(scores, [1, 2, 4], n_boot=200)
    tim = timing.summarise(pl.read_parquet(run.timing), 200)
    st = acc.streams(scores)
    for g in (1, 2, 4):
        row = trees.filter(pl.col("tree") == f"chain{g}").row(0, named=True)
        want = replay.filter(pl.col("gamma") == g).row(0, named=True)
        for col in ("rounds", "drafted", "accepted", "tau", "tau_lo", "tau_hi", "tokens_per_call"):
            assert row[col] == want[col], (g, col)
        assert (row["width"], row["depth"], row["nodes"], row["verify_tokens"]) == (1, g, g, g + 1)
        # a round at every position: the run of matches from there, capped at the depth
        runs = rp._run_lengths(st.matches, np.repeat(st.offsets[1:], st.lengths))
        assert row["tau_every_start"] == pytest.approx(1 + np.minimum(runs, g).mean())
        # the summary's cost columns come from the same timing job and marginals (summary.run_tables)
        pay = payoff.run_columns(tim, g, payoff.marginals(rp.replay(st, g).accepted, g), st.lengths.mean())
        if pay["verify_cost"] is not None:     # timed at gamma 2 and 4 (test_summary.VERIFY_MS)
            assert row["verify_cost_source"] == "measured" and row["verify_cost"] == pay["verify_cost"]
            assert row["predicted_speedup"] == pytest.approx(pay["predicted_speedup"], rel=1e-12)
            assert row["predicted_speedup_steady"] == pytest.approx(pay["predicted_speedup_steady"], rel=1e-12)
        else:                                  # 2 tokens: the line through (2, 4/3) and (4, 15.5/9)
            assert row["verify_cost_source"] == "extrapolated"
            slope = (15.5 / 9 - 4 / 3) / 2
            assert row["verify_cost"] == pytest.approx(4 / 3 - slope)
    w2 = trees.filter(pl.col("tree") == "w2").row(0, named=True)
    assert (w2["kind"], w2["width"], w2["depth"], w2["levels"], w2["nodes"]) == ("full", 2, 2, 2, 6)
    p = trees.filter(pl.col("tree") == "p").row(0, named=True)
    assert (p["kind"], p["width"], p["depth"], p["levels"], p["nodes"], p["paths"]) == \
        ("paths", None, None, 2, 3, "[[0],[1],[0,0]]")
    best = trees.filter(pl.col("kind") == "constructed")
    assert best["nodes"].to_list() == [4, 8] and best["expected_tau"].is_not_null().all()
    assert trees.filter(pl.col("kind") != "constructed")["expected_tau"].is_null().all()
    assert trees["best_tree"].sum() == 1 and trees["best_chain"].sum() == 1
    top = trees.sort("predicted_speedup", descending=True).row(0, named=True)
    assert top["best_tree"]
    # histograms sum to the rounds and reproduce the accepted count
    h = out["tree_histograms"].group_by("decoding", "tree").agg(
        pl.col("rounds").sum().alias("n"), (pl.col("accepted") * pl.col("rounds")).sum().alias("a"))
    j = trees.join(h, on=["decoding", "tree"])
    assert (j["n"] == j["rounds"]).all() and (j["a"] == j["accepted"]).all()
    # rank shares: every decoding, summing to 1, rank 0 = the match rate
    ranks = out["ranks"]
    assert sorted(ranks["decoding"].unique().to_list()) == ["greedy", "sampled"]
    g_ranks = ranks.filter(pl.col("decoding") == "greedy")
    assert g_ranks["share"].sum() == pytest.approx(1.0) and g_ranks["rank"].to_list() == list(range(17))
    assert g_ranks["share"][0] == pytest.approx(scores["match"].mean())


def test_tree_plots_carry_their_data(tmp_path):
    from specalign.tree_plots import plot_rank_shares, plot_tree_budget
    from specalign.tree_tables import tree_tables

    out = tree_tables([_table_run(tmp_path, greedy(16))], [1, 2, 4], {"w2": {"width": 2, "depth": 2}}, [4, 8],
                      16, 50)
    plot = plot_tree_budget(out["trees"])
    data = plot.data
    assert plot.png[:4] == b"\x89PNG" and "tree_budget.csv" in plot.alt
    assert sorted(data["tree"].to_list()) == sorted(out["trees"]["tree"].to_list())
    assert data["tau"].to_list() == pytest.approx(out["trees"].sort("kind", "nodes")["tau"].to_list())
    data = plot_rank_shares(out["ranks"], show=3).data
    assert data["choice"].to_list() == ["1", "2", "3", ">3"]
    assert data["share"].sum() == pytest.approx(1.0)
    assert data["share"][0] == pytest.approx(out["ranks"]["share"][0])
    assert plot_tree_budget(pl.DataFrame()).data.height == 0


def test_verify_cost_is_measured_interpolated_or_extrapolated():
    """Hand-worked: timed passes at 1, 4 and 16 proposals (costs 1.1, 1.4, 2.0)."""
    from specalign.tree_tables import _verify_cost

    tim = {"verify": {1: {"verify_cost": 1.1}, 4: {"verify_cost": 1.4}, 16: {"verify_cost": 2.0}}}
    assert _verify_cost(tim, 4) == (1.4, "measured")
    cost, source = _verify_cost(tim, 10)                  # halfway from 4 to 16: 1.4 + 0.5 x 0.6
    assert source == "interpolated" and cost == pytest.approx(1.7)
    cost, source = _verify_cost(tim, 20)                  # beyond: the least-squares line through the three
    slope, icept = np.polyfit([1, 4, 16], [1.1, 1.4, 2.0], 1)
    assert source == "extrapolated" and cost == pytest.approx(icept + 20 * slope)
    assert _verify_cost({"verify": {}}, 3) == (None, None)
