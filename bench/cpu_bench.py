#!/usr/bin/env python3
"""specalign on the CPU: the peer (Hugging Face assisted generation), replay vs loop, scoring vs
generation, batching, the acceptance tables at full scale, workflow overhead, storage.

One command (`bash bench/cpu.sh`, or `python bench/cpu_bench.py`), about 9-13 minutes on a 2-core
machine; `--quick` runs every section at tiny sizes in well under a minute (tests/test_bench_cpu.py).
Nothing is downloaded: the models are tiny random-weight Llamas with a word-level tokenizer, written
to disk and loaded back through specalign's `CausalLMBackend` (the way tests/builders.py does);
the draft is a noisy copy of the target (same tokenizer, `TokenMap.identity`).

Measurement rules (a shared 2-core machine): torch runs on 1 thread (OMP_NUM_THREADS=1); every
comparison is a RATIO of two things timed side by side in this process, repetitions interleaved
A, B, A, B, ... and reduced by their median. EOS is disabled (the backends' eos_token_id = -1,
HF's generation_config.eos_token_id = None, `generate(ignore_eos=True)`), so every stream has
exactly the requested length and equal lengths make tokens/s comparable.

Sections:
1. peer: `target.generate(ids, assistant_model=draft, do_sample=False, max_new_tokens=N)` with the
   assistant's num_assistant_tokens=gamma, schedule "constant", confidence threshold 0, against
   `speculative.speculative_decode` (greedy) on the same pair and prompts: tokens/s, ratio, output
   == the target's greedy output (specalign `generate`, and HF plain greedy beside it), forward
   calls per method. Then the target's generation + one teacher-forced pass (`scoring.score_sample`) +
   `replay.replay_rounds` for gammas 1..8 against the loop run at those 8 gammas: the like-for-like
   cost ratio (and the one with the target's stream given, per gamma too), accepted counts equal.
2. scoring vs generation: `score_sample` (one target + one draft pass) against `generate` of the
   target and the draft stream, per sample, at 16, 64 and 128 new tokens.
3. batching: `generate(..., batch_size=b)` tokens/s at b = 1, 4, 16; peak RSS.
4. tables at full scale: `summary.acceptance_tables` on synthetic artifacts of the real run's size
   (1,100 clips x 128 tokens, 3 pairs x 3 decodings, gammas 1..8, loop rounds at 4 gammas x 2
   decodings walked token by token by `walk_greedy_loop`, 8 shards, bootstrap 1000); replay throughput
   of `acceptance.replay_summary`.
5. workflow overhead: `snakemake -n --cores 1` on a private copy of the workflow with a `dsec`
   dataset of N instruction entries (no clip on disk) and 3 causal_lm models with nonexistent paths.
6. storage: Parquet bytes per token of the tokens, scores and rounds artifacts of sections 1-2, and of one
   tokens file of a real generate shard's size.

Writes cpu_bench.json, cpu_bench.txt and artifacts/ into --out (default ./bench_out, git-ignored)
and, in the full run, docs/benchmarks.md (--doc PATH elsewhere, --no-doc none).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

T_START = time.perf_counter()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow_scripts"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SECTIONS = ("peer", "scoring", "batching", "tables", "workflow", "storage")
SCHEMA = "specalign.cpu_bench/1"

# Sizes. Full: a forward pass of the 512-wide 4-layer target costs more than the per-call Python
# overhead (section 1 measures it against a 64-wide model of the same depth).
FULL = dict(
    hidden=512, layers=4, heads=8, n_words=994, init_std=0.05, noise=0.03, prompt_words=(16, 48),
    peer_prompts=6, peer_tokens=64, peer_gamma=4, peer_reps=3,
    replay_prompts=3, replay_reps=2, replay_gammas=8,
    score_prompts=4, score_lengths=(16, 64, 128), score_reps=3,
    batch_prompts=16, batch_tokens=64, batch_sizes=(1, 4, 16), batch_reps=3,
    overhead_tokens=32, overhead_reps=3,
    tab_clips=1100, tab_tokens=128, tab_shards=8, tab_boot=1000, tab_vocab=32000, tab_reps=2,
    thr_positions=(100_000, 1_000_000, 10_000_000), thr_boot=100,
    wf_samples=(1_000, 10_000, 100_000), wf_reps=5, wf_cold=True, wf_strace=True,
    shard_prompts=138, shard_tokens=128,  # one generate shard of the real run: REAL_SHARD_TOKENS
)
QUICK = dict(
    hidden=64, layers=2, heads=4, n_words=58, init_std=0.02, noise=0.1, prompt_words=(4, 10),
    peer_prompts=2, peer_tokens=12, peer_gamma=3, peer_reps=2,
    replay_prompts=2, replay_reps=2, replay_gammas=8,
    score_prompts=2, score_lengths=(4, 8, 16), score_reps=2,
    batch_prompts=8, batch_tokens=8, batch_sizes=(1, 4, 8), batch_reps=2,
    overhead_tokens=8, overhead_reps=2,
    tab_clips=24, tab_tokens=16, tab_shards=2, tab_boot=20, tab_vocab=64, tab_reps=1,
    thr_positions=(2_000, 20_000), thr_boot=20,
    wf_samples=(10, 100, 1_000), wf_reps=1, wf_cold=False, wf_strace=False,
    shard_prompts=8, shard_tokens=16,
)
# The real run (config/real_models.yaml): what section 4 builds synthetically.
REAL_PAIRS = (("m_draft", "m_target1"), ("m_draft", "m_target2"), ("m_target1", "m_target1"))
REAL_DECODINGS = {"greedy": dict(do_sample=False), "sampled": dict(do_sample=True, temperature=0.6),
                  "sampled_t1": dict(do_sample=True, temperature=1.0)}
LOOP_GAMMAS, LOOP_DECODINGS = (1, 2, 4, 8), ("greedy", "sampled")
REAL_SHARD_TOKENS = 138 * 128  # tokens in one generate shard of the real run (1100 clips / 8 shards x 128)

# The tiny models' tokenizer and the workflow copies are the test suite's own helpers (tests/).
sys.path.insert(0, str(REPO / "tests"))
from builders import BOS_ID, EOS_ID, N_FIXED, PAD_ID, add_noise, build_word_tokenizer  # noqa: E402
from workflow_helpers import copy_workflow, parse_job_stats  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def median(xs) -> float:
    xs = [float(x) for x in xs if x == x]
    return float(statistics.median(xs)) if xs else float("nan")


def interleaved(fns: dict, reps: int) -> dict[str, list[float]]:
    """Seconds of each callable, run A, B, C, A, B, C, ... `reps` times (one list per name)."""
    out = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t)
    return out


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ------------------------------------------------------------------------------------------ models
def build_llama(path: Path, n_words: int, hidden: int, layers: int, heads: int, init_std: float,
                seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    build_word_tokenizer(n_words, path)
    cfg = LlamaConfig(vocab_size=N_FIXED + n_words, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=1024, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
                      initializer_range=init_std, tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def build_noisy_copy(src: Path, dst: Path, sigma: float, seed: int = 1) -> Path:
    """Every matrix of `src` + Gaussian noise of sigma x its own std (a high-acceptance draft)."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(src)
    add_noise(model, sigma, seed)
    model.save_pretrained(dst)
    for f in Path(src).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, dst / f.name)
    return dst


def load_backend(path: Path, name: str):
    """specalign.backends.load_backend on a causal_lm ModelSpec; EOS disabled (exact lengths)."""
    from specalign.backends import load_backend as load
    from specalign.specs import ModelSpec

    b = load(ModelSpec(name=name, family="causal_lm", path=str(path), dtype="float32", device="cpu"))
    b.eos_token_id = -1
    return b


def make_prompts(backend, n: int, words: tuple[int, int], n_words: int, seed: int, prefix: str = "s"):
    import random

    from specalign.dataset import Sample

    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = " ".join(f"w{rng.randrange(n_words)}" for _ in range(rng.randint(*words)))
        out.append(backend.prepare(Sample(sample_id=f"{prefix}{i:03d}", question=q)))
    return out


class CallCounter:
    """Forward calls of a module (a forward hook; ~1 us per call against ms-long passes)."""

    def __init__(self, module):
        self.n = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.n += 1

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


def configure_hf_assistant(target_model, draft_model, gamma: int) -> None:
    for m in (target_model, draft_model):
        m.generation_config.eos_token_id = None  # EOS disabled, as in specalign's calls
        m.generation_config.pad_token_id = PAD_ID
    gc = draft_model.generation_config
    gc.num_assistant_tokens = int(gamma)
    gc.num_assistant_tokens_schedule = "constant"
    gc.assistant_confidence_threshold = 0


def hf_generate(target_model, prompt, n: int, assistant=None) -> list[int]:
    ids = prompt.input_ids.reshape(1, -1)
    kw = dict(assistant_model=assistant) if assistant is not None else {}
    with torch.no_grad():
        out = target_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                                    **kw)
    return out[0, ids.shape[1]:].tolist()


# ------------------------------------------------------------------------------------------ section 1
def section_peer(ctx: dict, S: dict) -> dict:
    from specalign.generation import generate
    from specalign.replay import replay_rounds
    from specalign.scoring import score_sample
    from specalign.specs import Decoding
    from specalign.speculative import rounds_rows, speculative_decode

    T, D, tm = ctx["target"], ctx["draft"], ctx["token_map"]
    N, gamma = S["peer_tokens"], S["peer_gamma"]
    prompts = make_prompts(T, S["peer_prompts"], S["prompt_words"], S["n_words"], seed=11, prefix="peer")
    dec = Decoding(name="greedy", do_sample=False, max_new_tokens=N)
    res: dict = {"prompts": len(prompts), "new_tokens": N, "gamma": gamma, "reps": S["peer_reps"],
                 "prompt_tokens_mean": float(np.mean([p.input_ids.numel() for p in prompts]))}

    # is a forward pass more than Python overhead? decode ms/token against a 64-wide model of the same depth
    skel = ctx["skeleton"]
    od = Decoding(name="o", do_sample=False, max_new_tokens=S["overhead_tokens"])
    generate(T, prompts[:1], od, ignore_eos=True)
    generate(skel, prompts[:1], od, ignore_eos=True)
    t_ov = interleaved({"target": lambda: generate(T, prompts[:2], od, ignore_eos=True),
                        "skeleton": lambda: generate(skel, prompts[:2], od, ignore_eos=True)}, S["overhead_reps"])
    res["forward_vs_overhead"] = {"target_hidden": S["hidden"], "skeleton_hidden": 64, "layers": S["layers"],
                                  "ratio": median(t_ov["target"]) / median(t_ov["skeleton"])}

    # the reference: the target's greedy streams (specalign generate) and HF plain greedy beside them
    ref = {p.sample_id: g.token_ids for p, g in zip(prompts, generate(T, prompts, dec, ignore_eos=True))}
    configure_hf_assistant(T.model, D.model, gamma)  # also disables EOS for HF's plain greedy generate
    res["hf_plain_equals_reference"] = sum(hf_generate(T.model, p, N) == ref[p.sample_id] for p in prompts)

    ct, cd = CallCounter(T.model), CallCounter(D.model)
    hf_generate(T.model, prompts[0], min(N, 8), assistant=D.model)  # warm both paths
    speculative_decode(D, T, prompts[0], prompts[0], tm, gamma, Decoding(name="w", max_new_tokens=min(N, 8)),
                       check_flips=False)
    ct.take(), cd.take()
    outs = {"hf": [], "specalign": []}
    calls = {"hf": [0, 0], "specalign": [0, 0]}
    rounds_seen: list[int] = []

    def run_hf():
        o = [hf_generate(T.model, p, N, assistant=D.model) for p in prompts]
        outs["hf"].append(o)
        calls["hf"][0] += ct.take()
        calls["hf"][1] += cd.take()

    def run_loop():
        o, nr = [], 0
        for p in prompts:
            out, rounds = speculative_decode(D, T, p, p, tm, gamma, dec, check_flips=False)
            o.append(out)
            nr += len(rounds)
        outs["specalign"].append(o)
        rounds_seen.append(nr)
        calls["specalign"][0] += ct.take()
        calls["specalign"][1] += cd.take()

    t = interleaved({"hf": run_hf, "specalign": run_loop}, S["peer_reps"])
    want = [ref[p.sample_id] for p in prompts]
    tokens = len(prompts) * N
    for k in ("hf", "specalign"):
        res[k] = {"seconds": t[k], "tokens_per_s": tokens / median(t[k]),
                  "outputs_equal_target_greedy": sum(o == w for rep in outs[k] for o, w in zip(rep, want)),
                  "outputs_checked": len(outs[k]) * len(prompts),
                  "target_calls": calls[k][0] // S["peer_reps"], "draft_calls": calls[k][1] // S["peer_reps"]}
    res["loop_rounds"] = rounds_seen[0]
    res["ratio_specalign_over_hf"] = res["specalign"]["tokens_per_s"] / res["hf"]["tokens_per_s"]
    log(f"peer: HF {res['hf']['tokens_per_s']:.1f} tok/s, specalign {res['specalign']['tokens_per_s']:.1f} tok/s "
        f"(x{res['ratio_specalign_over_hf']:.2f}); target calls {res['hf']['target_calls']} vs "
        f"{res['specalign']['target_calls']}")

    # replay (one teacher-forced pass + replay at gammas 1..G) against the loop at the G gammas. The replay
    # also needs the target's stream, which the loop does not: its generation is timed beside them, so the
    # like-for-like ratio (loop / (generate + score + replay)) comes from the same interleaved repetitions.
    gammas = list(range(1, S["replay_gammas"] + 1))
    rp = prompts[:S["replay_prompts"]]
    rep_counts, loop_counts = [], []
    loop_rows: list[dict] = []
    target_only = {}
    score_s: list[float] = []
    replay_g_s: dict[int, list[float]] = {g: [] for g in gammas}
    loop_g_s: dict[int, list[float]] = {g: [] for g in gammas}

    def target_generate():
        # the replay's input, generated as the workflow's generate jobs do (batch 1); its own timers give the
        # target-only ms of the rounds artifact
        for p, g in zip(rp, generate(T, rp, dec, ignore_eos=True)):
            target_only[p.sample_id] = g.prefill_ms + sum(g.decode_ms)

    def replay():
        c, s_sum, g_sum = {}, 0.0, dict.fromkeys(gammas, 0.0)
        for p in rp:
            t0 = time.perf_counter()
            rows = score_sample(D, T, p, p, ref[p.sample_id], tm, dec)
            s_sum += time.perf_counter() - t0
            m = [r["match"] for r in rows]
            for g in gammas:
                t0 = time.perf_counter()
                c[(p.sample_id, g)] = [r.accepted for r in replay_rounds(m, g, N)]
                g_sum[g] += time.perf_counter() - t0
        rep_counts.append(c)
        score_s.append(s_sum)
        for g in gammas:
            replay_g_s[g].append(g_sum[g])

    def loop():
        c, rows_all, g_sum = {}, [], dict.fromkeys(gammas, 0.0)
        for p in rp:
            for g in gammas:
                t0 = time.perf_counter()
                out, rounds = speculative_decode(D, T, p, p, tm, g, dec, check_flips=False)
                g_sum[g] += time.perf_counter() - t0
                c[(p.sample_id, g)] = [r["accepted"] for r in rounds]
                c[(p.sample_id, g, "out")] = out == ref[p.sample_id]
                rows_all += rounds_rows(p.sample_id, g, rounds, target_only.get(p.sample_id, float("nan")))
        loop_counts.append(c)
        loop_rows[:] = rows_all
        for g in gammas:
            loop_g_s[g].append(g_sum[g])

    t = interleaved({"generate": target_generate, "replay": replay, "loop": loop}, S["replay_reps"])
    keys = [(p.sample_id, g) for p in rp for g in gammas]
    gen_replay = median(t["generate"]) + median(t["replay"])
    res["replay_vs_loop"] = {
        "prompts": len(rp), "gammas": gammas, "reps": S["replay_reps"],
        "generate_s": t["generate"], "replay_s": t["replay"], "loop_s": t["loop"],
        "score_s": score_s, "replay_rounds_s_per_gamma": {str(g): v for g, v in replay_g_s.items()},
        "loop_s_per_gamma": {str(g): v for g, v in loop_g_s.items()},
        # the target's stream given (the workflow generates it anyway, for the positional match and the report)
        "cost_ratio_loop_over_replay": median(t["loop"]) / median(t["replay"]),
        # like for like: everything each side needs, from the prompts, for the same gammas
        "like_for_like_ratio": median(t["loop"]) / gen_replay,
        "like_for_like_per_gamma": {str(g): median(loop_g_s[g]) / (median(t["generate"]) + median(score_s)
                                                                   + median(replay_g_s[g])) for g in gammas},
        "counts_equal": sum(rc[k] == lc[k] for rc, lc in zip(rep_counts, loop_counts) for k in keys),
        "counts_checked": len(keys) * len(loop_counts),
        "loop_outputs_equal_target_greedy": sum(lc[(p.sample_id, g, "out")] for lc in loop_counts
                                                for p in rp for g in gammas),
        "accepted_total": {str(g): sum(sum(rep_counts[0][(p.sample_id, g)]) for p in rp) for g in gammas},
    }
    log(f"replay vs loop at {len(gammas)} gammas: loop / (generate + score + replay) = "
        f"{res['replay_vs_loop']['like_for_like_ratio']:.1f}, loop / (score + replay) = "
        f"{res['replay_vs_loop']['cost_ratio_loop_over_replay']:.1f}")
    ctx["rounds_rows"] = loop_rows
    return res


# ------------------------------------------------------------------------------------------ section 2
def section_scoring(ctx: dict, S: dict) -> dict:
    from specalign.generation import generate
    from specalign.scoring import score_sample
    from specalign.specs import Decoding

    T, D, tm = ctx["target"], ctx["draft"], ctx["token_map"]
    prompts = make_prompts(T, S["score_prompts"], S["prompt_words"], S["n_words"], seed=22, prefix="score")
    res: dict = {"prompts": len(prompts), "reps": S["score_reps"], "lengths": {}}
    for L in S["score_lengths"]:
        dec = Decoding(name="greedy", do_sample=False, max_new_tokens=L)
        streams = {p.sample_id: g.token_ids for p, g in zip(prompts, generate(T, prompts, dec, ignore_eos=True))}
        a_ms = {p.sample_id: [] for p in prompts}
        b_ms = {p.sample_id: [] for p in prompts}
        last: dict = {}
        for _ in range(S["score_reps"]):
            for p in prompts:
                t0 = time.perf_counter()
                rows = score_sample(D, T, p, p, streams[p.sample_id], tm, dec)
                t1 = time.perf_counter()
                gt = generate(T, [p], dec, ignore_eos=True)[0]
                gd = generate(D, [p], dec, ignore_eos=True)[0]
                t2 = time.perf_counter()
                a_ms[p.sample_id].append(1000 * (t1 - t0))
                b_ms[p.sample_id].append(1000 * (t2 - t1))
                last[p.sample_id] = (rows, gt, gd)
        per_a = [median(v) for v in a_ms.values()]
        per_b = [median(v) for v in b_ms.values()]
        res["lengths"][str(L)] = {
            "score_ms_per_sample": median(per_a), "generate_ms_per_sample": median(per_b),
            "ratio_generate_over_score": median([b / a for a, b in zip(per_a, per_b)]),
            "streams_equal": sum(last[s][1].token_ids == streams[s] for s in streams),
            "rows": sum(len(last[s][0]) for s in streams)}
        log(f"scoring at {L} tokens: generate / score = {res['lengths'][str(L)]['ratio_generate_over_score']:.1f}")
        if L == max(S["score_lengths"]):
            ctx["score_rows"] = [r for s in streams for r in last[s][0]]
            ctx["target_gen"] = [last[s][1] for s in streams]
            ctx["draft_gen"] = [last[s][2] for s in streams]
    return res


# ------------------------------------------------------------------------------------------ section 3
def _clear_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _proc_status_mb(key: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _vm_hwm_mb() -> float:
    return _proc_status_mb("VmHWM")


def _vm_rss_mb() -> float:
    return _proc_status_mb("VmRSS")


def section_batching(ctx: dict, S: dict) -> dict:
    from specalign.generation import generate
    from specalign.specs import Decoding

    T = ctx["target"]
    n, N = S["batch_prompts"], S["batch_tokens"]
    prompts = make_prompts(T, n, S["prompt_words"], S["n_words"], seed=33, prefix="batch")
    dec = Decoding(name="greedy", do_sample=False, max_new_tokens=N)
    generate(T, prompts[:2], Decoding(name="w", max_new_tokens=2), batch_size=2, ignore_eos=True)
    sizes = list(S["batch_sizes"])
    secs = {b: [] for b in sizes}
    hwm = {b: [] for b in sizes}
    outs: dict = {}
    rss_before_section = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # before any reset
    resettable = _clear_peak_rss()
    before = {b: [] for b in sizes}
    for _ in range(S["batch_reps"]):
        for b in sizes:
            _clear_peak_rss()
            before[b].append(_vm_rss_mb())
            t = time.perf_counter()
            g = generate(T, prompts, dec, batch_size=b, ignore_eos=True)
            secs[b].append(time.perf_counter() - t)
            hwm[b].append(_vm_hwm_mb())
            outs[b] = [x.token_ids for x in g]
    res: dict = {"prompts": n, "new_tokens": N, "reps": S["batch_reps"], "sizes": {},
                 "peak_rss_mb_process": rss_before_section,
                 "peak_rss_per_size_measured": resettable}
    base = n * N / median(secs[sizes[0]])
    for b in sizes:
        tps = n * N / median(secs[b])
        res["sizes"][str(b)] = {"tokens_per_s": tps, "ratio_to_batch1": tps / base, "seconds": secs[b],
                                "peak_rss_mb": max(hwm[b]) if resettable else float("nan"),
                                "peak_rss_over_start_mb": max(h - r for h, r in zip(hwm[b], before[b]))
                                if resettable else float("nan"),
                                "outputs_equal_batch1": sum(x == y for x, y in zip(outs[b], outs[sizes[0]]))}
    log("batching: " + ", ".join(f"b{b} {res['sizes'][str(b)]['tokens_per_s']:.0f} tok/s" for b in sizes))
    return res


# ------------------------------------------------------------------------------------------ section 4
def _synthetic_streams(rng, n_clips: int, L: int, vocab: int) -> np.ndarray:
    return rng.integers(N_FIXED, vocab, size=(n_clips, L), dtype=np.int64)


def walk_greedy_loop(proposals, target, gamma: int, max_new_tokens: int) -> list[tuple]:
    """The rounds of a greedy draft-verify loop along one target stream, walked token by token:
    (start, drafted, accepted, emitted tokens) per round.

    A second implementation of the rule `replay.replay` vectorises (docs/architecture.md), written the
    way the loop runs (propose, verify, take the target's token) instead of from runs of matches, so that
    section 4's loop-vs-replay rows compare two computations. proposals[j] is the draft's argmax given the
    target's prefix target[:j] (a scores table's draft_token): in a greedy loop a round's i-th proposal is
    that token while the round's earlier proposals were accepted (the draft's context is then the
    target's prefix), and the first rejection ends the round, so what the draft would propose after it
    never matters. The stream ends at len(target): an accepted EOS there gets no bonus token.
    """
    rounds, s, n = [], 0, len(target)
    while s < n:
        g = max(0, min(gamma, max_new_tokens - s - 1))   # the draft never proposes past the length budget
        out = []
        for j in range(s, s + g):
            if j >= n or proposals[j] != target[j]:       # past the stream's end nothing is verified
                break
            out.append(proposals[j])
        a = len(out)
        if s + a < n:
            out.append(target[s + a])                   # the target's own token: its correction, or the bonus
        rounds.append((s, g, a, out))
        s += len(out)
    return rounds


def complete(name: str, cols: dict, n: int) -> dict:
    """`cols` plus a neutral value (0, False, NaN, "", []) for every other column of artifact `name`'s
    schema, so the synthetic tables follow artifacts.SCHEMAS as it is, whatever columns it gained."""
    import pyarrow as pa

    from specalign.artifacts import SCHEMAS

    out = dict(cols)
    for f in SCHEMAS[name]:
        if f.name in out:
            continue
        t = f.type
        if pa.types.is_boolean(t):
            out[f.name] = np.zeros(n, dtype=bool)
        elif pa.types.is_integer(t):
            out[f.name] = np.zeros(n, dtype=np.int64)
        elif pa.types.is_floating(t):
            out[f.name] = np.full(n, np.nan)
        elif pa.types.is_string(t):
            out[f.name] = [""] * n
        else:
            out[f.name] = [[] for _ in range(n)]
    return out


def build_synthetic_run(root: Path, S: dict, rng) -> tuple[list, dict]:
    """Every artifact `summary.acceptance_tables` reads, at the real run's size, synthetic values."""
    import pyarrow as pa

    from specalign import artifacts as A
    from specalign.specs import Decoding, Run

    n, L, V, shards = S["tab_clips"], S["tab_tokens"], S["tab_vocab"], S["tab_shards"]
    sids = [f"seq{i // 100:02d}/{i:06d}" for i in range(n)]
    order = np.argsort(sids)
    bounds = [round(k * n / shards) for k in range(shards + 1)]
    words = [f"w{i}" for i in range(V)]
    models = sorted({m for p in REAL_PAIRS for m in p})
    decs = {k: Decoding(name=k, max_new_tokens=L, **v) for k, v in REAL_DECODINGS.items()}
    counts = {"tokens_rows": 0, "scores_rows": 0, "rounds_rows": 0, "files": 0}
    meta = {"bench": "cpu_bench section 4 (synthetic)"}

    for m in models:
        A.write_parquet(A.table("vocab", complete("vocab", {
            "id": list(range(V)), "token": words, "text": words, "is_special": [i < N_FIXED for i in range(V)],
            "is_added": [False] * V, "is_byte": [False] * V}, V)), root / f"vocab/{m}.parquet", "vocab", meta)
    for d, t in REAL_PAIRS:
        A.write_parquet(A.table("translation", complete("translation", {
            "draft_id": list(range(V)), "draft_token": words, "kind": ["exact"] * V,
            "target_ids": [[i] for i in range(V)], "target_tokens": [[w] for w in words]}, V)),
                        root / f"translation/{d}__{t}.parquet", "translation", meta)
        counts["files"] += 1
    streams = {}
    for m in models:
        for dn in decs:
            s = streams[(m, dn)] = _synthetic_streams(rng, n, L, V)
            for k in range(shards):
                idx = order[bounds[k]:bounds[k + 1]]
                rows = len(idx) * L
                cols = {"sample_id": np.repeat(np.array(sids, dtype=object)[idx], L).tolist(),
                        "position": np.tile(np.arange(L, dtype=np.int32), len(idx)),
                        "token_id": s[idx].reshape(-1),
                        "logprob": -rng.exponential(1.0, rows).astype(np.float32),
                        "prefill_ms": np.repeat(rng.uniform(50, 60, len(idx)).astype(np.float32), L),
                        "decode_ms": rng.uniform(20, 30, rows).astype(np.float32),
                        "finish_reason": ["length"] * rows,
                        "prompt_tokens": np.full(rows, 640, dtype=np.int32),
                        "peak_mem_mb": np.zeros(rows, dtype=np.float32)}
                A.write_parquet(A.table("tokens", complete("tokens", cols, rows)), root / f"generate/{m}/{dn}/shard{k}.parquet", "tokens", meta)
                counts["tokens_rows"] += rows
                counts["files"] += 1
    runs = []
    for d, t in REAL_PAIRS:
        pair = f"{d}__{t}"
        alpha = 0.95 if d == t else 0.7
        for dn, dec in decs.items():
            y = streams[(t, dn)]
            match = rng.random((n, L)) < rng.uniform(alpha - 0.1, min(1.0, alpha + 0.1), (n, 1))
            draft_tok = np.where(match, y, (y + 1 - N_FIXED) % (V - N_FIXED) + N_FIXED)
            summin = match.astype(np.float64) if dec.greedy else np.clip(
                0.5 * match + rng.uniform(0, 0.5, (n, L)), 0, 1)
            rows = n * L
            A.write_parquet(A.table("scores", complete("scores", {
                "sample_id": np.repeat(np.array(sids, dtype=object), L).tolist(),
                "position": np.tile(np.arange(L, dtype=np.int32), n), "target_token": y.reshape(-1),
                "draft_token": draft_tok.reshape(-1), "draft_argmax_id": draft_tok.reshape(-1),
                "match": match.reshape(-1), "draft_logprob": -rng.exponential(1.0, rows).astype(np.float32),
                "target_logprob": -rng.exponential(1.0, rows).astype(np.float32),
                "summin": summin.reshape(-1).astype(np.float32), "mapped_mass": np.ones(rows, dtype=np.float32),
                "is_eos": np.zeros(rows, dtype=bool), "max_new_tokens": np.full(rows, L, dtype=np.int32)}, rows)),
                root / f"score/{pair}/{dn}.parquet", "scores", meta)
            counts["scores_rows"] += rows
            counts["files"] += 1
            round_files = []
            if dn in LOOP_DECODINGS:
                proposals, targets = draft_tok.tolist(), y.tolist()
                for g in LOOP_GAMMAS:
                    # the loop's rounds: walked token by token from the draft's proposals and the target's
                    # tokens (walk_greedy_loop), not taken from the replay, so the tables' greedy
                    # rounds_identical compares two computations (the sampled rows reuse them as timings only)
                    walks = [walk_greedy_loop(proposals[i], targets[i], g, L) for i in range(n)]
                    for k in range(shards):
                        idx = order[bounds[k]:bounds[k + 1]]
                        rws = [(sids[i], r, *w) for i in idx for r, w in enumerate(walks[i])]
                        nr = len(rws)
                        sch = A.SCHEMAS["rounds"]
                        cols = {"sample_id": [w[0] for w in rws], "round": [w[1] for w in rws],
                                "start": [w[2] for w in rws], "drafted": [w[3] for w in rws],
                                "accepted": [w[4] for w in rws], "emitted": [len(w[5]) for w in rws],
                                "tokens": [w[5] for w in rws]}
                        arrays = {c: pa.array(v, type=sch.field(c).type) for c, v in cols.items()}
                        arrays["gamma"] = pa.array(np.full(nr, g, dtype=np.int32))
                        arrays["draft_ms"] = pa.array(rng.uniform(20, 200, nr).astype(np.float32))
                        arrays["verify_ms"] = pa.array(rng.uniform(25, 35, nr).astype(np.float32))
                        arrays["verify_flip"] = pa.array(np.zeros(nr, dtype=bool))
                        arrays["target_only_ms"] = pa.array(np.full(nr, 3000.0, dtype=np.float32))
                        arrays = {c: (v if isinstance(v, pa.Array) else pa.array(v, type=sch.field(c).type))
                                  for c, v in complete("rounds", arrays, nr).items()}
                        path = root / f"speculative/{pair}/{dn}/g{g}/shard{k}.parquet"
                        A.write_parquet(pa.table([arrays[f.name] for f in sch], schema=sch), path, "rounds", meta)
                        round_files.append(str(path))
                        counts["rounds_rows"] += nr
                        counts["files"] += 1
            runs.append(Run(dataset="dsec_1s", pair=pair, draft=d, target=t, decoding=dec,
                            scores=str(root / f"score/{pair}/{dn}.parquet"),
                            translation=str(root / f"translation/{pair}.parquet"),
                            target_vocab=str(root / f"vocab/{t}.parquet"),
                            draft_tokens=[str(root / f"generate/{d}/{dn}/shard{k}.parquet") for k in range(shards)],
                            target_tokens=[str(root / f"generate/{t}/{dn}/shard{k}.parquet") for k in range(shards)],
                            rounds=round_files))
    return runs, counts


def section_tables(ctx: dict, S: dict) -> dict:
    import polars as pl

    from specalign.acceptance import replay_summary
    from specalign.summary import acceptance_tables

    rng = np.random.default_rng(0)
    gammas = list(range(1, 9))
    res: dict = {"api": "summary.acceptance_tables (full Run artifacts: scores, tokens, translation, vocab, rounds)",
                 "clips": S["tab_clips"], "tokens_per_clip": S["tab_tokens"], "pairs": len(REAL_PAIRS),
                 "decodings": len(REAL_DECODINGS), "gammas": gammas, "loop_gammas": list(LOOP_GAMMAS),
                 "loop_decodings": list(LOOP_DECODINGS), "shards": S["tab_shards"], "bootstrap": S["tab_boot"]}
    with tempfile.TemporaryDirectory(prefix="cpu_bench_tables_") as tmp:
        t = time.perf_counter()
        runs, counts = build_synthetic_run(Path(tmp), S, rng)
        res["build_s"] = time.perf_counter() - t
        res.update(counts)
        res["bytes_on_disk"] = sum(f.stat().st_size for f in Path(tmp).rglob("*.parquet"))
        log(f"tables: synthetic run built in {res['build_s']:.1f} s ({counts['files']} files)")
        secs, out = [], None
        for _ in range(S["tab_reps"]):
            t = time.perf_counter()
            out = acceptance_tables(runs, gammas, S["tab_boot"])
            secs.append(time.perf_counter() - t)
        res["seconds"] = secs
        res["median_s"] = median(secs)
        # the replay part alone: replay_summary on the same 9 scores tables (read untimed), same gammas, bootstrap
        frames = [pl.read_parquet(r.scores) for r in runs]
        t = time.perf_counter()
        for f in frames:
            replay_summary(f, gammas, n_boot=S["tab_boot"])
        res["replay_summary_s"] = time.perf_counter() - t
        del frames
        summ, loop = out["summary"], out["loop"]
        res["summary_rows"] = summ.height
        res["loop_rows"] = loop.height
        greedy = loop.filter(pl.col("decoding") == "greedy")
        res["greedy_loop_rows_identical"] = int(greedy["rounds_identical"].sum())
        res["greedy_loop_output_equals_target"] = int(greedy["output_equals_target"].sum())
        res["greedy_loop_rows"] = greedy.height
        log(f"tables: acceptance_tables {res['median_s']:.1f} s ({summ.height} summary rows)")

    # replay throughput: replay_summary on synthetic greedy scores of P positions (128-token streams)
    thr = []
    L = 128
    for P in S["thr_positions"]:
        n = max(1, P // L)
        sid = pl.Series("sample_id", [f"c{i:07d}" for i in range(n)]).gather(np.repeat(np.arange(n), L))
        match = rng.random(n * L) < 0.75
        df = pl.DataFrame({"sample_id": sid, "position": np.tile(np.arange(L, dtype=np.int32), n),
                           "match": match, "summin": match.astype(np.float32),
                           "mapped_mass": np.ones(n * L, dtype=np.float32),
                           "max_new_tokens": np.full(n * L, L, dtype=np.int32)})
        t = time.perf_counter()
        rs = replay_summary(df, gammas, n_boot=S["thr_boot"])
        s = time.perf_counter() - t
        thr.append({"positions": n * L, "seconds": s, "position_gammas_per_s": n * L * len(gammas) / s,
                    "rows": rs.height})
        log(f"replay throughput at {n * L} positions: {thr[-1]['position_gammas_per_s']:.3g} position-gammas/s")
        del df, sid, match
    res["throughput"] = thr
    res["throughput_bootstrap"] = S["thr_boot"]
    return res


# ------------------------------------------------------------------------------------------ section 5
def workflow_config(root: Path) -> dict:
    return {
        "datasets": {"dsec": {"kind": "dsec", "root": str(root), "instructions": "instructions.json", "split": None}},
        "questions": ["What is in this scene?"],
        "models": {m: {"family": "causal_lm", "path": f"/nonexistent/specalign-bench/{m}"}
                   for m in sorted({m for p in REAL_PAIRS for m in p})},
        "pairs": [{"draft": d, "target": t} for d, t in REAL_PAIRS],
        "decodings": {k: {**v, "max_new_tokens": 128} for k, v in REAL_DECODINGS.items()},
    }


def instruction_entries(n: int) -> list[dict]:
    return [{"id": f"zurich_city_{i // 1000:02d}_a/{i:06d}", "split": "test",
             "event_data": f"zurich_city_{i // 1000:02d}_a/{i:06d}.npy",
             "video_data": f"zurich_city_{i // 1000:02d}_a/{i:06d}",
             "conversations": [{"from": "human", "value": "<event>\n"}, {"from": "gpt", "value": ""}]}
            for i in range(n)]


def dry_run(wd: Path, prefix: list[str] | None = None,
            args: tuple[str, ...] = ("-n", "--cores", "1")) -> tuple[float, dict, subprocess.CompletedProcess]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    pkg = str(wd.resolve() / "workflow_scripts")
    env["PYTHONPATH"] = os.pathsep.join([pkg] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    cmd = [*(prefix or []), str(Path(sys.executable).parent / "snakemake"), *args]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=600)
    s = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake -n failed in {wd}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return s, parse_job_stats(proc.stdout), proc


def section_workflow(ctx: dict, S: dict) -> dict:
    import yaml

    sizes = list(S["wf_samples"])
    res: dict = {"samples": sizes, "reps": S["wf_reps"], "models": 3, "decodings": 3, "pairs": len(REAL_PAIRS),
                 "shards": "schema default (1)", "command": "snakemake -n --cores 1", "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="cpu_bench_wf_") as tmp:
        wds = {}
        for n in sizes:
            wd = copy_workflow(Path(tmp) / f"wf{n}")
            root = Path(tmp) / f"data{n}"
            root.mkdir()
            (root / "instructions.json").write_text(json.dumps(instruction_entries(n)))
            (wd / "config.yaml").write_text(yaml.safe_dump(workflow_config(root), sort_keys=False))
            wds[n] = (wd, root)
        secs = {n: [] for n in sizes}
        startup = []
        jobs = {}
        for n in sizes if S["wf_cold"] else []:  # cold: the first parse writes the fingerprints (not timed)
            _, jobs[n], _ = dry_run(wds[n][0])
        for _ in range(S["wf_reps"]):
            for n in sizes:
                s, j, _ = dry_run(wds[n][0])
                secs[n].append(s)
                jobs[n] = j
            # Snakemake's start-up alone (no workflow parsed), interleaved with the dry runs
            startup.append(dry_run(wds[sizes[0]][0], args=("--version",))[0])
        res["snakemake_version_s"] = startup
        res["snakemake_version_median_s"] = median(startup)
        base = median(secs[sizes[0]])
        for n in sizes:
            res["sizes"][str(n)] = {"seconds": secs[n], "median_s": median(secs[n]),
                                    "ratio_to_smallest": median(secs[n]) / base,
                                    "jobs_total": sum(jobs[n].values()), "jobs": jobs[n],
                                    "json_bytes": (wds[n][1] / "instructions.json").stat().st_size}
        res["job_counts_constant"] = all(jobs[n] == jobs[sizes[0]] for n in sizes)
        wd, root = wds[sizes[0]]
        res["clip_files_on_disk"] = sum(1 for f in root.rglob("*") if f.name != "instructions.json")
        # the dry run does not open clips, nor parse the JSON: it plans the same jobs with a corrupt JSON
        good = (root / "instructions.json").read_text()
        (root / "instructions.json").write_text("{ this is not JSON")
        try:
            _, j, _ = dry_run(wd)
            res["plans_with_corrupt_json"] = j == jobs[sizes[0]]
        except RuntimeError:
            res["plans_with_corrupt_json"] = False
        finally:
            (root / "instructions.json").write_text(good)
        strace = shutil.which("strace") if S["wf_strace"] else None
        if strace:
            trace = Path(tmp) / "strace.txt"
            dry_run(wd, [strace, "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(trace)])
            rootstr = str(root)
            opened = sorted({line.split('"')[1] for line in trace.read_text().splitlines()
                             if f'"{rootstr}' in line and '"' in line})
            res["files_opened_under_root"] = opened
        else:
            res["files_opened_under_root"] = None  # not checked: no strace on this machine, or --quick
    log("workflow: " + ", ".join(f"{n}: {res['sizes'][str(n)]['median_s']:.2f} s / "
                                 f"{res['sizes'][str(n)]['jobs_total']} jobs" for n in sizes))
    return res


# ------------------------------------------------------------------------------------------ section 6
def parquet_stats(paths: list[Path], tokens: int) -> dict:
    import pyarrow.parquet as pq

    size = sum(p.stat().st_size for p in paths)
    data = 0
    per_col: dict[str, int] = {}
    for p in paths:
        md = pq.ParquetFile(p).metadata
        for rg in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(rg).column(c)
                data += col.total_compressed_size
                name = col.path_in_schema.split(".")[0]
                per_col[name] = per_col.get(name, 0) + col.total_compressed_size
    return {"files": len(paths), "bytes": size, "tokens": tokens, "bytes_per_token": size / tokens,
            "column_bytes": data, "column_bytes_per_token": data / tokens, "fixed_bytes_per_file": (size - data) / len(paths),
            "columns_bytes_per_token": {k: v / tokens for k, v in sorted(per_col.items(), key=lambda kv: -kv[1])}}


def section_storage(ctx: dict, S: dict, out_dir: Path) -> dict:
    """Bytes per token of each artifact kind, written with artifacts.write_parquet; `marginal`: the bytes the
    second half of the samples add, over the tokens they add (what a bigger shard pays per token)."""
    import pyarrow.parquet as pq

    from specalign import artifacts as A
    from specalign.generation import tokens_table
    from specalign.jobs import model_identity, package_versions

    adir = out_dir / "artifacts"
    if adir.exists():
        shutil.rmtree(adir)
    (adir / "half").mkdir(parents=True)
    T, D = ctx["target"], ctx["draft"]
    meta = {"rule": "cpu_bench", "versions": package_versions()}

    def write_tokens(folder: Path, keep) -> list[Path]:
        paths = []
        for role, b, gens in (("target", T, ctx["target_gen"]), ("draft", D, ctx["draft_gen"])):
            p = folder / f"tokens_{role}.parquet"
            A.write_parquet(tokens_table([g for g in gens if keep(g.sample_id)]), p, "tokens",
                            {**meta, "model": model_identity(b.spec.path)})
            paths.append(p)
        return paths

    def write_rows(name: str, rows: list[dict]):
        def w(folder: Path, keep) -> list[Path]:
            p = folder / f"{name}.parquet"
            A.write_parquet(A.table(name, [r for r in rows if keep(r["sample_id"])]), p, name, meta)
            return [p]
        return w

    kinds = {
        "tokens": (write_tokens, lambda keep: sum(len(g.token_ids) for g in ctx["target_gen"] + ctx["draft_gen"]
                                                  if keep(g.sample_id)),
                   sorted({g.sample_id for g in ctx["target_gen"]}),
                   "section 2: target and draft streams at the longest length, one file per model"),
        "scores": (write_rows("scores", ctx["score_rows"]),
                   lambda keep: sum(1 for r in ctx["score_rows"] if keep(r["sample_id"])),
                   sorted({r["sample_id"] for r in ctx["score_rows"]}),
                   "section 2: score_sample rows at the longest length"),
        "rounds": (write_rows("rounds", ctx["rounds_rows"]),
                   lambda keep: sum(r["emitted"] for r in ctx["rounds_rows"] if keep(r["sample_id"])),
                   sorted({r["sample_id"] for r in ctx["rounds_rows"]}),
                   "section 1: loop rounds at gammas 1..8 (tokens = emitted tokens)"),
    }
    files: dict = {}
    for kind, (write, count, sids, source) in kinds.items():
        half = set(sids[: max(1, len(sids) // 2)])
        full_paths = write(adir, lambda s: True)
        half_paths = write(adir / "half", lambda s: s in half)
        st = parquet_stats(full_paths, count(lambda s: True))
        hb = sum(p.stat().st_size for p in half_paths)
        ht = count(lambda s: s in half)
        st["marginal_bytes_per_token"] = (st["bytes"] - hb) / max(1, st["tokens"] - ht)
        st["half"] = {"samples": len(half), "tokens": ht, "bytes": hb}
        st["samples"] = len(sids)
        st["source"] = source
        files[kind] = st
    # what the writer did before (measured, not applied): pyarrow's dictionary encoding on every column,
    # with zstd and with snappy (pyarrow's default codec); artifacts.write_parquet byte-stream-splits floats
    variants = {}
    for name, kw in (("zstd, dictionary on every column", {"compression": "zstd"}),
                     ("snappy, dictionary on every column", {"compression": "snappy"})):
        sizes = {}
        for sub in ("", "half"):
            total = 0
            for role in ("target", "draft"):
                tbl = pq.read_table(adir / sub / f"tokens_{role}.parquet")
                dst = adir / sub / f"variant{len(variants)}_{role}.parquet"
                pq.write_table(tbl, dst, **kw)
                total += dst.stat().st_size
                dst.unlink()
            sizes[sub] = total
        ft, ht = files["tokens"]["tokens"], files["tokens"]["half"]["tokens"]
        variants[name] = {"bytes_per_token": sizes[""] / ft,
                          "marginal_bytes_per_token": (sizes[""] - sizes["half"]) / max(1, ft - ht)}
    shutil.rmtree(adir / "half")
    files["tokens_variants"] = variants
    # one file of a real shard's size (the real run: 1,100 clips / 8 shards x 128 tokens), generated by the
    # target at batch 1 like the workflow's generate jobs (models' batch_size default): per-token timings
    # then vary token by token as they do there (a batch shares one step time, which compresses)
    from specalign.generation import generate
    from specalign.specs import Decoding

    prompts = make_prompts(T, S["shard_prompts"], S["prompt_words"], S["n_words"], seed=66, prefix="shard")
    gens = generate(T, prompts, Decoding(name="greedy", max_new_tokens=S["shard_tokens"]), batch_size=1,
                    ignore_eos=True)
    p = adir / "tokens_shard.parquet"
    A.write_parquet(tokens_table(gens), p, "tokens", {**meta, "model": model_identity(T.spec.path)})
    files["tokens_shard"] = {**parquet_stats([p], sum(len(g.token_ids) for g in gens)), "samples": len(gens),
                             "source": f"{len(gens)} target streams of {S['shard_tokens']} tokens, batch 1"}
    before = adir / "tokens_shard_dictionary.parquet"   # the writer before: dictionary on every column, zstd
    pq.write_table(pq.read_table(p), before, compression="zstd")
    files["tokens_shard"]["dictionary_everywhere_bytes_per_token"] = before.stat().st_size / files["tokens_shard"]["tokens"]
    before.unlink()
    log("storage: " + ", ".join(f"{k} {files[k]['bytes_per_token']:.1f} B/token (marginal "
                                f"{files[k]['marginal_bytes_per_token']:.1f})" for k in ("tokens", "scores", "rounds")))
    return files


# ------------------------------------------------------------------------------------------ report
def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import importlib.metadata as md

    import transformers

    vers = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for pkg in ("polars", "pyarrow", "snakemake", "numpy"):
        try:
            vers[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "os": platform.platform(), "versions": vers,
            "loadavg_start": list(os.getloadavg())}


def git_info() -> dict:
    def run(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    status = run("status", "--porcelain")
    return {"commit": run("rev-parse", "HEAD") or "unknown",
            "uncommitted_paths": len([x for x in status.splitlines() if x.strip()])}


def targets(res: dict) -> list[dict]:
    """(name, measured, target, met) for every target of the brief, from the measured numbers."""
    out = []
    S = res["sections"]

    def add(section, name, value, target, met, note=""):
        out.append({"section": section, "target": name, "measured": value, "wanted": target, "met": bool(met),
                    "note": note})

    if "peer" in S:
        p = S["peer"]
        r = p["replay_vs_loop"]
        add("1", "HF and specalign outputs == target greedy",
            f"HF {p['hf']['outputs_equal_target_greedy']}/{p['hf']['outputs_checked']}, specalign "
            f"{p['specalign']['outputs_equal_target_greedy']}/{p['specalign']['outputs_checked']}", "all",
            p["hf"]["outputs_equal_target_greedy"] == p["hf"]["outputs_checked"]
            and p["specalign"]["outputs_equal_target_greedy"] == p["specalign"]["outputs_checked"])
        add("1", "replay (with the target's generation) cheaper than the loop at 8 gammas, like for like",
            f"{r['like_for_like_ratio']:.1f}x", ">= 8x", r["like_for_like_ratio"] >= 8)
        add("1", "replayed accepted counts == loop's", f"{r['counts_equal']}/{r['counts_checked']}", "all",
            r["counts_equal"] == r["counts_checked"])
    if "batching" in S:
        b = S["batching"]["sizes"]
        big = str(max(int(k) for k in b))
        add("3", f"batch {big} tokens/s vs batch 1", f"{b[big]['ratio_to_batch1']:.2f}x", ">= 4x",
            b[big]["ratio_to_batch1"] >= 4)
    if "tables" in S:
        t = S["tables"]
        add("4", "acceptance_tables at full scale", f"{t['median_s']:.1f} s", "<= 10 s", t["median_s"] <= 10)
    if "workflow" in S:
        w = S["workflow"]
        big = str(max(w["samples"]))
        add("5", f"snakemake -n at {int(big):,} samples", f"{w['sizes'][big]['median_s']:.2f} s", "< 5 s",
            w["sizes"][big]["median_s"] < 5)
        add("5", "job count constant across N", str(w["job_counts_constant"]), "True", w["job_counts_constant"])
    if "storage" in S:
        s = S["storage"]["tokens"]
        sh = S["storage"]["tokens_shard"]
        add("6", f"tokens artifact bytes per token (one file of {sh['tokens']:,} tokens)",
            f"{sh['bytes_per_token']:.1f}", "<= 12", sh["bytes_per_token"] <= 12)
        add("6", "tokens artifact bytes per token (marginal)",
            f"{s['marginal_bytes_per_token']:.1f}", "<= 12", s["marginal_bytes_per_token"] <= 12)
    return out


def fmt_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (x + 2) for x in w) + "|", *map(line, cells[1:])])


def summary_rows(res: dict) -> list[list]:
    """The one table printed: every headline number of every section."""
    S = res["sections"]
    rows = []
    if "peer" in S:
        p = S["peer"]
        rows += [
            ["1 peer", f"HF assisted generation, gamma {p['gamma']}", f"{p['hf']['tokens_per_s']:.1f} tok/s"],
            ["1 peer", f"specalign speculative_decode, gamma {p['gamma']}", f"{p['specalign']['tokens_per_s']:.1f} tok/s"],
            ["1 peer", "ratio specalign / HF", f"{p['ratio_specalign_over_hf']:.2f}"],
            ["1 peer", "outputs == target greedy (HF, specalign)",
             f"{p['hf']['outputs_equal_target_greedy']}/{p['hf']['outputs_checked']}, "
             f"{p['specalign']['outputs_equal_target_greedy']}/{p['specalign']['outputs_checked']}"],
            ["1 peer", "target forward calls (HF, specalign)",
             f"{p['hf']['target_calls']}, {p['specalign']['target_calls']}"],
            ["1 peer", "forward pass / 64-wide same-depth pass", f"{p['forward_vs_overhead']['ratio']:.2f}"],
            ["1 replay", f"loop at {len(p['replay_vs_loop']['gammas'])} gammas / (generate target + score + "
             "replay), like for like", f"{p['replay_vs_loop']['like_for_like_ratio']:.1f}x"],
            ["1 replay", f"loop at gamma {p['replay_vs_loop']['gammas'][0]} / (generate target + score + replay), "
             "like for like", f"{p['replay_vs_loop']['like_for_like_per_gamma'][str(p['replay_vs_loop']['gammas'][0])]:.1f}x"],
            ["1 replay", f"loop at {len(p['replay_vs_loop']['gammas'])} gammas / (score + replay), target's "
             "stream given", f"{p['replay_vs_loop']['cost_ratio_loop_over_replay']:.1f}x"],
            ["1 replay", "replayed accepted == loop's",
             f"{p['replay_vs_loop']['counts_equal']}/{p['replay_vs_loop']['counts_checked']}"],
        ]
    if "scoring" in S:
        for L, v in S["scoring"]["lengths"].items():
            rows.append(["2 scoring", f"generate (target+draft) / score_sample, {L} tokens",
                         f"{v['ratio_generate_over_score']:.1f}x ({v['generate_ms_per_sample']:.0f} vs "
                         f"{v['score_ms_per_sample']:.0f} ms/sample)"])
    if "batching" in S:
        b = S["batching"]
        for k, v in b["sizes"].items():
            rss = (f", peak RSS {v['peak_rss_mb']:.0f} MB (+{v['peak_rss_over_start_mb']:.0f})"
                   if finite(v["peak_rss_mb"]) else "")
            rows.append(["3 batching", f"batch {k}", f"{v['tokens_per_s']:.0f} tok/s ({v['ratio_to_batch1']:.2f}x){rss}"])
        rows.append(["3 batching", "peak RSS of the process before section 3 (getrusage)",
                     f"{b['peak_rss_mb_process']:.0f} MB"])
    if "tables" in S:
        t = S["tables"]
        rows.append(["4 tables", f"acceptance_tables, {t['clips']} clips x {t['tokens_per_clip']} x 8 gammas x "
                     f"{t['pairs']} pairs x {t['decodings']} decodings", f"{t['median_s']:.1f} s"])
        for x in t["throughput"]:
            rows.append(["4 tables", f"replay_summary throughput at {x['positions']:.0e} positions",
                         f"{x['position_gammas_per_s']:.3g} position-gammas/s ({x['seconds']:.1f} s)"])
    if "workflow" in S:
        w = S["workflow"]
        for n, v in w["sizes"].items():
            rows.append(["5 workflow", f"snakemake -n, {int(n):,} samples",
                         f"{v['median_s']:.2f} s ({v['ratio_to_smallest']:.2f}x), {v['jobs_total']} jobs"])
    if "storage" in S:
        for k in ("tokens", "scores", "rounds"):
            v = S["storage"][k]
            rows.append(["6 storage", f"{k}: bytes per token (whole files; marginal)",
                         f"{v['bytes_per_token']:.1f}; {v['marginal_bytes_per_token']:.1f} ({v['tokens']} tokens)"])
        v = S["storage"]["tokens_shard"]
        rows.append(["6 storage", "tokens: bytes per token, one file of a real shard's size",
                     f"{v['bytes_per_token']:.1f} ({v['tokens']:,} tokens)"])
    return rows


def render_doc(res: dict, why: dict[str, str]) -> str:
    m, g, S = res["machine"], res["git"], res["sections"]
    v = m["versions"]
    L = ["# Benchmarks", "",
         "Written by `bash bench/cpu.sh` (bench/cpu_bench.py); every number below was measured by that run and is",
         "copied from its JSON (bench_out/cpu_bench.json). Comparisons are ratios of two things timed side by side in",
         "one process, repetitions interleaved (A, B, A, B) and reduced by their median; absolute times are from a",
         "shared 2-core machine and vary between runs, ratios and counts much less. To re-render this page from a",
         "run's JSON without measuring again: `python bench/cpu_bench.py --render bench_out/cpu_bench.json`.", "",
         "## Run", "",
         fmt_table(["", ""], [
             ["command", f"`{res['command']}`"], ["date", res["date"]], ["git commit", f"`{g['commit']}`"],
             ["working tree", f"{g['uncommitted_paths']} paths differ from the commit (uncommitted edits: this "
                              "benchmark's files and concurrent work by others)" if g["uncommitted_paths"] else "clean"],
             ["CPU", f"{m['cpu']}, {m['cores']} cores"],
             ["threads", f"torch {m['torch_threads']}, OMP_NUM_THREADS={m['omp_num_threads']}"],
             ["load average (1, 5, 15 min) at start / end", f"{', '.join(f'{x:.2f}' for x in m['loadavg_start'])} / "
                                                           f"{', '.join(f'{x:.2f}' for x in m['loadavg_end'])}"],
             ["versions", ", ".join(f"{k} {x}" for k, x in v.items())],
             ["models", res["models"]], ["elapsed", f"{res['elapsed_s']:.0f} s"]]), "",
         "## Summary", "", fmt_table(["section", "measure", "value"], summary_rows(res)), "",
         "## Targets", "",
         fmt_table(["section", "target", "measured", "wanted", "met"],
                   [[t["section"], t["target"], t["measured"], t["wanted"], "yes" if t["met"] else "**no**"]
                    for t in res["targets"]]), ""]
    missed = [t for t in res["targets"] if not t["met"]]
    if missed:
        L += ["Missed targets, by how much and why:", ""]
        for t in missed:
            L.append(f"- **{t['target']}**: {t['measured']} against {t['wanted']}. {why.get(t['target'], '')}".rstrip())
        L.append("")

    if "peer" in S:
        p = S["peer"]
        r = p["replay_vs_loop"]
        L += ["## 1. The peer: Hugging Face assisted generation vs specalign's draft-verify loop", "",
              f"Same pair, same {p['prompts']} prompts (mean {p['prompt_tokens_mean']:.0f} prompt tokens), "
              f"{p['new_tokens']} new tokens each, greedy, gamma {p['gamma']}, "
              f"{p['reps']} interleaved repetitions. HF: `target.generate(ids, assistant_model=draft, do_sample=False, "
              "max_new_tokens=N)` with the assistant's `num_assistant_tokens=gamma`, "
              "`num_assistant_tokens_schedule=\"constant\"`, `assistant_confidence_threshold=0`; specalign: "
              "`speculative.speculative_decode(..., check_flips=False)`. The reference is the target's greedy output "
              f"from `generation.generate`; HF's own plain greedy `generate` equals it for "
              f"{p['hf_plain_equals_reference']}/{p['prompts']} prompts.", "",
              fmt_table(["method", "tokens/s", "median s", "outputs == target greedy", "target calls", "draft calls"],
                        [[k, f"{p[k]['tokens_per_s']:.1f}", f"{median(p[k]['seconds']):.2f}",
                          f"{p[k]['outputs_equal_target_greedy']}/{p[k]['outputs_checked']}",
                          p[k]['target_calls'], p[k]['draft_calls']] for k in ("hf", "specalign")]), "",
              f"Ratio specalign / HF tokens/s: **{p['ratio_specalign_over_hf']:.2f}**. specalign's loop made "
              f"{p['loop_rounds']} rounds (one target call each). Forward calls are counted with forward hooks on "
              "the two models"
              + ("; both methods made the same number of calls of each model, so the difference in speed is the "
                 "per-call and per-round work around the forward passes."
                 if (p["hf"]["target_calls"], p["hf"]["draft_calls"]) == (p["specalign"]["target_calls"],
                                                                         p["specalign"]["draft_calls"]) else ".")
              + " The target's decode step costs "
              f"{p['forward_vs_overhead']['ratio']:.2f}x that of a 64-wide model of the same depth "
              f"({p['forward_vs_overhead']['layers']} layers, whose step is nearly all per-call overhead): "
              + ("the model's compute is most of a step, not Python." if p["forward_vs_overhead"]["ratio"] >= 2 else
                 "at this size a step is mostly per-call overhead (the --quick model)."), "",
              f"**Replay vs loop.** The replay's way to acceptance at gammas {r['gammas'][0]}..{r['gammas'][-1]}: "
              "generate the target's stream (`generate`, batch 1), one `score_sample` pass along it, "
              f"`replay_rounds` at each gamma; the loop's: `speculative_decode` at each of those gammas. "
              f"{r['prompts']} prompts, {r['reps']} interleaved repetitions (generate, replay, loop). The like-for-"
              "like ratio counts everything each side needs from the prompts; the ratio with the target's stream "
              "given is what the replay costs where the stream exists anyway (the workflow generates it for the "
              "positional match and the report).", "",
              fmt_table(["", "median s", ""],
                        [["generate the target's streams", f"{median(r['generate_s']):.3f}", ""],
                         ["score + replay (8 gammas)", f"{median(r['replay_s']):.3f}", ""],
                         ["loop at 8 gammas", f"{median(r['loop_s']):.2f}", ""],
                         ["loop / (generate + score + replay), like for like",
                          f"**{r['like_for_like_ratio']:.1f}x**", "target >= 8x"],
                         ["loop / (score + replay), the target's stream given",
                          f"{r['cost_ratio_loop_over_replay']:.1f}x", ""],
                         ["replayed accepted counts == loop's (per sample x gamma x rep)",
                          f"{r['counts_equal']}/{r['counts_checked']}", ""],
                         ["loop outputs == target greedy", f"{r['loop_outputs_equal_target_greedy']}/"
                                                           f"{r['counts_checked']}", ""]]), "",
              "Per gamma (medians; the replay side at one gamma = generate + score + that gamma's replay, a sum of "
              "medians):", "",
              fmt_table(["gamma", "loop s", "generate + score + replay s", "like for like", "accepted (all prompts)"],
                        [[g, f"{median(r['loop_s_per_gamma'][g]):.2f}",
                          f"{median(r['generate_s']) + median(r['score_s']) + median(r['replay_rounds_s_per_gamma'][g]):.3f}",
                          f"{r['like_for_like_per_gamma'][g]:.1f}x", r["accepted_total"][g]]
                         for g in r["loop_s_per_gamma"]]), ""]
    if "scoring" in S:
        s = S["scoring"]
        L += ["## 2. Scoring vs generation", "",
              f"Per sample: `score_sample` (one target pass and one draft pass along the target's stream) against "
              f"`generate` of the target's and the draft's streams of the same length (batch 1, `ignore_eos=True`); "
              f"{s['prompts']} prompts, {s['reps']} interleaved repetitions, per-sample medians.", "",
              fmt_table(["new tokens", "score ms/sample", "generate ms/sample", "generate / score"],
                        [[k, f"{x['score_ms_per_sample']:.1f}", f"{x['generate_ms_per_sample']:.1f}",
                          f"{x['ratio_generate_over_score']:.1f}x"] for k, x in s["lengths"].items()]), ""]
    if "batching" in S:
        b = S["batching"]
        L += ["## 3. Generation batching", "",
              f"`generate(target, {b['prompts']} prompts, batch_size=b, ignore_eos=True)`, {b['new_tokens']} new "
              f"tokens each, {b['reps']} interleaved repetitions. Peak RSS per batch size: the kernel's high-water "
              "mark (VmHWM) reset through `/proc/self/clear_refs` just before each call and read after it; `+` is "
              "that peak minus the RSS at the call's start (the batch's own memory).", "",
              fmt_table(["batch", "tokens/s", "x batch 1", "peak RSS MB", "+ over start MB", "outputs == batch 1"],
                        [[k, f"{x['tokens_per_s']:.0f}", f"{x['ratio_to_batch1']:.2f}",
                          f"{x['peak_rss_mb']:.0f}" if finite(x["peak_rss_mb"]) else "n/a",
                          f"{x['peak_rss_over_start_mb']:.0f}" if finite(x["peak_rss_over_start_mb"]) else "n/a",
                          f"{x['outputs_equal_batch1']}/{b['prompts']}"] for k, x in b["sizes"].items()]), "",
              f"Peak RSS of the process before this section (`resource.getrusage` ru_maxrss, read before the first "
              f"reset: torch, transformers, the three models, sections 1-2): {b['peak_rss_mb_process']:.0f} MB.", ""]
    if "tables" in S:
        t = S["tables"]
        L += ["## 4. Replay and tables at full scale", "",
              f"`{t['api']}` on SYNTHETIC artifacts of the real run's size: {t['clips']} clips x "
              f"{t['tokens_per_clip']} tokens, {t['pairs']} pairs x {t['decodings']} decodings, gammas 1..8 replayed, "
              f"loop rounds at gammas {t['loop_gammas']} for {t['loop_decodings']} (walked token by token from "
              "the synthetic proposals and target tokens by `walk_greedy_loop`, a second implementation of the "
              "greedy loop's rule, so the greedy loop-vs-replay rows compare it with `replay.replay` through the "
              "table code; section 1 compares the replay with the real loop), "
              f"{t['shards']} shards per model x decoding, bootstrap {t['bootstrap']}; "
              f"{t['files']} Parquet files, {t['bytes_on_disk'] / 2**20:.0f} MiB, built in {t['build_s']:.0f} s "
              "(not timed).", "",
              fmt_table(["", ""],
                        [["acceptance_tables, median of " + str(len(t["seconds"])) + " runs",
                          f"**{t['median_s']:.1f} s** (runs: {', '.join(f'{x:.1f}' for x in t['seconds'])})"],
                         ["of which replay_summary of the 9 scores tables (timed alone, after)",
                          f"{t['replay_summary_s']:.1f} s ({100 * t['replay_summary_s'] / t['median_s']:.0f}%)"],
                         ["summary rows / loop rows", f"{t['summary_rows']} / {t['loop_rows']}"],
                         ["greedy loop rows with rounds_identical / output_equals_target",
                          f"{t['greedy_loop_rows_identical']} / {t['greedy_loop_output_equals_target']} of "
                          f"{t['greedy_loop_rows']}"]]), "",
              f"Replay throughput: `acceptance.replay_summary` (gammas 1..8, bootstrap {t['throughput_bootstrap']}) "
              "on synthetic greedy scores of 128-token streams:", "",
              fmt_table(["positions", "seconds", "position-gammas / s"],
                        [[f"{x['positions']:,}", f"{x['seconds']:.2f}", f"{x['position_gammas_per_s']:.3g}"]
                         for x in t["throughput"]]), ""]
    if "workflow" in S:
        w = S["workflow"]
        opened = w["files_opened_under_root"]
        L += ["## 5. Workflow overhead", "",
              f"`{w['command']}` (wall time of the command, PYTHONPATH on the copy's workflow_scripts) in a private "
              "copy of the workflow (Snakefile, rules/, schemas/, workflow_scripts/, profiles/) with a `kind: dsec` "
              "dataset whose root holds only an instruction JSON of N entries, 3 causal_lm models with nonexistent "
              f"paths, {w['pairs']} pairs, 3 decodings, shards: {w['shards']}; {w['reps']} interleaved repetitions "
              "after one untimed parse per copy (it writes the fingerprints).", "",
              fmt_table(["samples", "median s", "x smallest", "jobs", "JSON MB"],
                        [[f"{int(n):,}", f"{x['median_s']:.2f}", f"{x['ratio_to_smallest']:.2f}", x["jobs_total"],
                          f"{x['json_bytes'] / 1e6:.1f}"] for n, x in w["sizes"].items()]), "",
              f"`snakemake --version` (start-up only, no workflow parsed), interleaved with the dry runs: "
              f"{w['snakemake_version_median_s']:.2f} s. Single dry runs at {int(w['samples'][-1]):,} samples: "
              + ", ".join(f"{x:.2f}" for x in w["sizes"][str(w["samples"][-1])]["seconds"]) + " s.", "",
              "Jobs per rule: " + ", ".join(f"{k} {x}" for k, x in w["sizes"][str(w["samples"][0])]["jobs"].items())
              + f". Job counts identical across N: **{w['job_counts_constant']}**.", "",
              "Does the dry run open the clips? The dataset root holds no clip "
              f"({w['clip_files_on_disk']} files beside the JSON), and the dry runs above planned every job. With "
              "the JSON replaced by invalid JSON it plans the same jobs: "
              f"{w['plans_with_corrupt_json']} (it does not read the JSON either); "
              + ("files it opened under the dataset root (strace -f, open/openat/openat2): "
                 + (", ".join(f"`{Path(x).name}`" for x in opened) if opened else "none") if opened is not None
                 else "(opened files not traced: no strace, or --quick)") + ".", ""]
    if "storage" in S:
        s = S["storage"]
        rows = []
        for k in ("tokens", "tokens_shard", "scores", "rounds"):
            x = s[k]
            top = ", ".join(f"{c} {b:.1f}" for c, b in list(x["columns_bytes_per_token"].items())[:4])
            marginal = f"{x['marginal_bytes_per_token']:.1f}" if "marginal_bytes_per_token" in x else "-"
            rows.append([k, x["samples"], x["tokens"], x["files"], f"{x['bytes_per_token']:.1f}",
                         marginal, f"{x['fixed_bytes_per_file']:.0f}", top])
        L += ["## 6. Storage", "",
              "Parquet bytes per token of artifacts written with `artifacts.write_parquet` (zstd; provenance "
              "metadata like the jobs'), from the streams, scores and rounds of sections 1-2, and `tokens_shard`: "
              "one tokens file of a real generate shard's size. `whole files` = file bytes / tokens; `marginal` = "
              "the bytes the second half of the samples adds / the tokens it adds (the same artifact written from "
              "the first half only, then from all samples): the cost per token once a file is large; `fixed` = "
              "footer, schema and metadata bytes per file.", "",
              fmt_table(["artifact", "samples", "tokens", "files", "B/token whole files", "B/token marginal",
                         "fixed B/file", "largest columns (B/token, column chunks)"], rows), "",
              "Sources: " + "; ".join(f"{k}: {s[k]['source']}" for k in ("tokens", "tokens_shard", "scores", "rounds"))
              + ".", "",
              "The same tokens files written as the writer did before (measured, not applied: pyarrow's "
              "dictionary encoding on every column, float columns included):", "",
              fmt_table(["variant", "B/token whole files", "B/token marginal"],
                        [["as written (artifacts.write_parquet)", f"{s['tokens']['bytes_per_token']:.1f}",
                          f"{s['tokens']['marginal_bytes_per_token']:.1f}"]]
                        + [[k, f"{x['bytes_per_token']:.1f}", f"{x['marginal_bytes_per_token']:.1f}"]
                           for k, x in s["tokens_variants"].items()]), "",
              f"The real shard's file written the same way (dictionary on every column, zstd): "
              f"{s['tokens_shard']['dictionary_everywhere_bytes_per_token']:.1f} B/token, against "
              f"{s['tokens_shard']['bytes_per_token']:.1f} as written.", ""]
        if why.get("storage_note"):
            L += [why["storage_note"], ""]
    L += ["## GPU", "", "**Not measured**: no GPU machine was lent to this task. `bash bench/gpu.sh` "
          "(bench/gpu_bench.py) is the prepared GPU benchmark of the 7B shape; it has not run on a GPU.", ""]
    return "\n".join(L)


# Why a target is missed: mechanisms checked by profiling this code (see docs/benchmarks.md), keyed by
# the target name; the numbers in the sentence come from the run itself (formatted in main).
def why_notes(res: dict) -> dict[str, str]:
    S = res["sections"]
    out: dict[str, str] = {}
    if "peer" in S:
        r = S["peer"]["replay_vs_loop"]
        gen, rep = median(r["generate_s"]), median(r["replay_s"])
        out["replay (with the target's generation) cheaper than the loop at 8 gammas, like for like"] = (
            f"Generating the target's streams takes {gen:.2f} s of the replay side's {gen + rep:.2f} s "
            f"({100 * gen / (gen + rep):.0f}%): the loop at 8 gammas costs {r['like_for_like_ratio']:.1f}x that, "
            f"{r['cost_ratio_loop_over_replay']:.1f}x scoring and replay alone (the target's stream given).")
    if "tables" in S:
        t = S["tables"]
        pos_gammas = t["clips"] * t["tokens_per_clip"] * len(t["gammas"]) * t["pairs"] * t["decodings"]
        rate = t["throughput"][min(1, len(t["throughput"]) - 1)]["position_gammas_per_s"]
        out["acceptance_tables at full scale"] = (
            f"{t['median_s'] - 10:.1f} s over ({t['median_s'] / 10:.1f}x the target). `replay_summary` of the 9 scores "
            f"tables alone takes {t['replay_summary_s']:.1f} s of it "
            f"({100 * t['replay_summary_s'] / t['median_s']:.0f}%; {pos_gammas / 1e6:.1f}M position-gammas, "
            f"{rate:.3g}/s measured below); the rest reads the token shards (positional match, timings), "
            "summarises the loop rounds and draws the bootstrap intervals.")
    if "batching" in S:
        b = S["batching"]["sizes"]
        big = str(max(int(k) for k in b))
        out[f"batch {big} tokens/s vs batch 1"] = (
            f"{b[big]['ratio_to_batch1']:.2f}x against 4x: on one thread a step's matrix products grow with the batch "
            "once the weights stop being the bottleneck.")
    if "workflow" in S:
        w = S["workflow"]
        big = str(max(w["samples"]))
        small = w["sizes"][str(w["samples"][0])]
        la = res["machine"]
        out[f"snakemake -n at {int(big):,} samples"] = (
            f"{w['sizes'][big]['median_s'] - 5:.2f} s over. Almost all of it does not depend on N: the dry run at "
            f"{w['samples'][0]:,} samples takes {small['median_s']:.2f} s (100x more samples add "
            f"{100 * (w['sizes'][big]['ratio_to_smallest'] - 1):.0f}%), `snakemake --version` alone "
            f"{w['snakemake_version_median_s']:.2f} s; the rest is reading the workflow (rules, schema validation, "
            "the job-spec fingerprints, the AST walk of the package imports per rule) and planning the DAG. Single runs at "
            f"{int(big):,} ranged {min(w['sizes'][big]['seconds']):.2f}-{max(w['sizes'][big]['seconds']):.2f} s on "
            f"this shared machine (load average {la['loadavg_start'][0]:.1f} at the start, "
            f"{la['loadavg_end'][0]:.1f} at the end, on 2 cores).")
    if "storage" in S:
        s = S["storage"]["tokens"]
        cols = s["columns_bytes_per_token"]
        top = ", ".join(f"`{c}` {b:.1f}" for c, b in list(cols.items())[:4])
        sh = S["storage"]["tokens_shard"]
        out[f"tokens artifact bytes per token (one file of {sh['tokens']:,} tokens)"] = (
            f"{sh['bytes_per_token'] - 12:.1f} B/token over. Column data: {top} B/token (the small files'); "
            "`logprob` and `decode_ms` are float32 values that barely compress.")
        out["tokens artifact bytes per token (marginal)"] = (
            f"{s['marginal_bytes_per_token'] - 12:.1f} B/token over "
            f"({100 * (s['marginal_bytes_per_token'] / 12 - 1):.0f}%). Column data: {top} B/token.")
        out["storage_note"] = (
            f"Column data of the tokens artifact: {top} B/token. The per-token float columns (`logprob`, `decode_ms`) "
            "are near-random float32: dictionary encoding cannot shrink them, byte-stream-split (their bytes "
            "regrouped by position before zstd) does; per-sample columns repeated on every row (`prefill_ms`, "
            "`finish_reason`, `prompt_tokens`, `peak_mem_mb`) cost little.")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="every section at tiny sizes (< 60 s; the test)")
    ap.add_argument("--out", help="output folder (default ./bench_out)")
    ap.add_argument("--doc", help="write the Markdown report here (default: docs/benchmarks.md in a full run, "
                                  "none with --quick)")
    ap.add_argument("--no-doc", action="store_true", help="write no Markdown report")
    ap.add_argument("--render", metavar="JSON", help="measure nothing: write the Markdown report (--doc, default "
                                                     "docs/benchmarks.md) from a run's cpu_bench.json")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)} (storage needs peer and scoring)")
    args = ap.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    bad = set(args.sections) - set(SECTIONS)
    if bad:
        ap.error(f"unknown sections {sorted(bad)}")
    if "storage" in args.sections and not {"peer", "scoring"} <= set(args.sections):
        ap.error("storage measures the artifacts of peer and scoring: run those too")
    args.out = Path(args.out or "bench_out")
    if args.no_doc:
        args.doc = None
    elif args.doc is None and (args.render or not args.quick):
        args.doc = str(REPO / "docs" / "benchmarks.md")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        res = json.loads(Path(args.render).read_text())
        if res.get("schema") != SCHEMA:
            raise SystemExit(f"{args.render}: not a {SCHEMA} result")
        if args.doc:
            Path(args.doc).write_text(render_doc(res, why_notes(res)))
            log(f"wrote {args.doc} from {args.render}")
        print(fmt_table(["section", "measure", "value"], summary_rows(res)))
        return 0
    S = QUICK if args.quick else FULL
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    from specalign.translation import TokenMap

    args.out.mkdir(parents=True, exist_ok=True)
    cmd = "bash bench/cpu.sh" + (" --quick" if args.quick else "")
    res: dict = {"schema": SCHEMA, "mode": "quick" if args.quick else "full", "command": cmd,
                 "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "machine": machine(), "git": git_info(), "sizes": S, "sections": {}, "sections_done": []}
    res["models"] = (f"random-weight Llama, hidden {S['hidden']}, {S['layers']} layers, {S['heads']} heads, "
                     f"intermediate {2 * S['hidden']}, vocab {N_FIXED + S['n_words']}, init std {S['init_std']}, fp32; "
                     f"draft = target + noise {S['noise']} x each matrix's std (same tokenizer, TokenMap.identity)")
    with tempfile.TemporaryDirectory(prefix="cpu_bench_models_") as mtmp:
        ctx: dict = {}
        if {"peer", "scoring", "batching"} & set(args.sections):
            log("building the models")
            mt = Path(mtmp)
            tdir = build_llama(mt / "target", S["n_words"], S["hidden"], S["layers"], S["heads"], S["init_std"])
            ddir = build_noisy_copy(tdir, mt / "draft", S["noise"])
            sdir = build_llama(mt / "skeleton", S["n_words"], 64, S["layers"], 4, S["init_std"])
            ctx["target"] = load_backend(tdir, "target")
            ctx["draft"] = load_backend(ddir, "draft")
            ctx["skeleton"] = load_backend(sdir, "skeleton")
            ctx["token_map"] = TokenMap.identity(ctx["target"].text_vocab_size)

        def save():
            res["elapsed_s"] = time.perf_counter() - T_START
            (args.out / "cpu_bench.json").write_text(json.dumps(res, indent=1, default=str))

        for name in SECTIONS:
            if name not in args.sections:
                continue
            log(f"section {name}")
            t = time.perf_counter()
            if name == "storage":
                out = section_storage(ctx, S, args.out)
            else:
                out = globals()[f"section_{name}"](ctx, S)
            out["section_s"] = time.perf_counter() - t
            res["sections"][name] = out
            res["sections_done"].append(name)
            save()
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    res["targets"] = targets(res)
    res["elapsed_s"] = time.perf_counter() - T_START
    text = fmt_table(["section", "measure", "value"], summary_rows(res))
    (args.out / "cpu_bench.json").write_text(json.dumps(res, indent=1, default=str))
    (args.out / "cpu_bench.txt").write_text(text + "\n")
    print(text)
    if args.doc:
        Path(args.doc).parent.mkdir(parents=True, exist_ok=True)
        Path(args.doc).write_text(render_doc(res, why_notes(res)))
        log(f"wrote {args.doc}")
    log(f"done in {res['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
