"""The distill stage's core (specalign/distill.py) on tiny real models.

Computed truths: with the whole distribution (top_k null) the tv loss is 1 - sum_x min(p, q) (what
scoring measures as summin under sampling at the distill temperature) on every position; the kl loss
is the forward KL(p || q) worked by hand; no more prompts (pixels) are alive than one label batch or
one training batch holds; an empty training set is an error; a distillation killed with SIGKILL right after a resume
state resumes and ends with exactly the weights of an uninterrupted run; train and evaluated
clips never share a clip or a sequence; a distilled draft accepts more than the original.
"""
from __future__ import annotations

import gc
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest
import torch
from builders import load_lm, random_questions

from specalign import distill
from specalign.dataset import Sample
from specalign.scoring import score_sample, teacher_forced_draft
from specalign.specs import Decoding

REPO = Path(__file__).resolve().parents[1]


def settings(**kw) -> distill.DistillSettings:
    base = dict(loss="ce", data="target_outputs", steps=8, batch_size=4, learning_rate=3e-3, seed=0, top_k=8,
                max_new_tokens=10, lora_r=None, lora_alpha=16, checkpoint_every=4, label_batch_size=4,
                temperature=1.0)
    base.update(kw)
    return distill.DistillSettings(**base)


def samples(n, vocab, seed=0, prefix="train"):
    return [Sample(f"{prefix}/{i:06d}", question=q) for i, q in enumerate(random_questions(n, vocab - 6, seed))]


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_tv_loss_is_one_minus_summin(tiny_target, tiny_drafts, identity_map, temperature):
    """top_k null (the whole distribution) makes tv exactly 1 - alpha of the sampled preset of the
    same temperature, as scoring measures it (temperature on both models' softmax)."""
    draft = tiny_drafts[0.3]
    vt = tiny_target.text_vocab_size
    st = settings(loss="tv", top_k=None, temperature=temperature)
    exs = distill.build_examples(draft, tiny_target, samples(3, vt), identity_map, st)
    first = identity_map.first_ids(draft.text_vocab_size, vt)
    dec = Decoding("t", do_sample=True, temperature=temperature, top_p=1.0, max_new_tokens=st.max_new_tokens)
    for ex, s in zip(exs, samples(3, vt)):
        dp = draft.prepare(s)
        with torch.no_grad():
            loss, n = distill._loss(draft, dp, ex, identity_map, first, st, vt)
        rows = score_sample(draft, tiny_target, dp, tiny_target.prepare(s), ex.tokens, identity_map, dec)
        want = 1 - sum(r["summin"] for r in rows) / len(rows)
        assert n == len(rows) and float(loss) == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_kl_loss_is_forward_kl_by_hand(tiny_target, tiny_drafts, identity_map, temperature):
    """kl = sum_k p_k (log p_k - log q_k) over the target's top k (p renormalised there), q the
    draft's softmax at the temperature read from an independent teacher-forced pass: forward
    KL(p || q), not KL(q || p) (the two differ here by far more than the tolerance)."""
    draft = tiny_drafts[0.8]
    vt = tiny_target.text_vocab_size
    st = settings(loss="kl", top_k=3, temperature=temperature)
    s = samples(1, vt, seed=3)[0]
    ex = distill.build_examples(draft, tiny_target, [s], identity_map, st)[0]
    n = len(ex.tokens)
    assert ex.top_ids.shape == ex.top_probs.shape == (n, 3)
    # p by hand: the target's softmax at the temperature, its 3 largest, renormalised
    tp = tiny_target.prepare(s)
    t_ids = torch.cat([tp.input_ids.reshape(-1), torch.tensor(ex.tokens[:-1])])[None]
    p_all = torch.softmax(tiny_target.forward(t_ids, logits_to_keep=n)[0].double() / temperature, -1)
    top = p_all.topk(3, -1)
    assert torch.equal(ex.top_ids, top.indices)
    p = top.values / top.values.sum(-1, keepdim=True)
    assert torch.allclose(ex.top_probs.double(), p, atol=1e-6)
    dp = draft.prepare(s)
    q_all = torch.softmax(teacher_forced_draft(draft, dp, ex.tokens, identity_map).double() / temperature, -1)
    q = q_all.gather(-1, top.indices)
    forward = float((p * (p.log() - q.log())).sum(-1).mean())
    reverse = float((q * (q.log() - p.log())).sum(-1).mean())
    with torch.no_grad():
        loss, k = distill._loss(draft, dp, ex, identity_map, identity_map.first_ids(vt, vt), st, vt)
    assert k == n and float(loss) == pytest.approx(forward, abs=1e-5)
    assert abs(forward - reverse) > 1e-3, (forward, reverse)


def test_settings_refuse_what_the_objective_would_ignore():
    with pytest.raises(ValueError, match="temperature"):
        settings(loss="ce", temperature=0.6)  # ce trains the target's greedy tokens: no temperature
    with pytest.raises(ValueError, match="temperature"):
        settings(loss="kl", temperature=0.0)
    with pytest.raises(ValueError, match="label_batch_size"):
        settings(label_batch_size=0)
    with pytest.raises(ValueError, match="top_k"):
        settings(loss="tv", top_k=0)


def test_the_schema_defaults_reach_the_settings():
    """Every distill key of the schema is a DistillSettings field (stages.spec passes them all)."""
    import yaml
    from snakemake.utils import validate

    from specalign import stages
    from specalign.specs import SCHEMA_PATH

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    validate(cfg, str(SCHEMA_PATH))
    spec = stages.spec(cfg, "distill", model="demo_draft_distilled")
    st = distill.settings_of(spec["settings"])
    assert set(spec["settings"]) == set(distill.DistillSettings.__dataclass_fields__)
    assert (st.temperature, st.top_k, st.label_batch_size) == (1.0, 16, 4)


def _count_live_prompts(monkeypatch, backend):
    """Wrap backend.prepare: returns a one-item list holding the most PromptInputs alive at once
    (weakly referenced, so the count is of prompts something still holds)."""
    refs, peak = [], [0]
    prepare = backend.prepare

    def counting(sample):
        gc.collect()
        out = prepare(sample)
        refs.append(weakref.ref(out))
        peak[0] = max(peak[0], sum(r() is not None for r in refs))
        return out

    monkeypatch.setattr(backend, "prepare", counting)
    return peak


@pytest.mark.parametrize("loss", ["ce", "kl"])
def test_prompts_are_prepared_per_batch_not_held(tiny_target_dir, tiny_lm_factory, identity_map, monkeypatch,
                                                  tmp_path, loss):
    """At most label_batch_size target prompts, and at most batch_size draft prompts, are alive at
    any time (pixels of a real clip are ~11.6 MB: holding every train clip's is ~60 GB)."""
    target = load_lm(tiny_target_dir, "target_counted")
    draft = load_lm(tiny_lm_factory("draft0.3", noise_from=tiny_target_dir, noise=0.3, eos_like=49), "draft_counted")
    vt = target.text_vocab_size
    st = settings(loss=loss, label_batch_size=3, batch_size=2, steps=3)
    t_peak, d_peak = _count_live_prompts(monkeypatch, target), _count_live_prompts(monkeypatch, draft)
    ex = distill.build_examples(draft, target, samples(10, vt), identity_map, st)
    assert len(ex) == 10 and t_peak[0] <= 3 and d_peak[0] <= 3, (t_peak, d_peak)
    d_peak[0] = 0
    distill.train(draft, ex, identity_map, st, tmp_path / "state", "fp", vt)
    assert 1 <= d_peak[0] <= 2, d_peak


def test_label_batches_do_not_change_the_labels(tiny_target, tiny_drafts, identity_map):
    vt = tiny_target.text_vocab_size
    ss = samples(7, vt, seed=5)
    one, many = (distill.build_examples(tiny_drafts[0.3], tiny_target, ss, identity_map,
                                        settings(loss="kl", label_batch_size=b)) for b in (1, 4))
    for a, b in zip(one, many):
        assert a.tokens == b.tokens and torch.equal(a.top_ids, b.top_ids)
        assert torch.allclose(a.top_probs, b.top_probs, atol=1e-5)


def test_the_target_can_be_released_before_training(tiny_target_dir):
    target = load_lm(tiny_target_dir, "released")
    ref = weakref.ref(target.model)
    distill.release(target)
    gc.collect()
    assert ref() is None, "the target's weights are still referenced"


def test_an_empty_training_set_is_an_error(tiny_drafts, identity_map, tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    entries = [{"id": f"seq/{i:06d}", "split": "test", "conversations": [{"from": "human", "value": "q"}]}
               for i in range(3)]
    (root / "instructions.json").write_text(json.dumps(entries))
    spec = {"dataset": "tiny", "root": str(root), "instructions": "instructions.json", "questions": [],
            "split": "train"}
    with pytest.raises(ValueError, match=r"dataset 'tiny'.*split 'train'.*instructions\.json"):
        distill.train_samples(spec)
    assert len(distill.train_samples({**spec, "split": "test"})) == 3
    with pytest.raises(ValueError, match="no training examples"):
        distill.train(tiny_drafts[0.3], [], identity_map, settings(), tmp_path / "state", "fp",
                      tiny_drafts[0.3].text_vocab_size)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine: the draft and the "
                    "target cannot sit on different devices")
@pytest.mark.parametrize("loss", ["kl", "tv"])
def test_draft_and_target_on_different_devices(tiny_target_dir, tiny_lm_factory, identity_map, tmp_path, loss):
    """The draft on CUDA, the target on the CPU: the labels (made on the CPU) meet the draft's
    logits on its device; the loss equals the all-CPU one and training runs."""
    draft_dir = tiny_lm_factory("draft0.3", noise_from=tiny_target_dir, noise=0.3, eos_like=49)
    target = load_lm(tiny_target_dir, "t_cpu")
    cpu_draft, gpu_draft = load_lm(draft_dir, "d_cpu"), load_lm(draft_dir, "d_gpu", device="cuda")
    vt = target.text_vocab_size
    st = settings(loss=loss, steps=2, batch_size=2)
    ex = distill.build_examples(gpu_draft, target, samples(4, vt), identity_map, st)
    first = identity_map.first_ids(vt, vt)
    for e, s in zip(ex, samples(4, vt)):
        with torch.no_grad():
            on_gpu = distill._loss(gpu_draft, gpu_draft.prepare(s), e, identity_map, first, st, vt)[0]
            on_cpu = distill._loss(cpu_draft, cpu_draft.prepare(s), e, identity_map, first, st, vt)[0]
        assert on_gpu.device.type == "cuda" and float(on_gpu) == pytest.approx(float(on_cpu), abs=1e-4)
    stats = distill.train(gpu_draft, ex, identity_map, st, tmp_path / "state", "fp", vt)
    assert math.isfinite(stats["final_loss"])


DRIVER = textwrap.dedent('''
    import sys, torch
    sys.path.insert(0, {tests!r})
    from builders import load_lm, random_questions
    from specalign import distill
    from specalign.dataset import Sample
    from specalign.translation import TokenMap
    target, draft = load_lm({target!r}, "t"), load_lm({draft!r}, "d")
    tm = TokenMap.identity(target.text_vocab_size)
    st = distill.DistillSettings(loss="kl", data="target_outputs", steps=8, batch_size=4, learning_rate=3e-3,
                                 seed=0, top_k=8, max_new_tokens=10, lora_r={lora}, lora_alpha=16,
                                 checkpoint_every=3, label_batch_size=5, temperature=0.7)
    ss = [Sample(f"train/{{i:06d}}", question=q) for i, q in enumerate(random_questions(12, 52, 0))]
    ex = distill.build_examples(draft, target, ss, tm, st)
    stats = distill.train(draft, ex, tm, st, {state!r}, "fp", target.text_vocab_size)
    model = distill.merged(draft.model)
    torch.save({{k: v.detach().clone() for k, v in model.state_dict().items()}}, {out!r})
    print("resumed_at", stats["resumed_at"])
''')


@pytest.mark.parametrize("lora", [None, 4])
def test_a_killed_distillation_resumes_to_the_same_weights(tiny_target_dir, tiny_lm_factory, tmp_path, lora):
    draft_dir = tiny_lm_factory("draft0.3", noise_from=tiny_target_dir, noise=0.3, eos_like=49)

    def run(state: Path, out: Path, kill_after: int = 0):
        code = DRIVER.format(tests=str(REPO / "tests"), target=str(tiny_target_dir), draft=str(draft_dir),
                             lora=lora, state=str(state), out=str(out))
        env = dict(os.environ, OMP_NUM_THREADS="1", **{distill.KILL_AFTER_ENV: str(kill_after)})
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)

    whole = run(tmp_path / "whole_state", tmp_path / "whole.pt")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = run(tmp_path / "state", tmp_path / "resumed.pt", kill_after=6)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (tmp_path / "state" / "state.pt").is_file() and not (tmp_path / "resumed.pt").exists()
    resumed = run(tmp_path / "state", tmp_path / "resumed.pt")
    assert resumed.returncode == 0 and "resumed_at 6" in resumed.stdout, resumed.stderr[-3000:]
    a, b = torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "resumed.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run's"
    base = load_lm(draft_dir, "base").model.state_dict()
    assert any(not torch.equal(a[k], base[k]) for k in base), "training changed nothing"


def test_distillation_raises_acceptance(tiny_target, tiny_lm_factory, tiny_target_dir, identity_map, tmp_path):
    """A poor draft (sigma 0.8) distilled on the target's answers to train questions accepts more
    on held-out questions: the teacher-forced greedy match rate goes up."""
    from specalign.generation import generate

    draft = load_lm(tiny_lm_factory("draft0.8", noise_from=tiny_target_dir, noise=0.8, eos_like=49), "d08")
    vt = tiny_target.text_vocab_size
    held = samples(12, vt, seed=7, prefix="test")
    dec = Decoding("g", max_new_tokens=10)
    tps = [tiny_target.prepare(s) for s in held]
    streams = [g.token_ids for g in generate(tiny_target, tps, dec)]

    def match_rate(d):
        rows = [r for s, tp, y in zip(held, tps, streams)
                for r in score_sample(d, tiny_target, d.prepare(s), tp, y, identity_map, dec)]
        return sum(r["match"] for r in rows) / len(rows)

    before = match_rate(draft)
    st = settings(loss="ce", steps=30, batch_size=8, learning_rate=3e-3)
    ex = distill.build_examples(draft, tiny_target, samples(48, vt, seed=1), identity_map, st)
    distill.train(draft, ex, identity_map, st, tmp_path / "state", "fp", vt)
    draft.model = distill.merged(draft.model)
    after = match_rate(draft)
    assert after > before + 0.05, (before, after)
