"""The distill stage's core (specalign/distill.py) on tiny real models.

Computed truths: the tv loss is 1 - sum_x min(p, q) (what scoring measures as summin under
temperature-1 sampling) on every position; a distillation killed with SIGKILL right after a resume
state resumes and ends with exactly the weights of an uninterrupted run; train and evaluated
clips never share a clip or a sequence; a distilled draft accepts more than the original.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import load_lm, random_questions

from specalign import distill
from specalign.dataset import Sample
from specalign.scoring import score_sample
from specalign.specs import Decoding

REPO = Path(__file__).resolve().parents[1]


def settings(**kw) -> distill.DistillSettings:
    base = dict(loss="ce", data="target_outputs", steps=8, batch_size=4, learning_rate=3e-3, seed=0, top_k=8,
                max_new_tokens=10, lora_r=None, lora_alpha=16, checkpoint_every=4)
    base.update(kw)
    return distill.DistillSettings(**base)


def samples(n, vocab, seed=0, prefix="train"):
    return [Sample(f"{prefix}/{i:06d}", question=q) for i, q in enumerate(random_questions(n, vocab - 6, seed))]


def test_train_and_evaluation_never_share_a_clip_or_a_sequence():
    distill.check_disjoint(["demo_train/000001", "demo_train/000002"], ["demo_test/000001"])
    with pytest.raises(ValueError, match="also evaluated"):
        distill.check_disjoint(["a/000001"], ["a/000001"])
    with pytest.raises(ValueError, match="sequences \\['zurich'\\] hold both"):
        distill.check_disjoint(["zurich/000001"], ["zurich/000002"])


def test_tv_loss_is_one_minus_summin(tiny_target, tiny_drafts, identity_map):
    draft = tiny_drafts[0.3]
    vt = tiny_target.text_vocab_size
    st = settings(loss="tv", top_k=vt)  # the whole distribution: tv is exact
    exs = distill.build_examples(draft, tiny_target, samples(3, vt), identity_map, st)
    first = identity_map.first_ids(draft.text_vocab_size, vt)
    t1 = Decoding("t1", do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=st.max_new_tokens)
    for ex, s in zip(exs, samples(3, vt)):
        with torch.no_grad():
            loss, n = distill._loss(draft, ex, identity_map, first, st, vt)
        tp = tiny_target.prepare(s)
        rows = score_sample(draft, tiny_target, ex.draft_prompt, tp, ex.tokens, identity_map, t1)
        want = 1 - sum(r["summin"] for r in rows) / len(rows)
        assert n == len(rows) and float(loss) == pytest.approx(want, abs=1e-5)


DRIVER = textwrap.dedent('''
    import sys, torch
    sys.path.insert(0, {tests!r})
    from conftest import load_lm, random_questions
    from specalign import distill
    from specalign.dataset import Sample
    from specalign.translation import TokenMap
    target, draft = load_lm({target!r}, "t"), load_lm({draft!r}, "d")
    tm = TokenMap.identity(target.text_vocab_size)
    st = distill.DistillSettings(loss="kl", data="target_outputs", steps=8, batch_size=4, learning_rate=3e-3,
                                 seed=0, top_k=8, max_new_tokens=10, lora_r={lora}, lora_alpha=16,
                                 checkpoint_every=3)
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
    distill.check_disjoint([s.sample_id for s in samples(48, vt, seed=1)], [s.sample_id for s in held])
    ex = distill.build_examples(draft, tiny_target, samples(48, vt, seed=1), identity_map, st)
    distill.train(draft, ex, identity_map, st, tmp_path / "state", "fp", vt)
    draft.model = distill.merged(draft.model)
    after = match_rate(draft)
    assert after > before + 0.05, (before, after)
