"""Shared test fixtures: tiny Llama models with a word-level tokenizer, saved like real checkpoints
(built by builders.py, which tests import directly: `from builders import ...`).

Reusable pieces (all session-scoped, built once, cached by their arguments):
- `tiny_lm_factory`: `make(name, **build_tiny_llama kwargs) -> Path` (builders.build_tiny_llama).
- `tiny_target_dir`, `tiny_target`, `tiny_drafts` (sigma -> backend), `identity_map`, `make_prompts`.
- `small_target`, `small_draft`: a 16-id vocabulary with peaked distributions
  (init std 0.3), for distribution tests under sampling.
- `permuted_draft`: the target itself in a shuffled id space.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from builders import N_FIXED, build_permuted_copy, build_tiny_llama, load_lm, prompts_for, random_questions

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _quiet_transformers():
    from transformers.utils import logging

    logging.disable_progress_bar()


@pytest.fixture(scope="session")
def tiny_lm_factory(tmp_path_factory):
    """`make(name, **build_tiny_llama kwargs) -> Path`, cached per name (the first call's
    kwargs win: use a new name for a new model)."""
    root = tmp_path_factory.mktemp("tiny_lms")
    made: dict[str, Path] = {}

    def make(name: str, **kwargs) -> Path:
        if name not in made:
            made[name] = build_tiny_llama(root / name, **kwargs)
        return made[name]

    return make


TARGET_KW = dict(eos_like=49)  # 64 ids; most greedy streams end with EOS within 20 tokens, at 3..18


@pytest.fixture(scope="session")
def tiny_target_dir(tiny_lm_factory):
    return tiny_lm_factory("target", **TARGET_KW)


@pytest.fixture(scope="session")
def tiny_target(tiny_target_dir):
    return load_lm(tiny_target_dir, "target")


DRAFT_NOISES = (0.1, 0.3, 0.8)


@pytest.fixture(scope="session")
def tiny_drafts(tiny_lm_factory, tiny_target_dir):
    """sigma -> a noisy copy of `tiny_target` (greedy match ~0.8 / 0.6 / 0.3)."""
    src = tiny_target_dir
    return {s: load_lm(tiny_lm_factory(f"draft{s}", noise_from=src, noise=s, **TARGET_KW), f"draft{s}")
            for s in DRAFT_NOISES}


@pytest.fixture(scope="session")
def identity_map(tiny_target):
    from specalign.translation import TokenMap

    return TokenMap.identity(tiny_target.text_vocab_size)


@pytest.fixture(scope="session")
def make_prompts():
    """`make(backend, n, seed=0, min_len=1, max_len=8)`: prompts of varying length."""

    def make(backend, n, seed=0, min_len=1, max_len=8, prefix="s"):
        n_words = backend.text_vocab_size - N_FIXED
        return prompts_for(backend, random_questions(n, n_words, seed, min_len, max_len), prefix)

    return make


SMALL_WORDS = 10  # 16 ids in all


@pytest.fixture(scope="session")
def small_target(tiny_lm_factory):
    return load_lm(tiny_lm_factory("small_target", n_words=SMALL_WORDS, hidden=32, init_std=0.3, seed=3),
                   "small_target")


@pytest.fixture(scope="session")
def small_draft(tiny_lm_factory):
    src = tiny_lm_factory("small_target", n_words=SMALL_WORDS, hidden=32, init_std=0.3, seed=3)
    return load_lm(tiny_lm_factory("small_draft", noise_from=src, noise=0.6), "small_draft")


@pytest.fixture(scope="session")
def permuted_draft(tiny_target_dir, tiny_target, tmp_path_factory):
    """(backend, TokenMap, perm): the target itself in a shuffled id space; d2t(d) = perm[d].

    Its prompts must be translated: draft ids = inv[target ids] (`to_draft_prompt`)."""
    from specalign.translation import TokenMap

    n = tiny_target.text_vocab_size
    perm = list(range(n))
    random.Random(5).shuffle(perm)
    inv = [0] * n
    for d, t in enumerate(perm):
        inv[t] = d
    path = build_permuted_copy(tiny_target_dir, tmp_path_factory.mktemp("perm") / "draft_perm", perm)
    tm = TokenMap([(t,) for t in perm], {t: (inv[t],) for t in range(n)}, kinds=["exact"] * n)
    return load_lm(path, "draft_perm"), tm, perm
