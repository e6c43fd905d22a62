"""Free-running generation (greedy / sampled), batched with left padding, with timings.

One loop written against `Backend.forward` (not HF `generate`) so that every model
family runs the same code, and so that the token choice is defined in one place,
`processed_distribution`, which scoring and the speculative loop share.

Batching: prompts are LEFT-padded with `backend.pad_token_id`; the attention mask
marks real tokens and `position_ids = cumsum(mask) - 1` (clamped at 0 on the pads),
so a row's logits do not depend on the other rows (checked in tests: batched ==
unbatched, greedy fp32). `model_inputs` of the rows are concatenated on dim 0 and
passed only in the prefill pass (the one holding the placeholders).

Sampling: each sample has its own `torch.Generator` seeded from
`(decoding.seed, sample_id)` through a stable hash (crc32), and each new token uses
exactly one uniform draw (inverse CDF in float64 on the CPU). So a sample's stream
depends on neither the batch it is in, nor the shard, nor the device's RNG.

Timings (`torch.cuda.synchronize` around each pass on CUDA):
- `prefill_ms`: the prompt pass (incl. any vision encoder) of the whole batch,
  divided by the batch size. With batch_size 1 it is the sample's own prefill.
- `decode_ms[k]`: wall time of the decode step that produced token k (the batch's
  step: every row in the batch shares it); `decode_ms[0] = 0` because token 0
  comes from the prefill pass.
- `peak_mem_mb`: `torch.cuda.max_memory_allocated` over the batch (0 on CPU).
- `device`, `torch_threads`: what the timings were measured on (`device_name`) and with how many
  torch CPU threads, so timings from two machines are never mistaken for one another.

Warm-up: the first forward passes of a freshly loaded model pay one-off costs (CUDA context,
cuBLAS handles, kernel selection, CPU allocator growth) that would inflate the first sample's
prefill. `generate(warmup=True)` (the workflow's generate jobs) therefore first runs the first batch for two tokens through the
very same code (same shapes, so the same kernels are chosen) and discards the result; sampling is
unaffected because every call seeds its own per-sample generators.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import platform
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .backends.base import Backend, PromptInputs
from .specs import Decoding

# --------------------------------------------------------------------------------------------
# The one definition of the token distribution (presets: specs.Decoding)
# --------------------------------------------------------------------------------------------


def processed_distribution(logits: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """The distribution tokens are drawn from, over the last dim of `logits` [..., V].

    Greedy: one-hot at the argmax (first index among exact ties). Sampling: softmax of
    logits / temperature, then nucleus filtering: keep the smallest set of most probable
    tokens whose cumulative probability reaches top_p (a token is kept iff the mass of the
    tokens strictly before it in a stable descending sort is < top_p), renormalised.
    Same dtype as `logits` (pass float64 for exact ratios).
    """
    if decoding.greedy:
        out = torch.zeros_like(logits)
        return out.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits / decoding.temperature, dim=-1)
    if decoding.top_p >= 1.0:
        return probs
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    before = sorted_p.cumsum(-1) - sorted_p
    keep_sorted = before < decoding.top_p
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    probs = probs * keep
    return probs / probs.sum(-1, keepdim=True)


def token_logprobs(logits: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """Log probs for the `logprob` columns: under the distribution the token was drawn from.

    Sampling: log of `processed_distribution` (-inf outside the nucleus). Greedy: the raw
    softmax at temperature 1 (the processed one-hot would only say 0 / -inf).
    """
    if decoding.greedy:
        return torch.log_softmax(logits, dim=-1)
    return torch.log(processed_distribution(logits, decoding))


def sample_seed(seed: int, sample_id: str) -> int:
    """A stable 63-bit seed for one sample (no Python `hash`: it is salted per process)."""
    return (int(seed) * 0x9E3779B1 + zlib.crc32(str(sample_id).encode("utf-8"))) % (2 ** 63)


def sample_generator(decoding: Decoding, sample_id: str) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(sample_seed(decoding.seed, sample_id))
    return g


def sample_from(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """Draw one index from `probs` [V] with ONE uniform draw (inverse CDF, float64, CPU).

    One draw per token keeps a stream a function of the seed alone, and the inverse CDF
    makes tiny numeric differences in `probs` (e.g. batched vs unbatched) change the token
    only when the draw lands within that difference of a boundary. Never returns a token of
    probability 0.
    """
    p = probs.detach().to("cpu", torch.float64).reshape(-1)
    cdf = p.cumsum(0)
    u = torch.rand((), generator=generator, dtype=torch.float64)
    idx = int(torch.searchsorted(cdf, u * cdf[-1], right=True))
    if idx >= len(p) or p[idx] <= 0:  # u * total rounded up to the total: take the last nonzero
        idx = int(torch.nonzero(p > 0)[-1])
    return idx


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


@dataclass
class Generated:
    """One sample's new tokens (the prompt never included)."""

    sample_id: str
    token_ids: list[int]
    logprobs: list[float]
    decode_ms: list[float]
    prefill_ms: float
    finish_reason: str  # "eos" (EOS included as the last token) or "length"
    prompt_tokens: int
    peak_mem_mb: float = 0.0
    device: str = ""            # device_name of the device the timings were taken on
    torch_threads: int = 0      # torch.get_num_threads() while timing


@functools.lru_cache(maxsize=None)
def _cpu_model() -> str:
    # /proc/cpuinfo names the processor on Linux (platform.processor() often says only "x86_64").
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown processor"


def device_name(device: torch.device | str) -> str:
    """A human-readable name of the device timings are taken on: the GPU's name on CUDA
    ("NVIDIA H100 80GB HBM3"), "cpu (<processor model>)" on the CPU, else the device type."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"cpu ({_cpu_model()})"
    return device.type


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn, *args, **kwargs):
    """(result, milliseconds), synchronising the accelerator around the call."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    _sync(device)
    return out, (time.perf_counter() - t0) * 1000.0


def concat_model_inputs(prompts: Sequence[PromptInputs]) -> dict[str, torch.Tensor]:
    keys = set(prompts[0].model_inputs)
    for p in prompts[1:]:
        if set(p.model_inputs) != keys:
            raise ValueError(f"samples {prompts[0].sample_id} and {p.sample_id} have different model inputs "
                             f"({sorted(keys)} vs {sorted(p.model_inputs)}): they cannot share a batch")
    return {k: torch.cat([p.model_inputs[k] for p in prompts], dim=0) for k in sorted(keys)}


def left_pad(prompts: Sequence[PromptInputs], pad_id: int):
    """(input_ids [B, L], attention_mask [B, L], position_ids [B, L]) with LEFT padding."""
    lens = [int(p.input_ids.numel()) for p in prompts]
    if min(lens) == 0:
        raise ValueError("an empty prompt cannot be generated from")
    L = max(lens)
    ids = torch.full((len(prompts), L), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(prompts), L), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - lens[i]:] = p.input_ids.reshape(-1).to(torch.long)
        mask[i, L - lens[i]:] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


@torch.no_grad()
def _generate_batch(backend: Backend, prompts: Sequence[PromptInputs], decoding: Decoding,
                    ignore_eos: bool) -> list[Generated]:
    B = len(prompts)
    device = backend.device
    ids, mask, pos = left_pad(prompts, backend.pad_token_id)
    model_inputs = concat_model_inputs(prompts)
    gens = [sample_generator(decoding, p.sample_id) if decoding.do_sample else None for p in prompts]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cache = backend.new_cache()
    logits, ms = timed(device, backend.forward, ids, attention_mask=mask, cache=cache,
                       model_inputs=model_inputs or None, position_ids=pos, logits_to_keep=1)
    logits = logits[:, -1]
    prefill_ms = ms / B
    next_pos = mask.sum(-1)  # position id of each row's next token
    tokens: list[list[int]] = [[] for _ in range(B)]
    lps: list[list[float]] = [[] for _ in range(B)]
    steps: list[list[float]] = [[] for _ in range(B)]
    finish: list[str | None] = [None] * B
    step_ms = 0.0
    while True:
        if decoding.greedy:
            chosen = logits.argmax(-1).tolist()
            lp_all = token_logprobs(logits, decoding)
        else:
            probs = processed_distribution(logits.double(), decoding)
            chosen = [sample_from(probs[i], gens[i]) if finish[i] is None else 0 for i in range(B)]
            lp_all = torch.log(probs)
        for i in range(B):
            if finish[i] is not None:
                continue
            t = int(chosen[i])
            tokens[i].append(t)
            lps[i].append(float(lp_all[i, t]))
            steps[i].append(step_ms)
            if t == backend.eos_token_id and not ignore_eos:
                finish[i] = "eos"
            elif len(tokens[i]) >= decoding.max_new_tokens:
                finish[i] = "length"
        if all(f is not None for f in finish):
            break
        active = torch.tensor([f is None for f in finish], dtype=torch.long)
        inp = torch.tensor([[tokens[i][-1] if finish[i] is None else backend.pad_token_id] for i in range(B)],
                           dtype=torch.long)
        mask = torch.cat([mask, active[:, None]], dim=1)
        logits, step_ms = timed(device, backend.forward, inp, attention_mask=mask, cache=cache,
                                position_ids=next_pos[:, None].clone())
        logits = logits[:, -1]
        next_pos = next_pos + active
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else 0.0
    name, threads = device_name(device), torch.get_num_threads()
    return [Generated(sample_id=p.sample_id, token_ids=tokens[i], logprobs=lps[i], decode_ms=steps[i],
                      prefill_ms=prefill_ms, finish_reason=finish[i], prompt_tokens=int(p.input_ids.numel()),
                      peak_mem_mb=peak, device=name, torch_threads=threads) for i, p in enumerate(prompts)]


def warm_up(backend: Backend, prompts: Sequence[PromptInputs], decoding: Decoding) -> None:
    """Run `prompts` (the first timed batch) for two tokens and discard the result: the prefill and
    one decode step through the timed code path, so device start-up and kernel selection are paid
    before any timing is kept (see the module docstring)."""
    if prompts:
        short = dataclasses.replace(decoding, max_new_tokens=min(2, decoding.max_new_tokens))
        _generate_batch(backend, prompts, short, ignore_eos=True)


def generate(backend: Backend, prompts: Sequence[PromptInputs], decoding: Decoding, batch_size: int = 1,
             progress: Callable[[int, int], None] | None = None, ignore_eos: bool = False,
             warmup: bool = False) -> list[Generated]:
    """Generate for every prompt, `batch_size` prompts per forward pass, in order.

    Each row stops at EOS (kept as its last token, finish_reason "eos") or after
    `decoding.max_new_tokens` tokens ("length"). `ignore_eos=True` always generates
    max_new_tokens (used to time plain decoding of a given length). `progress(done, total)`
    is called after each batch. `warmup`: first run the first batch briefly, untimed and
    discarded (`warm_up`), so the first sample's timings do not pay device start-up: what
    the workflow's generate jobs do. Off by default for callers that do not keep the
    timings (distillation labels) or warm up and time whole calls themselves (bench/).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    prompts = list(prompts)
    if warmup:
        warm_up(backend, prompts[:batch_size], decoding)
    out: list[Generated] = []
    for start in range(0, len(prompts), batch_size):
        out.extend(_generate_batch(backend, prompts[start:start + batch_size], decoding, ignore_eos))
        if progress is not None:
            progress(len(out), len(prompts))
    return out


class ProgressLog:
    """A `progress` callable that prints `12/48 samples  25%  elapsed 3.1s  ETA 9.3s` lines."""

    def __init__(self, stream=None, total: int | None = None, unit: str = "samples"):
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.unit = unit
        self.t0 = time.perf_counter()

    def line(self, done: int, total: int | None = None) -> str:
        total = self.total if total is None else total
        elapsed = time.perf_counter() - self.t0
        if total:
            pct = 100.0 * done / total
            eta = elapsed / done * (total - done) if done else math.nan
            eta_s = f"{eta:.1f}s" if done else "?"
            return f"{done}/{total} {self.unit}  {pct:.0f}%  elapsed {elapsed:.1f}s  ETA {eta_s}"
        return f"{done} {self.unit}  elapsed {elapsed:.1f}s"

    def __call__(self, done: int, total: int | None = None) -> None:
        print(self.line(done, total), file=self.stream, flush=True)


def tokens_table(results: Sequence[Generated]):
    """The "tokens" artifact: one row per generated token (its text is the vocab artifact's, by id)."""
    from .artifacts import table

    cols: dict[str, list] = {f: [] for f in ("sample_id", "position", "token_id", "logprob", "prefill_ms",
                                             "decode_ms", "finish_reason", "prompt_tokens", "peak_mem_mb",
                                             "device", "torch_threads")}
    for r in results:
        for k, (t, lp, ms) in enumerate(zip(r.token_ids, r.logprobs, r.decode_ms)):
            cols["sample_id"].append(r.sample_id)
            cols["position"].append(k)
            cols["token_id"].append(int(t))
            cols["logprob"].append(float(lp))
            cols["prefill_ms"].append(float(r.prefill_ms))
            cols["decode_ms"].append(float(ms))
            cols["finish_reason"].append(r.finish_reason)
            cols["prompt_tokens"].append(int(r.prompt_tokens))
            cols["peak_mem_mb"].append(float(r.peak_mem_mb))
            cols["device"].append(r.device)
            cols["torch_threads"].append(int(r.torch_threads))
    return table("tokens", cols)
