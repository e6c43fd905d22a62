#!/usr/bin/env bash
# The GPU benchmark (bench/gpu_bench.py) in one command, for the H200 device machine.
#
# 1. HERE (a machine that reaches PyPI), once per checkout:
#        bash bench/gpu.sh --prepare
#    downloads the transformers wheel pinned in pyproject.toml into .whl/ (git-ignored through
#    .git/info/exclude). The GPU image has an older transformers (5.17 seen) whose models take
#    `past_key_values=` instead of `cache=`: specalign would silently run without a KV cache there.
# 2. ON THE GPU MACHINE (device tool: carry [".whl"], timeout_s 420):
#        bash bench/gpu.sh [gpu_bench.py options]
#    installs .whl/*.whl into /tmp/site (no network needed), then runs the 7B-shaped benchmark in
#    bf16 under `timeout` (BENCH_TIMEOUT, default 345 s; the script's own budget is 300 s).
#    Results: $OUT/gpu_bench.json, gpu_bench.txt, gpu_bench.log ($OUT unset: ./bench_out).
#    Sections run in order cost, reference, noise, loop, flips, bandwidth, drafts; the last two
#    (target decode vs the ASSUMED --bandwidth-gbs bound at batch 1/16 and context 640/600/2100/4600;
#    int8_weight / int4_weight / truncated drafts: c and the i.i.d. speedup at an ASSUMED --alpha)
#    come after the loop, so the 300 s budget may skip them. To give them the time, e.g.:
#        bash bench/gpu.sh --loop-prompts 2 --gammas 2,4 --chunks 1,5,full --prompts 4
#    or raise both limits: BENCH_TIMEOUT=520 bash bench/gpu.sh --budget-s 470  (timeout_s 590).
#    A variant that cannot run (torchao missing, a kernel unavailable) is an error string in the JSON.
#
# On a CPU-only machine: bash bench/gpu.sh --tiny   (a 2-layer 64-wide model, seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    version=$(sed -n 's/.*"transformers==\([0-9.]*\)".*/\1/p' pyproject.toml)
    [[ -n "$version" ]] || { echo "no transformers pin found in pyproject.toml" >&2; exit 1; }
    mkdir -p .whl
    if [[ -d .git ]] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then
        echo '/.whl/' >> .git/info/exclude
    fi
    py=python3
    [[ -x .venv/bin/python ]] && py=.venv/bin/python
    "$py" -m pip download --quiet --no-deps --only-binary=:all: -d .whl "transformers==$version"
    ls -l .whl
    exit 0
fi

out="${OUT:-bench_out}"
mkdir -p "$out"

# Python: the project's venv when it sees a GPU (or --tiny), else the image's python3 (torch + CUDA).
py=python3
if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    py=.venv/bin/python
fi
if [[ " $* " == *" --tiny "* && -x .venv/bin/python ]]; then
    py=.venv/bin/python
fi

shopt -s nullglob
wheels=(.whl/*.whl)
if (( ${#wheels[@]} )); then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

export PYTHONUNBUFFERED=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm --format=csv || true
"$py" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "| transformers", transformers.__version__)'

set -o pipefail
timeout "${BENCH_TIMEOUT:-345}" "$py" bench/gpu_bench.py --out "$out" "$@" 2>&1 | tee "$out/gpu_bench.log"
