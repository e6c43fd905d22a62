"""The draft -> target token map on real tokenizers (trained or hand-built, saved and reloaded).

(a) the demo pair (target = draft + <image>, <video>, <pad>): the real EventGPT/Video-LLaVA relation;
(b) a SentencePiece-style draft against a GPT-2-style byte-level target trained on the same corpus;
(c) two hand-built vocabularies of 11 and 17 ids whose map is written down row by row;
(d) TokenMap.from_table(Parquet) == TokenMap.from_tokenizers;
(e) byte-level pieces that hold part of a multi-byte character, mapped through byte pieces (hand-built).
Real vocabularies (Llama-2, GPT-2, LLaVA) are in test_real_vocab.py.
"""
from __future__ import annotations

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from specalign.artifacts import SCHEMAS, write_parquet
from specalign.demo_tokenizer import llama_backend, train_demo_tokenizers, wrap
from specalign.translation import KINDS, TokenMap, build_translation

EOT = "<|endoftext|>"

CAPTIONS = [f"a {c} {s} moves to the {d}" for c in ("red", "green", "blue", "yellow")
            for s in ("circle", "square", "triangle") for d in ("left", "right", "up", "down")]
PROMPTS = ["USER: What is the scene about? ASSISTANT:", "What are the key elements in the scene?",
           "the shape is in the middle of the scene"]
CORPUS = CAPTIONS + PROMPTS


def _save_load(tok, path):
    tok.save_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def _byte_level(texts, vocab_size, path):
    """A GPT-2-style tokenizer: ByteLevel pre-tokenizer/decoder, all 256 bytes in the alphabet, <|endoftext|>."""
    bl = Tokenizer(models.BPE())
    bl.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bl.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[EOT], show_progress=False)
    bl.train_from_iterator(texts, trainer)
    return _save_load(PreTrainedTokenizerFast(tokenizer_object=bl, bos_token=EOT, eos_token=EOT, unk_token=EOT),
                      path)


def _rows(tbl):
    return {r["draft_token"]: r for r in tbl.to_pylist()}


# ---------------------------------------------------------------------------------------------- (a)


@pytest.fixture(scope="module")
def demo_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    train_demo_tokenizers(CORPUS, root / "draft", root / "target")
    return AutoTokenizer.from_pretrained(str(root / "draft")), AutoTokenizer.from_pretrained(str(root / "target"))


def test_demo_pair_is_identity_plus_three_added(demo_pair):
    draft, target = demo_pair
    n = len(draft)
    tests = CAPTIONS[:3] + ["héllo wörld 日本", "two  spaces\nand a newline "]
    tbl, stats, seed = build_translation(draft, target, tests)

    assert tbl.schema.remove_metadata() == SCHEMAS["translation"]
    assert tbl.column("draft_id").to_pylist() == list(range(n))
    kinds = tbl.column("kind").to_pylist()
    # the three role tokens are special; everything else, byte pieces included, is the same piece
    assert kinds[:3] == ["special"] * 3
    assert kinds[3:] == ["exact"] * (n - 3)
    assert tbl.column("target_ids").to_pylist() == [[i] for i in range(n)]
    assert tbl.column("target_tokens").to_pylist()[3] == ["<0x00>"]
    assert seed == {str(i): i for i in range(n)}

    assert stats["draft_size"] == n and stats["target_size"] == n + 3
    assert stats["shared"] == n and stats["draft_only"] == 0 and stats["target_only"] == 3
    assert stats["overlap_pct"] == 100.0
    assert stats["target_added"] == ["<image>", "<video>", "<pad>"]
    assert stats["kind_counts"] == {"special": 3, "exact": n - 3, "normalised": 0, "byte": 0,
                                    "retokenised": 0, "unmapped": 0}
    assert stats["round_trip"] == {"n_texts": 5, "exact_sequence_rate": 1.0, "token_match_rate": 1.0,
                                   "text_round_trip_rate": 1.0}


def test_demo_token_map(demo_pair):
    draft, target = demo_pair
    n = len(draft)
    tm = TokenMap.from_tokenizers(draft, target)
    assert tm.draft_to_target == [(i,) for i in range(n)]
    assert tm.d2t_first().tolist() == list(range(n))
    assert tm.d2t_first().dtype == torch.long
    assert tm.t2d(5) == (5,)
    # <image>, <video>, <pad> are target-only specials: the draft cannot be fed them
    assert [tm.t2d(n), tm.t2d(n + 1), tm.t2d(n + 2)] == [(), (), ()]
    ids = draft.encode("a red circle moves left", add_special_tokens=False)
    assert tm.translate_draft_ids(ids) == ids
    assert tm.translate_draft_ids(torch.tensor(ids)) == ids


def test_draft_pad_set_to_unk(demo_pair):
    # LLaVA-style code sets pad = unk on the draft: <unk> keeps mapping to <unk>, not to the target's <pad>
    draft, target = demo_pair
    d = AutoTokenizer.from_pretrained(draft.name_or_path)
    d.pad_token = d.unk_token
    assert d.pad_token_id == 0
    tm = TokenMap.from_tokenizers(d, target)
    assert tm.draft_to_target[:3] == [(0,), (1,), (2,)]
    assert tm.t2d(0) == (0,) and tm.t2d(len(target) - 1) == ()


def test_identity():
    tm = TokenMap.identity(4)
    assert tm.draft_to_target == [(0,), (1,), (2,), (3,)]
    assert tm.target_to_draft == {0: (0,), 1: (1,), 2: (2,), 3: (3,)}
    assert tm.d2t_first().tolist() == [0, 1, 2, 3]
    assert tm.t2d(2) == (2,) and tm.t2d(7) == ()
    assert tm.translate_draft_ids([3, 1]) == [3, 1]


# ---------------------------------------------------------------------------------------------- (b)


@pytest.fixture(scope="module")
def sp_bl_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("spbl")
    train_demo_tokenizers(CORPUS, root / "draft", root / "unused", vocab_size=400)
    draft = AutoTokenizer.from_pretrained(str(root / "draft"))
    target = _byte_level(CORPUS, 300, root / "bl")
    return draft, target


def test_sentencepiece_draft_to_byte_level_target(sp_bl_pair):
    draft, target = sp_bl_pair
    tests = ["a red circle moves left", "the blue triangle moves up", "héllo wörld 日本 ✓", "USER: What?\n"]
    tbl, stats, seed = build_translation(draft, target, tests)
    rows = _rows(tbl)

    # specials by role: the target has one token for bos, eos and unk
    for piece in ("<unk>", "<s>", "</s>"):
        assert rows[piece]["kind"] == "special" and rows[piece]["target_tokens"] == [EOT]
    # the same text spelled with the other space sign
    assert rows["▁the"]["kind"] == "normalised" and rows["▁the"]["target_tokens"] == ["Ġthe"]
    assert rows["▁"]["kind"] == "normalised" and rows["▁"]["target_tokens"] == ["Ġ"]
    # word-internal pieces spell the same in both styles
    assert rows["e"]["kind"] == "exact" and rows["e"]["target_tokens"] == ["e"]
    # byte pieces go to the byte-level alphabet: 0x20 is Ġ, 0x0A is Ċ, 0xC3 is Ã
    assert rows["<0x20>"]["kind"] == "byte" and rows["<0x20>"]["target_tokens"] == ["Ġ"]
    assert rows["<0x0A>"]["target_tokens"] == ["Ċ"]
    assert rows["<0xC3>"]["kind"] == "byte" and rows["<0xC3>"]["target_tokens"] == ["Ã"]
    # 1:n: the draft learned whole words that the smaller target holds in parts. Checked by hand against
    # the target's merges: it has Ġri and gh but no ght; yel and low but no Ġyel; and the GPT-2
    # pre-tokenizer regex splits "?" off the word, so "▁scene?" ends in its own "?"
    assert rows["▁right"]["kind"] == "retokenised"
    assert rows["▁right"]["target_tokens"] == ["Ġri", "gh", "t"]
    assert rows["▁yellow"]["target_tokens"] == ["Ġ", "yel", "low"]
    assert rows["▁scene?"]["target_tokens"] == ["Ġs", "c", "en", "e", "?"]
    assert rows["ght"]["target_tokens"] == ["gh", "t"]
    # every retokenised expansion spells exactly the draft piece's text
    for r in tbl.to_pylist():
        if r["kind"] == "retokenised":
            spelled = target.convert_tokens_to_string(r["target_tokens"])
            assert spelled == r["draft_token"].replace("▁", " "), r

    counts = stats["kind_counts"]
    assert set(counts) == set(KINDS) and sum(counts.values()) == len(draft)
    assert counts["special"] == 3 and counts["byte"] > 0 and counts["retokenised"] > 0 and counts["unmapped"] == 0
    assert stats["target_added"] == [EOT]
    assert 0 < stats["overlap_pct"] < 100
    assert stats["round_trip"]["text_round_trip_rate"] == 1.0
    tm = TokenMap.from_tokenizers(draft, target)
    for text in tests:
        translated = tm.translate_draft_ids(draft.encode(text, add_special_tokens=False))
        # the draft's dummy-prefix space survives as a real space in the byte-level target
        assert target.decode(translated) == " " + text
    # seed map: 1:1 kinds only
    assert all(rows[p]["kind"] in ("special", "exact", "normalised", "byte")
               for p, r in rows.items() if str(r["draft_id"]) in seed)
    assert str(rows["▁yellow"]["draft_id"]) not in seed


def test_byte_level_target_fed_back_to_the_draft(sp_bl_pair):
    draft, target = sp_bl_pair
    tm = TokenMap.from_tokenizers(draft, target)
    v = target.get_vocab()
    dv = draft.get_vocab()
    # the target's eos goes back to the draft's eos (role), not to <unk> (lowest id)
    assert tm.t2d(target.eos_token_id) == (draft.eos_token_id,)
    # 1:1 inverse: Ġthe <- ▁the ; Ġ <- ▁ (normalised) rather than <0x20> (byte)
    assert tm.t2d(v["Ġthe"]) == (dv["▁the"],)
    assert tm.t2d(v["Ġ"]) == (dv["▁"],)
    # a lone continuation byte (0xA9, "©" in the byte alphabet) comes back as the draft's byte piece
    assert tm.t2d(v["©"]) == (dv["<0xA9>"],)


def test_byte_level_draft_to_sentencepiece_target(sp_bl_pair):
    sp, bl = sp_bl_pair
    tests = ["a red circle moves left", "héllo wörld 日本 ✓", "USER: What?\n"]
    tbl, stats, _ = build_translation(bl, sp, tests)
    rows = _rows(tbl)
    # one token with three roles: eos decides (no SentencePiece role token is spelled <|endoftext|>)
    assert rows[EOT]["kind"] == "special" and rows[EOT]["target_tokens"] == ["</s>"]
    assert rows["Ġthe"]["kind"] == "normalised" and rows["Ġthe"]["target_tokens"] == ["▁the"]
    assert rows["Ã"]["kind"] == "byte" and rows["Ã"]["target_tokens"] == ["<0xC3>"]
    assert stats["target_added"] == ["<unk>", "<s>", "</s>"]
    assert stats["round_trip"]["text_round_trip_rate"] == 1.0
    tm = TokenMap.from_tokenizers(bl, sp)
    # ▁right is no byte-level piece: fed back as the byte-level spelling of " right" (see the test above)
    assert bl.convert_ids_to_tokens(list(tm.t2d(sp.convert_tokens_to_ids("▁right")))) == ["Ġri", "gh", "t"]
    # <|endoftext|> went to </s>, so the target's <s> has no 1:1 entry, and a special is never re-spelled
    assert tm.t2d(sp.bos_token_id) == ()


# ---------------------------------------------------------------------------------------------- (c)


DRAFT_VOCAB = ["<unk>", "<s>", "</s>", "<0x0A>", "<0x20>", "<0xC3>", "<0xE6>",
               "▁", "c", "a", "t", "▁c", "at", "▁cat", "é"]
DRAFT_MERGES = [("▁", "c"), ("a", "t"), ("▁c", "at")]
TARGET_VOCAB = [EOT, "Ċ", "Ġ", "Ã", "©", "c", "a", "t", "Ġc", "at", "Ġca"]
TARGET_MERGES = [("Ġ", "c"), ("a", "t"), ("Ġc", "a")]

# draft id -> (kind, target ids), worked out by hand
EXPECTED = [
    ("special", [0]),        # 0 <unk>  -> the target's unk (<|endoftext|>)
    ("special", [0]),        # 1 <s>    -> its bos (the same token)
    ("special", [0]),        # 2 </s>   -> its eos (the same token)
    ("byte", [1]),           # 3 <0x0A> -> Ċ
    ("byte", [2]),           # 4 <0x20> -> Ġ
    ("byte", [3]),           # 5 <0xC3> -> Ã
    ("unmapped", []),        # 6 <0xE6> -> the target has no piece for byte 0xE6, and a lone 0xE6 is no text
    ("normalised", [2]),     # 7 ▁      -> Ġ
    ("exact", [5]),          # 8 c
    ("exact", [6]),          # 9 a
    ("exact", [7]),          # 10 t
    ("normalised", [8]),     # 11 ▁c    -> Ġc
    ("exact", [9]),          # 12 at
    ("retokenised", [8, 9]),  # 13 ▁cat: " cat" = Ġ c a t -> (Ġ,c) rank 0 -> Ġc a t -> (a,t) rank 1 -> Ġc at
    ("retokenised", [3, 4]),  # 14 é: bytes C3 A9 = Ã © (no merge)
    ("unmapped", []),        # 15 <mask>: a draft special the target lacks
    ("unmapped", []),        # 16 <ev_patch>: an added placeholder (not special) is never spelled out as text
]


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    backend = llama_backend({p: i for i, p in enumerate(DRAFT_VOCAB)}, DRAFT_MERGES)
    d = wrap(backend)
    d.add_tokens([AddedToken("<mask>", special=True, normalized=False)], special_tokens=True)
    d.add_tokens([AddedToken("<ev_patch>", special=False, normalized=False)])
    draft = _save_load(d, root / "draft")

    bl = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(TARGET_VOCAB)}, merges=TARGET_MERGES))
    bl.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bl.decoder = decoders.ByteLevel()
    bl.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    target = _save_load(PreTrainedTokenizerFast(tokenizer_object=bl, bos_token=EOT, eos_token=EOT, unk_token=EOT),
                        root / "target")
    return draft, target


def test_hand_built_map_row_by_row(tiny_pair):
    draft, target = tiny_pair
    assert len(draft) == 17 and len(target) == 11
    assert draft.convert_ids_to_tokens([15, 16]) == ["<mask>", "<ev_patch>"]
    assert not draft.added_tokens_decoder[16].special
    tests = ["cat", "a\ncat", "é cat", "ca"]
    tbl, stats, seed = build_translation(draft, target, tests)

    got = list(zip(tbl.column("kind").to_pylist(), tbl.column("target_ids").to_pylist()))
    assert got == EXPECTED
    assert tbl.column("target_tokens").to_pylist()[13] == ["Ġc", "at"]
    assert seed == {"0": 0, "1": 0, "2": 0, "3": 1, "4": 2, "5": 3, "7": 2, "8": 5, "9": 6, "10": 7,
                    "11": 8, "12": 9}
    assert stats["draft_size"] == 17 and stats["target_size"] == 11
    assert stats["shared"] == 4            # c, a, t, at
    assert stats["draft_only"] == 13 and stats["target_only"] == 7
    assert stats["overlap_pct"] == pytest.approx(100 * 4 / 17)
    assert stats["target_added"] == [EOT]
    assert stats["kind_counts"] == {"special": 3, "exact": 4, "normalised": 2, "byte": 3, "retokenised": 2,
                                    "unmapped": 3}
    # "ca": the draft writes ▁c a -> Ġc a, but the target itself merges " ca" into Ġca:
    # 3 of 4 sequences equal; positions 2 + 5 + 5 + 0 of 2 + 5 + 5 + 1; every text decodes back
    rt = stats["round_trip"]
    assert rt["n_texts"] == 4
    assert rt["exact_sequence_rate"] == 0.75
    assert rt["token_match_rate"] == pytest.approx(12 / 13)
    assert rt["text_round_trip_rate"] == 1.0


def test_hand_built_inverse(tiny_pair):
    draft, target = tiny_pair
    tm = TokenMap.from_tokenizers(draft, target)
    assert tm.draft_to_target == [tuple(ids) for _, ids in EXPECTED]
    assert tm.d2t_first().tolist() == [0, 0, 0, 1, 2, 3, -1, 2, 5, 6, 7, 8, 9, 8, 3, -1, -1]
    assert tm.target_to_draft == {
        0: (2,),   # role: target eos <- draft eos (</s>), though <unk> is the lowest special
        1: (3,), 3: (5,),
        2: (7,),   # ▁ (normalised) beats <0x20> (byte)
        5: (8,), 6: (9,), 7: (10,), 8: (11,), 9: (12,),
    }
    # lazily: Ġca is no draft piece; the draft writes " ca" as ▁c a
    assert tm.t2d(10) == (11, 9)
    assert tm.target_to_draft[10] == (11, 9)
    # © alone is byte 0xA9: not text, and the draft has no <0xA9>
    assert tm.t2d(4) == ()
    assert tm.translate_draft_ids([13, 6, 14]) == [8, 9, 3, 4]


# ---------------------------------------------------------------------------------------------- (d)


def test_from_table_equals_from_tokenizers(tiny_pair, sp_bl_pair, tmp_path):
    for k, (draft, target) in enumerate((tiny_pair, sp_bl_pair)):
        tbl, stats, _ = build_translation(draft, target, ["cat"])
        path = tmp_path / f"t{k}.parquet"
        write_parquet(tbl, path, "translation", metadata={"stats": stats})
        direct = TokenMap.from_tokenizers(draft, target)
        from_file = TokenMap.from_table(path, draft, target)
        assert from_file == direct
        assert from_file.kinds == direct.kinds
        assert TokenMap.from_table(tbl, draft, target) == direct
        assert torch.equal(from_file.d2t_first(), direct.d2t_first())
        # the lazy inverse works from the table too
        assert from_file.t2d(len(target) - 1) == direct.t2d(len(target) - 1)


def test_from_table_rejects_another_draft(tiny_pair, sp_bl_pair):
    tbl, _, _ = build_translation(*tiny_pair, [])
    with pytest.raises(ValueError, match="rows"):
        TokenMap.from_table(tbl, sp_bl_pair[0], sp_bl_pair[1])


def test_from_table_accepts_tokens_added_at_load(tmp_path):
    """EventGPT's loader adds <ev_patch> after the table was built: it maps nowhere, the rest is unchanged."""
    from transformers import AutoTokenizer

    from specalign.demo_tokenizer import train_demo_tokenizers
    from specalign.translation import TokenMap, build_translation

    texts = ["a red circle moves left", "a blue square moves up", "What is in this scene?"]
    train_demo_tokenizers(texts, tmp_path / "d", tmp_path / "t", vocab_size=300)
    draft = AutoTokenizer.from_pretrained(tmp_path / "d")
    target = AutoTokenizer.from_pretrained(tmp_path / "t")
    tbl, _, _ = build_translation(draft, target, texts)
    n = len(draft)
    draft.add_tokens(["<ev_patch>", "<video>"], special_tokens=True)
    tm = TokenMap.from_table(tbl, draft, target)
    assert len(tm.draft_to_target) == n + 2
    assert tm.draft_to_target[n] == ()                                  # <ev_patch>: the target has none
    assert tm.draft_to_target[n + 1] == (target.convert_tokens_to_ids("<video>"),)
    assert tm.draft_to_target[:n] == TokenMap.from_table(tbl, None, None).draft_to_target


# ---------------------------------------------------------------------------------------------- (e)


# 東 is E6 9D B1; in the byte alphabet E6 = æ, 9D = Ŀ, B1 = ±. The SentencePiece side has byte pieces for
# E6 and 9D but not for B1.
PARTIAL_BL_VOCAB = [EOT, "Ġ", "a", "æ", "Ŀ", "±", "Ġæ", "Ŀ±", "Ġa"]
PARTIAL_BL_MERGES = [("Ġ", "æ"), ("Ŀ", "±"), ("Ġ", "a")]
PARTIAL_SP_VOCAB = ["<unk>", "<s>", "</s>", "<0x20>", "<0x61>", "<0xE6>", "<0x9D>", "▁", "a", "▁a"]
PARTIAL_SP_MERGES = [("▁", "a")]

# byte-level draft id -> (kind, SentencePiece ids), worked out by hand
PARTIAL_EXPECTED = [
    ("special", [2]),          # 0 <|endoftext|> -> </s> (eos decides)
    ("normalised", [7]),       # 1 Ġ  -> ▁
    ("exact", [8]),            # 2 a
    ("byte", [5]),             # 3 æ  -> <0xE6>
    ("byte", [6]),             # 4 Ŀ  -> <0x9D>
    ("unmapped", []),          # 5 ±  -> no <0xB1>
    ("retokenised", [7, 5]),   # 6 Ġæ -> " " as text (▁), the lead byte of 東 as <0xE6>
    ("unmapped", []),          # 7 Ŀ± -> <0x9D> but no <0xB1>: all of the piece's bytes or nothing
    ("normalised", [9]),       # 8 Ġa -> ▁a
]


@pytest.fixture(scope="module")
def partial_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("partial")
    bl = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(PARTIAL_BL_VOCAB)}, merges=PARTIAL_BL_MERGES))
    bl.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bl.decoder = decoders.ByteLevel()
    bl.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    bl_tok = _save_load(PreTrainedTokenizerFast(tokenizer_object=bl, bos_token=EOT, eos_token=EOT, unk_token=EOT),
                        root / "bl")
    sp = _save_load(wrap(llama_backend({p: i for i, p in enumerate(PARTIAL_SP_VOCAB)}, PARTIAL_SP_MERGES)),
                    root / "sp")
    return bl_tok, sp


def test_partial_character_pieces_go_through_byte_pieces(partial_pair):
    bl, sp = partial_pair
    assert bl.convert_ids_to_tokens(bl.encode(" \u6771")) == ["Ġæ", "Ŀ±"]
    tbl, stats, seed = build_translation(bl, sp, ["a a"])
    assert list(zip(tbl.column("kind").to_pylist(), tbl.column("target_ids").to_pylist())) == PARTIAL_EXPECTED
    assert tbl.column("target_tokens").to_pylist()[6] == ["▁", "<0xE6>"]
    assert "6" not in seed
    assert stats["kind_counts"] == {"special": 1, "exact": 1, "normalised": 2, "byte": 2, "retokenised": 1,
                                    "unmapped": 2}
    # the translated ids decode to the bytes of the draft's pieces: " " E6 9D (an incomplete 東)
    tm = TokenMap.from_tokenizers(bl, sp)
    assert tm.translate_draft_ids([6, 4]) == [7, 5, 6]


def test_partial_character_pieces_reach_the_draft(partial_pair):
    bl, sp = partial_pair
    tm = TokenMap.from_tokenizers(sp, bl)
    # the target's Ġæ is no draft piece: " " as the draft writes it, then its byte piece <0xE6>
    assert tm.t2d(6) == (7, 5)
    # ± and Ŀ± hold byte B1, which the draft has no piece for
    assert tm.t2d(5) == () and tm.t2d(7) == ()
    # 1:1 inverse: the lone bytes come back as the draft's byte pieces
    assert tm.t2d(3) == (5,) and tm.t2d(4) == (6,)


def test_utf8_runs():
    from specalign.translation import _utf8_runs

    assert _utf8_runs(b" \xe6\x9d") == [(" ", True), (b"\xe6\x9d", False)]
    assert _utf8_runs("\u30fc".encode() + b"\xe3\x83") == [("\u30fc", True), (b"\xe3\x83", False)]
    assert _utf8_runs(b"\xb1a\xe6") == [(b"\xb1", False), ("a", True), (b"\xe6", False)]
    assert _utf8_runs("Köln".encode()) == [("Köln", True)]
