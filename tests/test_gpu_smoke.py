"""bench/gpu_smoke.sh on the CPU, as CI runs it: every stage on tiny models, float32.

The GPU run (cuda, bfloat16) happens only on a lent device; this keeps the script from rotting:
it must exit 0 with every check that can run on a CPU PASSed by name (not merely "no FAIL"), the
one CUDA-only check SKIPped with its reason, and the JSON record complete. A second run with the
draft's KV-cache rollback broken shows the loop check is not vacuous: it must FAIL there.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(PASS|FAIL|SKIP) (\w+)")
COUNT = re.compile(r"^gpu_smoke: (\d+) passed, (\d+) failed, (\d+) skipped")
# every check a CPU runs; int4_weight is CUDA-only
ON_CPU = ("assets", "load_backends", "generate_batched", "resource_plan", "score_greedy", "score_sampled", "ranks",
          "tree_replay", "score_ablation", "speculative_greedy", "speculative_sampled", "speculative_sampled_self",
          "timing", "timing_summary", "self_draft_int8", "self_draft_truncated",
          "distill_ce_lora", "distill_kl", "distill_tv_lora", "acceptance_tables", "report")


def statuses(stdout: str) -> dict[str, str]:
    found = [LINE.match(line) for line in stdout.splitlines()]
    return {m.group(2): m.group(1) for m in found if m}


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    env = dict(os.environ, OUT=str(out), SMOKE_PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_smoke.sh"), "--device", "cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=400)
    return proc, out


def test_every_cpu_check_passes(cpu_run):
    proc, _ = cpu_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = statuses(proc.stdout)
    assert [n for n, s in got.items() if s == "FAIL"] == []
    assert {n: got.get(n) for n in ON_CPU} == {n: "PASS" for n in ON_CPU}
    assert got["self_draft_int4"] == "SKIP"
    counts = [COUNT.match(line) for line in proc.stdout.splitlines()]
    (count,) = [m for m in counts if m]
    assert tuple(int(x) for x in count.groups()) == (len(ON_CPU), 0, len(got) - len(ON_CPU))


def test_the_record_names_device_dtype_and_each_checks_seconds(cpu_run):
    proc, out = cpu_run
    rec = json.loads((out / "gpu_smoke.json").read_text())
    assert (rec["device"], rec["dtype"]) == ("cpu", "float32")
    assert rec["device_name"] and rec["torch"] and rec["transformers"]
    assert [c["name"] for c in rec["checks"]] == list(statuses(proc.stdout))
    assert all(c["seconds"] >= 0 for c in rec["checks"])
    assert (rec["passed"], rec["failed"]) == (len(ON_CPU), 0)
    int4 = next(c for c in rec["checks"] if c["name"] == "self_draft_int4")
    assert "runs on cuda only" in int4["why"]
    # float32: the loop is exact, so no sample may differ from the target's stream or the replay
    loop = next(c for c in rec["checks"] if c["name"] == "speculative_greedy")["detail"]
    assert loop["g1_differ"] == loop["g3_differ"] == 0
    # the timing job's rows name the CPU, and every timed pass was bracketed by synchronisations
    timing = next(c for c in rec["checks"] if c["name"] == "timing")["detail"]
    assert timing["device_column"].startswith("cpu (") and timing["syncs"] >= 2 * timing["rows"] > 0
    assert timing["cuda_syncs"] == 0
    assert next(c for c in rec["checks"] if c["name"] == "score_ablation")["detail"]["draft_logprob_moved"] > 0
    assert (out / "gpu_smoke_report.md").read_text().startswith("# specalign report")
    assert "gpu_smoke: " in (out / "gpu_smoke.log").read_text()


def test_a_broken_draft_rollback_fails_the_loop_check(tmp_path, monkeypatch, capsys):
    """The loop keeps the draft's rejected proposals in its KV cache: the output stays the target's,
    the accepted counts stop being the replay's, and the smoke must say so."""
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO / "bench" / "gpu_smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    from specalign import speculative

    monkeypatch.setattr(speculative, "_crop_draft_cache", lambda cache, n: None)
    rc = smoke.main(["--device", "cpu", "--out", str(tmp_path)])
    got = statuses(capsys.readouterr().out)
    assert rc == 1
    assert got["speculative_greedy"] == "FAIL"
    assert got["generate_batched"] == got["score_greedy"] == "PASS"
