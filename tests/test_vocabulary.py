"""Vocabulary tables of real tokenizers of each spelling family, checked entry by entry."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from specalign.artifacts import SCHEMAS, write_parquet
from specalign.demo_tokenizer import train_demo_tokenizers
from specalign.vocabulary import (
    BYTELEVEL,
    PLAIN,
    SENTENCEPIECE,
    WORDPIECE,
    byte_alphabet,
    detect_style,
    vocabulary_table,
)

CORPUS = ["a red circle moves left", "the blue square moves up", "café naïve café", "the café"] * 3


def _save_load(tok, path):
    tok.save_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def _by_token(tbl):
    return {r["token"]: r for r in tbl.to_pylist()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab_demo")
    train_demo_tokenizers(CORPUS, root / "d", root / "t")
    return AutoTokenizer.from_pretrained(str(root / "d")), AutoTokenizer.from_pretrained(str(root / "t"))


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory):
    bl = Tokenizer(models.BPE())
    bl.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bl.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"], show_progress=False)
    bl.train_from_iterator(CORPUS, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bl, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    return _save_load(tok, tmp_path_factory.mktemp("vocab_bl"))


def test_byte_alphabet_by_hand():
    a = byte_alphabet()
    assert len(a) == 256 and len(set(a.values())) == 256
    # printable bytes stand for themselves; the 68 others take U+0100.. in byte order:
    # 0x00..0x20 -> U+0100..U+0120, 0x7F..0xA0 -> U+0121..U+0142, 0xAD -> U+0143
    assert a[ord("A")] == "A" and a[0xE9] == "é"
    assert a[0x00] == "\u0100" and a[0x0A] == "Ċ" and a[0x20] == "Ġ"
    assert a[0x7F] == "\u0121" and a[0xA0] == "\u0142" and a[0xAD] == "\u0143"
    assert set(a.values()) == set(pre_tokenizers.ByteLevel.alphabet())


def test_sentencepiece_demo_draft(demo):
    draft, _ = demo
    assert detect_style(draft).kind == SENTENCEPIECE
    tbl = vocabulary_table(draft)
    assert tbl.schema.remove_metadata() == SCHEMAS["vocab"]
    assert tbl.column("id").to_pylist() == list(range(len(draft)))
    rows = tbl.to_pylist()
    assert rows[0] == {"id": 0, "token": "<unk>", "text": "<unk>", "is_special": True, "is_added": True, "is_byte": False}
    assert rows[1]["token"] == "<s>" and rows[1]["is_special"]
    # byte pieces: a char only when the byte is a whole (ASCII) character
    assert rows[3 + 0x0A] == {"id": 13, "token": "<0x0A>", "text": "\n", "is_special": False, "is_added": False,
                              "is_byte": True}
    assert rows[3 + 0x41]["text"] == "A"
    assert rows[3 + 0xC3]["text"] == "" and rows[3 + 0xC3]["is_byte"]
    by = _by_token(tbl)
    assert by["▁the"]["text"] == " the" and not by["▁the"]["is_byte"] and not by["▁the"]["is_special"]
    assert by["▁"]["text"] == " "
    assert by["é"]["text"] == "é"     # seen in training: an ordinary piece, not bytes
    assert sum(tbl.column("is_byte").to_pylist()) == 256


def test_target_added_tokens(demo, tmp_path):
    draft, target = demo
    n = len(draft)
    tbl = vocabulary_table(target)
    rows = tbl.to_pylist()[n:]
    assert [(r["token"], r["text"], r["is_special"], r["is_added"]) for r in rows] == [
        ("<image>", "<image>", True, True), ("<video>", "<video>", True, True), ("<pad>", "<pad>", True, True)]
    write_parquet(tbl, tmp_path / "v.parquet", "vocab")
    assert pq.read_table(tmp_path / "v.parquet").to_pylist() == tbl.to_pylist()


def test_byte_level(byte_level):
    tok = byte_level
    assert detect_style(tok).kind == BYTELEVEL
    by = _by_token(vocabulary_table(tok))
    assert by["<|endoftext|>"]["is_special"] and by["<|endoftext|>"]["text"] == "<|endoftext|>"
    assert by["Ġ"] | {"id": 0} == {"id": 0, "token": "Ġ", "text": " ", "is_special": False, "is_added": False,
                                   "is_byte": True}
    assert by["Ċ"]["text"] == "\n" and by["Ċ"]["is_byte"]
    assert by["a"]["is_byte"] and by["a"]["text"] == "a"
    assert by["Ġmoves"]["text"] == " moves" and not by["Ġmoves"]["is_byte"]
    assert by["the"]["text"] == "the"
    # é is C3 A9: the corpus makes the tokenizer merge the two bytes; each byte alone is no character
    assert by["Ã©"]["text"] == "é" and not by["Ã©"]["is_byte"]
    assert by["ĠcafÃ©"]["text"] == " café"
    assert by["Ã"]["text"] == "\ufffd" and by["Ã"]["is_byte"]
    # ï is C3 AF: "naÃ" ends with half of it; only that byte becomes U+FFFD
    assert by["naÃ"]["text"] == "na\ufffd"


def test_metaspace_and_wordpiece_and_plain(tmp_path):
    # a Metaspace pipeline (the non-legacy SentencePiece layout) is SentencePiece-style too
    ms = Tokenizer(models.WordLevel({"[UNK]": 0, "▁the": 1, "the": 2}, unk_token="[UNK]"))
    ms.pre_tokenizer = pre_tokenizers.Metaspace()
    ms.decoder = decoders.Metaspace()
    ms_tok = _save_load(PreTrainedTokenizerFast(tokenizer_object=ms, unk_token="[UNK]"), tmp_path / "ms")
    assert detect_style(ms_tok).kind == SENTENCEPIECE
    assert vocabulary_table(ms_tok).column("text").to_pylist() == ["[UNK]", " the", "the"]

    # WordPiece: a continuation piece joins the previous one, any other starts a word
    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "play": 1, "##ing": 2}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.decoder = decoders.WordPiece()
    wp_tok = _save_load(PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]"), tmp_path / "wp")
    assert detect_style(wp_tok).kind == WORDPIECE
    assert vocabulary_table(wp_tok).column("text").to_pylist() == ["[UNK]", " play", "ing"]

    # no pipeline hints and no space signs in the pieces: the piece is its text
    wl = Tokenizer(models.WordLevel({"<unk>": 0, "red": 1, "circle": 2}, unk_token="<unk>"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    wl.add_tokens([AddedToken("<extra>", special=False, normalized=False)])
    wl_tok = _save_load(PreTrainedTokenizerFast(tokenizer_object=wl, unk_token="<unk>"), tmp_path / "wl")
    assert detect_style(wl_tok).kind == PLAIN
    assert vocabulary_table(wl_tok).to_pylist()[1:] == [
        {"id": 1, "token": "red", "text": "red", "is_special": False, "is_added": False, "is_byte": False},
        {"id": 2, "token": "circle", "text": "circle", "is_special": False, "is_added": False, "is_byte": False},
        {"id": 3, "token": "<extra>", "text": "<extra>", "is_special": False, "is_added": True, "is_byte": False},
    ]


def test_vocabulary_with_an_id_gap_keeps_ids_aligned():
    """A WordLevel vocabulary missing id 3: one empty row for it, 'd' stays at id 4."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from specalign.vocabulary import piece_entries, vocabulary_table

    wl = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2, "d": 4}, unk_token="<unk>"))
    wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=wl, unk_token="<unk>")
    entries = piece_entries(tok)
    assert [e.id for e in entries] == [0, 1, 2, 3, 4]
    assert entries[3].token == "" and entries[4].token == "d"
    tbl = vocabulary_table(tok)
    assert tbl.column("id").to_pylist() == [0, 1, 2, 3, 4]
    assert tbl.column("token").to_pylist()[4] == "d"
