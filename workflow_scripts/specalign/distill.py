"""Distilling the draft toward the target (the seed note's Option B; DistillSpec).

The draft keeps its own modality and prompt (it sees events); the target's outputs on a TRAIN
split are the labels. Losses, all on the positions of the sequences below, in TARGET ids (the
draft's distribution pushed through the translation map, as scoring does):
  ce  cross-entropy of the draft on the target's greedy tokens (sequence-level KD)
  kl  forward KL(p || q) on the target's top-k distribution p (renormalised over its top k)
  tv  total variation 1/2 sum |p - q|: alpha = 1 - E[TV(p, q)] (acceptance-metrics.md), so
      this is the acceptance rate itself as a loss
Data: `target_outputs` (the target's greedy answers: what the evaluation scores along) or
`on_policy` (the draft's own greedy answers, scored by the target: DistillSpec's on-policy data).

A training user can trust: the batch order is a function of (seed, step) only, and a resume
state (trainable weights, optimiser, schedule, step) is written atomically every
`checkpoint_every` steps outside the job's output, so a killed job resumes from its last state
and ends with the same weights as an uninterrupted one (deterministic on a CPU). LoRA adapters
(peft) on the decoder layers' attention projections for big drafts (everything else frozen),
merged into the written checkpoint; full fine-tuning for tiny ones: every parameter of the model's
decoder (`get_decoder()`: for EventGPT that module also holds the event encoder and projector, which
then train too; for Video-LLaVA / LLaVA only the language model) and the LM head.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from .specs import Decoding

log = logging.getLogger(__name__)

LOSSES = ("ce", "kl", "tv")
DATA = ("target_outputs", "on_policy")
# A test hook: SIGKILL this process right after the resume state of this step is written.
KILL_AFTER_ENV = "SPECALIGN_DISTILL_KILL_AFTER"


@dataclass(frozen=True)
class DistillSettings:
    loss: str
    data: str
    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    top_k: int
    max_new_tokens: int
    lora_r: int | None          # None: full fine-tuning of the language model
    lora_alpha: int
    checkpoint_every: int

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"distill loss {self.loss!r}: one of {LOSSES}")
        if self.data not in DATA:
            raise ValueError(f"distill data {self.data!r}: one of {DATA}")


@dataclass
class Example:
    """One training sample: the draft's prompt, the sequence (target ids) it is fed along, the
    labels at each position (ce: the target's token there) and (kl / tv) the target's
    distribution at each position (top-k ids and probs)."""

    draft_prompt: object
    tokens: list[int]
    labels: list[int]
    top_ids: torch.Tensor | None = None    # [n, k] target ids
    top_probs: torch.Tensor | None = None  # [n, k], renormalised over the top k


def check_disjoint(train_ids: Sequence[str], eval_ids: Sequence[str]) -> None:
    """Train and evaluation never share a clip, nor a sequence (clips cut from one sequence overlap
    in time): sample ids are "{sequence}/{clip}"."""
    shared = sorted(set(train_ids) & set(eval_ids))
    if shared:
        raise ValueError(f"{len(shared)} training clips are also evaluated, e.g. {shared[:3]}")
    seqs = sorted({s.split("/")[0] for s in train_ids} & {s.split("/")[0] for s in eval_ids})
    if seqs:
        raise ValueError(f"sequences {seqs[:3]} hold both training and evaluated clips (overlapping windows)")


# ------------------------------------------------------------------------------------------ data
@torch.no_grad()
def build_examples(draft, target, samples, token_map, settings: DistillSettings, batch_size: int = 16):
    """The training examples: each sample prepared for both models, the sequence to train along
    (the target's greedy answer, or the draft's own mapped to target ids), and the target's
    top-k distribution along it for kl / tv."""
    from .generation import generate

    dec = Decoding("distill", do_sample=False, max_new_tokens=settings.max_new_tokens)
    tprompts = [target.prepare(s) for s in samples]
    dprompts = [draft.prepare(s) for s in samples]
    if settings.data == "target_outputs":
        seqs = [g.token_ids for g in generate(target, tprompts, dec, batch_size=batch_size)]
    else:
        seqs = [[t for t in token_map.translate_draft_ids(g.token_ids)][: settings.max_new_tokens]
                for g in generate(draft, dprompts, dec, batch_size=batch_size)]
    examples = []
    for dp, tp, y in zip(dprompts, tprompts, seqs):
        if not y:
            continue
        ex = Example(dp, list(y), list(y))
        if settings.loss in ("kl", "tv") or settings.data == "on_policy":
            ids = torch.cat([tp.input_ids.reshape(-1), torch.tensor(y[:-1], dtype=torch.long)])[None]
            logits = target.forward(ids, model_inputs=tp.model_inputs or None, logits_to_keep=len(y))[0].float()
            probs = torch.softmax(logits, -1)
            if settings.data == "on_policy" and settings.loss == "ce":
                ex.labels = probs.argmax(-1).tolist()  # the target's choice at each on-policy prefix
            top = probs.topk(min(settings.top_k, probs.shape[-1]), dim=-1)
            ex.top_ids, ex.top_probs = top.indices.cpu(), (top.values / top.values.sum(-1, keepdim=True)).cpu()
        examples.append(ex)
    return examples


# ------------------------------------------------------------------------------------------ model
def trainable(model, settings: DistillSettings):
    """Wrap or unfreeze the draft: LoRA on the decoder layers' attention projections (the rest
    frozen), or every parameter of `get_decoder()` and the LM head (see the module doc)."""
    from .backends.variants import decoder_layers

    decoder, layers = decoder_layers(model)
    for p in model.parameters():
        p.requires_grad_(False)
    if settings.lora_r is None:
        for p in list(decoder.parameters()) + list(model.get_output_embeddings().parameters()):
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    prefix = next(n for n, m in model.named_modules() if m is layers)
    names = [n for n, _ in model.named_modules()
             if n.startswith(prefix + ".") and n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj")]
    cfg = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=0.0, target_modules=names)
    return get_peft_model(model, cfg)


def _loss(draft, ex: Example, token_map, first_ids, settings: DistillSettings, target_width: int):
    from .scoring import draft_feed

    y = ex.tokens
    prompt = ex.draft_prompt.input_ids.reshape(-1)
    feeds = draft_feed(token_map, y)
    read, fed, at = [], [], 0
    for j in range(len(y)):
        read.append(at)
        if j < len(y) - 1:
            fed.extend(feeds[j])
            at += len(feeds[j])
    ids = torch.cat([prompt, torch.tensor(fed, dtype=torch.long)])[None].to(draft.device)
    inputs = {k: v.to(draft.device) for k, v in (ex.draft_prompt.model_inputs or {}).items()}
    logits = draft.model(input_ids=ids, logits_to_keep=len(fed) + 1, **inputs).logits[0].float()
    q = token_map.push_forward(torch.softmax(logits[torch.tensor(read)], -1), first_ids, target_width)
    eps = 1e-9
    if settings.loss == "ce":
        return -torch.log(q[torch.arange(len(y)), torch.tensor(ex.labels)] + eps).mean(), len(y)
    qk = q.gather(-1, ex.top_ids)
    if settings.loss == "kl":
        return (ex.top_probs * (torch.log(ex.top_probs + eps) - torch.log(qk + eps))).sum(-1).mean(), len(y)
    # TV: 1/2 (sum over the top k |p - q| + the draft's mass outside them, where p is 0)
    return 0.5 * ((ex.top_probs - qk).abs().sum(-1) + (1 - qk.sum(-1)).clamp(min=0)).mean(), len(y)


def batch_order(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The examples of `step`: epochs of a seeded permutation, a function of (seed, step) alone,
    so a resumed run draws exactly the batches an uninterrupted one would."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order[k * batch_size:(k + 1) * batch_size]


def _atomic_save(obj, path: Path) -> None:
    from .artifacts import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train(draft, examples: list[Example], token_map, settings: DistillSettings, state_dir: Path,
          fingerprint: str, target_width: int) -> dict:
    """Train `draft.model` in place (wrapped by `trainable`); returns stats. Resumes from
    state_dir/state.pt when it holds a state of the same fingerprint (spec)."""
    torch.manual_seed(settings.seed)
    model = trainable(draft.model, settings)
    draft.model = model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    warm = max(1, settings.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / max(1, settings.steps)))))
    first_ids = token_map.first_ids(draft.text_vocab_size, target_width)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    start, state_file = 0, Path(state_dir) / "state.pt"
    if state_file.is_file():
        state = torch.load(state_file, weights_only=False)
        if state.get("fingerprint") == fingerprint:
            named = dict(model.named_parameters())
            with torch.no_grad():
                for n, v in state["params"].items():
                    named[n].copy_(v)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start = state["step"]
            log.info("resumed from %s at step %d of %d", state_file, start, settings.steps)
        else:
            log.info("%s belongs to another spec: starting afresh", state_file)
    kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
    model.train()
    t0, tokens, last = time.perf_counter(), 0, float("nan")
    for step in range(start, settings.steps):
        batch = [examples[i] for i in batch_order(len(examples), settings.batch_size, settings.seed, step)]
        opt.zero_grad(set_to_none=True)
        total, n_tok = 0.0, 0
        for ex in batch:
            loss, n = _loss(draft, ex, token_map, first_ids, settings, target_width)
            (loss / len(batch)).backward()
            total += float(loss.detach()) / len(batch)
            n_tok += n
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        tokens += n_tok
        last = total
        done = step + 1
        if done % 10 == 0 or done == settings.steps:
            rate = tokens / max(1e-9, time.perf_counter() - t0)
            log.info("step %d/%d  loss %.4f  %.0f tokens/s", done, settings.steps, total, rate)
        if done % settings.checkpoint_every == 0 and done < settings.steps:
            named = dict(model.named_parameters())
            _atomic_save({"fingerprint": fingerprint, "step": done, "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict(),
                          "params": {n: named[n].detach().clone() for n in names}}, state_file)
            if kill_after == done:
                os.kill(os.getpid(), signal.SIGKILL)
    model.eval()
    return {"steps": settings.steps, "resumed_at": start, "final_loss": last,
            "target_tokens_per_epoch": sum(len(e.tokens) for e in examples)}


def merged(model):
    """The plain model for writing: LoRA weights merged in (peft), else the model itself."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def write_checkpoint(backend, out_dir: Path) -> None:
    """The distilled draft in its family's checkpoint layout (EventGPT's official one for eventgpt)."""
    model = merged(backend.model)
    backend.model = model
    if backend.family == "eventgpt":
        from .backends.eventgpt import write_official_checkpoint

        write_official_checkpoint(model, backend.tokenizer, out_dir, include_clip=True)
    else:
        model.save_pretrained(out_dir)
        backend.tokenizer.save_pretrained(out_dir)


def settings_of(spec: dict) -> DistillSettings:
    keys = {f for f in DistillSettings.__dataclass_fields__}
    return DistillSettings(**{k: v for k, v in spec.items() if k in keys})


def stats_json(stats: dict, settings: DistillSettings, train_ids: Sequence[str], eval_ids: Sequence[str]) -> str:
    return json.dumps({**stats, "settings": asdict(settings), "train_samples": len(train_ids),
                       "train_sequences": sorted({s.split("/")[0] for s in train_ids}),
                       "evaluated_samples_checked_disjoint": len(eval_ids)}, indent=2, sort_keys=True)
