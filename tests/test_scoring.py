"""specalign.scoring: one teacher-forced pass per model gives, for every target position, what a
step-by-step draft would have predicted from the target's prefix (checked by brute force)."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from builders import EOS_ID, ragged_map, to_draft_prompt

from specalign.artifacts import SCHEMAS
from specalign.generation import generate, processed_distribution
from specalign.scoring import score_sample, score_table
from specalign.specs import Decoding
from specalign.translation import TokenMap

GREEDY = Decoding("greedy", max_new_tokens=20)
SAMPLED = Decoding("sampled", do_sample=True, temperature=0.9, top_p=0.95, seed=2, max_new_tokens=12)


def _streams(target, prompts, dec):
    return [r.token_ids for r in generate(target, prompts, dec, batch_size=len(prompts))]


def _last_logits(backend, ids):
    return backend.forward(torch.tensor([ids], dtype=torch.long))[0, -1].double()


def test_greedy_rows_match_brute_force(tiny_target, tiny_drafts, identity_map, make_prompts):
    draft = tiny_drafts[0.3]
    prompts = make_prompts(tiny_target, 6, seed=10)
    gens = generate(tiny_target, prompts, GREEDY)
    n_match = n = 0
    for p, g in zip(prompts, gens):
        rows = score_sample(draft, tiny_target, p, p, g.token_ids, identity_map, GREEDY)
        assert [r["position"] for r in rows] == list(range(len(g.token_ids)))
        assert [r["target_token"] for r in rows] == g.token_ids
        # the greedy target logprobs are the generation's (raw softmax at temperature 1)
        torch.testing.assert_close(torch.tensor([r["target_logprob"] for r in rows]), torch.tensor(g.logprobs),
                                   atol=1e-4, rtol=0)
        prefix = p.input_ids.tolist()
        for j, r in enumerate(rows):
            q = _last_logits(draft, prefix + g.token_ids[:j])
            assert r["draft_argmax_id"] == int(q.argmax()) == r["draft_token"]
            assert r["match"] == (r["draft_token"] == r["target_token"])
            assert r["summin"] == float(r["match"])                       # greedy: one-hot both sides
            assert r["mapped_mass"] == 1.0
            assert r["draft_logprob"] == pytest.approx(float(q.log_softmax(-1)[g.token_ids[j]]), abs=1e-4)
            assert r["is_eos"] == (g.token_ids[j] == EOS_ID)
            assert r["max_new_tokens"] == 20
        n_match += sum(r["match"] for r in rows)
        n += len(rows)
    assert 0.3 < n_match / n < 0.95  # a correlated draft, not a useless or a perfect one


def test_draft_equal_target_matches_everywhere(tiny_target, identity_map, make_prompts):
    prompts = make_prompts(tiny_target, 3, seed=11)
    for dec in (GREEDY, SAMPLED):
        for p, y in zip(prompts, _streams(tiny_target, prompts, dec)):
            rows = score_sample(tiny_target, tiny_target, p, p, y, identity_map, dec)
            assert all(r["match"] for r in rows) if dec.greedy else True
            for r in rows:
                assert r["summin"] == pytest.approx(1.0, abs=1e-5)
                assert r["draft_logprob"] == pytest.approx(r["target_logprob"], abs=1e-4)


def test_permuted_vocabulary_is_the_same_model(tiny_target, permuted_draft, make_prompts):
    """A draft in a shuffled id space: every id goes through d2t / t2d, and it agrees everywhere."""
    draft, tm, perm = permuted_draft
    prompts = make_prompts(tiny_target, 3, seed=12)
    for p, y in zip(prompts, _streams(tiny_target, prompts, GREEDY)):
        rows = score_sample(draft, tiny_target, to_draft_prompt(p, tm), p, y, tm, GREEDY)
        assert all(r["match"] for r in rows)
        assert [perm[r["draft_argmax_id"]] for r in rows] == y
        for r in rows:
            assert r["draft_logprob"] == pytest.approx(r["target_logprob"], abs=1e-4)


def test_sampled_summin_is_one_minus_tv(tiny_target, tiny_drafts, identity_map, make_prompts):
    draft = tiny_drafts[0.8]
    prompts = make_prompts(tiny_target, 3, seed=13)
    for p, y in zip(prompts, _streams(tiny_target, prompts, SAMPLED)):
        rows = score_sample(draft, tiny_target, p, p, y, identity_map, SAMPLED)
        prefix = p.input_ids.tolist()
        for j, r in enumerate(rows):
            pj = processed_distribution(_last_logits(tiny_target, prefix + y[:j]), SAMPLED)
            qj = processed_distribution(_last_logits(draft, prefix + y[:j]), SAMPLED)
            assert r["summin"] == pytest.approx(1 - 0.5 * float((pj - qj).abs().sum()), abs=1e-5)
            assert r["target_logprob"] == pytest.approx(math.log(pj[y[j]]), abs=1e-4)
            want = math.log(qj[y[j]]) if qj[y[j]] > 0 else -math.inf
            assert r["draft_logprob"] == pytest.approx(want, abs=1e-4)
            assert r["mapped_mass"] == pytest.approx(1.0, abs=1e-6)
            assert 0 <= r["summin"] <= 1


def test_ragged_map_read_positions(tiny_target, tiny_drafts, make_prompts):
    """1:n, unwritable and unmapped tokens: the draft's prediction for y_j is read at the end of
    draft_prompt + t2d(y_<j) (nothing fed for an unwritable y_i), checked by brute force."""
    draft = tiny_drafts[0.3]
    prompts = make_prompts(tiny_target, 6, seed=14)
    streams = _streams(tiny_target, prompts, GREEDY)
    freq = [t for t, _ in Counter(t for y in streams for t in y if t != EOS_ID).most_common(5)]
    n = tiny_target.text_vocab_size
    a, b, c, d, e = freq[3], freq[4], freq[0], freq[1], freq[2]  # the unmapped draft id: the most frequent
    tm = ragged_map(n, [a, b, c, d, e])
    d2t = tm.d2t_first()
    reach = torch.zeros(n, dtype=torch.bool)
    reach[d2t[d2t >= 0]] = True
    seen = Counter()
    for p, y in zip(prompts, streams):
        rows = score_sample(draft, tiny_target, p, p, y, tm, GREEDY)
        for j, r in enumerate(rows):
            ctx = p.input_ids.tolist() + [x for t in y[:j] for x in tm.t2d(t)]
            q = _last_logits(draft, ctx)
            assert r["draft_argmax_id"] == int(q.argmax())
            assert r["draft_token"] == int(d2t[r["draft_argmax_id"]])
            assert r["match"] == (r["draft_token"] == y[j])
            assert r["summin"] == float(r["match"])
            assert r["mapped_mass"] == float(reach[y[j]])
            qt = TokenMap.push_forward(q.softmax(-1), d2t, n)
            want = math.log(qt[y[j]]) if qt[y[j]] > 0 else -math.inf
            assert r["draft_logprob"] == pytest.approx(want, abs=1e-4)
            seen.update([y[j]] if y[j] in (a, b, c) else [])
            seen.update(["null"] if r["draft_token"] == -1 else [])
        if c in y:  # the draft cannot propose c: never a match there
            assert not any(r["match"] for r in rows if r["target_token"] == c)
    assert seen[a] and seen[b] and seen[c] and seen["null"], "the streams must exercise the special entries"


def test_score_table_and_edges(tiny_target, tiny_drafts, identity_map, make_prompts):
    draft = tiny_drafts[0.1]
    prompts = make_prompts(tiny_target, 3, seed=15)
    streams = _streams(tiny_target, prompts, GREEDY)
    calls = []
    tbl = score_table(draft, tiny_target, [(p, p, y) for p, y in zip(prompts, streams)], identity_map, GREEDY,
                      progress=lambda k, n: calls.append((k, n)))
    assert tbl.schema == SCHEMAS["scores"]
    assert tbl.num_rows == sum(map(len, streams)) and calls[-1] == (3, 3)
    assert score_sample(draft, tiny_target, prompts[0], prompts[0], [], identity_map, GREEDY) == []
    with pytest.raises(ValueError, match="exceeds max_new_tokens"):
        score_sample(draft, tiny_target, prompts[0], prompts[0], [10] * 5, identity_map, GREEDY, max_new_tokens=4)


def test_self_scoring_replays_to_full_acceptance(tiny_target, identity_map, make_prompts):
    """A model scored against itself: every proposal is accepted, and with streams of
    12 = k (gamma + 1) tokens (cut by length, no EOS) every round emits gamma + 1 tokens."""
    import polars as pl

    from specalign.acceptance import replay_summary

    dec = Decoding("greedy", max_new_tokens=12)
    prompts = make_prompts(tiny_target, 3, seed=5)
    streams = [r.token_ids for r in generate(tiny_target, prompts, dec, ignore_eos=True)]
    assert all(len(y) == 12 for y in streams)
    table = score_table(tiny_target, tiny_target, [(p, p, y) for p, y in zip(prompts, streams)], identity_map, dec)
    summary = replay_summary(pl.from_arrow(table), [1, 2, 3, 5], n_boot=20)
    assert summary["token_acceptance_rate"].to_list() == [1.0, 1.0, 1.0, 1.0]
    assert summary["tau"].to_list() == [2.0, 3.0, 4.0, 6.0]
    assert summary["leviathan_alpha"].to_list() == [1.0] * 4


# ---------------------------------------------------------------- argmax drafting (engines' acceptance)


def test_argmax_acceptance_hand_worked_neither_bounds_sum_min():
    """target_prob_of_draft_argmax = p(argmax q) is not an upper (nor a lower) bound of sum-min:
    - row 0: p = (0.6, 0.4, 0), q = (0.4, 0.6, 0): argmax q = 1, p(1) = 0.4 < sum min = 0.4 + 0.4 = 0.8
    - row 1: p = (0.9, 0.1, 0), q = (0.55, 0.45, 0): argmax q = 0, p(0) = 0.9 > sum min = 0.55 + 0.1 = 0.65
    - row 2: the draft's argmax is unmapped (-1, a null proposal): 0, whatever p is."""
    from specalign.scoring import argmax_acceptance

    p = torch.tensor([[0.6, 0.4, 0.0], [0.9, 0.1, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.4, 0.6, 0.0], [0.55, 0.45, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    got = argmax_acceptance(p, torch.tensor([1, 0, -1]))
    assert got.tolist() == pytest.approx([0.4, 0.9, 0.0])
    summin = torch.minimum(p, q).sum(-1)
    assert summin[:2].tolist() == pytest.approx([0.8, 0.65])
    assert got[0] < summin[0] and got[1] > summin[1]


def test_target_prob_of_draft_argmax_by_brute_force(tiny_target, tiny_drafts, make_prompts):
    """Each position's p_target(draft argmax) recomputed independently, one prefix at a time with
    both models: the target's processed distribution at y_<j, the draft's argmax at the draft's
    own context (ragged map: a 1:n feed, an unwritable token, an unmapped draft id -> 0). Greedy:
    the column is `match`; sampled: it differs from summin (neither is the other)."""
    draft = tiny_drafts[0.3]
    prompts = make_prompts(tiny_target, 6, seed=16)
    n = tiny_target.text_vocab_size
    greedy_streams = _streams(tiny_target, prompts, GREEDY)
    freq = [t for t, _ in Counter(t for y in greedy_streams for t in y if t != EOS_ID).most_common(5)]
    tm = ragged_map(n, [freq[3], freq[4], freq[0], freq[1], freq[2]])
    d2t = tm.d2t_first()
    seen_null = 0
    differs = 0
    for dec, streams in ((GREEDY, greedy_streams), (SAMPLED, _streams(tiny_target, prompts, SAMPLED))):
        for p, y in zip(prompts, streams):
            rows = score_sample(draft, tiny_target, p, p, y, tm, dec)
            for j, r in enumerate(rows):
                if dec.greedy:
                    assert r["target_prob_of_draft_argmax"] == float(r["match"])
                    continue
                pj = processed_distribution(_last_logits(tiny_target, p.input_ids.tolist() + y[:j]), dec)
                ctx = p.input_ids.tolist() + [x for t in y[:j] for x in tm.t2d(t)]
                proposal = int(d2t[int(_last_logits(draft, ctx).argmax())])
                want = float(pj[proposal]) if proposal >= 0 else 0.0
                assert r["target_prob_of_draft_argmax"] == pytest.approx(want, abs=1e-5)
                seen_null += proposal < 0
                differs += abs(r["target_prob_of_draft_argmax"] - r["summin"]) > 1e-3
    assert seen_null, "the streams must exercise an unmapped draft argmax"
    assert differs, "under sampling the two acceptances must differ somewhere"
