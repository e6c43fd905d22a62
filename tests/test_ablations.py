"""Input ablations (specalign/ablations.py): the transforms worked by hand, the config checks, the jobs they
add, and each ablation through the REAL backends' prepare and the score job's passes (untrained demo
models on a tiny demo dataset)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from workflow_helpers import REPO, tiny_config

from specalign import ablations as ab
from specalign import events as ev
from specalign import stages
from specalign.dataset import sample_events, sample_video_frames, samples_from_instructions
from specalign.specs import Decoding, ModelSpec

CLIP_DIR = REPO / "tests/data/checkpoints/clip-vit-large-patch14-336"


# ------------------------------------------------------------------------------ transforms by hand
def _stream(p):
    return {"x": np.array([0, 1, 2, 1], np.uint16), "y": np.array([0, 0, 1, 2], np.uint16),
            "t": np.array([10, 15, 40, 41], np.int64), "p": np.array(p, np.int8)}


def test_time_reversal_by_hand():
    r = ab.time_reversed(_stream([1, 0, 1, 1]))
    # t' = 10 + 41 - t in reversed order: [51-41, 51-40, 51-15, 51-10]; polarity flipped (0/1)
    assert r["t"].tolist() == [10, 11, 36, 41] and r["t"].dtype == np.int64
    assert r["x"].tolist() == [1, 2, 1, 0] and r["y"].tolist() == [2, 1, 0, 0]
    assert r["p"].tolist() == [0, 0, 1, 0] and r["p"].dtype == np.int8
    # the -1/1 convention stays -1/1
    # flipped [-1, 1, -1, 1], then reversed
    assert ab.time_reversed(_stream([1, -1, 1, -1]))["p"].tolist() == [1, -1, 1, -1]
    assert ab.flip_polarity(np.array([1, -1, -1])).tolist() == [-1, 1, 1]
    assert ab.flip_polarity(np.array([True, False])).tolist() == [False, True]


@pytest.mark.parametrize("p", [[1, 0, 1, 1], [1, -1, -1, 1], [0, 0, 0, 1]])
def test_time_reversal_twice_is_the_identity(p):
    s = _stream(p)
    twice = ab.time_reversed(ab.time_reversed(s))
    for k in "xytp":
        np.testing.assert_array_equal(twice[k], s[k])
        assert twice[k].dtype == s[k].dtype


def test_time_reversal_keeps_pixels_and_counts_and_swaps_the_pictures():
    """The same events land on the same pixels; EventGPT's first chunk of the reversed stream is the
    last chunk of the original, played backwards, its colours swapped."""
    rng = np.random.default_rng(0)
    n = 50
    s = {"x": rng.integers(0, 8, n).astype(np.uint16), "y": rng.integers(0, 6, n).astype(np.uint16),
         "t": np.sort(rng.integers(0, 1000, n)), "p": rng.integers(0, 2, n).astype(np.uint8)}
    r = ab.time_reversed(s)
    assert sorted(zip(r["x"].tolist(), r["y"].tolist())) == sorted(zip(s["x"].tolist(), s["y"].tolist()))
    assert np.all(np.diff(r["t"]) >= 0) and r["t"].min() == s["t"].min() and r["t"].max() == s["t"].max()
    assert int(r["p"].sum()) == n - int(s["p"].sum())
    fwd, back = ev.eventgpt_frames(s, 5, 6, 8), ev.eventgpt_frames(r, 5, 6, 8)
    # chunk sizes 10 each: chunk 0 of the reversal holds the last 10 events; per pixel the LAST event of
    # a chunk wins, so compare on pixels hit once in that chunk: red there <-> blue here
    last = slice(40, 50)
    pix = list(zip(s["y"][last].tolist(), s["x"][last].tolist()))
    once = [q for q in pix if pix.count(q) == 1]
    assert once
    for y, x in once:
        a, b = tuple(fwd[4][y, x]), tuple(back[0][y, x])
        assert {a, b} == {ev.POSITIVE_RGB, ev.NEGATIVE_RGB}, (y, x, a, b)


def test_blank_is_zero_events_and_renders_white():
    b = ab.blank_events(_stream([1, 0, 1, 1]))
    assert all(b[k].size == 0 for k in "xytp") and b["t"].dtype == np.int64
    frames = ev.eventgpt_frames(b, n=5)
    assert len(frames) == 5 and all(f.shape == (*ev.EMPTY_CANVAS, 3) and (f == 255).all() for f in frames)
    sized = ev.eventgpt_frames(b, n=5, height=6, width=8)
    assert all(f.shape == (6, 8, 3) and (f == 255).all() for f in sized)
    # between 1 and n-1 events a chunk would be empty: still refused (a real clip that short is broken)
    with pytest.raises(ValueError, match="chunk"):
        ev.eventgpt_frames({k: v[:3] for k, v in _stream([1, 0, 1, 1]).items()}, n=5)


def test_a_blank_picture_is_one_clip_input_whatever_its_size():
    """The empty stream's canvas size is arbitrary only if every uniform white picture becomes the same
    CLIP input: the EventGPT processor (the checkpoint's preprocessor_config) says so."""
    from specalign.backends.eventgpt.processing import build_image_processor

    proc = build_image_processor(SimpleNamespace(image_size=336), CLIP_DIR)
    white = [np.full((*ev.EMPTY_CANVAS, 3), 255, np.uint8), np.full((480, 640, 3), 255, np.uint8)]
    a, b = (proc(images=w, return_tensors="pt")["pixel_values"][0] for w in white)
    assert a.shape == (3, 336, 336)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [2, 3, 4, 7, 48, 200])
def test_derangement_has_no_fixed_point_and_is_seeded(n):
    for seed in range(5):
        perm = ab.derangement(n, seed)
        assert sorted(perm.tolist()) == list(range(n))
        assert not (perm == np.arange(n)).any()
        np.testing.assert_array_equal(perm, ab.derangement(n, seed))
    # another seed, another derangement (n = 2 has only one; n = 3 two)
    assert n == 2 or any(not np.array_equal(ab.derangement(n, 0), ab.derangement(n, s)) for s in range(1, 20))


def test_donors_do_not_depend_on_order_and_need_two_clips():
    ids = [f"seq/{i:06d}" for i in range(9)]
    d = ab.donors(ids, 3)
    assert d == ab.donors(list(reversed(ids)), 3)
    assert sorted(d.values()) == sorted(ids) and all(d[k] != k for k in ids)
    with pytest.raises(ValueError, match="at least 2 clips"):
        ab.donors(["only"], 0)


def test_mean_frame_by_hand():
    a = np.zeros((2, 2, 3, 3), np.uint8)
    a[0] = 10
    a[1] = 20
    b = np.full((1, 2, 3, 3), 60, np.uint8)
    m = ab.mean_frame([a, b])
    # (10 + 20 + 60) / 3 frames = 30, pixel by pixel
    assert m.shape == (2, 3, 3) and m.dtype == np.uint8 and (m == 30).all()
    with pytest.raises(ValueError, match="clip_b"):
        ab.mean_frame([a, np.zeros((1, 4, 4, 3), np.uint8)], ["clip_a", "clip_b"])


# ------------------------------------------------------------------------------ config and jobs
def _cfg(**abl):
    cfg = tiny_config()
    cfg.pop("ablations", None)
    cfg.pop("grounding", None)   # it names the committed ablations (tests/test_grounding.py checks it)
    if abl:
        cfg["ablations"] = abl
    _validate(cfg)
    return cfg


def _validate(cfg):
    from snakemake.utils import validate

    validate(cfg, str(REPO / "schemas/config.schema.yaml"))


@pytest.mark.parametrize("entry, key, what", [
    ({"side": "draft", "kind": "mean_frame"}, "ablations.bad.kind", "eventgpt"),
    ({"side": "target", "kind": "blank"}, "ablations.bad.kind", "video_llava"),
    ({"side": "draft", "kind": "blank", "decodings": ["beam"]}, "ablations.bad.decodings", "beam"),
    ({"side": "draft", "kind": "blank", "models": ["demo_target"]}, "ablations.bad.models", "demo_target"),
])
def test_a_kind_or_key_the_side_cannot_take_is_an_error_naming_the_key(entry, key, what):
    cfg = _cfg(bad=entry)
    with pytest.raises(ValueError, match=key) as e:
        ab.configured(cfg)
    assert what in str(e.value)


def test_a_text_only_model_has_nothing_to_ablate():
    cfg = _cfg()
    cfg["models"]["text"] = {"family": "causal_lm", "demo": "text"}
    cfg["pairs"].append({"draft": "text", "target": "demo_target"})
    cfg["ablations"] = {"blank": {"side": "draft", "kind": "blank"}}
    _validate(cfg)
    with pytest.raises(ValueError, match="ablations.blank.kind.*text.*text-only"):
        ab.configured(cfg)
    cfg["ablations"]["blank"]["models"] = ["demo_draft"]   # the event draft only: fine
    assert [j["pair"] for j in stages.ablation_jobs(cfg)] == ["demo_draft__demo_target"] * 2


@pytest.mark.parametrize("abl, says", [
    ({"errors": {"side": "draft", "kind": "blank"}}, "'errors' should not be valid"),   # the errors table's name
    ({"x": {"side": "draft", "kind": "noise"}}, "'noise' is not one of"),
    ({"x": {"side": "both", "kind": "blank"}}, "'both' is not one of"),
    ({"X y": {"side": "draft", "kind": "blank"}}, "'X y' does not match"),                # a file-name part
])
def test_schema_refuses_bad_names_kinds_and_sides(abl, says):
    cfg = tiny_config()
    cfg["ablations"] = abl
    with pytest.raises(Exception, match=says):
        _validate(cfg)


def test_ablation_jobs_specs_and_runs():
    cfg = _cfg(rev={"side": "draft", "kind": "time_reversed", "decodings": ["greedy"]},
               mean={"side": "target", "kind": "mean_frame", "seed": 4})
    jobs = [w for s, w in stages.all_jobs(cfg) if s == "score_ablation"]
    assert sorted((w["ablation"], w["decoding"]) for w in jobs) == [
        ("mean", "greedy"), ("mean", "sampled"), ("rev", "greedy")]
    w = {"dataset": "demo", "pair": "demo_draft__demo_target", "decoding": "greedy"}
    spec = stages.spec(cfg, "score_ablation", **w, ablation="rev")
    # the score job's spec, plus what the job reads of the ablation (not its job-selecting keys)
    assert {k: v for k, v in spec.items() if k != "ablation"} == stages.spec(cfg, "score", **w)
    assert spec["ablation"] == {"name": "rev", "side": "draft", "kind": "time_reversed", "seed": 0}
    assert stages.fingerprint_path("score_ablation", **w, ablation="rev") == \
        "results/.fingerprints/score_ablation/demo/demo_draft__demo_target/greedy/rev.json"
    runs = stages.ablation_runs(cfg)
    assert sorted(r.scores for r in runs) == [f"results/score/demo/demo_draft__demo_target/{d}.parquet"
                                              for d in ("greedy.mean", "greedy.rev", "sampled.mean")]
    assert all(not r.rounds and r.timing is None and not r.draft_tokens and r.target_tokens for r in runs)
    assert [r.ablation for r in stages.runs(cfg)] == [None, None]
    acc = stages.spec(cfg, "acceptance")
    assert [r["ablation"] for r in acc["ablation_runs"]] == [r.ablation for r in runs]


def test_adding_an_ablation_changes_no_other_jobs_spec():
    """What reruns is what the fingerprints say: every job but the new ones and the tables keeps its spec."""
    plain = _cfg()
    more = _cfg(blank={"side": "draft", "kind": "blank", "decodings": ["greedy"]})
    before = {(s, tuple(sorted(w.items()))): stages.spec(plain, s, **w) for s, w in stages.all_jobs(plain)}
    after = {(s, tuple(sorted(w.items()))): stages.spec(more, s, **w) for s, w in stages.all_jobs(more)}
    new = sorted(k[0] for k in set(after) - set(before))
    changed = sorted(k[0] for k in set(after) & set(before) if after[k] != before[k])
    assert new == ["score_ablation"] and changed == ["acceptance"]
    assert "ablation_runs" not in before[("acceptance", ())]   # no ablations: the tables' spec as before


def test_the_committed_configs_validate_their_ablations():
    for path in ("config.yaml", ".test/config.yaml"):
        cfg = yaml.safe_load((REPO / path).read_text())
        _validate(cfg)
        ab.configured(cfg)


# ------------------------------------------------------------------------------ through the real backends
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A 4-clip demo test split, the demo tokenizers, and UNTRAINED demo draft and target checkpoints
    loaded by their backends (what is checked here does not depend on training)."""
    from transformers import AutoTokenizer

    from specalign import demo_data as dd
    from specalign.backends import load_backend
    from specalign.backends.eventgpt import write_official_checkpoint
    from specalign.backends.prompts import event_prompt, video_prompt
    from specalign.demo_models import build_draft, build_target
    from specalign.demo_tokenizer import demo_corpus, train_demo_tokenizers

    tmp = tmp_path_factory.mktemp("ablation_demo")
    root = tmp / "data"
    dd.build_demo_dataset(root, dd.DemoSpec(n_train=1, n_test=4, size=32, frames=10))
    q = ["What is in this scene?"]
    samples = samples_from_instructions(root, root / "instructions.json", q, "test")
    texts = demo_corpus(dd.caption_corpus(sorted({dd.caption(*c) for c in dd.COMBINATIONS})), q,
                        [event_prompt("{question}"), video_prompt("{question}")])
    train_demo_tokenizers(texts, tmp / "tok/draft", tmp / "tok/target")
    dtok, ttok = (AutoTokenizer.from_pretrained(str(tmp / f"tok/{r}")) for r in ("draft", "target"))
    build_target(ttok, 0).save_pretrained(tmp / "target")
    ttok.save_pretrained(tmp / "target")
    write_official_checkpoint(build_draft(dtok, 0), dtok, tmp / "draft", include_clip=True)
    draft = load_backend(ModelSpec(name="draft", family="eventgpt", path=str(tmp / "draft")))
    target = load_backend(ModelSpec(name="target", family="video_llava", path=str(tmp / "target")))
    return SimpleNamespace(samples=samples, draft=draft, target=target)


def _prepared(backend, samples, name, side, kind, seed=0):
    with ab.Ablator({"name": name, "side": side, "kind": kind, "seed": seed}, samples) as a:
        wrapped = a.wrap(backend)
        return {s.sample_id: wrapped.prepare(s) for s in samples}, a


def test_event_ablations_through_eventgpt_prepare(demo):
    d, samples = demo.draft, demo.samples
    plain = {s.sample_id: d.prepare(s) for s in samples}
    key = "event_tensors"
    # blank: EventGPT's input for five white pictures, the same for every clip, unlike any plain clip's
    blank, _ = _prepared(d, samples, "b", "draft", "blank")
    white = d.event_tensors([np.full((*ev.EMPTY_CANVAS, 3), 255, np.uint8)] * d.num_frames)
    for sid, p in blank.items():
        torch.testing.assert_close(p.model_inputs[key], white, rtol=0, atol=0)
        assert not torch.equal(p.model_inputs[key], plain[sid].model_inputs[key])
        assert torch.equal(p.input_ids, plain[sid].input_ids)   # the prompt is untouched
    # time reversed: the pictures of the reversed stream (the file written and read back, exactly)
    rev, _ = _prepared(d, samples, "r", "draft", "time_reversed")
    for s in samples:
        want = d.event_tensors(ev.eventgpt_frames(ab.time_reversed(sample_events(s)), d.num_frames))
        torch.testing.assert_close(rev[s.sample_id].model_inputs[key], want, rtol=0, atol=0)
        assert not torch.equal(want, plain[s.sample_id].model_inputs[key])
    # shuffled: each clip gets exactly its donor's plain input, never its own
    shuf, a = _prepared(d, samples, "s", "draft", "shuffled", seed=7)
    for s in samples:
        donor = a.donor(s.sample_id)
        assert donor != s.sample_id
        torch.testing.assert_close(shuf[s.sample_id].model_inputs[key], plain[donor].model_inputs[key], rtol=0, atol=0)


def test_rgb_ablations_through_video_llava_prepare(demo):
    t, samples = demo.target, demo.samples
    plain = {s.sample_id: t.prepare(s) for s in samples}
    key = "pixel_values_videos"
    shuf, a = _prepared(t, samples, "s", "target", "shuffled", seed=1)
    for s in samples:
        torch.testing.assert_close(shuf[s.sample_id].model_inputs[key], plain[a.donor(s.sample_id)].model_inputs[key],
                                   rtol=0, atol=0)
    mean, a = _prepared(t, samples, "m", "target", "mean_frame")
    want = ab.mean_frame([sample_video_frames(s, 8) for s in samples])
    expected = t.pixel_values_videos(np.repeat(want[None], 8, axis=0))
    for s in samples:
        got = mean[s.sample_id].model_inputs[key]
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        assert torch.equal(got[0, 0], got[0, 7])   # every frame the same mean frame
        assert not torch.equal(got, plain[s.sample_id].model_inputs[key])


def test_an_ablation_the_backend_cannot_take_is_refused(demo):
    with ab.Ablator({"name": "m", "side": "draft", "kind": "mean_frame", "seed": 0}, demo.samples) as a:
        with pytest.raises(ValueError, match="cannot apply to draft"):
            a.wrap(demo.draft)


def test_a_bad_donor_fails_the_sample_that_receives_it(demo, tmp_path):
    """A shuffled clip whose donor's event file is broken: the job's prepare names the sample (or records
    it with skip_bad), as the score job does for a clip's own file."""
    import dataclasses
    import logging

    from specalign import jobs
    from specalign.dataset import SampleError

    samples = list(demo.samples)
    bad = tmp_path / "broken.npy"
    bad.write_bytes(b"not a pickle")
    a0 = ab.Ablator({"name": "s", "side": "draft", "kind": "shuffled", "seed": 0}, samples)
    victim = next(s for s in samples if a0.donor(s.sample_id) == samples[0].sample_id)
    samples[0] = dataclasses.replace(samples[0], event_path=bad)
    for skip in (False, True):
        job = jobs.Job(rule="score_ablation", spec={"skip_bad": skip}, input=None, output=None, wildcards={},
                       log=logging.getLogger("t"))
        with ab.Ablator({"name": "s", "side": "draft", "kind": "shuffled", "seed": 0}, samples) as a:
            if not skip:
                with pytest.raises(SampleError, match=victim.sample_id):
                    job.prepare(a.wrap(demo.draft), samples)
                continue
            prompts, errors = job.prepare(a.wrap(demo.draft), samples)
    assert [e["sample_id"] for e in errors] == [victim.sample_id] and errors[0]["stage"] == "score_ablation"
    assert "broken.npy" in errors[0]["error"] and len(prompts) == len(samples) - 1


def test_ablated_scores_keep_the_other_sides_numbers(demo):
    """One side ablated: the other side's columns are the plain pass's, exactly (the same stream, the same
    inputs on that side); the ablated side's move."""
    import polars as pl

    from specalign.scoring import score_table
    from specalign.translation import TokenMap

    d, t, samples = demo.draft, demo.target, demo.samples
    tm = TokenMap.from_tokenizers(d.tokenizer, t.tokenizer)
    rng = np.random.default_rng(0)
    streams = {s.sample_id: rng.integers(5, 300, 6).tolist() for s in samples}
    dec = Decoding(name="greedy", max_new_tokens=8)

    def scored(side=None, kind=None):
        with ab.Ablator({"name": "x", "side": side or "draft", "kind": kind or "blank", "seed": 0}, samples) as a:
            sd = a.wrap(d) if side == "draft" else d
            st = a.wrap(t) if side == "target" else t
            items = [(sd.prepare(s), st.prepare(s), streams[s.sample_id]) for s in samples]
        return pl.from_arrow(score_table(d, t, items, tm, dec))

    plain, blank, mean = scored(), scored("draft", "blank"), scored("target", "mean_frame")
    draft_cols = ["draft_token", "draft_argmax_id", "match", "draft_logprob", "summin"]
    assert plain["target_logprob"].equals(blank["target_logprob"])
    assert not plain["draft_logprob"].equals(blank["draft_logprob"])
    assert plain.select(draft_cols).equals(mean.select(draft_cols))
    assert not plain["target_logprob"].equals(mean["target_logprob"])


# ------------------------------------------------------------------------------ the tables
def test_ablated_runs_are_measured_like_any_and_leave_the_plain_rows_alone(tmp_path):
    """Two clips, streams of 4 target tokens ending in EOS (id 2), budget 8. Plain matches s1 1101, s2 1111;
    blank matches s1 0001, s2 1001. Greedy replay of the ablation at gamma 2, by hand (g = min(2, 8 - s - 1)
    = 2 throughout): s1 rounds at s = 0, 1, 2 accept 0, then s = 3 accepts the EOS (a = 1, no bonus): 4
    rounds, 1 accepted; s2: s = 0 accepts 1 (+ bonus), s = 2 accepts 0, s = 3 accepts the EOS: 3 rounds, 2
    accepted. So 7 rounds, 3 accepted, 14 drafted, tau = (3 + 7) / 7, alpha = 3 / 8."""
    import polars as pl

    from specalign import artifacts
    from specalign.specs import Run
    from specalign.summary import acceptance_tables

    streams = {"s1": [3, 4, 5, 2], "s2": [6, 7, 8, 2]}

    def scores(name, match):
        rows = [{"sample_id": sid, "position": j, "target_token": t, "draft_token": t if match[sid][j] else 9,
                 "draft_argmax_id": t if match[sid][j] else 9, "match": bool(match[sid][j]), "draft_logprob": -0.5,
                 "target_logprob": -0.1, "summin": float(match[sid][j]), "mapped_mass": 1.0,
                 "target_prob_of_draft_argmax": float(match[sid][j]), "is_eos": t == 2, "max_new_tokens": 8}
                for sid, ts in streams.items() for j, t in enumerate(ts)]
        artifacts.write_parquet(artifacts.table("scores", rows), tmp_path / name, "scores")
        return str(tmp_path / name)

    tokens = [{"sample_id": sid, "position": j, "token_id": t, "logprob": -0.1, "prefill_ms": 1.0, "decode_ms": 1.0,
               "finish_reason": "eos", "prompt_tokens": 4, "peak_mem_mb": 0.0, "device": "cpu", "torch_threads": 1}
              for sid, ts in streams.items() for j, t in enumerate(ts)]
    artifacts.write_parquet(artifacts.table("tokens", tokens), tmp_path / "target.parquet", "tokens")
    keys = dict(dataset="toy", pair="dr__tg", draft="dr", target="tg", decoding=Decoding("greedy", max_new_tokens=8),
                translation="unused", target_vocab="unused", target_tokens=[str(tmp_path / "target.parquet")])
    plain = Run(**keys, scores=scores("plain.parquet", {"s1": [1, 1, 0, 1], "s2": [1, 1, 1, 1]}))
    blank = Run(**keys, ablation="blank", scores=scores("blank.parquet", {"s1": [0, 0, 0, 1], "s2": [1, 0, 0, 1]}))

    alone = acceptance_tables([plain], [1, 2], n_boot=50)
    both = acceptance_tables([plain], [1, 2], n_boot=50, ablation_runs=[blank])
    s = both["summary"]
    assert s["ablation"].to_list() == [None, None, "blank", "blank"]
    # the plain rows and the deployable-run tables are what they are without the ablation
    assert s.filter(pl.col("ablation").is_null()).drop("ablation").equals(alone["summary"].drop("ablation"))
    for name in ("histograms", "histogram_checks", "loop", "cost"):
        assert both[name].equals(alone[name]), name
    r = s.filter((pl.col("ablation") == "blank") & (pl.col("gamma") == 2)).row(0, named=True)
    assert r["leviathan_alpha"] == pytest.approx(3 / 8) and r["method"] == "greedy_replay"
    assert (r["rounds"], r["accepted"], r["drafted"]) == (7, 3, 14)
    assert r["tau"] == pytest.approx(10 / 7) and r["token_acceptance_rate"] == pytest.approx(3 / 14)
    assert r["leviathan_alpha_lo"] <= r["leviathan_alpha"] <= r["leviathan_alpha_hi"]
    assert r["positional_match_rate"] is None and r.get("c") is None
    # per position: the ablation's own rows, with the marginals of its own replay (gamma 2, position 1:
    # 3 of 7 rounds accept at least one token: s1's last, s2's first and last)
    pp = both["per_position"].filter((pl.col("ablation") == "blank") & (pl.col("gamma") == 2)
                                     & (pl.col("position") == 1)).row(0, named=True)
    assert pp["marginal"] == pytest.approx(3 / 7)
    assert both["per_position"].filter(pl.col("ablation").is_null()).height == alone["per_position"].height
