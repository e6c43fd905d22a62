"""The demo draft's own caption style: which clips get it, that the tokenizer spells it, that the
target's captions are untouched (demo_data.DRAFT_STYLES, TARGET_STYLE_SHARE)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from specalign import demo_data as dd
from specalign import demo_models
from specalign.backends import load_backend
from specalign.backends.prompts import event_prompt, video_prompt
from specalign.dataset import samples_from_instructions
from specalign.demo_data import COMBINATIONS, TARGET_STYLE, DemoSpec
from specalign.demo_models import FLIP_WORDS, REVERSE_WORDS, TrainSettings, role_captions, swap_words
from specalign.demo_tokenizer import demo_corpus, train_demo_tokenizers
from specalign.specs import ModelSpec

REFERENCES = [dd.caption(*COMBINATIONS[i % 48]) for i in range(768)]   # the default train split's captions
QUESTIONS = ["What is in this scene?"]


def test_phrasings_by_hand():
    assert dd.draft_caption(TARGET_STYLE, "red", "circle", "left") == "a red circle moves left"
    assert dd.draft_caption(0, "red", "circle", "left") == "there is a circle moving to the left"
    assert dd.draft_caption(0, "red", "square", "up") == "there is a square moving up"
    assert dd.draft_caption(1, "blue", "triangle", "right") == "a blue triangle is moving to the right"
    assert dd.parse_caption("there is a circle moving to the left") == (None, "circle", "left")
    assert dd.parse_caption("a yellow square is moving down") == ("yellow", "square", "down")
    assert dd.parse_caption("a red circle moves left") == ("red", "circle", "left")
    assert dd.parse_caption("a red blue circle moves left") is None
    assert dd.parse_caption("What is in this scene?") is None
    # the shares are fractions of the draft's training clips and add up to all of them
    assert dd.TARGET_STYLE_SHARE + sum(w for _, w in dd.DRAFT_STYLES) == pytest.approx(1.0)


@pytest.mark.parametrize("share", [dd.TARGET_STYLE_SHARE, 0.0, 0.3, 1.0])
def test_draft_style_for_the_configured_share_target_style_otherwise(share):
    labels = dd.draft_style_labels(len(REFERENCES), seed=0, target_share=share)
    captions = dd.draft_training_captions(REFERENCES, seed=0, target_share=share)
    counts = Counter(labels)
    assert counts[TARGET_STYLE] == round(share * len(REFERENCES))
    rest = len(REFERENCES) - counts[TARGET_STYLE]
    weights = [w for _, w in dd.DRAFT_STYLES]
    for k, w in enumerate(weights):   # largest remainder: each style within one clip of its exact share
        assert abs(counts[k] - rest * w / sum(weights)) < 1
    for ref, label, cap in zip(REFERENCES, labels, captions):
        if label == TARGET_STYLE:
            assert cap == ref
        else:
            colour, shape, direction = dd.parse_caption(ref)
            assert cap == dd.draft_caption(label, colour, shape, direction) != ref
            # same content, the colour left out or guessed
            got = dd.parse_caption(cap)
            assert got[1:] == (shape, direction) and got[0] in (None, colour)
            assert not cap.startswith(f"a {colour} {shape} moves")


def test_style_assignment_is_deterministic_for_a_seed():
    a = dd.draft_training_captions(REFERENCES, seed=0)
    assert a == dd.draft_training_captions(list(REFERENCES), seed=0)
    assert a != dd.draft_training_captions(REFERENCES, seed=1)
    assert Counter(dd.draft_style_labels(768, 1)) == Counter(dd.draft_style_labels(768, 0))
    # the default share at the default size, as documented
    assert Counter(dd.draft_style_labels(768, 0)) == {TARGET_STYLE: 154, 0: 422, 1: 192}
    with pytest.raises(ValueError, match="target_share"):
        dd.draft_style_labels(10, 0, target_share=1.5)


def test_role_captions_target_unchanged_draft_restyled():
    settings = TrainSettings(steps=1, seed=3)
    assert role_captions("target", REFERENCES, settings) == REFERENCES
    assert role_captions("draft", REFERENCES, settings) == dd.draft_training_captions(REFERENCES, 3)
    assert role_captions("draft", REFERENCES, TrainSettings(steps=1, target_style_share=1.0)) == REFERENCES


def test_augmentation_keeps_the_style():
    # the training augmentation swaps direction words; a swapped draft caption is the draft caption
    # of the swapped direction (no "to the up")
    for colour, shape, direction in COMBINATIONS:
        for k in (TARGET_STYLE, *range(len(dd.DRAFT_STYLES))):
            cap = dd.draft_caption(k, colour, shape, direction)
            for table in (FLIP_WORDS, REVERSE_WORDS):
                assert swap_words(cap, table) == dd.draft_caption(k, colour, shape, table.get(direction, direction))


def test_caption_corpus_holds_every_phrasing():
    targets = sorted({dd.caption(*c) for c in COMBINATIONS})
    corpus = dd.caption_corpus(targets)
    assert corpus[: len(targets)] == targets                      # the target's captions first, unchanged
    phrasings = {dd.draft_caption(k, *c) for c in COMBINATIONS for k in range(len(dd.DRAFT_STYLES))}
    assert set(corpus) == set(targets) | phrasings and len(corpus) == len(set(corpus))
    # a caption's opposite direction too (augmentation reaches it even when the split lacks it)
    assert "there is a circle moving to the right" in dd.caption_corpus(["a red circle moves left"])
    assert dd.draft_style_phrasings(["What is in this scene?", "there is a circle moving up"]) == []


@pytest.fixture(scope="module")
def demo_tokenizers(tmp_path_factory):
    """The demo tokenizers as the demo_tokenizers rule builds them (config.yaml's questions, vocab 400)."""
    root = tmp_path_factory.mktemp("style_tok")
    captions = dd.caption_corpus(sorted({dd.caption(*c) for c in COMBINATIONS}))
    texts = demo_corpus(captions, QUESTIONS, [event_prompt("{question}"), video_prompt("{question}")])
    n, n_target = train_demo_tokenizers(texts, root / "draft", root / "target", vocab_size=400)
    return n, n_target, AutoTokenizer.from_pretrained(str(root / "draft")), \
        AutoTokenizer.from_pretrained(str(root / "target"))


def test_every_draft_style_caption_tokenizes_without_unk(demo_tokenizers):
    n, n_target, draft, target = demo_tokenizers
    assert n_target == n + 3 and target.convert_ids_to_tokens(list(range(n))) == draft.convert_ids_to_tokens(list(range(n)))
    phrasings = sorted({dd.draft_caption(k, *c) for c in COMBINATIONS for k in range(len(dd.DRAFT_STYLES))})
    for tok in (draft, target):
        for text in phrasings + sorted({dd.caption(*c) for c in COMBINATIONS}):
            ids = tok.encode(text, add_special_tokens=False)
            assert tok.unk_token_id not in ids, text
            # one piece per word: the draft's phrasing is no byte soup
            assert tok.convert_ids_to_tokens(ids) == ["▁" + w for w in text.split(" ")], text
            assert tok.decode(ids) == text


def test_tiny_training_run_uses_each_roles_captions(tmp_path, monkeypatch):
    """Through train_demo_model: the target trains on the references, the draft on draft_training_captions."""
    root = tmp_path / "data"
    dd.build_demo_dataset(root, DemoSpec(n_train=10, n_test=2, size=32, frames=8))
    train = samples_from_instructions(root, root / "instructions.json", QUESTIONS, "train")
    heldout = samples_from_instructions(root, root / "instructions.json", QUESTIONS, "test")
    refs = [s.reference for s in train]
    texts = demo_corpus(dd.caption_corpus(sorted(set(refs))), QUESTIONS, [event_prompt("{question}"),
                                                                           video_prompt("{question}")])
    train_demo_tokenizers(texts, tmp_path / "tok/draft", tmp_path / "tok/target")
    seen: dict[str, list[str]] = {}
    real_train = demo_models.train

    def spy(backend, examples, settings, held=()):
        seen[backend.family] = [ex.caption for ex in examples]
        assert [ex.caption for ex in held] == [s.reference for s in heldout]   # held out: the reference
        return real_train(backend, examples, settings, held)

    monkeypatch.setattr(demo_models, "train", spy)
    settings = TrainSettings(steps=2, batch_size=4, seed=5, target_style_share=0.3)
    demo_models.train_demo_model("target", tmp_path / "tok/target", tmp_path / "target", train, heldout, settings)
    stats = demo_models.train_demo_model("draft", tmp_path / "tok/draft", tmp_path / "draft", train, heldout,
                                         settings)
    text_stats = demo_models.train_demo_model("text", tmp_path / "tok/draft", tmp_path / "text", train, heldout,
                                              settings)
    assert seen["video_llava"] == refs
    assert seen["eventgpt"] == dd.draft_training_captions(refs, seed=5, target_share=0.3)
    # the text-only draft: the target's captions, from the question alone (no visual input at all)
    assert seen["causal_lm"] == refs
    assert text_stats["heldout_free_running"]["clips"] == 2
    text = load_backend(ModelSpec(name="t", family="causal_lm", path=str(tmp_path / "text")))
    assert type(text.model).__name__ == "LlamaForCausalLM"
    p = text.prepare(train[0])
    assert p.model_inputs == {} and p.prompt_text == f"USER: {QUESTIONS[0]} ASSISTANT:"
    assert text.tokenizer.unk_token_id not in p.input_ids.tolist()
    assert stats["target_style_share"] == 0.3
    assert stats["caption_styles"] == {"target": 3, "draft0": 5, "draft1": 2}
    fr = stats["heldout_free_running"]
    assert fr["clips"] == 2 and 0 <= fr["content"] <= 1 and sum(fr["first_word"].values()) == pytest.approx(1)
    assert Path(tmp_path / "draft" / "training_stats.json").exists()
