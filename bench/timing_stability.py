#!/usr/bin/env python3
"""How stable is a cost ratio under load? The paired timing job's c alone vs beside busy processes.

The issue this answers: the draft's c was 2.43 in one demo run and 0.92 in another (same commit,
same machine) because c divided the draft's generation job's time by the target's, and one of the
two jobs shared the cores with a loop job. The timing job (specalign.timing) times both models in
one process, interleaved, so load slows both sides alike. This script measures that on the CPU:

1. `alone`: `timing.time_pairs` + `timing.summarise` on a tiny random-weight target and a smaller
   draft (the tests' word-level tokenizer, `TokenMap.identity`), nothing else running.
2. `busy`: the same while --busy processes (default: one per CPU) spin in `while True: pass`;
   started by this script and ended by their pids.
Interleaved ALONE, BUSY, ALONE, BUSY (--rounds rounds), and the figures' medians compared. For
contrast, the two-job ratio of the old cost model: the draft's per-token decode from `generate`
run in one condition over the target's run in the other (what a generation job beside a loop job
gave), which is where the flip came from.

Prints one line per figure: its value alone, under load, and busy / alone. A ratio near 1 for the
paired c (and far from 1 for the cross-condition ones) is the point. A benchmark, not a test:
nothing is asserted. `--quick` (tiny sizes, < 1 minute) is what tests and CI may run.

    .venv/bin/python bench/timing_stability.py --quick
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from cpu_bench import build_llama, load_backend, make_prompts  # noqa: E402  (models the CPU bench's way)

FULL = dict(target=(512, 4, 8), draft=(256, 2, 4), n_words=994, prompts=4, tokens=48, reps=3, rounds=3)
QUICK = dict(target=(128, 2, 4), draft=(64, 1, 4), n_words=58, prompts=2, tokens=8, reps=2, rounds=1)


def busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def end(procs: list[subprocess.Popen]) -> None:
    for p in procs:          # only the processes this script started, each by its own handle
        p.kill()
        p.wait()


def per_token_decode_ms(backend, prompts, dec) -> float:
    """The old cost model's input: mean decode step over a generation run (one model, one 'job')."""
    from specalign.generation import generate

    gens = generate(backend, prompts, dec, ignore_eos=True, warmup=True)
    steps = [ms for g in gens for ms in g.decode_ms[1:]]
    return sum(steps) / len(steps)


def measure(draft, target, items, token_map, dec, S) -> dict:
    from specalign import timing

    tbl = timing.time_pairs(draft, target, items, token_map, dec, [1, 2, 4], [2], S["reps"])
    s = timing.summarise(tbl, n_boot=200)
    prompts = [tp for _, tp, _ in items]
    return {"c": s["c"], "c_lo": s["c_lo"], "c_hi": s["c_hi"], "verify_cost_4": s["verify"][4]["verify_cost"],
            "measured_speedup_2": s["loop"][2]["measured_speedup"], "draft_step_ms": s["draft_step_ms"],
            "target_step_ms": s["target_step_ms"],
            # the two-job inputs, each model on its own (sequentially, as two generation jobs would)
            "draft_job_decode_ms": per_token_decode_ms(draft, prompts, dec),
            "target_job_decode_ms": per_token_decode_ms(target, prompts, dec)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, under a minute")
    ap.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="busy processes under load")
    ap.add_argument("--out", default="bench_out", help="folder for timing_stability.json")
    args = ap.parse_args(argv)
    S = QUICK if args.quick else FULL

    import torch

    from specalign.generation import device_name, generate
    from specalign.specs import Decoding
    from specalign.translation import TokenMap

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        th, tl, thd = S["target"]
        dh, dl, dhd = S["draft"]
        target = load_backend(build_llama(Path(tmp) / "target", S["n_words"], th, tl, thd, 0.05), "target")
        draft = load_backend(build_llama(Path(tmp) / "draft", S["n_words"], dh, dl, dhd, 0.05, seed=1), "draft")
    token_map = TokenMap.identity(target.text_vocab_size)
    dec = Decoding("greedy", max_new_tokens=S["tokens"])
    prompts = make_prompts(target, S["prompts"], (4, 12), S["n_words"], seed=0)
    streams = [g.token_ids for g in generate(target, prompts, dec, ignore_eos=True)]
    items = [(p, p, y) for p, y in zip(prompts, streams)]

    runs: dict[str, list[dict]] = {"alone": [], "busy": []}
    t0 = time.perf_counter()
    for _ in range(S["rounds"]):
        runs["alone"].append(measure(draft, target, items, token_map, dec, S))
        procs = busy_processes(args.busy)
        try:
            runs["busy"].append(measure(draft, target, items, token_map, dec, S))
        finally:
            end(procs)
    med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
    a, b = med["alone"], med["busy"]
    # the two-job c of the old cost model, with its two jobs in different conditions
    cross = {"draft alone / target busy": a["draft_job_decode_ms"] / b["target_job_decode_ms"],
             "draft busy / target alone": b["draft_job_decode_ms"] / a["target_job_decode_ms"]}
    lines = [f"device {device_name('cpu')}, {args.busy} busy process(es), {S['rounds']} round(s), "
             f"{len(items)} clips x {S['reps']} reps, {time.perf_counter() - t0:.1f} s",
             f"{'figure':34s} {'alone':>10s} {'busy':>10s} {'busy/alone':>10s}"]
    for f in ("c", "verify_cost_4", "measured_speedup_2", "draft_step_ms", "target_step_ms"):
        lines.append(f"{f:34s} {a[f]:10.3f} {b[f]:10.3f} {b[f] / a[f]:10.3f}")
    two_job_alone = a["draft_job_decode_ms"] / a["target_job_decode_ms"]
    lines.append(f"{'two-job c, both alone':34s} {two_job_alone:10.3f}")
    for k, v in cross.items():
        lines.append(f"{'two-job c, ' + k:34s} {v:10.3f} {'':10s} {v / two_job_alone:10.3f}")
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "timing_stability.json").write_text(json.dumps(
        {"settings": S, "busy": args.busy, "device": device_name("cpu"), "runs": runs, "median": med,
         "two_job_cross": cross, "two_job_alone": two_job_alone}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
