"""specalign.speculative: the real draft-verify loop.

The invariants that prove it right:
(a) greedy output == the target's greedy output, token for token;
(b) per-round (start, drafted, accepted, emitted) == replay.replay_rounds on the
    teacher-forced matches of scoring.score_sample - exactly;
(c) draft == target: every round accepts all it drafted;
(d) negative controls: a broken draft-cache rollback keeps (a) but breaks (b) - only the
    replay comparison catches it - and a broken target rollback breaks (a);
(e) sampling: per-proposal acceptance agrees with the teacher-forced mean summin on
    target-sampled sequences (99% CI), and exactly (martingale) with summin at the
    positions the loop evaluated;
(f) sampling: the output distribution is the target's (chi-square on the first 2 tokens);
(g) argmax drafting (draft_sampling="argmax", the engines' rule): (e) against
    target_prob_of_draft_argmax instead of summin, and (f) over thousands of seeds, with a
    negative control (a misstated proposal probability) that the same test rejects.
"""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from builders import EOS_ID, ragged_map, to_draft_prompt

import specalign.speculative as spec
from specalign.artifacts import SCHEMAS
from specalign.generation import generate, processed_distribution
from specalign.replay import replay_rounds
from specalign.scoring import score_sample
from specalign.specs import Decoding
from specalign.speculative import rounds_table, run_speculative, speculative_decode, speculative_sample, target_only_ms

GAMMAS = (1, 2, 3, 4, 5)


def greedy(n):
    return Decoding("greedy", max_new_tokens=n)


def check_greedy_pair(draft, target, pairs, token_map, max_news=(20, 3), gammas=GAMMAS):
    """(a) and (b) over prompts x budgets x gammas. Returns (#configs whose rounds differ from the
    replay, #configs whose output differs from target greedy, totals) - 0, 0 when correct.
    totals["flips"]: rounds flagged verify_flip (fp32 CPU: chunked == step by step, so 0);
    totals["draft_flips"]: rounds flagged draft_flip (the draft's side of the same check)."""
    bad_rounds = bad_out = 0
    tot = Counter()
    for max_new in max_news:
        dec = greedy(max_new)
        ref = generate(target, [tp for _, tp in pairs], dec)
        for (dp, tp), r in zip(pairs, ref):
            matches = [row["match"] for row in score_sample(draft, target, dp, tp, r.token_ids, token_map, dec)]
            for gamma in gammas:
                out, rounds = speculative_decode(draft, target, dp, tp, token_map, gamma, dec)
                assert [t for rd in rounds for t in rd["tokens"]] == out
                assert [rd["round"] for rd in rounds] == list(range(len(rounds)))
                tot["flips"] += sum(rd["verify_flip"] for rd in rounds)
                tot["draft_flips"] += sum(rd["draft_flip"] for rd in rounds)
                bad_out += out != r.token_ids
                got = [(rd["start"], rd["drafted"], rd["accepted"], rd["emitted"]) for rd in rounds]
                want = [(x.start, x.drafted, x.accepted, x.emitted) for x in replay_rounds(matches, gamma, max_new)]
                bad_rounds += got != want
                tot["configs"] += 1
                tot["drafted"] += sum(rd["drafted"] for rd in rounds)
                tot["accepted"] += sum(rd["accepted"] for rd in rounds)
                tot["accepted_eos"] += sum(rd["emitted"] == rd["accepted"] > 0 for rd in rounds)
                tot["unused_by_eos"] += sum(rd["drafted"] - rd["accepted"] for rd in rounds
                                            if rd["emitted"] == rd["accepted"] > 0)
                tot["eos"] += bool(out) and out[-1] == EOS_ID
    return bad_rounds, bad_out, tot


@pytest.fixture(scope="module")
def pairs(tiny_target, make_prompts):
    return [(p, p) for p in make_prompts(tiny_target, 4, seed=20, max_len=10)]


# ---------------------------------------------------------------- greedy: (a), (b), (c)


def test_greedy_equals_target_and_replay(tiny_target, tiny_drafts, identity_map, pairs):
    rates = {}
    eos = accepted_eos = 0
    for sigma, draft in tiny_drafts.items():
        bad_rounds, bad_out, tot = check_greedy_pair(draft, tiny_target, pairs, identity_map)
        assert bad_out == 0, f"sigma {sigma}: speculative output != target greedy output"
        assert bad_rounds == 0, f"sigma {sigma}: loop rounds != teacher-forced replay"
        assert tot["flips"] == 0 and tot["draft_flips"] == 0
        rates[sigma] = tot["accepted"] / tot["drafted"]
        eos += tot["eos"]
        accepted_eos += tot["accepted_eos"]
    assert rates[0.1] > rates[0.3] > rates[0.8] > 0.02, rates
    assert eos and accepted_eos, "the prompts must exercise EOS, and an accepted EOS (no bonus)"


def test_length_caps(tiny_target, tiny_drafts, identity_map, pairs):
    """Budgets of 1, 2, 3 tokens: g = min(gamma, max_new - s - 1) can be 0."""
    bad_rounds, bad_out, tot = check_greedy_pair(tiny_drafts[0.1], tiny_target, pairs[:2], identity_map,
                                                 max_news=(1, 2, 4), gammas=(1, 3))
    assert (bad_rounds, bad_out) == (0, 0)
    out, rounds = speculative_decode(tiny_drafts[0.1], tiny_target, *pairs[0], identity_map, 4, greedy(1))
    assert len(out) == 1 and [(r["drafted"], r["accepted"], r["emitted"]) for r in rounds] == [(0, 0, 1)]


def test_ragged_token_map(tiny_target, tiny_drafts, pairs):
    """1:n, unwritable and unmapped entries: (a) and (b) still hold exactly."""
    ref = generate(tiny_target, [tp for _, tp in pairs], greedy(20))
    freq = [t for t, _ in Counter(t for r in ref for t in r.token_ids if t != EOS_ID).most_common(5)]
    tm = ragged_map(tiny_target.text_vocab_size, [freq[3], freq[4], freq[0], freq[1], freq[2]])
    bad_rounds, bad_out, tot = check_greedy_pair(tiny_drafts[0.3], tiny_target, pairs, tm, max_news=(20,),
                                                 gammas=(1, 3, 5))
    assert (bad_rounds, bad_out, tot["flips"]) == (0, 0, 0)
    assert tot["accepted"] > 0


def test_permuted_draft_accepts_everything(tiny_target, permuted_draft, pairs):
    """(c) the target itself as the draft - directly, and in a shuffled id space through the map:
    every round accepts all it drafted (an accepted EOS ends it early), and (a), (b) hold."""
    draft, tm, _ = permuted_draft
    from specalign.translation import TokenMap

    ident = TokenMap.identity(tiny_target.text_vocab_size)
    accepted_eos = 0
    for d, m in ((tiny_target, ident), (draft, tm)):
        dpairs = [(to_draft_prompt(tp, m), tp) for _, tp in pairs]
        bad_rounds, bad_out, tot = check_greedy_pair(d, tiny_target, dpairs, m, max_news=(20,), gammas=(1, 3, 5))
        assert (bad_rounds, bad_out, tot["flips"]) == (0, 0, 0)
        assert tot["accepted"] == tot["drafted"] - tot["unused_by_eos"]
        accepted_eos += tot["accepted_eos"]
    assert accepted_eos > 0


# ---------------------------------------------------------------- (d) negative controls


def test_broken_draft_rollback_is_caught_only_by_the_replay(tiny_target, tiny_drafts, identity_map, pairs,
                                                            monkeypatch):
    for broken in (lambda cache, n: None,                                     # no rollback
                   lambda cache, n: cache.crop(-(n - 1)) if n > 1 else None):  # off by one
        monkeypatch.setattr(spec, "_crop_draft_cache", broken)
        bad_rounds, bad_out, tot = check_greedy_pair(tiny_drafts[0.3], tiny_target, pairs, identity_map,
                                                     max_news=(20,), gammas=(2, 4))
        assert bad_out == 0, "the output alone cannot see a draft-cache bug"
        assert bad_rounds > 0, "the replay comparison must catch it"
        # and the draft flip check says which side: the draft's proposals, not the target's argmax
        assert tot["draft_flips"] > 0 and tot["flips"] == 0


def test_broken_target_rollback_changes_the_output(tiny_target, tiny_drafts, identity_map, pairs, monkeypatch):
    monkeypatch.setattr(spec, "_crop_target_cache", lambda cache, n: None)
    bad_rounds, bad_out, tot = check_greedy_pair(tiny_drafts[0.3], tiny_target, pairs, identity_map,
                                                 max_news=(20,), gammas=(2, 4))
    assert bad_out > 0
    assert tot["flips"] > 0  # the step-by-step replay flags the rounds a stale target cache got wrong


# ---------------------------------------------------------------- sampling: (e), (f)

SAMPLINGS = [Decoding("t1", do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=6),
             Decoding("t07p09", do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=6)]


def _evaluated(rounds):
    """(positions whose proposal the target evaluated, #accepted) of one run (identity map: no null
    proposals). A round evaluates its accepted proposals plus the first rejected one, if any."""
    pos, acc = [], 0
    for r in rounds:
        rejected = r["emitted"] == r["accepted"] + 1 and r["accepted"] < r["drafted"]
        pos += list(range(r["start"], r["start"] + r["accepted"] + rejected))
        acc += r["accepted"]
    return pos, acc


def _cluster_mean_se(sums, counts):
    n = sum(counts)
    m = sum(sums) / n
    return m, math.sqrt(sum((s - m * c) ** 2 for s, c in zip(sums, counts))) / n


# draft_sampling -> the scores column holding that drafting's per-prefix acceptance probability
ACCEPTANCE_COLUMN = {"sample": "summin", "argmax": "target_prob_of_draft_argmax"}


@pytest.mark.parametrize("draft_sampling", sorted(ACCEPTANCE_COLUMN))
@pytest.mark.parametrize("dec", SAMPLINGS, ids=lambda d: d.name)
def test_sampling_acceptance_matches_summin(small_target, small_draft, make_prompts, dec, draft_sampling):
    """(e), and (g)'s first half: the loop's per-proposal acceptance with draft_sampling "sample"
    is summin's mean along target-sampled streams, with "argmax" it is target_prob_of_draft_argmax's
    (each in expectation, 99% CI; and exactly in expectation at the positions the loop evaluated)."""
    from specalign.translation import TokenMap

    column = ACCEPTANCE_COLUMN[draft_sampling]

    tm = TokenMap.identity(small_target.text_vocab_size)
    prompts = make_prompts(small_target, 8, seed=21)
    # teacher-forced mean summin on target-sampled sequences (positions the loop can draft at:
    # all but the last of the budget)
    tf_sums, tf_counts = [], []
    for rep in range(12):
        reps = [type(p)(f"{p.sample_id}/r{rep}", p.input_ids, p.model_inputs, p.prompt_text) for p in prompts]
        for p, g in zip(reps, generate(small_target, reps, dec, batch_size=len(reps))):
            rows = score_sample(small_draft, small_target, p, p, g.token_ids, tm, dec)
            s = [r[column] for r in rows if r["position"] < dec.max_new_tokens - 1]
            if s:
                tf_sums.append(sum(s))
                tf_counts.append(len(s))
    # the loop, many seeds
    lp_sums, lp_counts = [], []
    mart, var = 0.0, 0.0
    for seed in range(25):
        for p in prompts:
            out, rounds = speculative_decode(small_draft, small_target, p, p, tm, 2, dec,
                                             generator=torch.Generator().manual_seed(seed),
                                             draft_sampling=draft_sampling)
            assert {r["draft_sampling"] for r in rounds} == {draft_sampling}
            # argmax drafting: its proposals are the one-pass argmax (fp32 CPU: no flip), the premise
            # of comparing with target_prob_of_draft_argmax (the sample rule leaves the flag unchecked)
            assert not any(r["draft_flip"] for r in rounds)
            pos, acc = _evaluated(rounds)
            if not pos:
                continue
            lp_sums.append(acc)
            lp_counts.append(len(pos))
            if seed < 10:  # exact check: E[accepts] = sum of the acceptance at the evaluated prefixes
                beta = [r[column] for r in score_sample(small_draft, small_target, p, p, out, tm, dec)]
                mart += acc - sum(beta[j] for j in pos)
                var += sum(beta[j] * (1 - beta[j]) for j in pos)
    tf, tf_se = _cluster_mean_se(tf_sums, tf_counts)
    lp, lp_se = _cluster_mean_se(lp_sums, lp_counts)
    assert 0.03 < tf < 0.9, ("the pair should be neither useless nor perfect", tf)
    assert abs(lp - tf) < 2.576 * math.hypot(tf_se, lp_se), (lp, tf, lp_se, tf_se)
    assert abs(mart) < 3.3 * math.sqrt(var), (mart, var)


def _two_token_distribution(backend, prompt, dec):
    """Exact P(first two tokens) under `dec` (processed distributions); EOS first = 1 token."""
    ids = prompt.input_ids.tolist()
    p0 = processed_distribution(backend.forward(torch.tensor([ids]))[0, -1].double(), dec)
    v = len(p0)
    nxt = torch.tensor([ids + [t] for t in range(v)])
    p1 = processed_distribution(backend.forward(nxt)[:, -1].double(), dec)
    dist = {}
    for a in range(v):
        if p0[a] <= 0:
            continue
        if a == backend.eos_token_id:
            dist[(a,)] = float(p0[a])
            continue
        for b in range(v):
            if p1[a, b] > 0:
                dist[(a, b)] = float(p0[a] * p1[a, b])
    return dist


def _chi2(counts: Counter, dist: dict, n: int):
    """(statistic, dof) with cells of expected count < 5 pooled; inf if a count lies off the support."""
    if any(k not in dist for k in counts):
        return math.inf, 1
    cells = sorted(dist, key=dist.get, reverse=True)
    big = [k for k in cells if dist[k] * n >= 5]
    small = [k for k in cells if dist[k] * n < 5]
    obs = [counts[k] for k in big] + [sum(counts[k] for k in small)]
    exp = [dist[k] * n for k in big] + [sum(dist[k] for k in small) * n]
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp) if e > 0)
    return stat, len(obs) - 1


def _chi2_crit(dof: int, z: float = 3.0902):  # Wilson-Hilferty, upper 0.1%
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


@pytest.mark.parametrize("dec", [Decoding("t1", do_sample=True, max_new_tokens=2),
                                 Decoding("t07p08", do_sample=True, temperature=0.7, top_p=0.8, max_new_tokens=2)],
                         ids=lambda d: d.name)
def test_sampling_output_distribution_is_the_targets(small_target, small_draft, make_prompts, dec):
    from specalign.translation import TokenMap

    tm = TokenMap.identity(small_target.text_vocab_size)
    p = make_prompts(small_target, 1, seed=22)[0]
    n = 1000
    counts = Counter()
    gen = torch.Generator().manual_seed(123)
    for _ in range(n):
        out, _ = speculative_decode(small_draft, small_target, p, p, tm, 2, dec, generator=gen)
        counts[tuple(out)] += 1
    target = _two_token_distribution(small_target, p, dec)
    stat, dof = _chi2(counts, target, n)
    assert stat < _chi2_crit(dof), (stat, dof)
    # the test has power: the same counts are far from the draft's own distribution
    draft = _two_token_distribution(small_draft, p, dec)
    stat_d, dof_d = _chi2(counts, draft, n)
    assert stat_d > 3 * _chi2_crit(dof_d), (stat_d, dof_d)


ARGMAX_DECODINGS = [Decoding("t1", do_sample=True, max_new_tokens=2),
                    Decoding("t07p08", do_sample=True, temperature=0.7, top_p=0.8, max_new_tokens=2)]


def _argmax_loop_counts(draft, target, prompt, tm, dec, n: int) -> Counter:
    """The first two output tokens of n argmax-drafting loops, run i seeded with i."""
    counts = Counter()
    for seed in range(n):
        out, _ = speculative_decode(draft, target, prompt, prompt, tm, 2, dec, draft_sampling="argmax",
                                    generator=torch.Generator().manual_seed(seed))
        counts[tuple(out)] += 1
    return counts


@pytest.mark.parametrize("dec", ARGMAX_DECODINGS, ids=lambda d: d.name)
def test_argmax_drafting_output_distribution_is_the_targets(small_target, small_draft, make_prompts, dec):
    """(g) lossless: with draft_sampling "argmax" (accept the draft's argmax x with probability p(x),
    else draw from p without x) the joint distribution of the first two output tokens is the
    target's own sampling distribution, computed exactly by enumeration (16-id vocabulary).

    Statistical test: Pearson chi-square over 2000 runs (seeds 0..1999; cells of expected count
    < 5 pooled), rejected above the upper 0.1% point of chi-square(dof) (Wilson-Hilferty): a
    correct loop fails with probability 1e-3 per decoding (the seeds are fixed, so a pass is
    reproducible). At gamma 2 and 2 tokens the first round drafts one token, so the first
    output token is the accept / residual one and the second is the bonus or the next round's.
    Power: a loop with a misstated proposal probability (q(x) = 0.5 instead of 1, i.e. accepting
    with min(1, 2 p(x)) and a residual that keeps x) is rejected by the same test on 1000 runs."""
    from specalign.translation import TokenMap

    tm = TokenMap.identity(small_target.text_vocab_size)
    p = make_prompts(small_target, 1, seed=22)[0]
    target = _two_token_distribution(small_target, p, dec)
    # the draft's first argmax is a likely but not a sure target token: both branches are exercised
    first = int(small_draft.forward(p.input_ids.reshape(1, -1))[0, -1].argmax())
    p_first = sum(v for k, v in target.items() if k[0] == first)
    assert 0.1 < p_first < 0.9, p_first
    n = 2000
    counts = _argmax_loop_counts(small_draft, small_target, p, tm, dec, n)
    stat, dof = _chi2(counts, target, n)
    assert stat < _chi2_crit(dof), (stat, dof)
    assert 0.1 * n < sum(v for k, v in counts.items() if k[0] == first) < 0.9 * n


def test_argmax_drafting_test_has_power_and_null_proposals(small_target, small_draft, make_prompts, monkeypatch):
    """The lossless test of (g) rejects a subtly wrong rule, and holds with a null proposal: the
    draft's first argmax unmapped (d2t empty), so the target always rejects it and draws from p."""
    from specalign.translation import TokenMap

    dec = ARGMAX_DECODINGS[1]
    n_ids = small_target.text_vocab_size
    p = make_prompts(small_target, 1, seed=22)[0]
    target = _two_token_distribution(small_target, p, dec)
    first = int(small_draft.forward(p.input_ids.reshape(1, -1))[0, -1].argmax())
    d2t = [(i,) for i in range(n_ids)]
    d2t[first] = ()
    unmapped = TokenMap(d2t, {i: (i,) for i in range(n_ids)}, kinds=["exact"] * n_ids)
    n = 1000
    counts = _argmax_loop_counts(small_draft, small_target, p, unmapped, dec, n)
    stat, dof = _chi2(counts, target, n)
    assert stat < _chi2_crit(dof), (stat, dof)

    real_one_hot = spec._one_hot
    monkeypatch.setattr(spec, "_one_hot", lambda t, v: real_one_hot(t, v) * 0.5)
    counts = _argmax_loop_counts(small_draft, small_target, p, TokenMap.identity(n_ids), dec, n)
    stat, dof = _chi2(counts, target, n)
    assert stat > _chi2_crit(dof), (stat, dof)


# ---------------------------------------------------------------- bookkeeping


def test_draft_sampling_setting(small_target, small_draft, tiny_target, tiny_drafts, identity_map, pairs,
                                make_prompts):
    """The rounds say how the draft proposed: greedy decodings always "argmax" (the setting is
    ignored: the same rounds), sampled ones the setting; an unknown setting is refused."""
    from specalign.translation import TokenMap

    dec = greedy(8)
    rows = {ds: speculative_sample(tiny_drafts[0.3], tiny_target, *pairs[0], identity_map, 3, dec,
                                   draft_sampling=ds, check_flips=False, measure_target_only=False)
            for ds in ("sample", "argmax")}
    assert {r["draft_sampling"] for rs in rows.values() for r in rs} == {"argmax"}
    assert [r["tokens"] for r in rows["sample"]] == [r["tokens"] for r in rows["argmax"]]
    tm = TokenMap.identity(small_target.text_vocab_size)
    p = make_prompts(small_target, 1, seed=23)[0]
    sampled = Decoding("s", do_sample=True, seed=3, max_new_tokens=6)
    for ds in ("sample", "argmax"):
        tbl = run_speculative(small_draft, small_target, [(p, p)], tm, 2, sampled, measure_target_only=False,
                              draft_sampling=ds)
        assert set(tbl.column("draft_sampling").to_pylist()) == {ds}
    with pytest.raises(ValueError, match="draft_sampling must be one of sample, argmax"):
        run_speculative(small_draft, small_target, [(p, p)], tm, 2, sampled, draft_sampling="top1")


def test_sampling_reproducible(small_target, small_draft, make_prompts):
    from specalign.translation import TokenMap

    tm = TokenMap.identity(small_target.text_vocab_size)
    dec = Decoding("s", do_sample=True, seed=3, max_new_tokens=10)
    p = make_prompts(small_target, 1, seed=23)[0]
    a = speculative_decode(small_draft, small_target, p, p, tm, 3, dec)[0]
    assert a == speculative_decode(small_draft, small_target, p, p, tm, 3, dec)[0]  # seeded from (seed, sample_id)
    outs = {tuple(speculative_decode(small_draft, small_target, p, p, tm, 3, dec,
                                     generator=torch.Generator().manual_seed(s))[0]) for s in range(10)}
    assert len(outs) > 1


def test_rows_table_and_timing(tiny_target, tiny_drafts, identity_map, pairs):
    dec = greedy(8)
    rows = speculative_sample(tiny_drafts[0.1], tiny_target, *pairs[0], identity_map, 3, dec)
    assert rows and all(r["sample_id"] == pairs[0][1].sample_id and r["gamma"] == 3 for r in rows)
    assert all(r["target_only_ms"] > 0 and r["verify_ms"] > 0 for r in rows)
    # the workflow's baseline: the target's generated stream's own timings (prefill + steps 1..n-1)
    assert spec.stream_time_ms(10.0, [0.0, 2.0, 3.0], 3) == 15.0
    assert spec.stream_time_ms(10.0, [0.0, 2.0, 4.0], 5) == 10.0 + 2.0 + 4.0 + 2 * 3.0  # past the end: the mean step
    assert spec.stream_time_ms(10.0, [0.0], 1) == 10.0 and spec.stream_time_ms(10.0, [0.0], 0) == 0.0
    assert rows[0]["draft_ms"] > 0
    assert target_only_ms(tiny_target, pairs[0][1], 5) > 0
    calls = []
    tbl = run_speculative(tiny_drafts[0.1], tiny_target, pairs[:2], identity_map, 2, dec,
                          progress=lambda k, n: calls.append(k))
    assert tbl.schema == SCHEMAS["rounds"] and calls == [1, 2]
    assert rounds_table(rows).num_rows == len(rows)
    with pytest.raises(ValueError, match="gamma"):
        speculative_decode(tiny_drafts[0.1], tiny_target, *pairs[0], identity_map, 0, dec)


# ---------------------------------------------------------------- timing context (issue #19, defect 8)


def _record_forwards(monkeypatch, backend, log: list, who: str) -> None:
    real = backend.forward

    def recording(input_ids, *args, **kwargs):
        log.append((who, tuple(input_ids.shape)))
        return real(input_ids, *args, **kwargs)

    monkeypatch.setattr(backend, "forward", recording)


def test_loop_warms_both_models_up_before_the_first_timed_sample(tiny_target, tiny_drafts, identity_map, pairs,
                                                                 monkeypatch):
    """run_speculative's first sample is not either model's first forward ever: the forwards of the
    timed work (speculative_sample on each pair, as run_speculative runs it) come after warm-up
    forwards of both models that include each one's prompt prefill."""
    draft, dec = tiny_drafts[0.3], greedy(6)
    log: list = []
    _record_forwards(monkeypatch, draft, log, "draft")
    _record_forwards(monkeypatch, tiny_target, log, "target")
    for dp, tp in pairs[:2]:
        speculative_sample(draft, tiny_target, dp, tp, identity_map, 3, dec, check_flips=False,
                           measure_target_only=False)
    timed = list(log)
    log.clear()
    tbl = run_speculative(draft, tiny_target, pairs[:2], identity_map, 3, dec, check_flips=False,
                          measure_target_only=False)
    warm = log[:len(log) - len(timed)]
    assert log[len(warm):] == timed, "the timed samples' forwards are unchanged, and come last"
    dp, tp = pairs[0]
    assert ("draft", (1, dp.input_ids.numel())) in warm and ("target", (1, tp.input_ids.numel() + 1)) in warm
    assert {"draft", "target"} == {who for who, _ in warm}
    name = spec.device_name(tiny_target.device)
    assert set(tbl.column("device").to_pylist()) == {name} and name.startswith("cpu")
    assert set(tbl.column("torch_threads").to_pylist()) == {torch.get_num_threads()}
