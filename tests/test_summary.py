"""Tests for specalign.summary: which number goes in which row and column of results/acceptance/*.csv.

One tiny hand-built run (every artifact written through artifacts.table / write_parquet) whose
numbers are worked out by hand in the comments, from the replay rule of docs/architecture.md:
    g = max(0, min(gamma, max_new_tokens - s - 1)); a = min(g, run of True from s, N - s);
    emitted = a if s + a == N else a + 1; s += emitted.
Proposal i (1-based) of a round starting at s predicts position s + i - 1: past the answer when >= N.
"""
from __future__ import annotations

import math

import polars as pl
import pytest

from specalign import artifacts
from specalign.artifacts import SUMMARY_COLUMNS
from specalign.report import render
from specalign.specs import Decoding, Run
from specalign.summary import acceptance_tables, cost_ratio_ci, timings

EOS = 2
BUDGET = 16
# target streams (target ids) and the teacher-forced matches of the draft along them
TARGET = {"a": [5, 6, EOS], "b": [5, 8, EOS]}
MATCH = {"a": [1, 1, 1], "b": [1, 0, 1]}
# free-running draft streams (draft ids = target ids: identity translation)
DRAFT = {"a": [5, 6, EOS], "b": [5, EOS]}
# decode_ms per position (position 0 comes from the prefill: 0)
DRAFT_MS = {"a": [0, 2, 2], "b": [0, 3]}        # sums: a 4 ms / 2 steps, b 3 ms / 1 step
TARGET_MS = {"a": [0, 5, 5], "b": [0, 4, 4]}    # sums: a 10 ms / 2 steps, b 8 ms / 2 steps
# c = pooled draft mean / pooled target mean = (7/3) / (18/4) = 14/27 (not the mean of the
# per-sample ratios, (0.4 + 0.75) / 2). Resamples of the two samples: {a,a} (8/4)/(20/4) = 0.4,
# {a,b} 14/27, {b,b} (6/2)/(16/4) = 0.75, probabilities 1/4, 1/2, 1/4 -> 95% interval [0.4, 0.75].
C, C_LO, C_HI = 14 / 27, 0.4, 0.75

# The loop's rounds at gamma 4 = the replay's (N = 3 for both samples, budget 16):
#   a: s=0: g 4, a = min(4, 3, 3) = 3, s+a == N -> e 3.   Proposal 4 predicts position 3: post-EOS 1.
#   b: s=0: g 4, a 1, e 2 (the target's 8).              Proposal 4 predicts position 3: post-EOS 1.
#      s=2: g = min(4, 16-2-1) = 4, a = min(4, 1, 1) = 1, s+a == N -> e 1 (accepted EOS).
#           Proposals 2..4 predict positions 3..5: post-EOS 3.
ROUNDS_G4 = {"a": [(0, 4, 3, 3, [5, 6, EOS])], "b": [(0, 4, 1, 2, [5, 8]), (2, 4, 1, 1, [EOS])]}


def write_run(tmp_path, decoding: Decoding, summin: float | None) -> Run:
    """The artifacts of one run; summin None = greedy (summin = match), else that value everywhere."""
    d = tmp_path / decoding.name
    d.mkdir()
    scores = [{"sample_id": sid, "position": j, "target_token": t, "draft_token": t if MATCH[sid][j] else 7,
               "draft_argmax_id": t if MATCH[sid][j] else 7, "match": bool(MATCH[sid][j]), "draft_logprob": -0.1,
               "target_logprob": -0.1, "summin": float(MATCH[sid][j]) if summin is None else summin,
               "mapped_mass": 1.0, "is_eos": t == EOS, "max_new_tokens": BUDGET}
              for sid, ts in TARGET.items() for j, t in enumerate(ts)]
    artifacts.write_parquet(artifacts.table("scores", scores), d / "scores.parquet", "scores")

    def tokens(streams, ms, prefill, path):
        rows = [{"sample_id": sid, "position": j, "token_id": t, "logprob": -0.1,
                 "prefill_ms": prefill, "decode_ms": float(ms[sid][j]), "finish_reason": "eos",
                 "prompt_tokens": 4, "peak_mem_mb": 0.0}
                for sid, ts in streams.items() for j, t in enumerate(ts)]
        artifacts.write_parquet(artifacts.table("tokens", rows), path, "tokens")
        return str(path)

    rounds = [{"sample_id": sid, "gamma": 4, "round": k, "start": s, "drafted": g, "accepted": a, "emitted": e,
               "tokens": toks, "draft_ms": 1.0, "verify_ms": 2.0, "verify_flip": False, "draft_flip": False, "target_only_ms": 9.0}
              for sid, rs in ROUNDS_G4.items() for k, (s, g, a, e, toks) in enumerate(rs)]
    artifacts.write_parquet(artifacts.table("rounds", rounds), d / "rounds.parquet", "rounds")
    translation = [{"draft_id": i, "draft_token": str(i), "kind": "exact", "target_ids": [i], "target_tokens": [str(i)]}
                   for i in range(10)]
    artifacts.write_parquet(artifacts.table("translation", translation), d / "translation.parquet", "translation")
    return Run(dataset="toy", pair="dr__tg", draft="dr", target="tg", decoding=decoding,
               scores=str(d / "scores.parquet"), translation=str(d / "translation.parquet"),
               target_vocab=str(d / "vocab.parquet"),
               draft_tokens=[tokens(DRAFT, DRAFT_MS, 10.0, d / "draft.parquet")],
               target_tokens=[tokens(TARGET, TARGET_MS, 20.0, d / "target.parquet")],
               rounds=[str(d / "rounds.parquet")])


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("summary")
    greedy = write_run(tmp, Decoding("greedy", max_new_tokens=BUDGET), None)
    sampled = write_run(tmp, Decoding("sampled", do_sample=True, max_new_tokens=BUDGET), 0.5)
    return acceptance_tables([greedy, sampled], [2, 4], n_boot=1000), greedy


def rows(df: pl.DataFrame, decoding: str) -> dict[int, dict]:
    return {r["gamma"]: r for r in df.filter(pl.col("decoding") == decoding).iter_rows(named=True)}


def test_post_eos_columns_hand(tables):
    t, _ = tables
    g = rows(t["summary"], "greedy")
    # gamma 4 (ROUNDS_G4): 3 rounds, drafted 12, accepted 3 + 1 + 1 = 5, emitted 6; post-EOS 1 + 1 + 3 = 5.
    # token_acceptance_rate (vLLM, every proposal) 5/12; in the answer 5/(12 - 5) = 5/7; tau (5 + 3)/3.
    r = g[4]
    assert r["method"] == "greedy_replay"
    assert (r["rounds"], r["drafted"], r["accepted"], r["post_eos_drafted"]) == (3, 12, 5, 5)
    assert r["token_acceptance_rate"] == pytest.approx(5 / 12)
    assert r["token_acceptance_rate_in_answer"] == pytest.approx(5 / 7)
    assert r["tau"] == pytest.approx(8 / 3) and r["tokens_per_call"] == pytest.approx(2.0)
    # resamples {a,a} 6/6 = 1, {b,b} 4/8 = 1/2 (in the answer) -> the interval's ends
    assert (r["token_acceptance_rate_in_answer_lo"], r["token_acceptance_rate_in_answer_hi"]) == (0.5, 1.0)
    # gamma 2: a: s=0: g 2, a 2, s+a = 2 != 3 -> e 3 (proposals at positions 0, 1: none past).
    #          b: s=0: g 2, a 1, e 2 | s=2: g 2, a 1, accepted EOS, e 1; proposal 2 -> position 3: 1 past.
    # drafted 6, accepted 4, post-EOS 1 -> 4/6 and 4/5.
    r = g[2]
    assert (r["drafted"], r["accepted"], r["post_eos_drafted"]) == (6, 4, 1)
    assert r["token_acceptance_rate"] == pytest.approx(4 / 6)
    assert r["token_acceptance_rate_in_answer"] == pytest.approx(4 / 5)


def test_per_position_excludes_post_eos_hand(tables):
    t, _ = tables
    pp = t["per_position"].filter((pl.col("decoding") == "greedy") & (pl.col("gamma") == 4)).sort("position")
    # Rounds (offered up to = min(g, N - s), accepted): a (3, 3) | b (3, 1) (1, 1).
    # i=1: reached 3 / offered 3 -> 1;         cond 1
    # i=2: reached (a>=2) 1 / offered 2 -> 1/2; cond: offered & a>=1: 2 -> 1/2
    # i=3: reached 1 / offered 2 -> 1/2;        cond: offered & a>=2: a -> 1
    # i=4: no round offers position 4 inside an answer of 3 tokens -> NaN (counting the post-EOS
    #      proposals as rejections read 0/3 and 0/1 here: where answers end, not acceptance).
    assert pp["unconditional"].to_list()[:3] == pytest.approx([1, 1 / 2, 1 / 2])
    assert pp["conditional"].to_list()[:3] == pytest.approx([1, 1 / 2, 1])
    assert math.isnan(pp["unconditional"][3]) and math.isnan(pp["conditional"][3])


def test_loop_and_replay_give_identical_numbers(tables):
    # The sampled run's loop rounds at gamma 4 are the greedy replay's rounds: its measured columns
    # (N = each sample's emitted total) must be the replay's (N = the scored stream's length).
    t, _ = tables
    rep, loop = rows(t["summary"], "greedy")[4], rows(t["summary"], "sampled")[4]
    assert loop["method"] == "loop"
    for k in ("rounds", "drafted", "accepted", "post_eos_drafted", "token_acceptance_rate",
              "token_acceptance_rate_in_answer", "token_acceptance_rate_in_answer_lo",
              "token_acceptance_rate_in_answer_hi", "tau", "tau_lo", "tau_hi", "tokens_per_call"):
        assert loop[k] == rep[k], k
    pp = t["per_position"].filter(pl.col("gamma") == 4).sort("decoding", "position")
    g, s = pp.filter(pl.col("decoding") == "greedy"), pp.filter(pl.col("decoding") == "sampled")
    assert g.select("unconditional", "conditional").equals(s.select("unconditional", "conditional"))
    lvr = t["loop"].filter(pl.col("decoding") == "greedy")
    assert lvr["rounds_identical"].to_list() == [True] and lvr["output_equals_target"].to_list() == [True]


def test_iid_rows_leave_measured_columns_null(tables):
    t, _ = tables
    s = rows(t["summary"], "sampled")
    # sampled, no loop at gamma 2: nothing measured the rounds.
    r = s[2]
    assert r["method"] == "iid_from_alpha"
    for k in ("rounds", "drafted", "accepted", "token_acceptance_rate", "tau", "tokens_per_call",
              "token_acceptance_rate_lo", "token_acceptance_rate_hi", "tau_lo", "tau_hi",
              "token_acceptance_rate_in_answer", "post_eos_drafted"):
        assert r[k] is None, k
    assert r["n_samples"] == 2  # the samples alpha was measured on
    # alpha = mean summin = 0.5. Predictions at gamma 2: iid_tau = 1 + 0.5 + 0.25 = 1.75,
    # iid_token_acceptance = (0.5 + 0.25) / 2 = 0.375.
    assert r["leviathan_alpha"] == pytest.approx(0.5)
    assert r["iid_tau"] == pytest.approx(1.75) and r["iid_token_acceptance"] == pytest.approx(0.375)
    # The loop row carries the prediction beside its measurement: gamma 4, iid_tau
    # 1 + 0.5 + 0.25 + 0.125 + 0.0625 = 1.9375, iid_token_acceptance 0.9375 / 4; measured tau 8/3.
    r = s[4]
    assert r["tau"] == pytest.approx(8 / 3) and r["iid_tau"] == pytest.approx(1.9375)
    assert r["iid_token_acceptance"] == pytest.approx(0.9375 / 4)
    # Greedy rows too: alpha 5/6 (5 matches of 6), gamma 4.
    r = rows(t["summary"], "greedy")[4]
    assert r["iid_tau"] == pytest.approx(sum((5 / 6) ** k for k in range(5)))
    # Per-position rows of an iid row: nothing measured either.
    pp = t["per_position"].filter((pl.col("decoding") == "sampled") & (pl.col("gamma") == 2))
    assert pp["unconditional"].is_null().all() and pp["conditional"].is_null().all()
    assert t["summary"].columns[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS


def test_cost_ratio_interval_hand(tables):
    t, run = tables
    assert timings(run.draft_tokens) == (pytest.approx(10.0), pytest.approx(7 / 3))
    assert timings(run.target_tokens) == (pytest.approx(20.0), pytest.approx(4.5))
    assert cost_ratio_ci(run.draft_tokens, run.target_tokens, n_boot=1000) == (pytest.approx(C_LO), pytest.approx(C_HI))
    # best gamma, greedy (alpha 5/6): at c = 14/27 speedups 1.207, 1.241, 1.216 -> 2; at c_hi 0.75:
    # 1.048, 1.011 -> 1; at c_lo 0.4: 1.310, 1.404, 1.412 (gamma 3: 3.1065/2.2), 1.380 -> 3.
    # sampled (alpha 0.5): c >= alpha -> 0; at c_hi 0; at c_lo 0.4: gamma 1 1.5/1.4 = 1.071,
    # gamma 2 1.75/1.8 < 1 -> 1.
    want = {"greedy": (1, 2, 3), "sampled": (0, 0, 1)}
    for dec, (lo, best, hi) in want.items():
        for r in rows(t["summary"], dec).values():
            assert (r["c"], r["c_lo"], r["c_hi"]) == (pytest.approx(C), pytest.approx(C_LO), pytest.approx(C_HI))
            assert (r["best_gamma_lo"], r["best_gamma"], r["best_gamma_hi"]) == (lo, best, hi)
        cost = t["cost"].filter(pl.col("decoding") == dec)
        assert cost["c_lo"].to_list() == pytest.approx([C_LO] * 2)
        assert cost["c_hi"].to_list() == pytest.approx([C_HI] * 2)
        assert (cost["best_gamma_lo"] == lo).all() and (cost["best_gamma_hi"] == hi).all()


def test_render_labels_predictions(tables):
    t, _ = tables
    md = render(t["summary"], t["loop"], t["cost"], {}, {})
    headers = [line for line in md.splitlines() if line.startswith("| dataset")]
    cells = [c.strip() for h in headers for c in h.strip("|").split("|")]
    for col in ("iid_tau", "iid_token_acceptance", "expected_speedup_iid", "latency_speedup", "best_gamma",
                "best_gamma_lo", "best_gamma_hi", "speedup_iid"):
        assert f"{col} (predicted)" in cells, col
        assert col not in cells, f"{col} shown without its label"
    for col in ("token_acceptance_rate", "tau", "c", "c_lo", "c_hi", "token_acceptance_rate_in_answer"):
        assert col in cells and f"{col} (predicted)" not in cells
    # the iid row's measured cells are empty ("—"); the prediction is in its labelled column
    measured = table_rows(md, "### Per lookahead gamma: measured")
    predicted = table_rows(md, "### Per lookahead gamma: predicted by the i.i.d. model")
    iid = [r for r in measured if r["method"] == "iid_from_alpha"]
    assert len(iid) == 1 and iid[0]["token_acceptance_rate"] == "—" and iid[0]["tau"] == "—"
    iid = [r for r in predicted if r["method"] == "iid_from_alpha"]
    assert iid[0]["iid_tau (predicted)"] == "1.750" and iid[0]["tau"] == "—"


def table_rows(md: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first markdown table after `heading`, as {header: cell}."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line == heading)
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
        elif table:
            break
    header, body = table[0], table[2:]
    return [dict(zip(header, r)) for r in body]


def test_draft_ranking_by_hand():
    """Ranked by the best predicted speedup over gammas; a draft without one (no c) is listed last."""
    from specalign.report import draft_ranking

    k = {"dataset": "d", "target": "t", "decoding": "greedy"}
    summary = pl.DataFrame([
        {**k, "draft": "a", "gamma": 1, "expected_speedup_iid": 1.2, "leviathan_alpha": 0.6, "c": 0.2},
        {**k, "draft": "a", "gamma": 2, "expected_speedup_iid": 1.5, "leviathan_alpha": 0.6, "c": 0.2},
        {**k, "draft": "b", "gamma": 1, "expected_speedup_iid": None, "leviathan_alpha": 0.9, "c": None},
        {**k, "draft": "c", "gamma": 1, "expected_speedup_iid": 1.3, "leviathan_alpha": 0.7, "c": 0.3}])
    loop = pl.DataFrame([{**k, "draft": "b", "gamma": 4, "measured_speedup": 0.8}])
    r = draft_ranking(summary, loop)
    assert r.select("rank", "draft", "best_predicted_gamma", "best_predicted_speedup", "best_measured_speedup").rows() \
        == [(1, "a", 2, 1.5, None), (2, "c", 1, 1.3, None), (3, "b", None, None, 0.8)]
