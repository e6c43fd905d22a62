"""A tokenizer's vocabulary as a table: id, raw piece, the text it stands for, flags.

Pieces are spelled differently by tokenizer families for the same text:
SentencePiece-style (Llama) writes a space as `▁` and unknown characters as
byte pieces `<0xNN>`; byte-level BPE (GPT-2) writes every byte as one
printable character (`Ġ` is the space byte 0x20). Comparing tokenizers
therefore needs, per piece, the BYTES it stands for; `piece_entries` computes
them once and the translation map (translation.py) reuses them.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa

from specalign.artifacts import table

SP_SPACE = "▁"
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")

SENTENCEPIECE, BYTELEVEL, WORDPIECE, PLAIN = "sentencepiece", "bytelevel", "wordpiece", "plain"


@lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet).

    Bytes that already print as themselves (and are not whitespace/controls) keep their Latin-1 character;
    the remaining 68 bytes, in increasing order, take the characters U+0100, U+0101, ... so that every
    byte has a visible, distinct stand-in (this is why the space 0x20 appears as U+0120 'Ġ').
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table_: dict[int, str] = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table_:
            table_[b] = chr(256 + extra)
            extra += 1
    return table_


@lru_cache(maxsize=1)
def byte_alphabet_inverse() -> dict[str, int]:
    return {c: b for b, c in byte_alphabet().items()}


@dataclass(frozen=True)
class TokenizerStyle:
    kind: str                    # sentencepiece | bytelevel | wordpiece | plain
    space: str = SP_SPACE        # the visible space of sentencepiece-style pieces
    wordpiece_prefix: str = "##"


@dataclass(frozen=True)
class PieceEntry:
    id: int
    token: str                   # raw piece ("" for an id without a piece)
    data: bytes | None           # the bytes the piece stands for in mid-text; None for special tokens
    text: str                    # what the piece contributes to decoded text
    is_special: bool
    is_added: bool
    is_byte: bool                # <0xNN> byte-fallback piece or byte-level single byte
    is_fallback: bool            # specifically a <0xNN> byte-fallback piece
    added_only: bool = False     # an added token outside the model's own vocabulary (a placeholder)


def _components(node) -> list[dict]:
    """Flatten a normalizer/pre_tokenizer/decoder JSON node (Sequence nodes nest their parts)."""
    if not node:
        return []
    if isinstance(node, list):
        return [c for n in node for c in _components(n)]
    if node.get("type") == "Sequence":
        parts = node.get("normalizers") or node.get("pretokenizers") or node.get("decoders") or []
        return _components(parts)
    return [node]


def backend_json(tok) -> dict | None:
    """The tokenizer.json of a fast tokenizer (or a bare `tokenizers.Tokenizer`); None for slow ones."""
    backend = getattr(tok, "backend_tokenizer", None) or (tok if hasattr(tok, "to_str") else None)
    if backend is None:
        return None
    return json.loads(backend.to_str())


def detect_style(tok, tj: dict | None = None) -> TokenizerStyle:
    """Which spelling the pieces use, read from the pipeline; the pieces decide only when it says nothing."""
    tj = tj if tj is not None else backend_json(tok)
    if tj is not None:
        pre = _components(tj.get("pre_tokenizer"))
        dec = _components(tj.get("decoder"))
        norm = _components(tj.get("normalizer"))
        types = {c.get("type") for c in pre + dec}
        if "ByteLevel" in types:
            return TokenizerStyle(BYTELEVEL)
        for c in pre + dec:
            if c.get("type") == "Metaspace":
                return TokenizerStyle(SENTENCEPIECE, space=c.get("replacement", SP_SPACE))
        for c in norm:  # Llama's legacy layout: Replace(" ", "▁") in the normaliser
            if c.get("type") == "Replace" and c.get("pattern", {}).get("String") == " ":
                return TokenizerStyle(SENTENCEPIECE, space=c.get("content", SP_SPACE))
        for c in dec:
            if c.get("type") == "Replace" and c.get("content") == " ":
                return TokenizerStyle(SENTENCEPIECE, space=c.get("pattern", {}).get("String", SP_SPACE))
            if c.get("type") == "WordPiece":
                return TokenizerStyle(WORDPIECE, wordpiece_prefix=c.get("prefix", "##"))
    # No pipeline to read (slow tokenizer) or an uninformative one: count the space signs in the pieces.
    vocab = tok.get_vocab()
    n_g = sum(p.startswith("Ġ") for p in vocab)
    n_sp = sum(p.startswith(SP_SPACE) for p in vocab)
    if n_g > n_sp and n_g > 0:
        return TokenizerStyle(BYTELEVEL)
    if n_sp > 0:
        return TokenizerStyle(SENTENCEPIECE)
    if sum(p.startswith("##") for p in vocab) > 0:
        return TokenizerStyle(WORDPIECE)
    return TokenizerStyle(PLAIN)


def role_ids(tok) -> dict[str, int]:
    """The role tokens that exist: bos/eos/unk/pad -> id."""
    out = {}
    for role in ("bos", "eos", "unk", "pad"):
        i = getattr(tok, f"{role}_token_id", None)
        if i is not None:
            out[role] = int(i)
    return out


def special_ids(tok) -> set[int]:
    ids = set(role_ids(tok).values()) | {int(i) for i in tok.all_special_ids}
    ids |= {int(i) for i, at in tok.added_tokens_decoder.items() if getattr(at, "special", False)}
    return ids


def piece_data(piece: str, style: TokenizerStyle) -> tuple[bytes, bool, bool]:
    """(bytes the piece stands for in mid-text, is_byte, is_fallback) for an ordinary (non-special) piece."""
    if style.kind == BYTELEVEL:
        inv = byte_alphabet_inverse()
        if piece and all(c in inv for c in piece):
            data = bytes(inv[c] for c in piece)
            return data, len(data) == 1, False
        return piece.encode("utf-8"), False, False  # not in the byte alphabet: a literal piece
    m = _BYTE_PIECE.match(piece)
    if m and style.kind == SENTENCEPIECE:
        return bytes([int(m.group(1), 16)]), True, True
    if style.kind == SENTENCEPIECE:
        return piece.replace(style.space, " ").encode("utf-8"), False, False
    if style.kind == WORDPIECE:
        # A continuation piece joins the previous one; any other piece starts a new word after a space.
        if piece.startswith(style.wordpiece_prefix):
            return piece[len(style.wordpiece_prefix):].encode("utf-8"), False, False
        return (" " + piece).encode("utf-8"), False, False
    return piece.encode("utf-8"), False, False


def _text(data: bytes, is_fallback: bool) -> str:
    if is_fallback:
        # A lone byte shows as text only when it is a whole character by itself (ASCII).
        return chr(data[0]) if data[0] < 0x80 else ""
    # Byte-level pieces may hold part of a multi-byte character: only the invalid bytes become U+FFFD.
    return data.decode("utf-8", errors="replace")


def piece_entries(tok, tj: dict | None = None) -> list[PieceEntry]:
    """One entry per id 0..max id (a vocabulary with gaps gets empty entries for the missing ids)."""
    tj = tj if tj is not None else backend_json(tok)
    style = detect_style(tok, tj)
    n = max(len(tok), max(tok.get_vocab().values(), default=-1) + 1)
    pieces = tok.convert_ids_to_tokens(list(range(n)))
    specials = special_ids(tok)
    added = {int(i): str(at) for i, at in tok.added_tokens_decoder.items()}
    base = tj["model"]["vocab"] if tj is not None else None
    base_pieces = set(base if isinstance(base, dict) else (p[0] for p in base)) if base is not None else None
    out = []
    for i, piece in enumerate(pieces):
        piece = "" if piece is None else str(piece)
        is_special, is_added = i in specials, i in added
        if not piece:  # an id with no piece (a gap in the vocabulary): one empty entry, keep ids aligned
            out.append(PieceEntry(i, "", None, "", is_special, is_added, False, False, is_added))
            continue
        added_only = is_added and (base_pieces is None or piece not in base_pieces)
        if is_special:
            # Special tokens are not text; their string is what decode shows when they are not skipped.
            out.append(PieceEntry(i, piece, None, piece, True, is_added, False, False, added_only))
        elif added_only:
            # An added (non-special) token bypasses the model's spelling: it stands for its literal content.
            data = piece.encode("utf-8")
            out.append(PieceEntry(i, piece, data, piece, False, True, False, False, True))
        else:
            data, is_byte, is_fb = piece_data(piece, style)
            out.append(PieceEntry(i, piece, data, _text(data, is_fb), False, is_added, is_byte, is_fb))
    return out


def vocabulary_table(tokenizer) -> pa.Table:
    """The "vocab" artifact: one row per id 0..len(tokenizer)-1."""
    entries = piece_entries(tokenizer)
    return table("vocab", {
        "id": [e.id for e in entries],
        "token": [e.token for e in entries],
        "text": [e.text for e in entries],
        "is_special": [e.is_special for e in entries],
        "is_added": [e.is_added for e in entries],
        "is_byte": [e.is_byte for e in entries],
    })
