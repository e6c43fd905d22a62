"""Test builders: tiny Llama models with a word-level tokenizer, saved like real checkpoints, and
the helpers tests use with them (prompts, token maps, padded batches). A plain module, imported by
tests (`from builders import ...`), by conftest.py's fixtures and by bench/cpu_bench.py.

Everything is built offline in a given folder and loaded back through `CausalLMBackend`, so the
tests exercise the same loading path a real run does.

- `build_tiny_llama(path, ...)`: a LlamaForCausalLM + tokenizer folder. `noise_from=<dir>,
  noise=sigma` makes a noisy copy of another tiny model: every matrix gets Gaussian noise of
  sigma x its own std. Random tiny models agree on ~4% of greedy tokens; noisy copies of one
  model agree a lot (sigma 0.1 ~ 0.8, 0.3 ~ 0.6, 0.8 ~ 0.3 greedy match rate with the default
  64-id vocabulary), which is what acceptance tests need.
- `load_lm(path, name=None, **spec)`: a `CausalLMBackend` for such a folder.
- `random_questions`, `prompts_for`, `build_permuted_copy`, `to_draft_prompt`, `ragged_map`,
  `left_pad_rows`.

Vocabulary: `<unk>`=0, `<s>`=1 (BOS, prepended by the tokenizer), `</s>`=2 (EOS),
`<pad>`=3, `USER:`=4, `ASSISTANT:`=5, then words `w0`, `w1`, ... (6 + i).
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
PROMPT_WORDS = ["USER:", "ASSISTANT:"]
BOS_ID, EOS_ID, PAD_ID = 1, 2, 3
N_FIXED = len(SPECIALS) + len(PROMPT_WORDS)


def build_word_tokenizer(n_words: int, path: Path):
    """A WordLevel tokenizer (whitespace split, BOS prepended) saved as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + PROMPT_WORDS + [f"w{i}" for i in range(n_words)])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS_ID)])
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                  pad_token="<pad>")
    tok.save_pretrained(path)
    return tok


def add_noise(model, sigma: float, seed: int) -> None:
    """Every matrix of `model` + Gaussian noise of sigma x its own std (a draft that agrees often, not always)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=g) * p.std() * sigma)


def build_tiny_llama(path: Path, n_words: int = 58, hidden: int = 48, layers: int = 2, seed: int = 0,
                     init_std: float = 0.02, eos_like: int | None = None, noise_from: Path | None = None,
                     noise: float = 0.0, noise_seed: int = 1) -> Path:
    """Save a tiny Llama (+ tokenizer) to `path`; with `noise_from`, a noisy copy of that model.

    `eos_like=k`: the EOS row of the output layer becomes 2 x token k's row, so the model
    ends where it would have said k, and often earlier (random tiny models otherwise rarely emit EOS); for a
    noisy copy it re-ties the copy's EOS row after the noise, so the copy ends where the
    original does more often (accepted-EOS rounds).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if noise_from is not None:
        model = LlamaForCausalLM.from_pretrained(noise_from)
        add_noise(model, noise, noise_seed)
        with torch.no_grad():
            if eos_like is not None:  # keep the draft's EOS tied to the same token as the target's
                model.lm_head.weight[EOS_ID] = model.lm_head.weight[eos_like] * 2.0
        model.save_pretrained(path)
        for f in Path(noise_from).iterdir():
            if f.name.startswith(("tokenizer", "special_tokens")):
                shutil.copy(f, path / f.name)
        return path
    build_word_tokenizer(n_words, path)
    cfg = LlamaConfig(vocab_size=N_FIXED + n_words, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                      initializer_range=init_std, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    if eos_like is not None:
        with torch.no_grad():
            model.lm_head.weight[EOS_ID] = model.lm_head.weight[eos_like] * 2.0
    model.save_pretrained(path)
    return path


def load_lm(path, name: str | None = None, **spec):
    from specalign.backends.causal_lm import CausalLMBackend
    from specalign.specs import ModelSpec

    return CausalLMBackend(ModelSpec(name=name or Path(path).name, family="causal_lm", path=str(path), **spec))


def random_questions(n: int, n_words: int = 58, seed: int = 0, min_len: int = 1, max_len: int = 8) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"w{rng.randrange(n_words)}" for _ in range(rng.randint(min_len, max_len))) for _ in range(n)]


def prompts_for(backend, questions, prefix: str = "s"):
    from specalign.dataset import Sample

    return [backend.prepare(Sample(sample_id=f"{prefix}{i}", question=q)) for i, q in enumerate(questions)]


def build_permuted_copy(src: Path, dst: Path, perm: list[int]) -> Path:
    """A copy of model `src` whose draft id d means target id perm[d] (embedding and output rows
    permuted): through the map d -> perm[d] it is the same function as `src`."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(src)
    idx = torch.tensor(perm)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(model.model.embed_tokens.weight[idx].clone())
        model.lm_head.weight.copy_(model.lm_head.weight[idx].clone())
    dst = Path(dst)
    model.save_pretrained(dst)
    for f in Path(src).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, dst / f.name)
    return dst


def to_draft_prompt(prompt, token_map):
    """The same prompt in draft ids (through t2d), as a new PromptInputs."""
    from specalign.backends import PromptInputs

    ids = [d for t in prompt.input_ids.tolist() for d in token_map.t2d(t)]
    return PromptInputs(prompt.sample_id, torch.tensor(ids, dtype=torch.long), dict(prompt.model_inputs),
                        prompt.prompt_text)


def ragged_map(n: int, ids: list[int], spare: tuple[int, ...] = (7, 8, 9)):
    """An n x n TokenMap that is the identity except for the (frequent) ids a, b, c, d, e = ids[:5]:

    - target a is spelled by two draft ids (spare[0], spare[1])        (1:n re-tokenised)
    - target b cannot be written by the draft: t2d(b) = ()            (fed nothing)
    - draft c is unmapped: d2t(c) = () (a null proposal); t2d(c) = (c,)
    - draft d maps to two target ids (d, e): it proposes d             (first id)
    """
    from specalign.translation import TokenMap

    a, b, c, d, e = ids[:5]
    d2t = [(i,) for i in range(n)]
    d2t[c] = ()
    d2t[d] = (d, e)
    t2d = {i: (i,) for i in range(n)}
    t2d[a] = (spare[0], spare[1])
    t2d[b] = ()
    return TokenMap(d2t, t2d, kinds=["exact"] * n)


def left_pad_rows(rows, pad):
    """Left-padded ids, attention mask and position ids (cumsum - 1) for rows of token ids: the
    layout the generation stage feeds a batch in."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.as_tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)
