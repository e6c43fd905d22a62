"""The demo's Llama-style tokenizers: trained offline, saved, reloaded with AutoTokenizer."""
from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from specalign.demo_tokenizer import demo_corpus, train_demo_tokenizers

CAPTIONS = [f"a {c} {s} moves {d}" for c in ("red", "green", "blue", "yellow")
            for s in ("circle", "square", "triangle") for d in ("left", "right", "up", "down")]
QUESTIONS = ["What is this scene about?", "What are the key elements in this scene?"]
TEMPLATES = ["USER: <video>\n{question} ASSISTANT:",
             "A chat between a curious human and an artificial intelligence assistant. USER: <event>\n{question} ASSISTANT:"]
UNSEEN = ["héllo wörld, 日本語 ✓ — naïve café", "  two leading spaces and a tab\there", "trailing space ", "Zebra 42!"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_tok")
    texts = demo_corpus(CAPTIONS, QUESTIONS, TEMPLATES)
    sizes = train_demo_tokenizers(texts, root / "draft", root / "target", vocab_size=400)
    draft = AutoTokenizer.from_pretrained(str(root / "draft"))
    target = AutoTokenizer.from_pretrained(str(root / "target"))
    return texts, sizes, draft, target, root


def test_demo_corpus_fills_templates_and_drops_placeholders():
    got = demo_corpus(["a red circle moves left", "a red circle moves left"], ["Why?", "How?"],
                      ["USER: <video>\n{question} ASSISTANT:"])
    assert got == ["a red circle moves left", "USER: \nWhy? ASSISTANT:", "USER: \nHow? ASSISTANT:"]


def test_llama_layout(pair):
    texts, (n, n_target), draft, target, _ = pair
    assert len(draft) == n == 400          # this corpus has merges enough to fill the budget
    assert n_target == n + 3 == len(target)
    assert draft.convert_ids_to_tokens([0, 1, 2, 3, 4, 13, 258]) == \
        ["<unk>", "<s>", "</s>", "<0x00>", "<0x01>", "<0x0A>", "<0xFF>"]
    assert (draft.unk_token_id, draft.bos_token_id, draft.eos_token_id) == (0, 1, 2)
    assert draft.pad_token_id is None
    assert draft.padding_side == target.padding_side == "left"
    assert draft.is_fast and target.is_fast


def test_target_is_draft_plus_image_video_pad(pair):
    _, (n, _), draft, target, _ = pair
    assert target.convert_ids_to_tokens([n, n + 1, n + 2]) == ["<image>", "<video>", "<pad>"]
    assert target.pad_token == "<pad>" and target.pad_token_id == n + 2
    assert target.convert_ids_to_tokens(list(range(n))) == draft.convert_ids_to_tokens(list(range(n)))
    assert {i: str(t) for i, t in target.added_tokens_decoder.items() if i >= n} == \
        {n: "<image>", n + 1: "<video>", n + 2: "<pad>"}
    assert all(target.added_tokens_decoder[i].special for i in (n, n + 1, n + 2))
    # the placeholder is one token, never split into text pieces
    ids = target.encode("USER: <video>\nWhat?", add_special_tokens=False)
    assert ids.count(n + 1) == 1
    # left padding with the target's pad token
    batch = target(["a", "a red circle moves left"], padding=True)
    short = batch["input_ids"][0]
    width = len(batch["input_ids"][1])
    assert short[: width - 2] == [n + 2] * (width - 2) and short[-2:] == [1, target.convert_tokens_to_ids("▁a")]
    assert batch["attention_mask"][0] == [0] * (width - 2) + [1, 1]


def test_encoding_adds_bos_only(pair):
    texts, _, draft, target, _ = pair
    for tok in (draft, target):
        ids = tok.encode("a red circle moves left")
        assert ids[0] == 1 and 2 not in ids
        assert tok.convert_ids_to_tokens(ids) == ["<s>", "▁a", "▁red", "▁circle", "▁moves", "▁left"]


def test_round_trip_training_and_unseen_text(pair):
    texts, _, draft, target, _ = pair
    for tok in (draft, target):
        for text in texts + UNSEEN:
            assert tok.decode(tok.encode(text), skip_special_tokens=True) == text, text


def test_byte_fallback_by_hand(pair):
    _, _, draft, _, _ = pair
    # 日 is E6 97 A5 and never seen: three byte pieces, ids 3 + byte value, after the dummy-prefix ▁
    ids = draft.encode("日", add_special_tokens=False)
    assert draft.convert_ids_to_tokens(ids) == ["▁", "<0xE6>", "<0x97>", "<0xA5>"]
    assert ids[1:] == [3 + 0xE6, 3 + 0x97, 3 + 0xA5]
    assert draft.decode(ids) == "日"


def test_saved_pipeline(pair):
    *_, root = pair
    tj = json.loads((root / "target" / "tokenizer.json").read_text())
    assert tj["model"]["type"] == "BPE" and tj["model"]["byte_fallback"] is True
    assert [n["type"] for n in tj["normalizer"]["normalizers"]] == ["Prepend", "Replace"]
    assert tj["pre_tokenizer"] is None
    assert [d["type"] for d in tj["decoder"]["decoders"]] == ["Replace", "ByteFallback", "Fuse", "Strip"]
    assert [t["content"] for t in tj["added_tokens"]] == ["<unk>", "<s>", "</s>", "<image>", "<video>", "<pad>"]


def test_small_corpus_and_determinism(tmp_path):
    texts = ["a red circle", "a blue square"]
    sizes1 = train_demo_tokenizers(texts, tmp_path / "d1", tmp_path / "t1")
    sizes2 = train_demo_tokenizers(texts, tmp_path / "d2", tmp_path / "t2")
    # a tiny corpus runs out of merges before the budget: N < 400, always 259 + alphabet + merges
    assert sizes1 == sizes2 and sizes1[0] < 400 and sizes1[1] == sizes1[0] + 3
    assert (tmp_path / "d1" / "tokenizer.json").read_text() == (tmp_path / "d2" / "tokenizer.json").read_text()
    with pytest.raises(ValueError):
        train_demo_tokenizers([], tmp_path / "d3", tmp_path / "t3")
