"""The tiny demo pair: a Video-LLaVA-architecture target and an EventGPT-architecture draft.

Both are trained on the demo's train split so that their answers are real captions.
The target sees RGB frames, the draft only events of equal-luminance colours, so the
demo has a known truth: the draft cannot see colour. The target learns the dataset's
reference captions ("a red circle moves left"); the draft learns the same content
mostly in its own phrasing ("there is a circle moving to the left"), with a share of
target-style captions (demo_data.DRAFT_STYLES, TARGET_STYLE_SHARE), as EventGPT and
Video-LLaVA were trained on different instruction data. So its disagreements with the
target are its style (first word, verb) and the colour words.

A third, optional role: a text-only draft (a tiny Llama, family causal_lm) trained on the
target's captions from the question alone. It sees no clip, so it can only learn what every
caption shares (the template, the word frequencies): the floor any draft that looks at the
clip should beat.

Training goes through the same backend code that inference uses: the untrained model
is written as a checkpoint, loaded back by its backend, and every clip is prepared by
`backend.prepare` — so the prompts and visual tensors the model learns from are exactly
those it is evaluated on. Settings follow shared/reference/demo-training-facts.md.
"""
from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .backends.base import PromptInputs
from .demo_data import TARGET_STYLE_SHARE, draft_style_labels, draft_training_captions, parse_caption
from .specs import DEMO_FAMILIES, ModelSpec, schema_defaults

log = logging.getLogger(__name__)

# Sizes that trained in ~2 CPU-minutes (demo-training-facts.md).
VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8, projection_dim=64)
TEXT = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=512)
INIT_RANGE = 0.06
FLIP_WORDS = {"left": "right", "right": "left"}
REVERSE_WORDS = {"left": "right", "right": "left", "up": "down", "down": "up"}


_TRAINING = schema_defaults("demo_training")


@dataclass(frozen=True)
class TrainSettings:
    steps: int  # the role's demo_training.{target,draft,text}_steps
    batch_size: int = _TRAINING["batch_size"]
    learning_rate: float = _TRAINING["learning_rate"]
    seed: int = _TRAINING["seed"]
    # optimiser details that are not config (demo-training-facts.md)
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    # the draft only: share of its training clips that keep the target's caption (demo_data.py)
    target_style_share: float = TARGET_STYLE_SHARE


def swap_words(caption: str, table: dict[str, str]) -> str:
    return " ".join(table.get(w, w) for w in caption.split(" "))


# ---------------------------------------------------------------- model builders
def _text_config(tokenizer):
    """The demo decoder (LlamaConfig) over `tokenizer`'s ids: the target's language model and the text draft."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), initializer_range=INIT_RANGE, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **TEXT)


def build_target(tokenizer, seed: int = 0):
    """A tiny VideoLlavaForConditionalGeneration whose placeholders are the tokenizer's added ids."""
    from transformers import CLIPVisionConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration

    torch.manual_seed(seed)
    text = _text_config(tokenizer)
    vision = CLIPVisionConfig(initializer_range=INIT_RANGE, **VISION)
    cfg = VideoLlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        # the default -2 would use only the first of the 2 vision layers
        vision_feature_layer=-1, vision_feature_select_strategy="default",
        video_seq_length=8 * ((VISION["image_size"] // VISION["patch_size"]) ** 2 + 1),
        image_seq_length=(VISION["image_size"] // VISION["patch_size"]) ** 2,
    )
    cfg.pad_token_id = tokenizer.pad_token_id
    model = VideoLlavaForConditionalGeneration(cfg)
    return model


def build_draft(tokenizer, seed: int = 0):
    """A tiny EventChat (EventGPT) model with a self-contained CLIP tower."""
    from transformers import CLIPVisionConfig

    from .backends.eventgpt import EventChatConfig, EventChatForCausalLM

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(initializer_range=INIT_RANGE, **VISION)
    cfg = EventChatConfig(
        vocab_size=len(tokenizer), initializer_range=INIT_RANGE, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        mm_visual_tower="(embedded)", mm_visual_tower_config=vision.to_dict(),
        event_feature_adaptor=True, mm_use_im_start_end=False, mm_use_im_patch_token=True, **TEXT,
    )
    return EventChatForCausalLM(cfg)


def build_text(tokenizer, seed: int = 0):
    """A tiny LlamaForCausalLM of the demo decoder's size: the text-only draft."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(_text_config(tokenizer))


# ---------------------------------------------------------------- training data
@dataclass
class Example:
    prompt: PromptInputs
    caption: str


def prepare_examples(backend, samples) -> list[Example]:
    return [Example(backend.prepare(s), s.reference) for s in samples]


def role_captions(role: str, references, settings: TrainSettings) -> list[str]:
    """The captions `role` is trained on: the references for the target; for the draft the same
    content in its own style except on a share of target-style clips (demo_data.draft_training_captions,
    seeded by the training seed)."""
    references = list(references)
    if role in ("target", "text"):   # the text draft learns the target's answers, without the clip
        return references
    return draft_training_captions(references, settings.seed, settings.target_style_share)


def _augment(ex: Example, family: str, rng: random.Random, mean: torch.Tensor, std: torch.Tensor):
    """Flip and time-reverse clips with their captions, so the models learn motion, not backgrounds."""
    x = ex.prompt.model_inputs[_visual_key(family)]  # [1, T, 3, H, W]
    caption = ex.caption
    if rng.random() < 0.5:  # mirror: left <-> right
        x = x.flip(-1)
        caption = swap_words(caption, FLIP_WORDS)
    if rng.random() < 0.5:  # play backwards: left <-> right, up <-> down
        x = x.flip(1)
        if family == "eventgpt":
            # reversed time flips every brightness change: polarity red <-> blue, swapped in pixel space
            raw = x * std + mean
            x = (raw[:, :, [2, 1, 0]] - mean) / std
        caption = swap_words(caption, REVERSE_WORDS)
    return x, caption


def _visual_key(family: str) -> str | None:
    return {"video_llava": "pixel_values_videos", "eventgpt": "event_tensors"}.get(family)


def _batch(examples, tokenizer, family, rng, augment, mean, std, pad_id):
    key = _visual_key(family)
    seqs, labels, visuals = [], [], []
    for ex in examples:
        if key is None:              # text only: nothing to flip, and the captions are balanced already
            vis, caption = None, ex.caption
        elif augment:
            vis, caption = _augment(ex, family, rng, mean, std)
        else:
            vis, caption = ex.prompt.model_inputs[key], ex.caption
        answer = tokenizer.encode(caption, add_special_tokens=False) + [tokenizer.eos_token_id]
        ids = ex.prompt.input_ids.tolist() + answer
        seqs.append(ids)
        labels.append([-100] * len(ex.prompt.input_ids) + answer)
        visuals.append(vis)
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, lb) in enumerate(zip(seqs, labels)):  # right padding: training needs no cache
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(lb)] = torch.tensor(lb)
        mask[i, : len(s)] = 1
    return ids, lab, mask, ({key: torch.cat(visuals, 0)} if key else {})


def _loss(model, ids, lab, mask, visual):
    logits = model(input_ids=ids, attention_mask=mask, **visual).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), lab[:, 1:].reshape(-1),
                           ignore_index=-100)


def _norm_stats(backend):
    proc = getattr(backend, "image_processor", None)
    mean = getattr(proc, "image_mean", None) or [0.48145466, 0.4578275, 0.40821073]
    std = getattr(proc, "image_std", None) or [0.26862954, 0.26130258, 0.27577711]
    return torch.tensor(mean).view(1, 1, 3, 1, 1), torch.tensor(std).view(1, 1, 3, 1, 1)


def train(backend, examples: list[Example], settings: TrainSettings, heldout: list[Example] = ()) -> dict:
    """AdamW with warm-up and cosine decay; loss on the caption tokens and </s> only."""
    model, tok, family = backend.model, backend.tokenizer, backend.family
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    mean, std = _norm_stats(backend)
    pad_id = backend.pad_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay,
                            betas=(0.9, 0.98))
    warm = max(1, int(settings.warmup_frac * settings.steps))

    def lr_at(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, settings.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    t0, order, pos = time.perf_counter(), [], 0
    for step in range(settings.steps):
        if pos + settings.batch_size > len(order):
            order = list(range(len(examples)))
            rng.shuffle(order)
            pos = 0
        batch = [examples[i] for i in order[pos: pos + settings.batch_size]]
        pos += settings.batch_size
        ids, lab, mask, vis = _batch(batch, tok, family, rng, True, mean, std, pad_id)
        loss = _loss(model, ids, lab, mask, vis)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == settings.steps - 1:
            log.info("step %d/%d loss %.4f lr %.2e %.1fs", step + 1, settings.steps, loss.item(),
                     sched.get_last_lr()[0], time.perf_counter() - t0)
    model.eval()
    stats = {"steps": settings.steps, "seconds": round(time.perf_counter() - t0, 1), "final_loss": loss.item()}
    # train: against the role's own training captions; heldout: against the reference (target) caption
    for name, exs in (("train", examples[:96]), ("heldout", list(heldout))):
        if exs:
            stats[f"{name}_caption_accuracy"] = caption_accuracy(backend, exs)
    if heldout:
        stats["heldout_free_running"] = free_running_accuracy(backend, list(heldout))
    log.info("training done: %s", stats)
    return stats


@torch.no_grad()
def caption_accuracy(backend, examples: list[Example]) -> float:
    """Share of clips whose every caption token is the model's teacher-forced argmax."""
    mean, std = _norm_stats(backend)
    rng = random.Random(0)
    ok = 0
    for i in range(0, len(examples), 32):
        ids, lab, mask, vis = _batch(examples[i: i + 32], backend.tokenizer, backend.family, rng, False,
                                     mean, std, backend.pad_token_id)
        pred = backend.model(input_ids=ids, attention_mask=mask, **vis).logits[:, :-1].argmax(-1)
        want = lab[:, 1:]
        ok += ((pred == want) | (want == -100)).all(-1).sum().item()
    return ok / len(examples)


@torch.no_grad()
def free_running_accuracy(backend, examples: list[Example], max_new_tokens: int = 16) -> dict:
    """Greedy free-running answers against the examples' (reference) captions, whatever their phrasing:
    exact caption, shape and direction both named right (content), colour named and right, no colour
    named, and the share of answers opening with each first word."""
    from .generation import generate
    from .specs import Decoding

    out = generate(backend, [ex.prompt for ex in examples], Decoding(name="greedy", do_sample=False,
                                                                       max_new_tokens=max_new_tokens),
                   batch_size=16)
    n = len(examples)
    exact = content = colour = no_colour = 0
    first: dict[str, int] = {}
    for ex, g in zip(examples, out):
        text = backend.tokenizer.decode(g.token_ids, skip_special_tokens=True).strip()
        want, got = parse_caption(ex.caption), parse_caption(text)
        exact += text == ex.caption
        if want is not None and got is not None:
            content += got[1:] == want[1:]
            colour += got[0] is not None and got[0] == want[0]
        no_colour += got is not None and got[0] is None
        word = text.split(" ", 1)[0] if text else ""
        first[word] = first.get(word, 0) + 1
    return {"clips": n, "exact": exact / n, "content": content / n, "colour": colour / n,
            "no_colour": no_colour / n, "first_word": {k: v / n for k, v in sorted(first.items())}}


# ---------------------------------------------------------------- entry point
def train_demo_model(role: str, tokenizer_dir: str | Path, out_dir: str | Path, train_samples, heldout_samples,
                     settings: TrainSettings) -> dict:
    """Build, save, reload through the backend, train, save: the demo `role` (DEMO_FAMILIES)."""
    from transformers import AutoTokenizer

    from .artifacts import atomic_dir, write_json
    from .backends import load_backend
    from .backends.eventgpt import write_official_checkpoint

    out_dir = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    family = DEMO_FAMILIES[role]
    with tempfile.TemporaryDirectory(dir=out_dir.parent if out_dir.parent.exists() else None) as tmp, \
            atomic_dir(out_dir) as staging:  # the whole checkpoint directory appears at once
        init_dir = Path(tmp) / "init"
        if role in ("target", "text"):
            model = (build_target if role == "target" else build_text)(tok, settings.seed)
            model.save_pretrained(init_dir)
            tok.save_pretrained(init_dir)
        else:
            model = build_draft(tok, settings.seed)
            write_official_checkpoint(model, tok, init_dir, include_clip=True)
        backend = load_backend(ModelSpec(name=f"demo_{role}", family=family, path=str(init_dir)))
        log.info("%s: %d parameters", role, sum(p.numel() for p in backend.model.parameters()))
        train_samples = list(train_samples)
        captions = role_captions(role, [s.reference for s in train_samples], settings)
        examples = [Example(ex.prompt, c) for ex, c in zip(prepare_examples(backend, train_samples), captions)]
        heldout = prepare_examples(backend, heldout_samples)
        stats = train(backend, examples, settings, heldout)
        if role == "draft":
            labels = draft_style_labels(len(captions), settings.seed, settings.target_style_share)
            stats["target_style_share"] = settings.target_style_share
            stats["caption_styles"] = {("target" if k < 0 else f"draft{k}"): labels.count(k) for k in sorted(set(labels))}
        if role in ("target", "text"):
            backend.model.save_pretrained(staging)
            tok.save_pretrained(staging)
        else:
            write_official_checkpoint(backend.model, tok, staging, include_clip=True)
        write_json(stats, staging / "training_stats.json")
    return stats
