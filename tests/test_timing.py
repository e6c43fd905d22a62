"""specalign.timing: the paired timing job (both models, one job, interleaved) and its summary.

On tiny real models: the table's shape follows the job's plan (every kind per clip, reps, positions,
gammas), each step's context is the clip's real one, the loop's greedy output has the target's own
length, the plain baseline decodes exactly the loop's length, interleaving and ABBA order hold.
On hand-built tables: every ratio is formed from one job's clips, its bootstrap interval over clips
is worked out by hand, and rows of two devices are refused, naming both.
"""
from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from specalign import timing
from specalign.generation import device_name, generate
from specalign.specs import Decoding

VERIFY, LOOP, REPS = (1, 3), (2,), 2


@pytest.fixture(scope="module")
def timed(tiny_target, tiny_drafts, identity_map, make_prompts):
    draft = tiny_drafts[0.3]
    dec = Decoding("greedy", max_new_tokens=12)
    prompts = make_prompts(tiny_target, 2, seed=31, max_len=6)
    streams = [g.token_ids for g in generate(tiny_target, prompts, dec)]
    items = [(p, p, y) for p, y in zip(prompts, streams)]
    tbl = timing.time_pairs(draft, tiny_target, items, identity_map, dec, VERIFY, LOOP, REPS)
    return pl.from_arrow(tbl), prompts, streams


def test_context_positions():
    assert timing.context_positions(1) == [1]      # a one-token stream: its prompt is the context
    assert timing.context_positions(2) == [1]
    assert timing.context_positions(10) == [1, 5, 9]
    with pytest.raises(ValueError, match="at least one token"):
        timing.context_positions(0)


def test_table_follows_the_plan(timed):
    df, prompts, streams = timed
    for p, y in zip(prompts, streams):
        clip = df.filter(pl.col("sample_id") == p.sample_id)
        n_pos = len(timing.context_positions(len(y)))
        counts = dict(clip.group_by("kind").len().iter_rows())
        assert counts == {"draft_prefill": REPS, "target_prefill": REPS, "draft_step": n_pos * REPS,
                          "target_step": n_pos * REPS, "verify": n_pos * REPS * len(VERIFY),
                          "loop": REPS * len(LOOP), "target_only": REPS * len(LOOP)}
        # a step at position j runs with prompt + y_<j-1 in the cache (computed from the prompt, not the cache)
        steps = clip.filter(pl.col("kind").is_in(["draft_step", "target_step", "verify"]))
        assert (steps["context"] == p.input_ids.numel() + steps["position"] - 1).all()
        assert (clip.filter(pl.col("kind") == "verify")["tokens"] == clip.filter(pl.col("kind") == "verify")["gamma"]
                + 1).all()
        assert (clip.filter(pl.col("kind") == "target_prefill")["tokens"] == p.input_ids.numel()).all()
        # greedy: the loop's output is the target's greedy stream, so it has the stream's length, and the
        # plain baseline decodes exactly as many tokens
        loop = clip.filter(pl.col("kind") == "loop").sort("rep")
        plain = clip.filter(pl.col("kind") == "target_only").sort("rep")
        assert loop["tokens"].to_list() == [len(y)] * REPS
        assert plain["tokens"].to_list() == loop["tokens"].to_list()
        # the loop's forward passes are part of its wall time; at gamma 2 a round yields at most 3 tokens
        assert ((loop["forward_ms"] > 0) & (loop["forward_ms"] <= loop["ms"])).all()
        assert (loop["rounds"] >= math.ceil(len(y) / 3)).all()
    assert (df["ms"] > 0).all()
    assert df["device"].unique().to_list() == [device_name("cpu")]
    assert df["dtype"].unique().to_list() == ["float32"]
    assert df["torch_threads"].unique().to_list() == [torch.get_num_threads()]


def test_passes_are_interleaved(timed):
    df, prompts, _ = timed
    clip = df.filter(pl.col("sample_id") == prompts[0].sample_id)   # row order = measurement order
    kinds = clip["kind"].to_list()
    assert kinds[:4] == ["draft_prefill", "target_prefill", "draft_prefill", "target_prefill"]
    ctx = clip.filter(pl.col("kind").is_in(["draft_step", "target_step", "verify"]))
    per_rep = ["draft_step", "target_step"] + ["verify"] * len(VERIFY)
    assert ctx["kind"].to_list() == per_rep * (ctx.height // len(per_rep))
    # A/B then B/A: the loop and plain decoding swap order every rep
    ab = clip.filter(pl.col("kind").is_in(["loop", "target_only"]))["kind"].to_list()
    assert ab == ["loop", "target_only", "target_only", "loop"]


def test_summary_of_the_job(timed):
    df, _, _ = timed
    s = timing.summarise(df, n_boot=200)
    assert s["device"] == device_name("cpu") and s["n_clips"] == 2 and s["reps"] == REPS
    assert s["c"] > 0 and s["c_lo"] <= s["c"] <= s["c_hi"]
    assert sorted(s["verify"]) == list(VERIFY) and sorted(s["loop"]) == list(LOOP)
    # c is the pooled ratio of the job's own per-clip median steps
    per = df.group_by("sample_id", "kind").agg(pl.col("ms").median())
    d = per.filter(pl.col("kind") == "draft_step")["ms"].sum()
    t = per.filter(pl.col("kind") == "target_step")["ms"].sum()
    assert s["c"] == pytest.approx(d / t)
    assert s["loop"][2]["rounds"] == df.filter(pl.col("kind") == "loop")["rounds"].sum()


@pytest.mark.parametrize("do_sample", [False, True])
def test_plain_decode_is_the_targets_decoding(tiny_target, make_prompts, do_sample):
    """The A/B baseline makes what generation makes for the same prompt and seed (EOS ignored)."""
    dec = Decoding("d", do_sample=do_sample, temperature=0.8, seed=4, max_new_tokens=9)
    for p in make_prompts(tiny_target, 3, seed=7):
        want = generate(tiny_target, [p], dec, ignore_eos=True)[0].token_ids
        assert timing.plain_decode(tiny_target, p, dec, 9) == want


# ---------------------------------------------------------------- the summariser on hand-built tables
BASE = {"position": 1, "context": 9, "rounds": 0, "dtype": "bfloat16", "torch_threads": 4}


def hand_rows(clip: str, d_step, t_step, verify: dict, loop=None, device="NVIDIA H100", prefill=(8.0, 30.0)):
    rows = []
    for rep, (d, t) in enumerate(zip(d_step, t_step)):
        rows += [{**BASE, "sample_id": clip, "kind": k, "rep": rep, "gamma": 0, "tokens": 1, "ms": ms,
                  "forward_ms": ms, "device": device}
                 for k, ms in (("draft_prefill", prefill[0]), ("target_prefill", prefill[1]),
                               ("draft_step", d), ("target_step", t))]
        rows += [{**BASE, "sample_id": clip, "kind": "verify", "rep": rep, "gamma": k, "tokens": k + 1, "ms": v[rep],
                  "forward_ms": v[rep], "device": device} for k, v in verify.items()]
    if loop:
        for rep, (ms, fwd, rounds, plain) in enumerate(loop):
            rows += [{**BASE, "sample_id": clip, "kind": "loop", "rep": rep, "gamma": 4, "tokens": 20, "ms": ms,
                      "forward_ms": fwd, "rounds": rounds, "device": device},
                     {**BASE, "sample_id": clip, "kind": "target_only", "rep": rep, "gamma": 4, "tokens": 20,
                      "ms": plain, "forward_ms": plain, "device": device}]
    return rows


def test_summarise_hand():
    # clip a: draft steps 1, 3 (mean 2), target steps 9, 11 (mean 10): its own c = 0.2
    # clip b: draft steps 4, 4 (mean 4), target steps 10, 10 (mean 10): its own c = 0.4
    # pooled c = (2 + 4) / (10 + 10) = 0.3. Resamples {a,a} 0.2 (p 1/4), {a,b} 0.3, {b,b} 0.4 (p 1/4):
    # the 2.5% and 97.5% quantiles are the two clips' own ratios.
    rows = hand_rows("a", [1, 3], [9, 11], {4: [15, 15]}, loop=[(100, 90, 5, 120), (110, 100, 5, 120)]) \
        + hand_rows("b", [4, 4], [10, 10], {4: [14, 16]}, loop=[(200, 170, 10, 250), (200, 170, 10, 250)])
    s = timing.summarise(pl.DataFrame(rows), n_boot=1000)
    assert (s["c"], s["c_lo"], s["c_hi"]) == (pytest.approx(0.3), pytest.approx(0.2), pytest.approx(0.4))
    assert (s["device"], s["dtype"], s["torch_threads"]) == ("NVIDIA H100", "bfloat16", "4")
    assert s["target_step_ms"] == pytest.approx(10.0) and s["draft_prefill_ms"] == pytest.approx(8.0)
    # verify pass of 5 tokens: clip means 15 and 15 over target steps 10 and 10 -> 1.5, the interval collapses
    v = s["verify"][4]
    assert (v["verify_cost"], v["verify_cost_lo"], v["verify_cost_hi"]) == (1.5, 1.5, 1.5)
    # the loop at gamma 4: speedup (240 + 500) / (210 + 400) = 740 / 610; clip ratios 240/210, 500/400
    lp = s["loop"][4]
    assert lp["measured_speedup"] == pytest.approx(740 / 610)
    assert (lp["measured_speedup_lo"], lp["measured_speedup_hi"]) == (pytest.approx(240 / 210), pytest.approx(1.25))
    # overhead: ((210 - 190) + (400 - 340)) / (10 + 20) = 80 / 30 ms per round
    assert lp["round_overhead_ms"] == pytest.approx(8 / 3) and s["round_overhead_ms"] == pytest.approx(8 / 3)
    assert lp["rounds"] == 30


def test_summarise_refuses_two_devices_and_gaps():
    a = hand_rows("a", [1], [10], {2: [12]})
    b = hand_rows("b", [1], [10], {2: [12]}, device="NVIDIA A100-SXM4-80GB")
    with pytest.raises(ValueError, match=r"different devices.*'NVIDIA A100-SXM4-80GB' and 'NVIDIA H100'"):
        timing.summarise(pl.DataFrame(a + b))
    c = [dict(r, dtype="float16") if r["sample_id"] == "a" else r for r in a + hand_rows("b", [1], [10], {2: [12]})]
    with pytest.raises(ValueError, match="different dtypes.*'bfloat16' and 'float16'"):
        timing.summarise(pl.DataFrame(c))
    gap = [r for r in a + hand_rows("b", [1], [10], {2: [12]}) if not (r["sample_id"] == "b" and r["kind"] == "verify")]
    with pytest.raises(ValueError, match="clip 'b' has no verify row at gamma 2"):
        timing.summarise(pl.DataFrame(gap))
    with pytest.raises(ValueError, match="empty"):
        timing.summarise(pl.DataFrame(a).head(0))


def synthetic_timing(path, sample_ids, verify_gammas, loop_gammas, device: str = "cpu (synthetic)") -> str:
    """A hand-built timing artifact for synthetic runs (other tests' fixtures): per clip i, draft steps
    1 + i ms, target steps 4 ms, verify passes 4 + k / 2 ms, the loop 10 % faster than plain decoding."""
    from specalign import artifacts

    rows = []
    for i, sid in enumerate(sorted(sample_ids)):
        rows += hand_rows(sid, [1.0 + i], [4.0], {k: [4.0 + k / 2] for k in verify_gammas}, device=device)
        for g in loop_gammas:
            rows += [{**BASE, "sample_id": sid, "kind": k, "rep": 0, "gamma": g, "tokens": 8,
                      "ms": ms, "forward_ms": fwd, "rounds": r, "device": device}
                     for k, ms, fwd, r in (("loop", 90.0, 80.0, 4), ("target_only", 99.0, 99.0, 0))]
    artifacts.write_parquet(artifacts.table("timing", rows), path, "timing")
    return str(path)


def test_one_preempted_pass_does_not_set_a_clips_figure():
    """Three reps per clip: one draft step delayed 10x by the scheduler moves the clip's median, not its
    c. Clip a: draft 2, 2, 20 (median 2; a mean would say 8), target 10, 10, 10; clip b: draft 4, 4, 4,
    target 10, 10, 10 -> c = (2 + 4) / 20 = 0.3; the verify pass likewise (15, 15, 150 -> 15)."""
    rows = hand_rows("a", [2, 2, 20], [10, 10, 10], {4: [15, 15, 150]}) \
        + hand_rows("b", [4, 4, 4], [10, 10, 10], {4: [15, 15, 15]})
    s = timing.summarise(pl.DataFrame(rows), n_boot=200)
    assert s["c"] == pytest.approx(0.3) and s["draft_step_ms"] == pytest.approx(3.0)
    assert s["verify"][4]["verify_cost"] == pytest.approx(1.5)
