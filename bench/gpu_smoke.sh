#!/usr/bin/env bash
# Every stage of specalign on tiny models on one device, in a few minutes (bench/gpu_smoke.py): one line
# PASS / FAIL / SKIP per check, a count line, exit status 1 on any FAIL.
#
# 1. HERE (a machine that reaches PyPI), once per checkout:
#        bash bench/gpu_smoke.sh --prepare
#    downloads into .whl/ (git-ignored through .git/info/exclude) what the GPU image lacks, as x86-64
#    CPython 3.12 wheels: the transformers, torchao and peft pinned in pyproject.toml (the image's
#    transformers 5.17 is too old; torchao makes the quantized self-drafts) and av (the dataset reader
#    imports PyAV), ~53 MB; the device tool carries at most 64 MiB with the working tree (~4 MB).
#    polars (a 54 MB wheel) does not fit beside them: on the GPU the acceptance tables and the report
#    are SKIPped (CPU-only code, which the --device cpu run covers). bench/gpu.sh uses the same .whl/.
# 2. ON THE GPU MACHINE (device tool: carry [".whl"], timeout_s 300):
#        bash bench/gpu_smoke.sh
#    installs .whl/*.whl into /tmp/site (no network needed) and runs every check on cuda in bfloat16
#    under `timeout` (SMOKE_TIMEOUT, default 240 s). Results in $OUT (unset: ./bench_out):
#    gpu_smoke.json (device, dtype, versions, each check's seconds and details), gpu_smoke.log,
#    gpu_smoke_report.md (where polars is installed).
#
# CI and any CPU machine: bash bench/gpu_smoke.sh --device cpu   (float32, ~30 s; tests/test_gpu_smoke.py)
# Options go to bench/gpu_smoke.py (--dtype, --samples, --new-tokens, ...; --help). SMOKE_PYTHON picks the
# interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    pin() { sed -n "s/.*\"$1==\([0-9.]*\)\".*/\1/p" pyproject.toml; }
    py=python3
    [[ -x .venv/bin/python ]] && py=.venv/bin/python
    # av is not pinned in pyproject.toml: the version this checkout's environment runs, else the newest
    av=$("$py" -c 'import importlib.metadata as m; print("==" + m.version("av"))' 2>/dev/null || true)
    wanted=("transformers==$(pin transformers)" "torchao==$(pin torchao)" "peft==$(pin peft)" "av$av")
    for w in "${wanted[@]}"; do
        [[ "$w" != *== ]] || { echo "no pin for ${w%==} found in pyproject.toml" >&2; exit 1; }
    done
    mkdir -p .whl
    if [[ -d .git ]] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then
        echo '/.whl/' >> .git/info/exclude
    fi
    # the GPU machine's interpreter: x86-64 Linux, CPython 3.12
    "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${wanted[@]}"
    ls -l .whl
    total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
    echo "wheels: $((total / 1048576)) MiB; the device tool carries at most 64 MiB with the working tree"
    (( total < 60 * 1048576 )) || { echo "too large to carry: remove stale wheels from .whl/" >&2; exit 1; }
    exit 0
fi

out="${OUT:-bench_out}"
mkdir -p "$out"

# Python: SMOKE_PYTHON when set (the tests: their own interpreter); else the project's venv on the CPU or
# when it sees a GPU; else the image's python3 (torch + CUDA) with the carried wheels.
py=python3
if [[ -n "${SMOKE_PYTHON:-}" ]]; then
    py=$SMOKE_PYTHON
elif [[ -x .venv/bin/python ]]; then
    if [[ " $* " == *" --device cpu "* || " $* " == *" --device=cpu "* ]] ||
       .venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
        py=.venv/bin/python
    fi
fi

shopt -s nullglob
wheels=(.whl/*.whl)
if [[ "$py" == python3 ]] && (( ${#wheels[@]} )); then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$py" -c 'import av, transformers' 2>/dev/null ||
    echo "note: $py lacks av or transformers; run 'bash bench/gpu_smoke.sh --prepare' where PyPI is reachable and carry .whl" >&2

cores=$(nproc 2>/dev/null || echo 4)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( cores < 4 ? cores : 4 ))}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv || true

timeout "${SMOKE_TIMEOUT:-240}" "$py" bench/gpu_smoke.py --out "$out" "$@" 2>&1 | tee "$out/gpu_smoke.log"
