"""specalign.generation and the causal_lm backend: the own decode loop against HF, batching
with left padding, sampling reproducibility, the one token-distribution definition."""
from __future__ import annotations

import io
import re

import pytest
import torch
from builders import BOS_ID, EOS_ID, N_FIXED, load_lm

from specalign.artifacts import SCHEMAS
from specalign.backends import ModelSpec, load_backend
from specalign.generation import (
    ProgressLog,
    generate,
    processed_distribution,
    sample_from,
    sample_generator,
    token_logprobs,
    tokens_table,
)
from specalign.specs import Decoding

GREEDY = Decoding("greedy", max_new_tokens=20)
SAMPLED = Decoding("sampled", do_sample=True, temperature=0.8, top_p=0.9, seed=7, max_new_tokens=12)


# ---------------------------------------------------------------- backend


def test_backend_prompt_and_special_ids(tiny_target):
    from specalign.dataset import Sample

    p = tiny_target.prepare(Sample("a/000001", question="w0 w1"))
    assert p.prompt_text == "USER: w0 w1 ASSISTANT:"
    assert p.input_ids.tolist() == [BOS_ID, 4, N_FIXED + 0, N_FIXED + 1, 5]  # BOS from the tokenizer
    assert p.model_inputs == {}
    assert (tiny_target.eos_token_id, tiny_target.pad_token_id) == (EOS_ID, 3)
    assert tiny_target.family == "causal_lm" and tiny_target.dtype == torch.float32


def test_backend_options_and_errors(tiny_target_dir, tmp_path):
    from specalign.dataset import Sample

    path = tiny_target_dir
    nobos = load_lm(path, options=(("add_bos", False), ("prompt", "Q: {question} A:")))
    p = nobos.prepare(Sample("x", question="w3"))
    assert p.prompt_text == "Q: w3 A:" and p.input_ids[0] != BOS_ID
    assert load_backend(ModelSpec("t", "causal_lm", str(path))).text_vocab_size == nobos.text_vocab_size
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        load_lm(tmp_path / "missing")
    with pytest.raises(RuntimeError, match="load_in_4bit"):
        load_lm(path, load_in_4bit=True)  # CPU only here (or no bitsandbytes): a clear error, no fallback


# ---------------------------------------------------------------- decoding definition


def test_decoding_takes_the_validated_config_and_the_schemas_defaults():
    from snakemake.utils import validate

    from specalign.specs import SCHEMA_PATH

    cfg = {"datasets": {"d": {"kind": "demo"}}, "models": {"m": {"family": "causal_lm", "path": "p"}},
           "pairs": [{"draft": "m", "target": "m"}],
           "decodings": {"sampled": {"do_sample": True, "temperature": 0.6}, "greedy": {}}}
    validate(cfg, str(SCHEMA_PATH))  # fills the schema's defaults in place
    d = Decoding("sampled", **cfg["decodings"]["sampled"])
    assert d == Decoding("sampled", True, 0.6, 1.0, 0, 64)
    # a record built by hand gets the schema's defaults, not a second copy of them
    assert Decoding("greedy") == Decoding("greedy", **cfg["decodings"]["greedy"])
    with pytest.raises(TypeError, match="temprature"):
        Decoding("x", temprature=0.5)
    with pytest.raises(ValueError):
        Decoding("x", do_sample=True, temperature=0.0)
    with pytest.raises(ValueError):
        Decoding("x", max_new_tokens=0)


def test_processed_distribution():
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.2, 0.3], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64))
    g = processed_distribution(logits, GREEDY)
    assert g.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]  # one-hot; first index among exact ties
    full = processed_distribution(logits, Decoding("s", do_sample=True))
    torch.testing.assert_close(full, logits.exp())
    # nucleus: the smallest set whose mass reaches top_p
    p = processed_distribution(logits[:1], Decoding("s", do_sample=True, top_p=0.7))
    torch.testing.assert_close(p[0], torch.tensor([0, 0.4 / 0.7, 0, 0.3 / 0.7], dtype=torch.float64))
    p = processed_distribution(logits[:1], Decoding("s", do_sample=True, top_p=0.71))
    torch.testing.assert_close(p[0], torch.tensor([0, 0.4 / 0.9, 0.2 / 0.9, 0.3 / 0.9], dtype=torch.float64))
    t = processed_distribution(logits[:1], Decoding("s", do_sample=True, temperature=0.5))
    torch.testing.assert_close(t[0], logits[0].mul(2).softmax(-1))
    # greedy logprobs are the raw softmax, sampled ones the processed distribution's
    torch.testing.assert_close(token_logprobs(logits, GREEDY), logits.log_softmax(-1))
    assert token_logprobs(logits[:1], Decoding("s", do_sample=True, top_p=0.7))[0, 0] == -float("inf")


def test_sample_from_is_inverse_cdf():
    probs = torch.tensor([0.0, 0.5, 0.0, 0.25, 0.25])
    g = torch.Generator().manual_seed(0)
    draws = [sample_from(probs, g) for _ in range(4000)]
    counts = [draws.count(i) for i in range(5)]
    assert counts[0] == counts[2] == 0
    assert abs(counts[1] / 4000 - 0.5) < 0.04 and abs(counts[3] / 4000 - 0.25) < 0.04
    # one uniform per draw, so a stream depends only on the seed
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [sample_from(probs, g1) for _ in range(50)] == [sample_from(probs * 1.0000001, g2) for _ in range(50)]
    assert sample_generator(SAMPLED, "a").initial_seed() == sample_generator(SAMPLED, "a").initial_seed()
    assert sample_generator(SAMPLED, "a").initial_seed() != sample_generator(SAMPLED, "b").initial_seed()


# ---------------------------------------------------------------- the loop


def test_greedy_equals_hf_generate(tiny_target, make_prompts):
    """The own loop against transformers' generate (greedy, EOS, max_new_tokens)."""
    prompts = make_prompts(tiny_target, 4, seed=1)
    ours = generate(tiny_target, prompts, GREEDY)
    for p, r in zip(prompts, ours):
        ref = tiny_target.model.generate(p.input_ids[None], attention_mask=torch.ones(1, len(p.input_ids), dtype=torch.long),
                                         do_sample=False, max_new_tokens=GREEDY.max_new_tokens,
                                         eos_token_id=EOS_ID, pad_token_id=3)[0, len(p.input_ids):].tolist()
        assert r.token_ids == ref
        assert r.prompt_tokens == len(p.input_ids)
        assert len(r.logprobs) == len(r.decode_ms) == len(r.token_ids)
        assert r.decode_ms[0] == 0 and r.prefill_ms > 0 and r.peak_mem_mb == 0


def test_eos_and_length(tiny_target, make_prompts):
    prompts = make_prompts(tiny_target, 24, seed=2)
    res = generate(tiny_target, prompts, Decoding("g", max_new_tokens=10), batch_size=8)
    reasons = {r.finish_reason for r in res}
    assert reasons == {"eos", "length"}, "fixture should produce both endings"
    for r in res:
        if r.finish_reason == "eos":
            assert r.token_ids[-1] == EOS_ID and EOS_ID not in r.token_ids[:-1] and len(r.token_ids) <= 10
        else:
            assert len(r.token_ids) == 10 and EOS_ID not in r.token_ids
    long = generate(tiny_target, prompts[:4], Decoding("g", max_new_tokens=10), ignore_eos=True)
    assert all(len(r.token_ids) == 10 for r in long)


def test_batched_left_padding_equals_unbatched(tiny_target, make_prompts):
    """(g) greedy fp32: rows of different prompt lengths, batched == unbatched token for token."""
    prompts = make_prompts(tiny_target, 7, seed=3, min_len=1, max_len=12)
    assert len({len(p.input_ids) for p in prompts}) >= 4
    one = generate(tiny_target, prompts, GREEDY, batch_size=1)
    for bs in (3, 7):
        many = generate(tiny_target, prompts, GREEDY, batch_size=bs)
        for a, b in zip(one, many):
            assert a.sample_id == b.sample_id
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


def test_sampling_reproducible_and_batch_independent(tiny_target, make_prompts):
    """(h) same seed -> same streams, whatever the batch size; another seed -> other streams."""
    prompts = make_prompts(tiny_target, 6, seed=4, max_len=10)
    ref = [r.token_ids for r in generate(tiny_target, prompts, SAMPLED, batch_size=1)]
    assert ref == [r.token_ids for r in generate(tiny_target, prompts, SAMPLED, batch_size=1)]
    assert ref == [r.token_ids for r in generate(tiny_target, prompts, SAMPLED, batch_size=4)]
    # a sample's stream does not depend on its neighbours (shards)
    assert ref[3:] == [r.token_ids for r in generate(tiny_target, prompts[3:], SAMPLED, batch_size=2)]
    other = Decoding("sampled", do_sample=True, temperature=0.8, top_p=0.9, seed=8, max_new_tokens=12)
    assert ref != [r.token_ids for r in generate(tiny_target, prompts, other, batch_size=4)]
    greedy = [r.token_ids for r in generate(tiny_target, prompts, Decoding("g", max_new_tokens=12))]
    assert ref != greedy


def test_sampled_logprobs_are_processed(tiny_target, make_prompts):
    prompts = make_prompts(tiny_target, 2, seed=5)
    dec = Decoding("s", do_sample=True, temperature=0.7, top_p=0.5, seed=1, max_new_tokens=6)
    for p, r in zip(prompts, generate(tiny_target, prompts, dec)):
        ids = torch.cat([p.input_ids, torch.tensor(r.token_ids)])[None]
        logits = tiny_target.forward(ids)[0, len(p.input_ids) - 1: -1].double()
        want = torch.log(processed_distribution(logits, dec)).gather(-1, torch.tensor(r.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(r.logprobs, dtype=torch.float64), want, atol=1e-4, rtol=0)
        assert all(lp > -float("inf") for lp in r.logprobs)  # never a token outside the nucleus


def test_tokens_table_and_progress(tiny_target, make_prompts):
    prompts = make_prompts(tiny_target, 5, seed=6)
    buf = io.StringIO()
    log = ProgressLog(buf, total=5)
    res = generate(tiny_target, prompts, Decoding("g", max_new_tokens=5), batch_size=2, progress=log)
    lines = buf.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["2/5", "4/5", "5/5"]
    assert re.fullmatch(r"2/5 samples  40%  elapsed \d+\.\ds  ETA \d+\.\ds", lines[0])
    tbl = tokens_table(res)
    assert tbl.schema == SCHEMAS["tokens"]
    assert tbl.num_rows == sum(len(r.token_ids) for r in res)
    first = tbl.slice(0, 1).to_pylist()[0]
    assert first["position"] == 0 and first["token_id"] == res[0].token_ids[0]


# ---------------------------------------------------------------- timing context (issue #19, defect 8)


def _cpu_model_from_proc() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def test_tokens_record_the_device_and_threads(tiny_target, make_prompts):
    from specalign.generation import device_name

    name = device_name(torch.device("cpu"))
    assert name.startswith("cpu")
    model = _cpu_model_from_proc()
    if model:  # Linux: the processor model is named, so CPU timings of two machines are told apart
        assert model in name
    res = generate(tiny_target, make_prompts(tiny_target, 3, seed=7), Decoding("g", max_new_tokens=4), batch_size=2)
    tbl = tokens_table(res)
    assert set(tbl.column("device").to_pylist()) == {device_name(tiny_target.device)} == {name}
    assert set(tbl.column("torch_threads").to_pylist()) == {torch.get_num_threads()}


def test_warm_up_precedes_the_first_timed_prefill(tiny_target, make_prompts, monkeypatch):
    """The first sample's prefill_ms must not be the model's first forward ever (device start-up, kernel
    choice): each timed pass reports as its "milliseconds" the index of the forward it ran, so the recorded
    prefill says which forward produced it."""
    import specalign.generation as gen

    calls: list[tuple[int, ...]] = []
    real_forward = tiny_target.forward

    def counting_forward(input_ids, *args, **kwargs):
        calls.append(tuple(input_ids.shape))
        return real_forward(input_ids, *args, **kwargs)

    def indexed_timed(device, fn, *args, **kwargs):
        index = len(calls)
        return fn(*args, **kwargs), float(index)

    monkeypatch.setattr(tiny_target, "forward", counting_forward)
    monkeypatch.setattr(gen, "timed", indexed_timed)
    prompts = make_prompts(tiny_target, 3, seed=8, min_len=3)
    res = generate(tiny_target, prompts, Decoding("g", max_new_tokens=4), batch_size=2, warmup=True)
    first = int(res[0].prefill_ms * 2)  # prefill_ms is the batch's pass divided by the batch size
    assert first > 0, "the first timed prefill was the model's first forward"
    # the warm-up ran the first batch's own prefill shape (the same kernels), then a decode step
    assert calls[first] in calls[:first] and calls[:first][-1] == (2, 1)
    # ...only once: the second batch is timed on its first forward
    second = int(res[2].prefill_ms)
    assert calls[second][0] == 1 and calls[second] not in calls[:first]
    # without warm-up (callers that keep no timings) the first forward is the timed one
    calls.clear()
    assert generate(tiny_target, prompts[:1], Decoding("g", max_new_tokens=2))[0].prefill_ms == 0.0
