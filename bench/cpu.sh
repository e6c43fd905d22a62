#!/usr/bin/env bash
# The CPU benchmark (bench/cpu_bench.py) in one command: about 9-13 minutes on a (shared) 2-core machine.
#
#     bash bench/cpu.sh            # full run: bench_out/cpu_bench.{json,txt}, bench_out/artifacts/, docs/benchmarks.md
#     bash bench/cpu.sh --quick    # every section at tiny sizes (< 60 s; tests/test_bench_cpu.py runs it)
#
# Any other option goes to cpu_bench.py (--out DIR, --doc PATH, --no-doc, --sections a,b).
# torch is pinned to one thread: the machine has 2 cores shared with other work.
set -euo pipefail
cd "$(dirname "$0")/.."
py=python3
[[ -x .venv/bin/python ]] && py=.venv/bin/python
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
exec "$py" bench/cpu_bench.py "$@"
