"""The draft -> target token map on real vocabularies committed under tests/data/vocab/ (see PROVENANCE.md).

(a) EventGPT-style draft (Llama-2, + <ev_patch> added at load) -> Video-LLaVA-style and LLaVA-1.5 targets
    (Llama-2 + their added tokens): the identity on the 32000 shared ids;
(b) Llama-2 SentencePiece vs GPT-2 byte-level BPE, both directions: every row's kind against a derivation
    written here from the two vocabularies, and byte-exact round trips on accented, CJK and emoji text,
    through both `draft_to_target` and the inverse `t2d`.

The expectations never use specalign's own spelling code: pieces are turned into bytes here by hand
(`_sp_bytes`, `_bl_bytes`). Nothing is downloaded; the GGUF files are read by transformers through `gguf`.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("gguf", reason="the GGUF vocabularies need the `gguf` package (pip install -e .[test])")

from transformers import AutoTokenizer

from specalign.translation import KINDS, TokenMap, build_translation

VOCAB = Path(__file__).parent / "data" / "vocab"
LLAMA_GGUF, GPT2_GGUF = "ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf"
LLAVA_TOKENIZER_JSON_SHA256 = "30e1294abd835edfebb24618fce6f47c21ffb2b2802520d150bdee0b808b47cb"
N_LLAMA = 32000

# The texts of the task: accented, CJK and emoji characters that byte-level pieces split mid-character.
UNICODE = ["Ünïcödé ≠ ascii — 東京 🚗", "Grüße aus Köln", "日本語のテキスト", "emoji 🚗🚦 mix"]
PROMPTS = ["USER: What is happening in this video? ASSISTANT:", "The car turns left at the traffic light.",
           "What are the key elements in the scene?\nDescribe them."]


def _llama_cpp_cases(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test cases for a vocabulary: (text, the ids llama.cpp's tokenizer gives)."""
    texts = (VOCAB / f"{name}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    ids = (VOCAB / f"{name}.out").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(texts) == len(ids) == 46
    return [(t, [int(v) for v in line.split()]) for t, line in zip(texts, ids)]


TEXTS = UNICODE + PROMPTS + [t for t, _ in _llama_cpp_cases(LLAMA_GGUF)]


# ---------------------------------------------------------------------------------------------- spelling by hand


_FALLBACK = re.compile(r"<0x([0-9A-F]{2})>")


def _gpt2_byte_chars() -> dict[int, str]:
    """bytes_to_unicode() of openai/gpt-2's encoder.py: the printable stand-in of every byte."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BL_BYTE = {c: b for b, c in _gpt2_byte_chars().items()}


def _sp_bytes(piece: str) -> bytes:
    m = _FALLBACK.fullmatch(piece)
    return bytes([int(m[1], 16)]) if m else piece.replace("▁", " ").encode("utf-8")


def _bl_bytes(piece: str) -> bytes:
    return bytes(_BL_BYTE[c] for c in piece)


def _spell(tok, ids, piece_bytes) -> bytes:
    return b"".join(piece_bytes(p) for p in tok.convert_ids_to_tokens(list(ids)))


def _is_partial(data: bytes) -> bool:
    """Holds a byte of a character it does not hold whole (not valid UTF-8)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _dummy_prefixed(text: str) -> str:
    """How HF's Llama (Metaspace, prepend_scheme "first") spells a whole text: one space in front unless
    the text already starts with one."""
    return text if not text or text.startswith(" ") else " " + text


# ---------------------------------------------------------------------------------------------- tokenizers


def _save_load(tok, path: Path, overlay: Path | None = None):
    tok.save_pretrained(str(path))
    if overlay is not None:
        for f in overlay.iterdir():
            shutil.copy(f, path / f.name)
    return AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def llama2():
    return AutoTokenizer.from_pretrained(str(VOCAB), gguf_file=LLAMA_GGUF)


@pytest.fixture(scope="module")
def gpt2():
    return AutoTokenizer.from_pretrained(str(VOCAB), gguf_file=GPT2_GGUF)


@pytest.fixture(scope="module")
def eventgpt_draft(llama2, tmp_path_factory):
    """The Llama-2 tokenizer with what EventGPT's add_event_tokens adds at load (mm_use_im_patch_token is on
    by default, mm_use_im_start_end off): <ev_patch> as id 32000, after the translation table was built."""
    tok = _save_load(llama2, tmp_path_factory.mktemp("eventgpt"))
    tok.add_tokens(["<ev_patch>"], special_tokens=True)
    return tok


@pytest.fixture(scope="module")
def video_llava(llama2, tmp_path_factory):
    """Video-LLaVA's published tokenizer_config/special_tokens_map/added_tokens over the Llama-2 vocabulary
    (its conversion script builds the tokenizer from vicuna-7b-v1.5's, which is Llama-2's)."""
    return _save_load(llama2, tmp_path_factory.mktemp("video_llava"), VOCAB / "video-llava-7b-hf")


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    """llava-hf/llava-1.5-7b-hf's own tokenizer files (tokenizer.json stored gzipped)."""
    path = tmp_path_factory.mktemp("llava")
    src = VOCAB / "llava-1.5-7b-hf"
    raw = gzip.decompress((src / "tokenizer.json.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == LLAVA_TOKENIZER_JSON_SHA256
    (path / "tokenizer.json").write_bytes(raw)
    for f in src.glob("*.json"):
        shutil.copy(f, path / f.name)
    return AutoTokenizer.from_pretrained(str(path))


# ---------------------------------------------------------------------------------------------- the data itself


def test_gguf_vocabularies_tokenize_like_llama_cpp(llama2, gpt2):
    """The GGUF files as transformers loads them give llama.cpp's own reference ids (models/*.gguf.out),
    except one documented difference: for a text that starts with a space, llama.cpp's SentencePiece adds
    its dummy prefix anyway (" Hello" -> ▁ ▁Hello) and HF's Metaspace(prepend_scheme="first") does not."""
    assert (len(llama2), len(gpt2)) == (N_LLAMA, 50257)
    for text, ref in _llama_cpp_cases(GPT2_GGUF):
        assert gpt2.encode(text, add_special_tokens=False) == ref, text
    differ = [text for text, ref in _llama_cpp_cases(LLAMA_GGUF) if llama2.encode(text, add_special_tokens=False) != ref]
    assert differ == [text for text, _ in _llama_cpp_cases(LLAMA_GGUF) if text.startswith(" ")]
    assert llama2.encode(" Hello", add_special_tokens=False) == [15043]
    assert dict(_llama_cpp_cases(LLAMA_GGUF))[" Hello"] == [29871, 15043]


def test_gguf_llama2_is_the_llava_vocabulary(llama2, llava):
    """The GGUF Llama-2 vocabulary is LLaVA-1.5's base vocabulary, piece for piece, and tokenizes alike."""
    ids = list(range(N_LLAMA))
    assert llava.convert_ids_to_tokens(ids) == llama2.convert_ids_to_tokens(ids)
    for text in TEXTS:
        assert llava.encode(text, add_special_tokens=False) == llama2.encode(text, add_special_tokens=False), text


# ---------------------------------------------------------------------------------------------- (a)


@pytest.mark.parametrize("name, folder", [("video_llava", "video-llava-7b-hf"), ("llava", "llava-1.5-7b-hf")])
def test_eventgpt_draft_to_llava_family_target(request, llama2, eventgpt_draft, name, folder):
    target = request.getfixturevalue(name)
    added = json.loads((VOCAB / folder / "added_tokens.json").read_text())  # piece -> id, as published
    added_in_order = [p for p, _ in sorted(added.items(), key=lambda kv: kv[1])]
    assert sorted(added.values()) == list(range(N_LLAMA, N_LLAMA + len(added)))
    assert len(target) == N_LLAMA + len(added)
    assert target.convert_ids_to_tokens(sorted(added.values())) == added_in_order
    ids = list(range(N_LLAMA))
    assert target.convert_ids_to_tokens(ids) == llama2.convert_ids_to_tokens(ids)

    tbl, stats, seed = build_translation(llama2, target, TEXTS)
    # The same piece at the same id in both: the role tokens are `special` (same role, same string), every
    # other piece `exact`, the 256 <0xNN> pieces included (an identical piece comes before `byte`).
    roles = {llama2.unk_token_id, llama2.bos_token_id, llama2.eos_token_id}
    assert roles == {0, 1, 2}
    assert tbl.column("kind").to_pylist() == ["special" if i in roles else "exact" for i in ids]
    assert tbl.column("target_ids").to_pylist() == [[i] for i in ids]
    assert seed == {str(i): i for i in ids}
    assert stats["kind_counts"] == {"special": 3, "exact": N_LLAMA - 3, "normalised": 0, "byte": 0,
                                    "retokenised": 0, "unmapped": 0}
    assert stats["target_added"] == added_in_order
    assert (stats["shared"], stats["draft_only"], stats["target_only"]) == (N_LLAMA, 0, len(added))
    # one tokenizer on both sides: every sequence, token for token
    assert stats["round_trip"] == {"n_texts": len(TEXTS), "exact_sequence_rate": 1.0, "token_match_rate": 1.0,
                                   "text_round_trip_rate": 1.0}

    # <ev_patch> comes at load time, after the table was built: it maps to the target token with the same
    # string if there is one (neither target has it), else nowhere.
    ev = eventgpt_draft.convert_tokens_to_ids("<ev_patch>")
    assert ev == N_LLAMA and len(eventgpt_draft) == N_LLAMA + 1
    expect_ev = (target.get_vocab()["<ev_patch>"],) if "<ev_patch>" in target.get_vocab() else ()
    assert expect_ev == ()
    tm = TokenMap.from_table(tbl, eventgpt_draft, target)
    assert tm.draft_to_target == [(i,) for i in ids] + [expect_ev]
    assert tm.kinds[ev] == "unmapped"
    # building from the draft as loaded (with <ev_patch>) gives the same map
    assert tm == TokenMap.from_tokenizers(eventgpt_draft, target)
    assert tm.target_to_draft == {i: (i,) for i in ids}
    # the target's added tokens (<image>, <video>, <pad>) cannot be fed to the draft
    assert [tm.t2d(j) for j in added.values()] == [()] * len(added)

    for text in UNICODE + PROMPTS:
        dids = eventgpt_draft.encode(text, add_special_tokens=False)
        assert tm.translate_draft_ids(dids) == target.encode(text, add_special_tokens=False)
        assert target.decode(tm.translate_draft_ids(dids)) == text


# ---------------------------------------------------------------------------------------------- (b)


def _expected_sp_to_bl(sp, bl) -> list[str]:
    """Kind of every Llama-2 id against GPT-2, derived from the two vocabularies."""
    bl_vocab, bl_special = bl.get_vocab(), set(bl.all_special_ids)
    bl_bytes = {i: _bl_bytes(p) for p, i in bl_vocab.items() if i not in bl_special}
    assert len({d for d in bl_bytes.values() if len(d) == 1}) == 256  # GPT-2 holds every byte alone
    bl_texts = set(bl_bytes.values())
    role = {sp.unk_token_id: "unk", sp.bos_token_id: "bos", sp.eos_token_id: "eos"}
    out = []
    for i, p in enumerate(sp.convert_ids_to_tokens(list(range(len(sp))))):
        if i in role:
            # GPT-2's one special is its bos and eos; as its GGUF loads it has no unk (HF's gpt2 sets
            # unk = <|endoftext|>), and no piece is spelled <unk>
            out.append("special" if getattr(bl, f"{role[i]}_token") is not None else "unmapped")
        elif p in bl_vocab and bl_bytes.get(bl_vocab[p]) == _sp_bytes(p):
            out.append("exact")
        elif _FALLBACK.fullmatch(p):
            out.append("byte")
        elif _sp_bytes(p) in bl_texts:
            out.append("normalised")
        else:
            out.append("retokenised")  # byte-level BPE spells any text
    return out


def _expected_bl_to_sp(bl, sp) -> list[str]:
    """Kind of every GPT-2 id against Llama-2, derived from the two vocabularies."""
    sp_vocab, sp_special = sp.get_vocab(), set(sp.all_special_ids)
    sp_texts = {_sp_bytes(p) for p, i in sp_vocab.items() if i not in sp_special and not _FALLBACK.fullmatch(p)}
    assert sum(bool(_FALLBACK.fullmatch(p)) for p in sp_vocab) == 256  # Llama-2 has every <0xNN>
    out = []
    for i, p in enumerate(bl.convert_ids_to_tokens(list(range(len(bl))))):
        if i in bl.all_special_ids:
            out.append("special")  # <|endoftext|> is eos, and Llama-2 has an eos
        elif p in sp_vocab and sp_vocab[p] not in sp_special and _sp_bytes(p) == _bl_bytes(p):
            out.append("exact")
        elif _bl_bytes(p) in sp_texts:
            out.append("normalised")
        elif len(_bl_bytes(p)) == 1:
            out.append("byte")
        else:
            # whole characters as Llama-2 text, bytes of a partial character as <0xNN>
            out.append("retokenised")
    return out


@pytest.fixture(scope="module")
def sp_to_bl(llama2, gpt2):
    tbl, stats, _ = build_translation(llama2, gpt2, TEXTS)
    return tbl, stats, TokenMap.from_table(tbl, llama2, gpt2)


@pytest.fixture(scope="module")
def bl_to_sp(llama2, gpt2):
    tbl, stats, _ = build_translation(gpt2, llama2, TEXTS)
    return tbl, stats, TokenMap.from_table(tbl, gpt2, llama2)


def _check_rows_spell_their_bytes(tbl, draft_bytes, target_bytes):
    for r in tbl.to_pylist():
        if r["kind"] in ("exact", "normalised", "byte", "retokenised"):
            got = b"".join(target_bytes(t) for t in r["target_tokens"])
            assert got == draft_bytes(r["draft_token"]), r


def test_llama2_to_gpt2_kinds(llama2, gpt2, sp_to_bl):
    tbl, stats, _ = sp_to_bl
    kinds = tbl.column("kind").to_pylist()
    assert kinds == _expected_sp_to_bl(llama2, gpt2)
    counts = {k: kinds.count(k) for k in KINDS}
    assert stats["kind_counts"] == counts
    assert counts == {"special": 2, "exact": 7127, "normalised": 10920, "byte": 256, "retokenised": 13694,
                      "unmapped": 1}
    assert stats["target_added"] == ["<|endoftext|>"]
    _check_rows_spell_their_bytes(tbl, _sp_bytes, _bl_bytes)
    rows = {r["draft_token"]: r for r in tbl.to_pylist()}
    assert rows["<unk>"]["kind"] == "unmapped"
    assert rows["</s>"]["target_tokens"] == rows["<s>"]["target_tokens"] == ["<|endoftext|>"]
    assert rows["<0xE6>"]["target_tokens"] == ["æ"]
    # mid-text, GPT-2 itself writes every Llama-2 piece that it does not hold as one piece: its own
    # encoding of the text (no prefix space is added by GPT-2)
    retok = [r for r in tbl.to_pylist() if r["kind"] == "retokenised"]
    encoded = gpt2([_sp_bytes(r["draft_token"]).decode("utf-8") for r in retok], add_special_tokens=False)
    assert [r["target_ids"] for r in retok] == encoded["input_ids"]


def test_gpt2_to_llama2_kinds(llama2, gpt2, bl_to_sp):
    tbl, stats, _ = bl_to_sp
    kinds = tbl.column("kind").to_pylist()
    assert kinds == _expected_bl_to_sp(gpt2, llama2)
    counts = {k: kinds.count(k) for k in KINDS}
    assert stats["kind_counts"] == counts
    assert counts == {"special": 1, "exact": 7127, "normalised": 10920, "byte": 160, "retokenised": 32049,
                      "unmapped": 0}
    assert stats["target_added"] == ["<unk>", "<s>", "</s>"]
    _check_rows_spell_their_bytes(tbl, _bl_bytes, _sp_bytes)
    rows = {r["draft_token"]: r for r in tbl.to_pylist()}
    assert rows["<|endoftext|>"]["target_tokens"] == ["</s>"]
    # GPT-2 pieces that hold part of a multi-byte character: the whole characters as Llama-2 text, the
    # rest through Llama-2's byte pieces
    partial = [r for r in tbl.to_pylist() if r["kind"] != "special" and _is_partial(_bl_bytes(r["draft_token"]))]
    lone = [r for r in partial if len(_bl_bytes(r["draft_token"])) == 1]   # the bytes 0x80..0xFF alone
    partial = [r for r in partial if r not in lone]
    assert len(lone) == 128 and {r["kind"] for r in lone} == {"byte"}
    assert len(partial) == 216 and {r["kind"] for r in partial} == {"retokenised"}
    assert rows["Ġæ"]["target_tokens"] == ["▁", "<0xE6>"]           # " " + the lead byte of 東 (E6 9D B1)
    assert rows["äº"]["target_tokens"] == ["<0xE4>", "<0xBA>"]      # 2 of the 3 bytes of 京 (E4 BA AC)
    assert rows["ðŁ"]["target_tokens"] == ["<0xF0>", "<0x9F>"]      # 2 of the 4 bytes of an emoji
    assert rows["ãĥ¼ãĥ"]["target_tokens"] == ["ー", "<0xE3>", "<0x83>"]  # ー whole, then part of a katakana
    for r in partial:
        stray = [t for t in r["target_tokens"] if _FALLBACK.fullmatch(t)]
        assert stray and all(int(_FALLBACK.fullmatch(t)[1], 16) >= 0x80 for t in stray), r
    assert rows["æ"]["target_tokens"] == ["<0xE6>"]   # a lone byte: 1:1 to Llama-2's byte piece


@pytest.mark.parametrize("direction", ["sp_to_bl", "bl_to_sp"])
def test_round_trip_through_the_map(request, llama2, gpt2, direction):
    """Draft ids of a text -> target ids spell the same bytes, and target ids of a text -> draft ids (t2d)
    too; on the task's Unicode texts decoding gives the text back (the Llama-2 side adds/drops its
    dummy-prefix space)."""
    tbl, stats, tm = request.getfixturevalue(direction)
    draft, target = (llama2, gpt2) if direction == "sp_to_bl" else (gpt2, llama2)
    d_bytes, t_bytes = (_sp_bytes, _bl_bytes) if direction == "sp_to_bl" else (_bl_bytes, _sp_bytes)
    sp_spelling = _dummy_prefixed if direction == "sp_to_bl" else (lambda text: text)
    assert stats["round_trip"]["text_round_trip_rate"] == 1.0

    for text in TEXTS:
        dids = draft.encode(text, add_special_tokens=False)
        draft_spelled = _spell(draft, dids, d_bytes)
        assert draft_spelled == sp_spelling(text).encode("utf-8"), text
        translated = tm.translate_draft_ids(dids)
        # a character split across draft pieces gives other target ids than the target's own encoding,
        # but the same bytes
        assert _spell(target, translated, t_bytes) == draft_spelled, text

        tids = target.encode(text, add_special_tokens=False)
        back = [i for j in tids for i in tm.t2d(j)]
        assert _spell(draft, back, d_bytes) == _spell(target, tids, t_bytes), text

    split = []   # texts whose GPT-2 pieces hold partial characters (what came out as U+FFFD before)
    for text in UNICODE:
        dids = draft.encode(text, add_special_tokens=False)
        tids = target.encode(text, add_special_tokens=False)
        back = [i for j in tids for i in tm.t2d(j)]
        bl_pieces = gpt2.convert_ids_to_tokens(dids if direction == "bl_to_sp" else tids)
        if any(len(_bl_bytes(p)) > 1 and _is_partial(_bl_bytes(p)) for p in bl_pieces):
            split.append(text)
        if direction == "sp_to_bl":
            assert target.decode(tm.translate_draft_ids(dids)) == " " + text  # the draft's dummy prefix
            assert draft.decode(back) == text
        else:
            assert target.decode(tm.translate_draft_ids(dids)) == text
            assert draft.decode(back) == " " + text  # the target's dummy prefix
    assert split == [UNICODE[0], UNICODE[2], UNICODE[3]]   # "Grüße aus Köln": GPT-2 holds ü ß ö whole


def test_every_target_piece_reaches_the_draft(llama2, gpt2, sp_to_bl, bl_to_sp):
    """t2d over the whole target vocabulary: each piece comes back as draft ids that spell its bytes; only
    specials the draft cannot be fed come back empty."""
    _, _, tm = sp_to_bl      # GPT-2 target: its one special goes back to </s> (eos) by role
    pieces = gpt2.convert_ids_to_tokens(list(range(len(gpt2))))
    for j, p in enumerate(pieces):
        back = tm.t2d(j)
        if j == gpt2.eos_token_id:
            assert back == (llama2.eos_token_id,)
        else:
            assert back and _spell(llama2, back, _sp_bytes) == _bl_bytes(p), p
    assert tm.t2d(gpt2.convert_tokens_to_ids("Ġæ")) == tuple(llama2.convert_tokens_to_ids(["▁", "<0xE6>"]))

    _, _, tm = bl_to_sp      # Llama-2 target: <|endoftext|> went to </s>, so <s> and <unk> have no draft id
    pieces = llama2.convert_ids_to_tokens(list(range(len(llama2))))
    for j, p in enumerate(pieces):
        back = tm.t2d(j)
        if j in (llama2.unk_token_id, llama2.bos_token_id):
            assert back == ()
        elif j == llama2.eos_token_id:
            assert back == (gpt2.eos_token_id,)
        else:
            assert back and _spell(gpt2, back, _bl_bytes) == _sp_bytes(p), p
    # a byte piece comes back as GPT-2's piece for that byte
    assert tm.t2d(llama2.convert_tokens_to_ids("<0xE6>")) == (gpt2.convert_tokens_to_ids("æ"),)
