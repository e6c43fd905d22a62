"""Exported acceptance profiles: one JSON per dataset x draft x target x decoding.

results/acceptance/profiles/{dataset}__{draft}__{target}__{decoding}.json carries, per gamma that
was measured (a greedy replay, or a real loop under sampling), what a user needs to judge or
simulate the pair in a serving engine: the per-round accepted-length histogram, the conditional
and marginal per-position rates (both: publishing only one invites a silent misread), the mean
accepted length, alpha and c with their intervals, c's device, the checks, and a vLLM
`speculative_config` fragment whose `synthetic_acceptance_rates` are the per-position MARGINALS,
length gamma, non-increasing (vLLM simulates a draft it cannot run: a cross-modal one).

Field names follow NVIDIA Model-Optimizer's speculation_profile.json where it has one
(conditional_accept_rates, marginal_accept_rates, accept_length_model), vLLM's where it has one
(acceptance_histogram, num_speculative_tokens, rejection_sample_method, synthetic_acceptance_rates),
else this project's column names (acceptance-metrics.md). schemas/profile.schema.yaml is the schema;
every profile is validated against it (and the lengths it cannot express) before it is written.

Nothing here measures or predicts: every number is copied from the acceptance tables (summary,
histograms, histogram_checks), read by column name; a column a table lacks (c when no timing was
available, device before the timing job writes one) gives null.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Sequence

import polars as pl
import yaml

from . import histograms as H
from .artifacts import atomic_dir
from .specs import Run

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "profile.schema.yaml"
FORMAT = "specalign.acceptance_profile"
FORMAT_VERSION = 1

CONVENTIONS = {
    "acceptance_histogram": "index j = verify rounds that accepted exactly j draft tokens, j = 0..gamma "
                            "(vLLM/SGLang/TensorRT-LLM acceptance histogram)",
    "marginal_accept_rates": "P(accepted >= i) over every round, i = 1..gamma (unconditional, 'joint')",
    "conditional_accept_rates": "P(position i accepted | position i-1 accepted) = marginal_i / marginal_(i-1)",
    "mean_accepted_length": "tau = 1 + mean accepted per round (bonus token included) = 1 + sum of marginals",
    "token_acceptance_rate": "sum accepted / sum drafted (vLLM 'acceptance rate'), proposals past the answer counted",
    "alpha": "Leviathan alpha = mean over the target's stream of sum_x min(p, q) (greedy: argmax match rate)",
    "alpha_argmax": "mean over the target's stream of p_target(argmax q): the acceptance of an argmax-drafting "
                    "engine (null where the tables do not have it)",
    "c": "draft / target decode time per token, measured; its device says where",
    "synthetic_acceptance_rates": "vLLM speculative_config: the marginal_accept_rates of this gamma",
}


def filename(keys: dict) -> str:
    return f"{keys['dataset']}__{keys['draft']}__{keys['target']}__{keys['decoding']}.json"


def _num(x):
    """A JSON number or null: NaN and None (nothing measured) both become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _interval(row: dict, name: str) -> dict:
    return {"value": _num(row.get(name)), "lo": _num(row.get(f"{name}_lo")), "hi": _num(row.get(f"{name}_hi"))}


def gamma_entry(row: dict, hist: Sequence[int], check: dict) -> dict:
    """One gamma of a profile from its summary row, its histogram and its check row."""
    g = int(row["gamma"])
    m = H.marginals(hist)
    marginal = [float(x) for x in m]
    return {
        "gamma": g,
        "method": row["method"],
        "n_samples": int(row["n_samples"]),
        "rounds": int(sum(int(x) for x in hist)),
        "drafted": None if row.get("drafted") is None else int(row["drafted"]),
        "accepted": int(check["histogram_accepted"]),
        "acceptance_histogram": [int(x) for x in hist],
        "conditional_accept_rates": [_num(x) for x in H.conditionals(m)],
        "marginal_accept_rates": marginal,
        "mean_accepted_length": _num(H.mean_accepted_length(hist)),
        "token_acceptance_rate": _num(row.get("token_acceptance_rate")),
        "alpha": _interval(row, "leviathan_alpha"),
        "alpha_argmax": _interval(row, "alpha_argmax"),
        "c": {**_interval(row, "c"), "device": row.get("device")},
        "checks": {
            "histogram_sums_to_rounds": bool(check["histogram_sums_to_rounds"]),
            "histogram_reproduces_accepted": bool(check["histogram_reproduces_accepted"]),
            "mean_consistent": bool(check["mean_consistent"]),
            "mean_tolerance": H.MEAN_TOLERANCE,
            "marginals_non_increasing": bool(check["marginals_non_increasing"]),
            "passed": bool(check["passed"]),
        },
        "vllm_speculative_config": {"num_speculative_tokens": g, "rejection_sample_method": "synthetic",
                                    "synthetic_acceptance_rates": marginal},
    }


def build(run: Run, summary: pl.DataFrame, histograms: pl.DataFrame, checks: pl.DataFrame) -> dict:
    """The profile of one run: a gamma entry for every summary row of the run whose method measured
    rounds (greedy_replay, loop; iid_from_alpha rows measured none and are left out)."""
    keys = run.keys
    mine = [r for r in summary.iter_rows(named=True) if all(r[k] == keys[k] for k in H.KEYS)] \
        if summary.height else []
    hists = {(k["gamma"], k["method"]): h for k, h in H.groups(histograms) if all(k[c] == keys[c] for c in H.KEYS)}
    chk = {(r["gamma"], r["method"]): r for r in checks.iter_rows(named=True)
           if all(r[c] == keys[c] for c in H.KEYS)} if checks.height else {}
    entries = []
    for row in sorted(mine, key=lambda r: r["gamma"]):
        k = (int(row["gamma"]), row["method"])
        if k in hists:
            entries.append(gamma_entry(row, hists[k], chk[k]))
    d = run.decoding
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        **keys,
        "decoding_params": {"do_sample": d.do_sample, "temperature": d.temperature if d.do_sample else None,
                            "top_p": d.top_p if d.do_sample else None, "max_new_tokens": d.max_new_tokens},
        # each gamma's rounds were replayed or run at that gamma, not derived from another one's
        "accept_length_model": "measured_per_k",
        "conventions": CONVENTIONS,
        "gammas": entries,
    }


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def validate(profile: dict, name: str = "profile") -> None:
    """schemas/profile.schema.yaml, then what JSON Schema cannot say (lengths that depend on gamma,
    the vLLM rates being the marginals); the error names the profile and the gamma."""
    import jsonschema

    try:
        jsonschema.validate(profile, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        raise ValueError(f"{name}: {where or '(top)'}: {e.message}") from None
    for e in profile["gammas"]:
        g = e["gamma"]
        lengths = {"acceptance_histogram": g + 1, "conditional_accept_rates": g, "marginal_accept_rates": g}
        for field, want in lengths.items():
            if len(e[field]) != want:
                raise ValueError(f"{name}: gamma {g}: {field} has {len(e[field])} entries, not {want}")
        vllm = e["vllm_speculative_config"]
        if vllm["num_speculative_tokens"] != g or vllm["synthetic_acceptance_rates"] != e["marginal_accept_rates"]:
            raise ValueError(f"{name}: gamma {g}: the vLLM config is not this gamma's marginals")
        if any(b > a for a, b in zip(e["marginal_accept_rates"], e["marginal_accept_rates"][1:])):
            raise ValueError(f"{name}: gamma {g}: marginal_accept_rates increase: {e['marginal_accept_rates']}")


def dumps(profile: dict) -> str:
    # allow_nan=False: NaN is not JSON; _num turns every undefined number into null first
    return json.dumps(profile, indent=2, sort_keys=True, allow_nan=False) + "\n"


def write_all(runs: Sequence[Run], tables: dict[str, pl.DataFrame], directory: str | Path) -> list[str]:
    """Every run's profile, validated, into `directory` (replaced whole, atomically: a run that left
    the config leaves no stale profile behind). Returns the file names written."""
    names = []
    with atomic_dir(directory) as tmp:
        for run in runs:
            profile = build(run, tables["summary"], tables["histograms"], tables["histogram_checks"])
            name = filename(run.keys)
            validate(profile, name)
            (tmp / name).write_text(dumps(profile), encoding="utf-8")
            names.append(name)
    return names
