#!/usr/bin/env python3
"""Speculative decoding measured on a 7B-shaped Llama, through specalign's own code.

One prepared benchmark for a GPU machine (H200, bf16); `bench/gpu.sh` runs it. Nothing is
downloaded: the models are random-weight Llamas built directly on the device.

Models (all Llama, vocab 32064 like Video-LLaVA's text vocabulary):
- target:  the 7B shape (hidden 4096, 32 layers, 32 heads, intermediate 11008), random init.
- noisy:   a copy of the target with Gaussian noise of `--noise` x each matrix's own std on every
           matrix: a same-size draft with high acceptance (c ~ 1, the EventGPT-for-Video-LLaVA cost case).
- layers:  the target's own first `--draft-layers` layers + its embedding, norm and head (shared
           tensors, no extra memory): a small draft of the same width (c << 1).
Prompts are random token ids (`--prompt-len`), the same ids for draft and target
(`TokenMap.identity`); EOS is disabled so every stream has exactly `--new-tokens` tokens.

Sections (each written to the JSON as soon as it is done; a time budget skips what would not fit):
1. cost: prefill ms at `--prefill-lens` (640 ~ EventGPT's prompt, 2100 ~ Video-LLaVA's) and
   per-token decode ms per model (`generation.generate`), c = draft decode / target decode.
2. reference: the target's greedy streams, step by step (`generation.generate`, batch 1): the
   target-only baseline (prefill + decode ms) and the reference for sections 3 and 4.
3. loop: `speculative.speculative_decode` (greedy) per draft x gamma over `--loop-prompts`
   prompts: loop ms = sum(draft_ms + verify_ms) (round 0 includes both prefills) vs the
   target-only ms of the same prompts; tokens/s, speedup, token acceptance rate, tau; the
   teacher-forced greedy match rate (`scoring.score_sample`) and the replayed accepted counts
   (docs/architecture.md rule) beside the loop's; whether the loop output equals the reference.
4. flips: the target teacher-forced along each reference stream in chunks of k tokens with a KV
   cache (k = gamma + 1 is what one verification pass holds; "full" = one pass, as scoring
   does), argmax compared with the step-by-step stream. fp32 shows none; bf16 may.
5. bandwidth: the target's prefill tokens/s and decode ms per step at `--batches` (1, 16) through
   `generation.generate(batch_size=b)`, and decode ms per token at `--context-lens` (640 ~ EventGPT,
   600 ~ LLaVA, 2100 ~ Video-LLaVA with 8 frames, 4600), each beside the memory-bandwidth bound
   weight bytes / `--bandwidth-gbs` (default 4800 GB/s, an H200's HBM3e: ASSUMED, not measured).
6. drafts: decode ms per token of the target vs variants made from a deep copy of it with
   specalign.backends.variants: `quantize` (`--quant-methods`; cuda: int8_weight, int4_weight; cpu:
   int8_dynamic) and `truncate_layers` (`--truncate-layers`, 2, 4, 8); c = variant / target and the
   i.i.d. speedup (specalign.speedup.expected_speedup at best_gamma) at an ASSUMED `--alpha`
   (0.9). A variant that fails (e.g. int4_weight without the `int4` extra, mslk) is recorded as an error string.

Random weights: c, ms and tokens/s depend on the shapes only and carry over to real 7B models;
acceptance and flip rates of random models do NOT (real models have other logit margins).

    python bench/gpu_bench.py            # the 7B shape on cuda, bf16 (needs ~30 GB of GPU memory)
    python bench/gpu_bench.py --tiny     # a 2-layer 64-wide model on the CPU in fp32 (seconds; tested)

Writes gpu_bench.json (and prints a table) into $OUT if set, else ./bench_out.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

T_START = time.perf_counter()  # the budget counts from here (torch / transformers imports included)
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))

import torch  # noqa: E402

SHAPES = {
    "7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
               intermediate_size=11008, vocab_size=32064),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=128, vocab_size=32064),
}
DEFAULTS = {
    "7b": dict(device="cuda", dtype="bfloat16", prompts=8, loop_prompts=4, new_tokens=128, prompt_len=512,
               draft_layers=2, noise=0.05, prefill_lens="640,2100", chunks="1,2,3,5,9,full", budget_s=300.0,
               decode_steps=32, batches="1,16", context_lens="640,600,2100,4600", truncate_layers="2,4,8"),
    "tiny": dict(device="cpu", dtype="float32", prompts=4, loop_prompts=2, new_tokens=32, prompt_len=16,
                 draft_layers=1, noise=0.05, prefill_lens="16,64", chunks="1,2,3,5,9,full", budget_s=120.0,
                 decode_steps=8, batches="1,4", context_lens="16,64", truncate_layers="1"),
}
FIRST_ID = 3  # random prompt ids avoid 0..2 (pad/bos/eos of Llama tokenizers)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="2-layer 64-wide model, CPU, fp32 (the CPU test)")
    ap.add_argument("--device", help="torch device (default cuda; --tiny: cpu)")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], help="default bfloat16; --tiny: float32")
    ap.add_argument("--prompts", type=int, help="prompts for the reference and the flip check (default 8; tiny 4)")
    ap.add_argument("--loop-prompts", type=int, help="the first N prompts run through the loop (default 4; tiny 2)")
    ap.add_argument("--new-tokens", type=int, help="tokens per stream (default 128; tiny 32)")
    ap.add_argument("--prompt-len", type=int, help="random prompt length (default 512; tiny 16)")
    ap.add_argument("--draft-layers", type=int, help="layers of the small draft (default 2; tiny 1)")
    ap.add_argument("--noise", type=float, help="noisy draft: noise std / matrix std (default 0.05, lowered "
                                                "until the greedy match rate is >= 0.6)")
    ap.add_argument("--gammas", default="1,2,4,8")
    ap.add_argument("--prefill-lens", help="prompt lengths timed for prefill (default 640,2100)")
    ap.add_argument("--chunks", help="verification chunk sizes for the flip check (default 1,2,3,5,9,full)")
    ap.add_argument("--decode-steps", type=int, help="decode steps timed per model for c (default 32)")
    ap.add_argument("--batches", help="bandwidth: batch sizes timed through generate (default 1,16; tiny 1,4)")
    ap.add_argument("--context-lens", help="bandwidth: prompt lengths for decode ms per token (default "
                                           "640,600,2100,4600 ~ EventGPT, LLaVA, Video-LLaVA 8 frames, long; tiny 16,64)")
    ap.add_argument("--bandwidth-gbs", type=float, default=4800.0,
                    help="ASSUMED memory bandwidth for the decode bound (default 4800 = H200 HBM3e; not measured)")
    ap.add_argument("--quant-methods", help="drafts: specalign quantization methods (default on cuda "
                                            "int8_weight,int4_weight; else int8_dynamic)")
    ap.add_argument("--truncate-layers", help="drafts: truncation depths (default 2,4,8; tiny 1)")
    ap.add_argument("--alpha", type=float, default=0.9,
                    help="drafts: ASSUMED acceptance for the i.i.d. predicted speedup (default 0.9; not measured)")
    ap.add_argument("--budget-s", type=float, help="skip work that would end after this many seconds (default 300; counted from the start)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", help="output folder (default $OUT, else ./bench_out)")
    args = ap.parse_args(argv)
    mode = "tiny" if args.tiny else "7b"
    for k, v in DEFAULTS[mode].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.mode = mode
    args.gammas = [int(g) for g in str(args.gammas).split(",") if g]
    args.prefill_lens = [int(x) for x in str(args.prefill_lens).split(",") if x]
    args.chunks = [c if c == "full" else int(c) for c in str(args.chunks).split(",") if c]
    args.batches = [int(x) for x in str(args.batches).split(",") if x]
    args.context_lens = [int(x) for x in str(args.context_lens).split(",") if x]
    args.truncate_layers = [int(x) for x in str(args.truncate_layers).split(",") if x]
    if args.quant_methods is None:
        args.quant_methods = "int8_weight,int4_weight" if str(args.device).startswith("cuda") else "int8_dynamic"
    args.quant_methods = [m for m in str(args.quant_methods).split(",") if m]
    if not 0.0 <= args.alpha <= 1.0:
        ap.error("--alpha must lie in [0, 1]")
    args.loop_prompts = min(args.loop_prompts, args.prompts)
    args.out = Path(args.out or os.environ.get("OUT") or "bench_out")
    return args


# ------------------------------------------------------------------------------------------ models
def check_transformers() -> str:
    """specalign's Backend.forward passes `cache=`: transformers < 5.24 calls it `past_key_values`
    and would silently run without the cache. Refuse to measure anything then."""
    import transformers
    from transformers.models.llama.modeling_llama import LlamaModel

    if "cache" not in inspect.signature(LlamaModel.forward).parameters:
        raise SystemExit(f"transformers {transformers.__version__}: LlamaModel.forward has no `cache` keyword "
                         "(specalign needs transformers 5.24, pyproject.toml); bench/gpu.sh installs it from .whl/")
    return transformers.__version__


def llama_config(shape: dict, layers: int):
    from transformers import LlamaConfig

    return LlamaConfig(**{**shape, "num_hidden_layers": layers}, max_position_embeddings=8192,
                       rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                       pad_token_id=0, attn_implementation="sdpa")


def build_target(shape: dict, device: torch.device, dtype: torch.dtype, seed: int):
    """Random-init Llama allocated and initialised directly on `device` in `dtype` (no CPU copy)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(llama_config(shape, shape["num_hidden_layers"]), dtype=dtype)
    return model.eval().requires_grad_(False)


def truncated_draft(target, shape: dict, layers: int):
    """The target's first `layers` layers with its embedding, final norm and head: shared tensors."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        draft = LlamaForCausalLM(llama_config(shape, layers))
    draft.model.embed_tokens = target.model.embed_tokens
    draft.model.layers = torch.nn.ModuleList(list(target.model.layers[:layers]))
    draft.model.norm = target.model.norm
    draft.model.rotary_emb = target.model.rotary_emb
    draft.lm_head = target.lm_head
    left = [n for n, t in list(draft.named_parameters()) + list(draft.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"truncated draft still has meta tensors: {left[:5]}")
    return draft.eval()


def set_noise(draft, target, sigma: float, seed: int) -> None:
    """draft := target + N(0, (sigma * std(W))^2) on every matrix W (vectors such as norms kept)."""
    g = torch.Generator(device=next(target.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for (name, p), (_, q) in zip(draft.named_parameters(), target.named_parameters(), strict=True):
            p.copy_(q)
            if p.dim() == 2:
                noise = torch.randn(p.shape, generator=g, device=p.device, dtype=torch.float32)
                p.add_((noise * (q.float().std() * sigma)).to(p.dtype))
                del noise


def make_backend(name: str, model):
    from specalign.backends import Backend

    class MemoryBackend(Backend):
        """specalign's Backend around an in-memory model: no tokenizer, EOS disabled (-1)."""

        family = "causal_lm"

        def __init__(self):
            p = next(model.parameters())
            self.name, self.model, self.tokenizer = name, model, None
            self.device, self.dtype = p.device, p.dtype
            self.eos_token_id, self.pad_token_id = -1, 0

        def prepare(self, sample):
            raise NotImplementedError("the benchmark builds PromptInputs directly")

    return MemoryBackend()


def random_prompts(n: int, length: int, vocab: int, seed: int, prefix: str = "p"):
    from specalign.backends import PromptInputs

    g = torch.Generator().manual_seed(seed)
    return [PromptInputs(f"{prefix}{i}", torch.randint(FIRST_ID, vocab, (length,), generator=g))
            for i in range(n)]


# ------------------------------------------------------------------------------------------ helpers
class Budget:
    """Seconds since the process started (imports included); work that would end later is skipped."""

    def __init__(self, seconds: float):
        self.t0 = T_START
        self.seconds = seconds
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def fits(self, est_s: float, what: str) -> bool:
        if self.elapsed() + est_s <= self.seconds:
            return True
        self.skipped.append(f"{what} (estimated {est_s:.0f} s, {self.seconds - self.elapsed():.0f} s left)")
        log(f"SKIP {what}: estimated {est_s:.0f} s does not fit the budget")
        return False


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(device, fn, *a, **kw):
    sync(device)
    t = time.perf_counter()
    out = fn(*a, **kw)
    sync(device)
    return out, (time.perf_counter() - t) * 1000.0


def median(xs) -> float:
    xs = [x for x in xs if x == x]
    return float(statistics.median(xs)) if xs else float("nan")


# ------------------------------------------------------------------------------------------ sections
def section_cost(backends: dict, prompts, args, budget: Budget, device) -> dict:
    from specalign.generation import generate
    from specalign.specs import Decoding

    out = {}
    vocab = next(iter(backends.values())).text_vocab_size
    dec = Decoding(name="timing", do_sample=False, max_new_tokens=args.decode_steps + 1)
    warm = {L: random_prompts(1, L, vocab, args.seed + 100 + L, "pf")[0] for L in args.prefill_lens}
    for b in backends.values():  # warm every model first (kernels, cuBLAS heuristics, allocator)
        generate(b, prompts[:1], Decoding(name="warm", max_new_tokens=4), ignore_eos=True)
        for p in warm.values():
            b.forward(p.input_ids[None], cache=b.new_cache())
    for name, b in backends.items():
        prefill = {}
        for L, p in warm.items():
            ms = []
            for _ in range(3):
                _, t = timed_ms(device, b.forward, p.input_ids[None], cache=b.new_cache())
                ms.append(t)
            prefill[str(L)] = median(ms)
        steps = []
        for p in prompts[:2]:
            g = generate(b, [p], dec, ignore_eos=True)[0]
            steps += g.decode_ms[1:]
        out[name] = {"prefill_ms": prefill, "decode_ms": median(steps),
                     "decode_ms_p10": float(sorted(steps)[len(steps) // 10]) if steps else float("nan"),
                     "decode_ms_p90": float(sorted(steps)[(9 * len(steps)) // 10]) if steps else float("nan"),
                     "params_m": sum(t.numel() for t in {id(t): t for t in b.model.parameters()}.values()) / 1e6}
        log(f"cost {name}: decode {out[name]['decode_ms']:.2f} ms/token, prefill {prefill}")
    t = out["target"]["decode_ms"]
    for name in backends:
        out[name]["c"] = out[name]["decode_ms"] / t
        out[name]["prefill_ratio"] = {L: out[name]["prefill_ms"][L] / out["target"]["prefill_ms"][L]
                                      for L in out[name]["prefill_ms"]}
    return out


def section_reference(target, prompts, args, budget: Budget, per_token_s: float) -> dict:
    from specalign.generation import generate
    from specalign.specs import Decoding

    dec = Decoding(name="greedy", do_sample=False, max_new_tokens=args.new_tokens)
    ref = {}
    for p in prompts:
        if not budget.fits(args.new_tokens * per_token_s, f"reference {p.sample_id}"):
            break
        g = generate(target, [p], dec, ignore_eos=True)[0]
        ref[p.sample_id] = {"tokens": g.token_ids, "prefill_ms": g.prefill_ms, "decode_ms": sum(g.decode_ms),
                            "target_only_ms": g.prefill_ms + sum(g.decode_ms)}
    n = sum(len(r["tokens"]) for r in ref.values())
    dsum = sum(r["decode_ms"] for r in ref.values())
    log(f"reference: {len(ref)} streams x {args.new_tokens} tokens, {1000 * n / max(dsum, 1e-9):.1f} tokens/s decode")
    return ref


def teacher_forced_matches(draft, target, prompt, stream, token_map, dec) -> list[bool]:
    from specalign.scoring import score_sample

    rows = score_sample(draft, target, prompt, prompt, stream, token_map, dec)
    return [bool(r["match"]) for r in rows]


def section_loop(drafts: dict, target, prompts, ref: dict, token_map, args, budget: Budget,
                 cost: dict, results: dict, save) -> dict:
    """Fills `results` (draft -> numbers) in place and calls `save()` after every gamma, so a run
    killed by its timeout still leaves what it measured."""
    from specalign.replay import replay_rounds
    from specalign.specs import Decoding
    from specalign.speculative import speculative_decode
    from specalign.speedup import expected_speedup, expected_tokens_per_call

    dec = Decoding(name="greedy", do_sample=False, max_new_tokens=args.new_tokens)
    prompts = [p for p in prompts if p.sample_id in ref]
    t_tok = cost["target"]["decode_ms"] / 1000.0
    for dname, draft in drafts.items():
        c = cost[dname]["c"]
        matches = {p.sample_id: teacher_forced_matches(draft, target, p, ref[p.sample_id]["tokens"], token_map, dec)
                   for p in prompts}
        alpha = sum(map(sum, matches.values())) / max(1, sum(map(len, matches.values())))
        per_gamma = {}
        results[dname] = {"greedy_match_rate": alpha, "c": c, "gammas": per_gamma}
        for gamma in args.gammas:
            # i.i.d. estimate from the measured match rate: tokens / tau rounds of gamma draft steps + a verify
            tau = expected_tokens_per_call(alpha, gamma)
            est = len(prompts) * args.new_tokens / tau * t_tok * (1 + gamma * c) * 1.3
            if not budget.fits(est, f"loop {dname} gamma {gamma}"):
                continue
            agg = dict(rounds=0, drafted=0, accepted=0, emitted=0, draft_ms=0.0, verify_ms=0.0, target_only_ms=0.0,
                       outputs_equal_reference=0, replay_equal=0, first_divergence=[])
            for p in prompts:
                r = ref[p.sample_id]
                out, rounds = speculative_decode(draft, target, p, p, token_map, gamma, dec, check_flips=False)
                agg["rounds"] += len(rounds)
                for k in ("drafted", "accepted", "emitted", "draft_ms", "verify_ms"):
                    agg[k] += sum(rd[k] for rd in rounds)
                agg["target_only_ms"] += r["target_only_ms"]
                if out == r["tokens"]:
                    agg["outputs_equal_reference"] += 1
                    replay = [x.accepted for x in replay_rounds(matches[p.sample_id], gamma, args.new_tokens)]
                    agg["replay_equal"] += int(replay == [rd["accepted"] for rd in rounds])
                else:
                    agg["first_divergence"].append(next((j for j, (a, b) in enumerate(zip(out, r["tokens"])) if a != b),
                                                        min(len(out), len(r["tokens"]))))
            loop_ms = agg["draft_ms"] + agg["verify_ms"]
            agg.update(
                samples=len(prompts),
                loop_ms=loop_ms,
                loop_tokens_per_s=1000.0 * agg["emitted"] / loop_ms,
                target_only_tokens_per_s=1000.0 * agg["emitted"] / agg["target_only_ms"],
                speedup=agg["target_only_ms"] / loop_ms,
                token_acceptance_rate=agg["accepted"] / max(1, agg["drafted"]),
                tau=agg["emitted"] / max(1, agg["rounds"]),
                predicted_speedup_iid=expected_speedup(alpha, gamma, c),
            )
            per_gamma[str(gamma)] = agg
            log(f"loop {dname} gamma {gamma}: {agg['loop_tokens_per_s']:.1f} tok/s vs target-only "
                f"{agg['target_only_tokens_per_s']:.1f} (x{agg['speedup']:.2f}), acceptance "
                f"{agg['token_acceptance_rate']:.3f}, tau {agg['tau']:.2f}")
            save()
    return results


def section_flips(target, prompts, ref: dict, args, budget: Budget, per_token_s: float) -> dict:
    device = target.device
    chunks, gaps = {}, []  # gaps: top-1 minus top-2 logit along the streams (from the "full" passes)
    for k in args.chunks:
        chunks[str(k)] = {"positions": 0, "flips": 0, "pass_ms": [], "samples": 0, "flip_positions": []}
    for p in prompts:
        r = ref.get(p.sample_id)
        if r is None:
            continue
        y = r["tokens"]
        n = len(y)
        for k in args.chunks:
            passes = 1 if k == "full" else 1 + math.ceil((n - 1) / k)
            if not budget.fits(passes * per_token_s * 1.1, f"flips {p.sample_id} chunk {k}"):
                continue
            pred, ms = [], []
            if k == "full":
                ids = torch.cat([p.input_ids, torch.tensor(y[:-1], dtype=torch.long)])[None]
                logits, t = timed_ms(device, target.forward, ids)
                L = p.input_ids.numel()
                top2 = logits[0, L - 1: L - 1 + n].topk(2, dim=-1).values.float()
                gaps += (top2[:, 0] - top2[:, 1]).tolist()
                pred = logits[0, L - 1: L - 1 + n].argmax(-1).tolist()
                ms.append(t)
            else:
                cache = target.new_cache()
                logits, t = timed_ms(device, target.forward, p.input_ids[None], cache=cache)
                pred.append(int(logits[0, -1].argmax()))
                i = 0
                while len(pred) < n:
                    chunk = y[i: min(i + k, n - 1)]
                    logits, t = timed_ms(device, target.forward, torch.tensor([chunk]), cache=cache)
                    pred += logits[0].argmax(-1).tolist()
                    ms.append(t)
                    i += len(chunk)
            flips = [j for j in range(n) if pred[j] != y[j]]
            c = chunks[str(k)]
            c["positions"] += n
            c["flips"] += len(flips)
            c["samples"] += 1
            c["pass_ms"] += ms
            c["flip_positions"].append(flips[:20])
    for k, c in chunks.items():
        c["flip_rate"] = c["flips"] / c["positions"] if c["positions"] else float("nan")
        c["pass_ms"] = median(c["pass_ms"])
        log(f"flips chunk {k}: {c['flips']}/{c['positions']} positions (pass {c['pass_ms']:.2f} ms)")
    if gaps:
        gaps.sort()
        chunks["full"]["logit_gap"] = {"median": gaps[len(gaps) // 2], "p01": gaps[len(gaps) // 100],
                                       "frac_below_0.01": sum(g < 0.01 for g in gaps) / len(gaps),
                                       "frac_below_0.1": sum(g < 0.1 for g in gaps) / len(gaps)}
    return chunks


def weight_bytes(model) -> int:
    """Bytes of the model's parameters (shared tensors once): what one decode step must read."""
    return int(sum(t.numel() * t.element_size() for t in {id(t): t for t in model.parameters()}.values()))


def decode_step_ms(backend, prompts, steps: int, batch_size: int = 1) -> tuple[float, float]:
    """(median decode ms per step, prefill ms per row) through `generation.generate`, after one warm call.
    At batch b one step emits b tokens: the step ms is the whole batch's."""
    step_ms, prefill = decode_step_timings(backend, prompts, steps, batch_size)
    return median(step_ms), median(prefill)


def decode_step_timings(backend, prompts, steps: int, batch_size: int = 1) -> tuple[list[float], list[float]]:
    """Every timed decode step's ms and every batch's prefill ms (the raw figures decode_step_ms reduces)."""
    from specalign.generation import generate
    from specalign.specs import Decoding

    dec = Decoding(name="timing", do_sample=False, max_new_tokens=steps + 1)
    generate(backend, prompts[:batch_size], Decoding(name="warm", max_new_tokens=2), batch_size=batch_size,
             ignore_eos=True)
    gens = generate(backend, prompts, dec, batch_size=batch_size, ignore_eos=True)
    step_ms, prefill = [], []
    for start in range(0, len(gens), batch_size):  # rows of one batch share their step times
        step_ms += gens[start].decode_ms[1:]
        prefill.append(gens[start].prefill_ms)
    return step_ms, prefill


def section_bandwidth(target, shape: dict, args, budget: Budget, cost: dict, save, results: dict) -> dict:
    """Prefill tokens/s and decode ms per step at batch 1 / `--batches`, and decode ms per step at the
    real context lengths, each decode figure beside the memory-bandwidth bound weight bytes / bandwidth
    (the bandwidth is `--bandwidth-gbs`, an ASSUMED figure, not measured)."""
    wb = weight_bytes(target.model)
    emb = target.model.get_input_embeddings().weight
    bw = args.bandwidth_gbs * 1e9
    bound_ms = wb / bw * 1000.0
    head_dim = shape["hidden_size"] // shape["num_attention_heads"]
    elt = next(target.model.parameters()).element_size()
    kv_bytes_per_token = 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * head_dim * elt
    results.update({
        "assumed_bandwidth_gbs": args.bandwidth_gbs,
        "bandwidth_note": ("ASSUMED peak memory bandwidth (--bandwidth-gbs; 4800 GB/s = an H200's HBM3e spec), "
                           "NOT measured. bound_ms = weight_bytes / bandwidth: the fastest a decode step can read "
                           "every weight once; pct_of_bound = bound_ms / measured step ms x 100 (the share of the "
                           "assumed bandwidth the step achieves). weight_bytes counts every parameter, the input "
                           "embedding included (a step reads only b of its rows); bound_ms_with_kv adds the KV "
                           "cache a step reads at that context."),
        "weight_bytes": wb, "input_embedding_bytes": int(emb.numel() * emb.element_size()),
        "kv_bytes_per_token": kv_bytes_per_token, "bound_ms": bound_ms, "batches": {}, "context": {},
    })
    t_tok = cost["target"]["decode_ms"] / 1000.0
    pf = cost["target"]["prefill_ms"]
    L_max = max(int(k) for k in pf)
    t_pf_tok = pf[str(L_max)] / 1000.0 / L_max  # prefill seconds per prompt token
    vocab = shape["vocab_size"]
    steps = args.decode_steps
    for b in args.batches:
        est = 2 * ((steps + 3) * t_tok * (1 + b / 16) + b * args.prompt_len * t_pf_tok) * 1.5
        if not budget.fits(est, f"bandwidth batch {b}"):
            continue
        prompts = random_prompts(b, args.prompt_len, vocab, args.seed + 300 + b, "bw")
        step_ms, prefill_row_ms = decode_step_ms(target, prompts, steps, batch_size=b)
        ctx = args.prompt_len + steps // 2
        with_kv = (wb + b * ctx * kv_bytes_per_token) / bw * 1000.0
        results["batches"][str(b)] = {
            "prompt_len": args.prompt_len, "decode_steps": steps,
            "prefill_ms": prefill_row_ms * b, "prefill_tokens_per_s": 1000.0 * args.prompt_len / prefill_row_ms,
            "decode_step_ms": step_ms, "decode_ms_per_token": step_ms / b,
            "decode_tokens_per_s": 1000.0 * b / step_ms,
            "bound_ms": bound_ms, "pct_of_bound": 100.0 * bound_ms / step_ms,
            "bound_ms_with_kv": with_kv, "pct_of_bound_with_kv": 100.0 * with_kv / step_ms,
        }
        log(f"bandwidth batch {b}: prefill {results['batches'][str(b)]['prefill_tokens_per_s']:.0f} tok/s, "
            f"decode {step_ms:.2f} ms/step ({100.0 * bound_ms / step_ms:.0f}% of the {bound_ms:.2f} ms bound)")
        save()
    for L in args.context_lens:
        est = ((steps + 3) * t_tok * (1 + L / 4096) + 2 * L * t_pf_tok) * 1.5
        if not budget.fits(est, f"bandwidth context {L}"):
            continue
        prompts = random_prompts(1, L, vocab, args.seed + 400 + L, "ctx")
        step_ms, prefill_ms = decode_step_ms(target, prompts, steps, batch_size=1)
        with_kv = (wb + (L + steps // 2) * kv_bytes_per_token) / bw * 1000.0
        results["context"][str(L)] = {
            "prompt_len": L, "decode_steps": steps, "prefill_ms": prefill_ms,
            "prefill_tokens_per_s": 1000.0 * L / prefill_ms, "decode_ms_per_token": step_ms,
            "bound_ms": bound_ms, "pct_of_bound": 100.0 * bound_ms / step_ms,
            "bound_ms_with_kv": with_kv, "pct_of_bound_with_kv": 100.0 * with_kv / step_ms,
        }
        log(f"bandwidth context {L}: decode {step_ms:.2f} ms/token ({100.0 * bound_ms / step_ms:.0f}% of the bound)")
        save()
    return results


def section_drafts(target, shape: dict, args, budget: Budget, cost: dict, build_s: float, save,
                   results: dict) -> dict:
    """Decode ms per token of the target vs each variant made from a deep copy of it with
    specalign.backends.variants (quantize / truncate_layers); c = variant / target; the i.i.d.
    speedup at the ASSUMED `--alpha`. A variant that fails is recorded as its error string."""
    from specalign.backends import variants
    from specalign.speedup import best_gamma, expected_speedup

    alpha = args.alpha
    n_layers = len(variants.decoder_layers(target.model)[1])
    results.update({
        "assumed_alpha": alpha,
        "alpha_note": ("ASSUMED acceptance (--alpha), not measured here: random weights say nothing about a real "
                       "model's acceptance; the quantized self-draft's alpha is what the workflow's loop measures "
                       "on the demo. predicted_speedup_iid = expected_speedup(alpha, best_gamma(alpha, c), c); "
                       "1.0 where best_gamma is 0 (no gamma beats plain decoding)."),
        "iid_model": "specalign.speedup", "decode_steps": args.decode_steps, "prompt_len": args.prompt_len,
        "target": {}, "variants": {},
    })
    prompts = random_prompts(2, args.prompt_len, shape["vocab_size"], args.seed + 500, "dr")
    t_tok = cost["target"]["decode_ms"] / 1000.0
    est_decode = 3 * (args.decode_steps + 3) * t_tok * 1.5
    if not budget.fits(est_decode, "drafts target"):
        return results
    # the raw step timings are kept beside their median: c can be recomputed from what was measured
    target_steps, _ = decode_step_timings(target, prompts, args.decode_steps)
    target_ms = median(target_steps)
    results["target"] = {"decode_ms": target_ms, "decode_steps_ms": target_steps, "layers": n_layers,
                         "dtype": args.dtype, "weight_bytes": weight_bytes(target.model)}
    log(f"drafts target: {target_ms:.2f} ms/token")
    save()
    todo = [(f"quant_{m}", "quantization", m) for m in args.quant_methods]
    todo += [(f"layers{k}", "truncation", k) for k in args.truncate_layers]
    for name, kind, what in todo:
        # a deep copy of the target (about build_s) + quantization (~ another build) + the timing
        est = (2.0 if kind == "quantization" else 1.0) * build_s + est_decode
        if not budget.fits(est, f"drafts {name}"):
            continue
        entry = {"kind": kind, ("method" if kind == "quantization" else "truncate_layers"): what}
        results["variants"][name] = entry
        m = None
        try:
            t0 = time.perf_counter()
            m = copy.deepcopy(target.model)
            if kind == "quantization":
                variants.quantize(m, what, name)
            else:
                variants.truncate_layers(m, what, name)
            sync(target.device)
            entry["make_s"] = time.perf_counter() - t0
            entry["layers"] = len(variants.decoder_layers(m)[1])
            steps, _ = decode_step_timings(make_backend(name, m), prompts, args.decode_steps)
            ms = median(steps)
            c = ms / target_ms
            g = best_gamma(alpha, c)
            entry.update(decode_ms=ms, decode_steps_ms=steps, target_ms=target_ms, c=c, best_gamma=g,
                         predicted_speedup_iid=expected_speedup(alpha, g, c) if g > 0 else 1.0,
                         predicted_speedup_by_gamma={str(k): expected_speedup(alpha, k, c) for k in args.gammas})
            log(f"drafts {name}: {ms:.2f} ms/token, c {c:.3f}, best gamma {g} at alpha {alpha} "
                f"-> x{entry['predicted_speedup_iid']:.2f}")
        except Exception as e:  # noqa: BLE001 - e.g. a torchao kernel missing on this device: record it
            entry["error"] = f"{type(e).__name__}: {e}"[:500]
            log(f"drafts {name}: FAILED {entry['error']}")
        finally:
            del m
            if target.device.type == "cuda":
                torch.cuda.empty_cache()
        save()
    return results


# ------------------------------------------------------------------------------------------ main
def write_json(out_dir: Path, result: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gpu_bench.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=float, allow_nan=True))
    os.replace(tmp, path)
    return path


def table(result: dict) -> str:
    lines = []
    cost = result.get("cost", {})
    if cost:
        lines.append("model        params(M)  decode ms/tok      c   " + "  ".join(
            f"prefill@{L} ms" for L in next(iter(cost.values()))["prefill_ms"]))
        for name, c in cost.items():
            lines.append(f"{name:<12} {c['params_m']:9.0f}  {c['decode_ms']:13.2f}  {c['c']:5.3f}   " + "  ".join(
                f"{v:13.2f}" for v in c["prefill_ms"].values()))
    loop = result.get("loop", {})
    if loop:
        lines.append("")
        lines.append("draft      gamma  match  acc.rate   tau  loop tok/s  target tok/s  speedup  pred.iid  "
                     "out==ref  replay==loop")
        for dname, d in loop.items():
            for g, a in d["gammas"].items():
                lines.append(f"{dname:<10} {g:>5}  {d['greedy_match_rate']:5.3f}  {a['token_acceptance_rate']:8.3f}  "
                             f"{a['tau']:4.2f}  {a['loop_tokens_per_s']:10.1f}  {a['target_only_tokens_per_s']:12.1f}  "
                             f"{a['speedup']:7.2f}  {a['predicted_speedup_iid']:8.2f}  "
                             f"{a['outputs_equal_reference']:>4}/{a['samples']:<3}  "
                             f"{a['replay_equal']:>4}/{a['outputs_equal_reference']}")
    flips = result.get("flips", {})
    if flips:
        lines.append("")
        lines.append("verify chunk  positions  flips  flip rate  pass ms")
        for k, c in flips.items():
            lines.append(f"{k:>12}  {c['positions']:9d}  {c['flips']:5d}  {c['flip_rate']:9.5f}  {c['pass_ms']:7.2f}")
    bw = result.get("bandwidth", {})
    if bw.get("batches") or bw.get("context"):
        lines.append("")
        lines.append(f"target decode vs the bandwidth bound ({bw['weight_bytes'] / 1e9:.2f} GB of weights / ASSUMED "
                     f"{bw['assumed_bandwidth_gbs']:g} GB/s = {bw['bound_ms']:.3f} ms per step)")
        lines.append("           prompt  prefill tok/s  step ms  ms/token  decode tok/s  %bound  %bound+kv")
        rows = [(f"batch {b}", r, r["decode_step_ms"], r["decode_ms_per_token"], r["decode_tokens_per_s"])
                for b, r in bw["batches"].items()]
        rows += [(f"ctx {L}", r, r["decode_ms_per_token"], r["decode_ms_per_token"], 1000.0 / r["decode_ms_per_token"])
                 for L, r in bw["context"].items()]
        for label, r, step, per_tok, tps in rows:
            lines.append(f"{label:<10} {r['prompt_len']:6d}  {r['prefill_tokens_per_s']:13.0f}  {step:7.2f}  "
                         f"{per_tok:8.3f}  {tps:12.1f}  {r['pct_of_bound']:6.1f}  {r['pct_of_bound_with_kv']:9.1f}")
    dr = result.get("drafts", {})
    if dr.get("target"):
        lines.append("")
        lines.append(f"drafts from the target (decode {dr['target']['decode_ms']:.2f} ms/token, "
                     f"{dr['target']['layers']} layers); i.i.d. prediction at ASSUMED alpha {dr['assumed_alpha']:g}")
        lines.append("variant             layers  decode ms/tok      c  best gamma  pred.speedup")
        for name, v in dr["variants"].items():
            if "error" in v:
                lines.append(f"{name:<19} ERROR {v['error'][:90]}")
            else:
                lines.append(f"{name:<19} {v['layers']:6d}  {v['decode_ms']:13.2f}  {v['c']:5.3f}  {v['best_gamma']:10d}  "
                             f"{v['predicted_speedup_iid']:12.2f}")
    if result.get("skipped"):
        lines.append("")
        lines.append(f"skipped (time budget): {len(result['skipped'])} items, e.g. {result['skipped'][:3]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tf_version = check_transformers()
    from specalign.backends import torch_dtype
    from specalign.translation import TokenMap

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --tiny (CPU) or on the GPU machine (bench/gpu.sh)")
    dtype = torch_dtype(args.dtype)
    budget = Budget(args.budget_s)
    shape = SHAPES[args.mode]
    result = {
        "schema": "specalign.gpu_bench/1",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "env": {"torch": torch.__version__, "transformers": tf_version, "python": platform.python_version(),
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                "dtype": args.dtype},
        "shape": shape,
        "skipped": budget.skipped,
        "sections_done": [],
    }

    def done(section: str) -> None:
        result["sections_done"].append(section)
        result["elapsed_s"] = budget.elapsed()
        write_json(args.out, result)

    log(f"building the {args.mode} target on {device} in {args.dtype}")
    t0 = time.perf_counter()
    target_m = build_target(shape, device, dtype, args.seed)
    noisy_m = copy.deepcopy(target_m)
    sigma = args.noise
    set_noise(noisy_m, target_m, sigma, args.seed + 1)
    small_m = truncated_draft(target_m, shape, args.draft_layers)
    sync(device)
    result["build_s"] = time.perf_counter() - t0
    if device.type == "cuda":
        result["env"]["gpu_mem_allocated_gb"] = torch.cuda.memory_allocated(device) / 2 ** 30
    log(f"built in {result['build_s']:.1f} s")
    target = make_backend("target", target_m)
    drafts = {"noisy": make_backend("noisy", noisy_m), f"layers{args.draft_layers}": make_backend(
        f"layers{args.draft_layers}", small_m)}
    token_map = TokenMap.identity(target.text_vocab_size)
    prompts = random_prompts(args.prompts, args.prompt_len, shape["vocab_size"], args.seed)
    done("build")

    result["cost"] = section_cost({"target": target, **drafts}, prompts, args, budget, device)
    done("cost")
    per_token_s = result["cost"]["target"]["decode_ms"] / 1000.0

    ref = section_reference(target, prompts, args, budget, per_token_s)
    result["reference"] = {
        "streams": len(ref), "tokens_per_stream": args.new_tokens,
        "target_only_tokens_per_s": 1000.0 * sum(len(r["tokens"]) for r in ref.values())
        / max(1e-9, sum(r["target_only_ms"] for r in ref.values())),
        "decode_tokens_per_s": 1000.0 * sum(len(r["tokens"]) for r in ref.values())
        / max(1e-9, sum(r["decode_ms"] for r in ref.values())),
        # random weights often loop on a few tokens: how varied the streams are, to read the rates by
        "distinct_tokens_per_stream": (sum(len(set(r["tokens"])) for r in ref.values()) / len(ref)) if ref else 0.0,
    }
    done("reference")

    # noisy draft: lower the noise until its greedy match rate is >= 0.6 (a high-acceptance draft)
    from specalign.specs import Decoding

    dec = Decoding(name="greedy", do_sample=False, max_new_tokens=args.new_tokens)
    calib = [p for p in prompts[:2] if p.sample_id in ref]
    tries = []
    for attempt in range(4):
        m = [x for p in calib for x in teacher_forced_matches(drafts["noisy"], target, p, ref[p.sample_id]["tokens"],
                                                              token_map, dec)]
        rate = sum(m) / max(1, len(m))
        tries.append({"noise": sigma, "greedy_match_rate": rate})
        log(f"noisy draft: noise {sigma:g} -> greedy match {rate:.3f}")
        if rate >= 0.6 or attempt == 3:
            break
        sigma /= 3
        set_noise(noisy_m, target_m, sigma, args.seed + 1)
    result["noise_calibration"] = tries
    result["noise"] = sigma
    done("noise")

    loop_prompts = prompts[: args.loop_prompts]
    result["loop"] = {}
    section_loop(drafts, target, loop_prompts, ref, token_map, args, budget, result["cost"], result["loop"],
                 lambda: write_json(args.out, result))
    done("loop")

    result["flips"] = section_flips(target, prompts, ref, args, budget, per_token_s)
    result["flips_note"] = ("chunk k: the target teacher-forced along its own step-by-step greedy stream "
                            "(generation.generate, with an attention mask, as the generate stage), k tokens per pass "
                            "with a KV cache and no mask, as the speculative loop (a verification pass of gamma "
                            "proposals holds gamma + 1); chunk 1 isolates the mask / no-mask kernel difference; "
                            "'full': one pass, as scoring does. flip = argmax differs from the streamed token. "
                            "logit_gap: top-1 minus top-2 logit along the streams (random weights: not a real "
                            "model's margins).")
    done("flips")

    del drafts["noisy"], noisy_m  # free the noisy copy's memory for the variants below
    result["bandwidth"] = {}
    section_bandwidth(target, shape, args, budget, result["cost"], lambda: write_json(args.out, result),
                      result["bandwidth"])
    done("bandwidth")

    result["drafts"] = {}
    section_drafts(target, shape, args, budget, result["cost"], result["build_s"], lambda: write_json(args.out, result),
                   result["drafts"])
    done("drafts")

    if device.type == "cuda":
        result["env"]["gpu_mem_peak_gb"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    write_json(args.out, result)
    text = table(result)
    (args.out / "gpu_bench.txt").write_text(text + "\n")
    print(text)
    log(f"done in {budget.elapsed():.1f} s; JSON: {args.out / 'gpu_bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
