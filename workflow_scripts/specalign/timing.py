"""Paired timing in one job: every cost ratio of a pair from timings taken side by side.

Why one job: a ratio of a timing from one job over a timing from another means nothing when the
two jobs ran under different load (a generation job sharing the cores with a loop job gave a
draft c = 2.43 under greedy against 0.91 under sampled, same commit, same machine) or on different
GPU models (SLURM). So the timing job loads both models, prepares `timing.samples` clips (the
first of the evaluated manifest by sample id that the target generated a stream for), warms up,
and for each clip measures, interleaved draft / target / draft / target ...:

- `draft_prefill`, `target_prefill`: each model's prompt pass (vision encoder included), one
  token of logits kept, from an empty cache.
- `draft_step`, `target_step`: one single-token decode step at the clip's real context: the
  target's own stream y (its generation shard files) is in the cache up to position j - 1 and
  y_{j-1} is fed (the draft gets `draft_prompt + t2d(y)`, scoring's and the loop's rule), at
  positions j in {1, n // 2, n - 1} of the stream (deduplicated) - a step's cost grows with the
  context, so the ratio is taken where the answer really is. The cache is cropped back after
  every timed pass, so each rep sees the same context.
- `verify` (gamma = k): the target's verification pass of k + 1 tokens at the same context
  (`logits_to_keep = k + 1`, as the loop runs it), for every k of `verify_gammas`; tokens past
  the stream's end repeat its last token (the cost does not depend on the ids).
- `loop` and `target_only` (gamma = the loop's): the real loop (`speculative.speculative_decode`,
  no flip check) against plain decoding of the same number of tokens with the same decoding
  (`plain_decode`: the loop's per-token arithmetic, no log-probs), A/B interleaved with the
  order swapped every rep (ABBA), at each of `loop_gammas`. Each is wall time around the call
  (both prefills in the loop's; the target's in the plain one). `forward_ms` of a loop row is
  the sum of its rounds' draft_ms + verify_ms (speculative.py times the draft's proposals with
  their sampling, and the target's pass with its acceptance arithmetic), so
  `ms - forward_ms` is what the loop spends outside them (cache rollback, bookkeeping): the
  per-round overhead once divided by its `rounds`.

Every row says what it ran on (`device`: one name, or "draft X, target Y"; `dtype` likewise;
`torch_threads`). `summarise` forms each ratio from one clip's timings of this job (numerator
and denominator from the same clip), pools over clips, and gives a bootstrap interval over clips
(bootstrap.bootstrap_ci: the package's one resampling engine); it refuses rows from two devices.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from .backends.base import Backend, PromptInputs
from .bootstrap import N_BOOT, bootstrap_ci
from .generation import _sync, processed_distribution, sample_from, sample_generator, warm_up
from .specs import Decoding
from .speculative import loop_device, speculative_decode, warm_up_loop

KINDS = ("draft_prefill", "target_prefill", "draft_step", "target_step", "verify", "loop", "target_only")
N_CONTEXT_POSITIONS = 3   # decode steps and verify passes at positions 1, n // 2, n - 1 of each stream


def context_positions(n: int) -> list[int]:
    """Where decode steps are timed along a stream of n tokens: the step producing token j
    (feeding y_{j-1}), for j in {1, n // 2, n - 1}, at least 1 (a one-token stream: its prompt)."""
    if n < 1:
        raise ValueError("a stream of at least one token is needed to time a decode step at its context")
    return sorted({max(1, j) for j in (1, n // 2, n - 1)})


def _dtype_name(b: Backend) -> str:
    return str(b.dtype).replace("torch.", "")


def pair_dtype(draft: Backend, target: Backend) -> str:
    d, t = _dtype_name(draft), _dtype_name(target)
    return t if d == t else f"draft {d}, target {t}"


def _timed(devices, fn, *args, **kwargs):
    for d in devices:
        _sync(d)
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    for d in devices:
        _sync(d)
    return out, (time.perf_counter() - t0) * 1000.0


def _crop(cache, n: int) -> None:
    if n > 0:
        cache.crop(-n)


@torch.no_grad()
def plain_decode(target: Backend, prompt: PromptInputs, decoding: Decoding, n_tokens: int) -> list[int]:
    """Plain target decoding of exactly `n_tokens` tokens (EOS ignored): prefill, then one token per
    forward, each chosen with the loop's own arithmetic (greedy argmax; sampling: the processed
    distribution in float64 on the CPU and one draw). The A/B baseline of the loop."""
    gen = None if decoding.greedy else sample_generator(decoding, prompt.sample_id)
    cache = target.new_cache()
    logits = target.forward(prompt.input_ids.reshape(1, -1), cache=cache, model_inputs=prompt.model_inputs or None,
                            logits_to_keep=1)[0, -1]
    out: list[int] = []
    while True:
        if decoding.greedy:
            t = int(logits.argmax())
        else:
            t = sample_from(processed_distribution(logits.double().cpu(), decoding), gen)
        out.append(t)
        if len(out) >= n_tokens:
            return out
        logits = target.forward(torch.tensor([[t]]), cache=cache)[0, -1]


@torch.no_grad()
def _context_rows(draft: Backend, target: Backend, dp: PromptInputs, tp: PromptInputs, stream: Sequence[int],
                  token_map, verify_gammas: Sequence[int], reps: int, positions: Sequence[int]) -> list[dict]:
    """The decode steps and verify passes of one clip (see the module doc)."""
    y = [int(t) for t in stream]
    rows = []
    devs = (draft.device, target.device)
    for j in positions:
        # caches holding the context before position j - 1; the timed passes feed y_{j-1} (and proposals)
        tcache, dcache = target.new_cache(), draft.new_cache()
        t_ids = torch.cat([tp.input_ids.reshape(-1).to(torch.long), torch.tensor(y[:j - 1], dtype=torch.long)])
        target.forward(t_ids[None], cache=tcache, model_inputs=tp.model_inputs or None, logits_to_keep=1)
        d_ids = dp.input_ids.reshape(-1).tolist() + [x for t in y[:j - 1] for x in token_map.t2d(t)]
        draft.forward(torch.tensor([d_ids]), cache=dcache, model_inputs=dp.model_inputs or None, logits_to_keep=1)
        # one draft id for the step: the first the draft writes y_{j-1} with (its EOS if it cannot write it)
        d_tok = (list(token_map.t2d(y[j - 1])) or [draft.eos_token_id])[0]
        context = int(tcache.get_seq_length())
        for rep in range(reps):
            _, ms = _timed(devs, draft.forward, torch.tensor([[d_tok]]), cache=dcache, logits_to_keep=1)
            _crop(dcache, 1)
            rows.append(dict(kind="draft_step", rep=rep, position=j, gamma=0, tokens=1, ms=ms, context=context))
            _, ms = _timed(devs, target.forward, torch.tensor([[y[j - 1]]]), cache=tcache, logits_to_keep=1)
            _crop(tcache, 1)
            rows.append(dict(kind="target_step", rep=rep, position=j, gamma=0, tokens=1, ms=ms, context=context))
            for k in verify_gammas:
                fed = [y[min(i, len(y) - 1)] for i in range(j - 1, j + k)]   # y_{j-1} + k proposals
                _, ms = _timed(devs, target.forward, torch.tensor([fed]), cache=tcache, logits_to_keep=k + 1)
                _crop(tcache, k + 1)
                rows.append(dict(kind="verify", rep=rep, position=j, gamma=int(k), tokens=k + 1, ms=ms,
                                 context=context))
    return rows


@torch.no_grad()
def time_clip(draft: Backend, target: Backend, dp: PromptInputs, tp: PromptInputs, stream: Sequence[int],
              token_map, decoding: Decoding, verify_gammas: Sequence[int], loop_gammas: Sequence[int],
              reps: int, draft_sampling: str = "sample") -> list[dict]:
    """Every timed row of one clip (without the job-wide columns)."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    devs = (draft.device, target.device)
    rows: list[dict] = []
    for rep in range(reps):
        for kind, b, p in (("draft_prefill", draft, dp), ("target_prefill", target, tp)):
            _, ms = _timed(devs, b.forward, p.input_ids.reshape(1, -1), cache=b.new_cache(),
                           model_inputs=p.model_inputs or None, logits_to_keep=1)
            rows.append(dict(kind=kind, rep=rep, position=0, gamma=0, tokens=int(p.input_ids.numel()), ms=ms,
                             context=0))
    rows += _context_rows(draft, target, dp, tp, stream, token_map, verify_gammas, reps,
                          context_positions(len(stream)))
    for g in loop_gammas:
        n_out = None   # the loop's output length: rep 0 runs the loop first (the loop is seeded, so
        for rep in range(reps):                 # every rep makes the same output)
            order = ("loop", "target_only") if rep % 2 == 0 else ("target_only", "loop")
            for kind in order:
                if kind == "loop":
                    (out, rounds), ms = _timed(devs, speculative_decode, draft, target, dp, tp, token_map, g,
                                               decoding, check_flips=False, draft_sampling=draft_sampling)
                    n_out = len(out)
                    rows.append(dict(kind="loop", rep=rep, position=0, gamma=int(g), tokens=len(out), ms=ms,
                                     rounds=len(rounds), context=0,
                                     forward_ms=float(sum(r["draft_ms"] + r["verify_ms"] for r in rounds))))
                else:   # plain decoding of as many tokens as the loop made
                    _, ms = _timed(devs, plain_decode, target, tp, decoding, n_out)
                    rows.append(dict(kind="target_only", rep=rep, position=0, gamma=int(g), tokens=n_out, ms=ms,
                                     context=0))
    for r in rows:
        r.setdefault("rounds", 0)
        r.setdefault("forward_ms", r["ms"])
        r["sample_id"] = tp.sample_id
    return rows


def time_pairs(draft: Backend, target: Backend, items: Sequence[tuple[PromptInputs, PromptInputs, Sequence[int]]],
               token_map, decoding: Decoding, verify_gammas: Sequence[int], loop_gammas: Sequence[int],
               reps: int, warmup: bool = True, progress: Callable[[int, int], None] | None = None,
               draft_sampling: str = "sample"):
    """The "timing" artifact for (draft prompt, target prompt, target stream) items, in order.

    `warmup`: first both models' generation warm-up (`generation.warm_up`), the loop's at every
    loop gamma (`speculative.warm_up_loop`), and one discarded pass of the first clip's decode
    steps and verify passes, so no kernel choice or allocator growth lands in a kept timing."""
    from .artifacts import table

    items = list(items)
    if warmup and items:
        dp, tp, y = items[0]
        warm_up(draft, [dp], decoding)
        warm_up(target, [tp], decoding)
        for g in loop_gammas:
            warm_up_loop(draft, target, dp, tp, token_map, g, decoding, draft_sampling)
        _context_rows(draft, target, dp, tp, y, token_map, verify_gammas, 1, context_positions(len(y))[:1])
    device, dtype, threads = loop_device(draft, target), pair_dtype(draft, target), torch.get_num_threads()
    rows: list[dict] = []
    for i, (dp, tp, y) in enumerate(items, 1):
        for r in time_clip(draft, target, dp, tp, y, token_map, decoding, verify_gammas, loop_gammas, reps,
                           draft_sampling):
            rows.append(dict(r, device=device, dtype=dtype, torch_threads=threads))
        if progress is not None:
            progress(i, len(items))
    return table("timing", rows)


# --------------------------------------------------------------------------------------------
# Summaries: every ratio from one job's clips, with its interval over clips
# --------------------------------------------------------------------------------------------


def _one(df, column: str, what: str) -> str:
    values = sorted(str(v) for v in df[column].unique().to_list())
    if len(values) > 1:
        raise ValueError(f"timings taken on different {what} cannot be combined: {values[0]!r} and {values[1]!r}"
                         + (f" (and {len(values) - 2} more)" if len(values) > 2 else ""))
    return values[0] if values else ""


def _ratio(num: np.ndarray, den: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """(sum num / sum den, 95% interval over clips): per clip, num and den come from that clip."""
    s = float(den.sum())
    point = float(num.sum()) / s if len(den) and s != 0 else math.nan
    lo, hi = bootstrap_ci(num, den, n_boot, seed)
    return point, lo, hi


def _mean(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    return _ratio(values, np.ones_like(values), n_boot, seed)


def summarise(tbl, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """One timing job's figures: c, the prefills, verify cost per gamma, the loop's per-round
    overhead and its measured speedup per gamma, each with a 95% bootstrap interval over clips.

    Per clip, a ratio's numerator and denominator are that clip's MEDIAN (over positions and reps)
    of the two single-pass timings, taken interleaved in the same job: a pass of a few milliseconds
    that the scheduler preempts once on a shared machine (another job's process, the OS) can take
    ten times as long, and a mean over a handful of passes would let that one pass set the clip's
    figure (a smoke run on a loaded 2-core machine gave c 1.2 under greedy and 4.5 under sampled,
    same models, from means). Loop and plain decoding are long A/B runs: their sums are kept.
    The point estimate pools the clips
    (sum of numerators / sum of denominators) and the interval resamples clips
    (bootstrap.bootstrap_ci). Figures:
    - c = draft_step / target_step; verify_cost[k] = verify pass of k + 1 tokens / target_step.
    - draft_prefill_ms, target_prefill_ms, draft_step_ms, target_step_ms: means over clips of the
      clips' medians.
    - loop[g]: measured_speedup = target_only ms / loop ms (same clips, same reps, same token
      counts); round_overhead_ms = (loop ms - its forward passes) / rounds.
    - round_overhead_ms: the same pooled over every loop gamma.
    Raises ValueError, naming both, when the rows come from two devices (or dtypes).
    """
    import polars as pl

    df = tbl if isinstance(tbl, pl.DataFrame) else pl.from_arrow(tbl)
    if df.height == 0:
        raise ValueError("an empty timing table has nothing to summarise")
    device, dtype = _one(df, "device", "devices"), _one(df, "dtype", "dtypes")
    threads = ",".join(sorted({str(t) for t in df["torch_threads"].to_list()}))
    df = df.with_columns(pl.col("ms").cast(pl.Float64), pl.col("forward_ms").cast(pl.Float64))
    clips = sorted(df["sample_id"].unique().to_list())

    def per_clip(kind: str, gamma: int | None, how: str = "mean", col: str = "ms") -> np.ndarray:
        part = df.filter(pl.col("kind") == kind)
        if gamma is not None:
            part = part.filter(pl.col("gamma") == gamma)
        agg = getattr(pl.col(col), how)().alias("v")
        got = dict(part.group_by("sample_id").agg(agg).iter_rows())
        missing = [s for s in clips if s not in got]
        if missing:
            raise ValueError(f"timing table: clip {missing[0]!r} has no {kind} row"
                             + (f" at gamma {gamma}" if gamma is not None else ""))
        return np.array([float(got[s]) for s in clips], dtype=np.float64)

    kinds = set(df["kind"].unique().to_list())
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(f"timing table: unknown kind(s) {sorted(unknown)} (known: {', '.join(KINDS)})")
    d_step, t_step = per_clip("draft_step", None, "median"), per_clip("target_step", None, "median")
    out: dict = {"device": device, "dtype": dtype, "torch_threads": threads, "n_clips": len(clips),
                 "reps": int(df["rep"].max()) + 1}
    out["c"], out["c_lo"], out["c_hi"] = _ratio(d_step, t_step, n_boot, seed)
    for name, arr in (("draft_step_ms", d_step), ("target_step_ms", t_step),
                      ("draft_prefill_ms", per_clip("draft_prefill", None, "median")),
                      ("target_prefill_ms", per_clip("target_prefill", None, "median"))):
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = _mean(arr, n_boot, seed)
    verify_gammas = sorted(df.filter(pl.col("kind") == "verify")["gamma"].unique().to_list())
    out["verify"] = {}
    for k in verify_gammas:
        v = per_clip("verify", k, "median")
        cost, lo, hi = _ratio(v, t_step, n_boot, seed)
        out["verify"][int(k)] = {"verify_cost": cost, "verify_cost_lo": lo, "verify_cost_hi": hi,
                                 "verify_ms": float(v.mean())}
    loop_gammas = sorted(df.filter(pl.col("kind") == "loop")["gamma"].unique().to_list())
    out["loop"] = {}
    extra_all, rounds_all = np.zeros(len(clips)), np.zeros(len(clips))
    for g in loop_gammas:
        loop_ms, base_ms = per_clip("loop", g, "sum"), per_clip("target_only", g, "sum")
        fwd, rounds = per_clip("loop", g, "sum", "forward_ms"), per_clip("loop", g, "sum", "rounds")
        extra_all += loop_ms - fwd
        rounds_all += rounds
        sp, sp_lo, sp_hi = _ratio(base_ms, loop_ms, n_boot, seed)
        ov, ov_lo, ov_hi = _ratio(loop_ms - fwd, rounds, n_boot, seed)
        out["loop"][int(g)] = {"measured_speedup": sp, "measured_speedup_lo": sp_lo, "measured_speedup_hi": sp_hi,
                               "round_overhead_ms": ov, "round_overhead_ms_lo": ov_lo,
                               "round_overhead_ms_hi": ov_hi, "loop_ms": float(loop_ms.sum()),
                               "target_only_ms": float(base_ms.sum()), "rounds": int(rounds.sum())}
    if loop_gammas:
        out["round_overhead_ms"], out["round_overhead_ms_lo"], out["round_overhead_ms_hi"] = \
            _ratio(extra_all, rounds_all, n_boot, seed)
    else:
        out["round_overhead_ms"] = out["round_overhead_ms_lo"] = out["round_overhead_ms_hi"] = math.nan
    return out

