"""Tests for specalign.divergence: where the free-running answers part, what the draft misses under
teacher forcing, on which token classes and samples.

One small hand-built set of artifacts (artifacts.table / write_parquet, every schema real), reused
by tests/test_report_html.py (`synthetic_artifacts`). Its numbers are worked out in the comments.
"""
from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from test_timing import synthetic_timing

from specalign import acceptance as acc
from specalign import artifacts
from specalign import divergence as dv
from specalign.artifacts import read_streams
from specalign.specs import Decoding, Run
from specalign.summary import acceptance_tables

EOS = 2
BUDGET = 8
# target vocabulary: id -> (text, special/added)
VOCAB = {0: ("<unk>", True), 1: ("<s>", True), 2: ("</s>", True), 3: (" the", False), 4: (" red", False),
         5: (" blue", False), 6: (" circle", False), 7: (" moves", False), 8: (" left", False), 9: (".", False),
         10: (" 42", False), 11: (" a", False), 12: ("<image>", True)}
# the draft's ids are the target's for 0..11 (<image> is target-only); draft 12 is re-tokenised to
# " red circle" (1:2), 13 unmapped
RETOKENISED, UNMAPPED_DRAFT = 12, 13
# target streams (target ids): "the COLOUR circle moves left ." </s>
TARGET = {f"s{k}": [3, 4 if k % 2 == 0 else 5, 6, 7, 8, 9, EOS] for k in range(6)}
# teacher-forced: the draft misses the colour of s1, s3, s5 (proposes " red" for " blue") and the
# " left" of s4 (proposes " 42"); everything else matches
MISS = {("s1", 1): 4, ("s3", 1): 4, ("s5", 1): 4, ("s4", 4): 10}
# free-running draft streams (draft ids)
DRAFT = {
    "s0": [3, 4, 6, 7, 8, 9, EOS],             # identical
    "s1": [3, 4, 6, 7, 8, 9, EOS],             # " red" for " blue": diverges at 1
    "s2": [3, RETOKENISED, 7, 8, 9, EOS],      # maps to the target exactly: identical
    "s3": [3, 5, 6, 7],                        # a prefix of the target: diverges at 4 (its length)
    "s4": [UNMAPPED_DRAFT, 4, 6],              # unmapped first token: diverges at 0
    "s5": [3, 4, 6, 7, 8, 9, EOS],             # " red" for " blue": diverges at 1
}
MANIFEST = {  # sample -> (duration_ms, num_events, question)
    "s0": (1000.0, 100, "What is in this scene?"), "s1": (1000.0, 200, "What is in this scene?"),
    "s2": (1000.0, 300, "Describe the scene."), "s3": (2000.0, 400, "Describe the scene."),
    "s4": (2000.0, 500, "What is in this scene?"), "s5": (2000.0, 600, "Describe the scene."),
}


def _tokens(streams: dict[str, list[int]], ms: float, prefill: float, path: Path) -> str:
    rows = [{"sample_id": sid, "position": j, "token_id": t, "logprob": -0.1,
             "prefill_ms": prefill, "decode_ms": 0.0 if j == 0 else ms, "finish_reason": "eos",
             "prompt_tokens": 4, "peak_mem_mb": 0.0} for sid, ts in streams.items() for j, t in enumerate(ts)]
    artifacts.write_parquet(artifacts.table("tokens", rows), path, "tokens")
    return str(path)


def _scores(decoding: Decoding) -> list[dict]:
    rows = []
    for sid, ts in TARGET.items():
        for j, t in enumerate(ts):
            proposed = MISS.get((sid, j), t)
            match = proposed == t
            # sampled: the expected acceptance is below 1 where the argmax matches, above 0 where not
            summin = float(match) if decoding.greedy else (0.8 if match else 0.3)
            rows.append({"sample_id": sid, "position": j, "target_token": t, "draft_token": proposed,
                         "draft_argmax_id": proposed, "match": match, "draft_logprob": -0.1 if match else -3.0,
                         "target_logprob": -0.1, "summin": summin, "mapped_mass": 1.0, "is_eos": t == EOS,
                         "max_new_tokens": BUDGET})
    return rows


def _rounds(scores: pl.DataFrame, gamma: int, path: Path) -> str:
    """The loop's rounds = the replay's, with timings: 10 ms per draft call, 30 per verification;
    target-only decoding 20 ms per token."""
    rt = acc.replay_rounds_table(scores, gamma)
    rows = []
    for r in rt.iter_rows(named=True):
        ts = TARGET[r["sample_id"]]
        rows.append({**r, "tokens": ts[r["start"]:r["start"] + r["emitted"]], "draft_ms": 10.0 * r["drafted"],
                     "verify_ms": 30.0, "verify_flip": False, "draft_flip": False,
                     "target_only_ms": 20.0 * len(ts)})
    artifacts.write_parquet(artifacts.table("rounds", rows), path, "rounds")
    return str(path)


def synthetic_artifacts(root: Path, gammas=(1, 2, 3), loop_gammas=(1, 3), n_boot: int = 50):
    """Every artifact the report_html rule reads, for two runs (greedy and sampled at temperature
    0.7) of one pair on dataset "demo": (runs, {"summary", "per_position", "cost", "loop"} CSV
    paths, {"demo": manifest path})."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    vocab = [{"id": i, "token": t.replace(" ", "▁"), "text": t, "is_special": s, "is_added": i == 12,
              "is_byte": False} for i, (t, s) in VOCAB.items()]
    artifacts.write_parquet(artifacts.table("vocab", vocab), root / "vocab.parquet", "vocab")
    trans = [{"draft_id": i, "draft_token": t, "kind": "special" if s else "exact", "target_ids": [i],
              "target_tokens": [t]} for i, (t, s) in VOCAB.items() if i != 12]
    trans += [{"draft_id": RETOKENISED, "draft_token": "▁redcircle", "kind": "retokenised", "target_ids": [4, 6],
               "target_tokens": ["▁red", "▁circle"]},
              {"draft_id": UNMAPPED_DRAFT, "draft_token": "<x>", "kind": "unmapped", "target_ids": [],
               "target_tokens": []}]
    artifacts.write_parquet(artifacts.table("translation", trans), root / "translation.parquet", "translation")
    man = [{"sample_id": sid, "split": "test", "question": q, "reference": f"a clip {sid}", "event_path": "",
            "video_dir": "", "mp4_path": "", "event_image_paths": [], "duration_ms": d, "num_events": n,
            "width": 64, "height": 64, "num_frames": 8, "short_video": False} for sid, (d, n, q) in MANIFEST.items()]
    artifacts.write_parquet(artifacts.table("manifest", man), root / "manifest.parquet", "manifest")
    runs = []
    for dec in (Decoding("greedy", max_new_tokens=BUDGET),
                Decoding("sampled", do_sample=True, temperature=0.7, max_new_tokens=BUDGET)):
        d = root / dec.name
        d.mkdir(exist_ok=True)
        tbl = artifacts.table("scores", _scores(dec))
        artifacts.write_parquet(tbl, d / "scores.parquet", "scores")
        scores = pl.read_parquet(d / "scores.parquet")
        runs.append(Run(dataset="demo", pair="draft__target", draft="draft", target="target", decoding=dec,
                        scores=str(d / "scores.parquet"), translation=str(root / "translation.parquet"),
                        target_vocab=str(root / "vocab.parquet"),
                        draft_tokens=(_tokens(DRAFT, 4.0, 5.0, d / "draft.parquet"),),
                        target_tokens=(_tokens(TARGET, 20.0, 30.0, d / "target.parquet"),),
                        rounds=tuple(_rounds(scores, g, d / f"rounds_g{g}.parquet") for g in loop_gammas),
                        # the paired timing job's table: c and the measured speedup come from it alone
                        timing=synthetic_timing(d / "timing.parquet", scores["sample_id"].unique().to_list(),
                                                range(1, max(gammas) + 1), loop_gammas)))
    tables = acceptance_tables(runs, list(gammas), n_boot)
    csvs = {}
    for name, df in tables.items():
        if name in ("summary", "per_position", "cost", "loop"):
            path = root / f"{name}.csv"
            artifacts.write_text(df.write_csv(float_precision=6), path)
            csvs[name] = str(path)
    return runs, csvs, {"demo": str(root / "manifest.parquet")}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return synthetic_artifacts(tmp_path_factory.mktemp("divergence"))


# ------------------------------------------------------------------------------------------ classes
@pytest.mark.parametrize("text,special,is_byte,expected", [
    ("</s>", True, False, "special"), (" the", False, False, "function_word"), ("The", False, False, "function_word"),
    (" circle", False, False, "content_word"), ("ing", False, False, "content_word"), (".", False, False,
                                                                                     "punctuation"),
    (" ,", False, False, "punctuation"), ("\n", False, False, "punctuation"), (" 42", False, False, "number"),
    ("3.5", False, False, "number"), ("-", False, False, "punctuation"), ("\x0c", False, True, "content_word"),
    ("", False, True, "content_word"), ("", False, False, "punctuation"), ("x2", False, False, "content_word"),
])
def test_token_class_from_text(text, special, is_byte, expected):
    assert dv.token_class(text, special, is_byte) == expected


# ------------------------------------------------------------------------------------------ free-running
def test_draft_streams_are_mapped_and_matched_position_by_position(synthetic):
    runs, csvs, _ = synthetic
    run = runs[0]
    drafts = dv.mapped_draft_streams(run)
    assert drafts["s2"] == TARGET["s2"]                      # 12 -> [4, 6]: re-tokenised 1:n
    assert drafts["s4"] == [dv.UNMAPPED, 4, 6]               # unmapped -> -1
    pm = acc.positional_match_rate(drafts, read_streams(run.target_tokens))
    # by hand, draft (in target ids) against TARGET index by index: s0 7 of 7; s1 6 of 7 (" red" at 1);
    # s2 7 of 7; s3 4 of 4 (its length); s4 2 of 3 (unmapped at 0); s5 6 of 7 -> 32 of 35 draft tokens.
    # No draft is longer than its target, so the min-length denominator is 35 as well.
    assert (pm.n_samples, pm.matched, pm.draft_tokens, pm.min_tokens) == (6, 32, 35, 35)
    assert pm.positional_match_rate == pm.positional_match_rate_min_len == 32 / 35
    # summary.csv's column is that number for both runs (they share the free-running draft streams)
    summ = pl.read_csv(csvs["summary"])
    assert set(summ["decoding"]) == {"greedy", "sampled"}
    assert all(math.isclose(x, 32 / 35, abs_tol=1e-6) for x in summ["positional_match_rate"])


def test_first_divergence_per_sample(synthetic):
    runs, _, _ = synthetic
    drafts, targets = dv.mapped_draft_streams(runs[0]), {k: list(v) for k, v in TARGET.items()}
    first = dv.first_divergence(drafts, targets)
    got = dict(zip(first["sample_id"], first["first_divergence"]))
    assert got == {"s0": None, "s1": 1, "s2": None, "s3": 4, "s4": 0, "s5": 1}
    assert first.filter(pl.col("identical"))["sample_id"].to_list() == ["s0", "s2"]
    dist = dv.divergence_distribution(first)
    rows = {r["first_divergence"]: r for r in dist.iter_rows(named=True)}
    assert rows[1]["n"] == 2 and rows[None]["n"] == 2 and math.isclose(rows[1]["share"], 2 / 6)
    assert math.isclose(rows[4]["cumulative_share"], 4 / 6) and rows[None]["cumulative_share"] is None


def test_positional_by_position_is_the_seeds_measure_per_position(synthetic):
    runs, _, _ = synthetic
    drafts, targets = dv.mapped_draft_streams(runs[0]), {k: list(v) for k, v in TARGET.items()}
    pos = dv.positional_by_position(drafts, targets, n_boot=50)
    r = {row["position"]: row for row in pos.iter_rows(named=True)}
    # position 0: s4 is unmapped -> 5/6; position 1: s1, s5 differ, s4 has " red" = s4's " red" -> 4/6
    assert math.isclose(r[0]["positional_match_rate"], 5 / 6) and math.isclose(r[1]["positional_match_rate"], 4 / 6)
    assert math.isclose(r[1]["still_identical"], 3 / 6)     # s0, s2, s3 (s4 already parted at 0)
    # position 4: s3 ended (counts as a mismatch), s4 ended -> s0, s2 match, and s1, s5 match again by chance
    assert math.isclose(r[4]["positional_match_rate"], 4 / 6) and math.isclose(r[4]["still_identical"], 2 / 6)
    assert all(row["positional_match_rate_lo"] <= row["positional_match_rate"] <= row["positional_match_rate_hi"]
               for row in pos.iter_rows(named=True))


# ------------------------------------------------------------------------------------------ teacher-forced
def test_teacher_forced_by_position_and_class(synthetic):
    runs, _, _ = synthetic
    greedy, sampled = (pl.read_parquet(r.scores) for r in runs)
    tf = {r["position"]: r for r in dv.teacher_forced_by_position(greedy, n_boot=50).iter_rows(named=True)}
    assert math.isclose(tf[1]["match_rate"], 3 / 6) and tf[1]["n"] == 6 and math.isclose(tf[4]["match_rate"], 5 / 6)
    assert tf[0]["match_rate"] == 1.0 and tf[0]["match_rate_lo"] == tf[0]["match_rate_hi"] == 1.0
    classes = dv.vocab_classes(pl.read_parquet(runs[0].target_vocab))
    assert classes[3] == "function_word" and classes[9] == "punctuation" and classes[12] == "special"
    by = {r["token_class"]: r for r in dv.by_token_class(greedy, classes, n_boot=50).iter_rows(named=True)}
    # content words: " red"/" blue" (6), " circle", " moves", " left" (18): 4 misses of 24
    assert by["content_word"]["n"] == 24 and math.isclose(by["content_word"]["match_rate"], 20 / 24)
    assert by["special"]["n"] == 6 and by["special"]["match_rate"] == 1.0   # EOS
    assert by["function_word"]["n"] == 6 and by["punctuation"]["n"] == 6
    lst = dv.by_token_class(greedy, classes, n_boot=50)["token_class"].to_list()
    assert lst == [c for c in dv.TOKEN_CLASSES if c in lst]                    # documented order
    s = {r["token_class"]: r for r in dv.by_token_class(sampled, classes, n_boot=50).iter_rows(named=True)}
    assert math.isclose(s["content_word"]["mean_summin"], (20 * 0.8 + 4 * 0.3) / 24, rel_tol=1e-6)  # float32


def test_top_disagreements_have_counts_and_two_example_contexts(synthetic):
    runs, _, _ = synthetic
    scores = pl.read_parquet(runs[0].scores)
    text = dv.vocab_text(pl.read_parquet(runs[0].target_vocab))
    top = dv.disagreements(scores, text, top=5, context=8)
    first = top.row(0, named=True)
    assert (first["target_text"], first["draft_text"], first["count"]) == (" blue", " red", 3)
    # its first two occurrences by sample and position: s1@1 and s3@1, each after " the"
    assert (first["example_1_at"], first["example_2_at"]) == ("s1@1", "s3@1")
    assert first["example_1"] == " the" and first["example_2"] == " the"
    second = top.row(1, named=True)
    assert (second["target_text"], second["draft_text"], second["count"]) == (" left", " 42", 1)
    assert second["example_1"] == " the red circle moves" and second["example_2"] is None
    short = dv.disagreements(scores, text, top=5, context=2)
    assert short.row(1, named=True)["example_1"] == "… circle moves"      # cut to 2 tokens, marked


def test_acceptance_against_sample_attributes_with_intervals(synthetic):
    runs, _, man = synthetic
    scores, manifest = pl.read_parquet(runs[0].scores), pl.read_parquet(man["demo"])
    att = dv.by_sample_attribute(scores, manifest, n_boot=50)
    dur = att.filter(pl.col("attribute") == "duration_ms").sort("order")
    # two distinct durations: s0-s2 (1 miss in 21 positions), s3-s5 (3 misses in 21)
    assert dur["group"].to_list() == ["1000", "2000"] and dur["n_samples"].to_list() == [3, 3]
    assert math.isclose(dur["match_rate"][0], 20 / 21) and math.isclose(dur["match_rate"][1], 18 / 21)
    ev = att.filter(pl.col("attribute") == "num_events").sort("order")
    assert ev.height == 4 and ev["n_samples"].sum() == 6                    # 6 values > 4: quantile bins
    q = att.filter(pl.col("attribute") == "question").sort("order")
    assert q["group"].to_list() == ["Describe the scene.", "What is in this scene?"]
    for row in att.iter_rows(named=True):
        assert row["match_rate_lo"] - 1e-12 <= row["match_rate"] <= row["match_rate_hi"] + 1e-12
        assert row["mean_summin_lo"] - 1e-12 <= row["mean_summin"] <= row["mean_summin_hi"] + 1e-12


def test_analyse_run_reads_only_the_stored_artifacts(synthetic):
    runs, _, man = synthetic
    d = dv.analyse_run(runs[1], man["demo"], n_boot=50)
    assert d.first.height == 6 and d.top.height >= 2 and d.classes.height == 4 and d.attributes.height
    assert d.label == "demo · draft → target · sampled" and d.median_first_divergence == 1.0
