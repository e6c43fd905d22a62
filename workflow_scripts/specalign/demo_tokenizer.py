"""The demo's Llama-style tokenizers, trained offline with `tokenizers`.

The real pair (EventGPT-7B draft, Video-LLaVA-7B target) share one Llama
SentencePiece vocabulary of 32000 ids; the target appends `<image>` (32000),
`<video>` (32001) and `<pad>` (32002). The demo reproduces exactly that
relation at a tiny size: a draft tokenizer of N ids and a target = draft +
`<image>`, `<video>`, `<pad>` at N, N+1, N+2.

Layout of the draft vocabulary (the same as Llama's):
    0 `<unk>`, 1 `<s>`, 2 `</s>`, 3..258 the byte pieces `<0x00>`..`<0xFF>`,
    259.. the alphabet and merges learned from the corpus.
N is at most `vocab_size` (less when the corpus runs out of merges, more only
when the corpus alphabet alone is larger): read `len(tokenizer)`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPACE = "▁"  # U+2581, SentencePiece's visible space
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
ROLE_TOKENS = (UNK, BOS, EOS)
BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in range(256))
# The target's extra tokens, in the order (and so the ids) of the real Video-LLaVA tokenizer.
TARGET_EXTRA = ("<image>", "<video>")
PAD = "<pad>"

# Placeholders that the model stages splice in as added tokens: they must never reach the BPE trainer,
# or it would learn pieces like "<vid" that the real tokenizer never has.
_PLACEHOLDER = re.compile(r"<(?:image|video|event|ev_start|ev_end|ev_patch)>")


def demo_corpus(captions: Iterable[str], questions: Iterable[str], prompt_templates: Iterable[str]) -> list[str]:
    """The texts the demo tokenizer is trained on: every caption, and every template filled with every question.

    Templates use `{question}`; visual placeholders (`<video>`, `<event>`, ...) are removed because they are
    added tokens, not text. Duplicates are dropped, first occurrence order kept (training is deterministic
    for a given list, so the order matters for reproducibility).
    """
    questions = list(questions)
    out: list[str] = []
    for c in captions:
        out.append(c)
    for tpl in prompt_templates:
        for q in questions:
            out.append(_PLACEHOLDER.sub("", tpl.replace("{question}", q)))
    return list(dict.fromkeys(t for t in out if t))


def _train_bpe(texts: list[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn BPE merges over ▁-prefixed words; return the final Llama-layout vocab and the merges."""
    tok = Tokenizer(models.BPE(unk_token=UNK, byte_fallback=True))
    tok.normalizer = _normalizer()
    # Train word by word (each word keeps its leading ▁), as SentencePiece does by default: merges then
    # never span two words, which is what lets the saved tokenizer run without a pre-tokenizer (Llama's layout).
    tok.pre_tokenizer = pre_tokenizers.Split(SPACE, behavior="merged_with_next")
    # The trainer's budget excludes the 256 byte pieces, which it would not add by itself.
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - len(BYTE_PIECES), len(ROLE_TOKENS) + 1),
        special_tokens=list(ROLE_TOKENS),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    learned = sorted(model["vocab"].items(), key=lambda kv: kv[1])

    vocab: dict[str, int] = {}
    for piece in (*ROLE_TOKENS, *BYTE_PIECES):
        vocab[piece] = len(vocab)
    for piece, _ in learned:  # alphabet first, then merges, in training order
        if piece not in vocab:
            vocab[piece] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges


def _normalizer():
    return normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])


def llama_backend(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """A `tokenizers` object with Llama's tokenizer.json layout around a given BPE vocab and merges.

    `vocab` must hold `<unk>`, `<s>`, `</s>`; byte pieces `<0xNN>` are used for characters the merges
    cannot spell (a missing byte piece makes that character `<unk>`).
    """
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True, fuse_unk=True))
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = None
    # Replace first, then bytes: ByteFallback -> Fuse -> Metaspace was seen to drop every space.
    # Strip removes the one leading space that Prepend added (the "dummy prefix").
    tok.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    # Registered as special added tokens so that literal "<s>" in text is one token and decode can skip them.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ROLE_TOKENS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, vocab[BOS])]
    )
    return tok


def build_backend(texts: list[str], vocab_size: int = 400) -> Tokenizer:
    """The `tokenizers` object of the draft, trained on `texts`."""
    vocab, merges = _train_bpe(texts, vocab_size)
    return llama_backend(vocab, merges)


def wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """A transformers fast tokenizer around `backend`.

    PreTrainedTokenizerFast (TokenizersBackend in transformers 5) and not LlamaTokenizer: the latter's
    __init__ rebuilds the pipeline (Metaspace pre-tokenizer) on load, keeping only vocab and merges, so the
    normaliser written here would not survive a save/load. add_bos_token is passed explicitly because
    transformers 5 otherwise regenerates the post-processor from add_bos_token=False and drops `<s>`.
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="left",
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )


def add_target_tokens(tok: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """Append `<image>`, `<video>` (special) and the pad token `<pad>`, in that order (ids N, N+1, N+2)."""
    n = len(tok)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in TARGET_EXTRA], special_tokens=True)
    tok.add_special_tokens({"pad_token": AddedToken(PAD, special=True, normalized=False)})
    got = tok.convert_tokens_to_ids([*TARGET_EXTRA, PAD])
    if got != [n, n + 1, n + 2]:
        raise RuntimeError(f"target extra tokens landed at {got}, expected {[n, n + 1, n + 2]}")
    return tok


def train_demo_tokenizers(texts: list[str], out_draft: Path, out_target: Path, vocab_size: int = 400) -> tuple[int, int]:
    """Train the draft tokenizer on `texts`, derive the target, save both with save_pretrained.

    Returns (len(draft), len(target)) = (N, N + 3).
    """
    if not texts:
        raise ValueError("train_demo_tokenizers needs at least one text")
    backend = build_backend(list(texts), vocab_size)
    draft = wrap(backend)
    draft.save_pretrained(str(out_draft))
    target = add_target_tokens(wrap(backend))
    target.save_pretrained(str(out_target))
    return len(draft), len(target)
