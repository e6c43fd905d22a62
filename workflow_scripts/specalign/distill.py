"""Distilling the draft toward the target (the seed note's Option B; DistillSpec).

The draft keeps its own modality and prompt (it sees events); the target's outputs on a TRAIN
split are the labels. Losses, all on the positions of the sequences below, in TARGET ids (the
draft's distribution pushed through the translation map, as scoring does):
  ce  cross-entropy of the draft on the target's greedy tokens (sequence-level KD)
  kl  forward KL(p || q) on the target's top-k distribution p (renormalised over its top k)
  tv  total variation 1/2 sum |p - q|: alpha = 1 - E[TV(p, q)] (acceptance-metrics.md), so
      this is the acceptance rate itself as a loss
For kl / tv both p and q are softmaxes at `temperature` (scoring's sampled q and p, without the
nucleus cut): set it to the evaluated sampled preset's. `top_k: null` keeps the target's whole
distribution, and tv is then exactly 1 - alpha of that preset (tests/test_distill.py); a finite
top_k makes tv 1 - alpha against p renormalised over its top k, an approximation.
Data: `target_outputs` (the target's greedy answers: what the evaluation scores along) or
`on_policy` (the draft's own greedy answers, scored by the target: DistillSpec's on-policy data),
both made ONCE before training (on_policy: by the initial draft), `max_new_tokens` long at most.

Memory at real scale: labels are made `label_batch_size` clips at a time and only token ids (and
kl / tv: the top-k ids and probabilities) are kept, on the CPU; nothing of the target is needed
after that (`release` frees it before training). A draft prompt (a clip's pixels, ~11.6 MB for
EventGPT) is prepared from its Sample when a training batch needs it and dropped after, so host
memory does not grow with the train split.

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

import gc
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
    top_k: int | None           # kl / tv; None: the target's whole distribution (tv exact)
    max_new_tokens: int
    lora_r: int | None          # None: full fine-tuning of the language model
    lora_alpha: int
    checkpoint_every: int
    label_batch_size: int       # clips per generation batch while the labels are made
    temperature: float          # kl / tv: both models' softmax temperature

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"distill loss {self.loss!r}: one of {LOSSES}")
        if self.data not in DATA:
            raise ValueError(f"distill data {self.data!r}: one of {DATA}")
        for key in ("steps", "batch_size", "label_batch_size", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"distill {key} {getattr(self, key)}: at least 1")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"distill top_k {self.top_k}: at least 1, or null for the whole vocabulary")
        if not self.temperature > 0:
            raise ValueError(f"distill temperature {self.temperature}: must be > 0")
        if self.loss == "ce" and self.temperature != 1.0:
            # ce trains the target's greedy tokens: a temperature would change nothing it is scored on
            raise ValueError(f"distill temperature {self.temperature} applies to loss kl / tv only, not ce")


@dataclass
class Example:
    """One training sample: its clip (the draft's prompt is prepared from it per training batch),
    the sequence (target ids) the draft is fed along, the labels at each position (ce: the
    target's token there) and (kl / tv) the target's distribution at each position, on the CPU."""

    sample: object                         # specalign.dataset.Sample
    tokens: list[int]
    labels: list[int]
    top_ids: torch.Tensor | None = None    # [n, k] target ids; None: top_probs is the whole vocabulary
    top_probs: torch.Tensor | None = None  # [n, k], renormalised over the top k


# ------------------------------------------------------------------------------------------ data
def train_samples(spec: dict) -> list:
    """The clips of the distill job's train split; none is an error naming the dataset, split and
    instruction file (training on nothing would write the draft unchanged as if distilled)."""
    from .dataset import samples_from_instructions

    root = Path(spec["root"])
    path = root / spec["instructions"]
    samples = samples_from_instructions(root, path, spec["questions"], spec["split"])
    if not samples:
        raise ValueError(f"distill: dataset {spec['dataset']!r} has no clips in split {spec['split']!r} "
                         f"of {path}: nothing to train on")
    return samples


@torch.no_grad()
def build_examples(draft, target, samples, token_map, settings: DistillSettings) -> list[Example]:
    """The training examples, `settings.label_batch_size` clips at a time: the sequence to train
    along (the target's greedy answer, or the draft's own mapped to target ids) and, for kl / tv,
    the target's top-k distribution along it. Prompts live only while their batch is labelled."""
    examples: list[Example] = []
    for start in range(0, len(samples), settings.label_batch_size):
        examples.extend(_label_batch(draft, target, samples[start:start + settings.label_batch_size],
                                     token_map, settings))
    if samples and not examples:
        raise ValueError(f"distill: every one of the {len(samples)} {settings.data} sequences is empty: "
                         "nothing to train along")
    return examples


def _label_batch(draft, target, samples, token_map, settings: DistillSettings) -> list[Example]:
    from .generation import generate

    dec = Decoding("distill", do_sample=False, max_new_tokens=settings.max_new_tokens)
    tprompts = [target.prepare(s) for s in samples]
    # prepared here as well, even when only on_policy needs them: a clip the draft cannot read fails
    # now, naming it, not at some step of the training
    dprompts = [draft.prepare(s) for s in samples]
    if settings.data == "target_outputs":
        seqs = [g.token_ids for g in generate(target, tprompts, dec, batch_size=len(samples))]
    else:
        seqs = [token_map.translate_draft_ids(g.token_ids)[: settings.max_new_tokens]
                for g in generate(draft, dprompts, dec, batch_size=len(samples))]
    del dprompts
    examples = []
    for s, tp, y in zip(samples, tprompts, seqs):
        if not y:
            continue
        ex = Example(s, list(y), list(y))
        if settings.loss in ("kl", "tv") or settings.data == "on_policy":
            ids = torch.cat([tp.input_ids.reshape(-1), torch.tensor(y[:-1], dtype=torch.long)])[None]
            logits = target.forward(ids, model_inputs=tp.model_inputs or None, logits_to_keep=len(y))[0].float()
            if settings.data == "on_policy" and settings.loss == "ce":
                ex.labels = logits.argmax(-1).tolist()  # the target's choice at each on-policy prefix
            if settings.loss in ("kl", "tv"):
                probs = torch.softmax(logits / settings.temperature, -1)
                if settings.top_k is None or settings.top_k >= probs.shape[-1]:
                    ex.top_probs = probs.cpu()  # the whole distribution: no ids needed
                else:
                    top = probs.topk(settings.top_k, dim=-1)
                    ex.top_ids = top.indices.cpu()
                    ex.top_probs = (top.values / top.values.sum(-1, keepdim=True)).cpu()
        examples.append(ex)
    return examples


def release(backend) -> None:
    """Free a backend's weights (the target's, once the labels are made: training needs only them),
    returning its accelerator memory to the allocator's pool and then to the device."""
    device = backend.device
    backend.model = None
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


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


def _loss(draft, prompt, ex: Example, token_map, first_ids, settings: DistillSettings, target_width: int):
    """(loss, positions) of one example, `prompt` being the draft's prompt for ex.sample. Computed on
    the draft's device: the labels (CPU) are moved there."""
    from .scoring import draft_feed

    y = ex.tokens
    feeds = draft_feed(token_map, y)
    read, fed, at = [], [], 0
    for j in range(len(y)):
        read.append(at)
        if j < len(y) - 1:
            fed.extend(feeds[j])
            at += len(feeds[j])
    ids = torch.cat([prompt.input_ids.reshape(-1), torch.tensor(fed, dtype=torch.long)])[None].to(draft.device)
    inputs = {k: v.to(draft.device) for k, v in (prompt.model_inputs or {}).items()}
    logits = draft.model(input_ids=ids, logits_to_keep=len(fed) + 1, **inputs).logits[0].float()
    dev = logits.device
    # scoring's q: softmax(logits / temperature) in draft ids, pushed to target ids (ce: temperature 1)
    q = token_map.push_forward(torch.softmax(logits[torch.tensor(read, device=dev)] / settings.temperature, -1),
                               first_ids, target_width)
    eps = 1e-9
    if settings.loss == "ce":
        labels = torch.tensor(ex.labels, device=dev)
        return -torch.log(q[torch.arange(len(y), device=dev), labels] + eps).mean(), len(y)
    p = ex.top_probs.to(dev)
    qk = q if ex.top_ids is None else q.gather(-1, ex.top_ids.to(dev))
    if settings.loss == "kl":
        return (p * (torch.log(p + eps) - torch.log(qk + eps))).sum(-1).mean(), len(y)
    # TV: 1/2 (sum over the top k |p - q| + the draft's mass outside them, where p is 0); with the
    # whole vocabulary that outside mass is what the draft sends to unmapped ids: 1 - summin exactly
    return 0.5 * ((p - qk).abs().sum(-1) + (1 - qk.sum(-1)).clamp(min=0)).mean(), len(y)


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
    state_dir/state.pt when it holds a state of the same fingerprint (spec). Each example's draft
    prompt is prepared when its batch comes and dropped after its backward pass."""
    if not examples:
        raise ValueError("distill: no training examples (an empty train split, or every sequence empty)")
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
            loss, n = _loss(draft, draft.prepare(ex.sample), ex, token_map, first_ids, settings, target_width)
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


def stats_json(stats: dict, settings: DistillSettings, train: Sequence, eval_ids: Sequence[str]) -> str:
    """The distilled checkpoint's record: settings, what it trained on (the clips' manifest sequences)."""
    return json.dumps({**stats, "settings": asdict(settings), "train_samples": len(train),
                       "train_sequences": sorted({s.sequence for s in train}),
                       "evaluated_samples_checked_disjoint": len(eval_ids)}, indent=2, sort_keys=True)
