"""The acceptance tables: one run = one dataset x draft x target x decoding.

Puts together what the stages wrote — teacher-forced scores, free-running token
streams, real-loop rounds — into the rows of results/acceptance/*.csv. The metric
definitions themselves live in acceptance.py; this module only decides which
number goes in which row and column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import polars as pl

from . import acceptance as acc
from .artifacts import read_streams


@dataclass
class Run:
    dataset: str
    pair: str
    draft: str
    target: str
    decoding: str
    scores: str
    translation: str
    target_vocab: str = ""
    draft_tokens: list[str] = field(default_factory=list)
    target_tokens: list[str] = field(default_factory=list)
    rounds: list[str] = field(default_factory=list)

    @property
    def keys(self) -> dict:
        return {"dataset": self.dataset, "draft": self.draft, "target": self.target, "decoding": self.decoding}


def draft_to_target(translation_path: str) -> dict[int, list[int]]:
    t = pl.read_parquet(translation_path, columns=["draft_id", "target_ids"])
    return dict(zip(t["draft_id"].to_list(), t["target_ids"].to_list()))


def timings(token_files: list[str]) -> tuple[float, float]:
    """(mean prefill ms per sample, mean decode ms per token after the first)."""
    df = pl.read_parquet(token_files, columns=["sample_id", "position", "prefill_ms", "decode_ms"])
    prefill = df.group_by("sample_id").agg(pl.col("prefill_ms").first())["prefill_ms"].mean()
    decode = df.filter(pl.col("position") > 0)["decode_ms"].mean()
    return float(prefill or math.nan), float(decode if decode is not None else math.nan)


def positional(run: Run, targets: dict[str, list[int]]) -> acc.PositionalMatch:
    """The seed's measure: free-running draft output (mapped to target ids) vs target output."""
    d2t = draft_to_target(run.translation)
    drafts = {sid: [t for d in ids for t in d2t.get(d, [-1]) or [-1]]
              for sid, ids in read_streams(run.draft_tokens).items()}
    return acc.positional_match_rate(drafts, targets)


def greedy(decoding_cfg: dict) -> bool:
    return not decoding_cfg.get("do_sample", False)


def run_tables(run: Run, decoding_cfg: dict, gammas: list[int], n_boot: int):
    """(summary rows, per-position rows, cost rows, loop-vs-replay rows) for one run."""
    scores = pl.read_parquet(run.scores)
    loops = {}  # gamma -> the loop's rounds over all shards
    if run.rounds:
        every = pl.read_parquet(run.rounds)
        loops = {int(g): every.filter(pl.col("gamma") == g) for g in every["gamma"].unique().sort()}
    # every gamma the loop ran at gets a replay row too, so the two can be compared
    gammas = sorted(set(gammas) | set(loops))
    replay = acc.replay_summary(scores, gammas, n_boot=n_boot)
    targets = read_streams(run.target_tokens)  # read once: the positional match and the loop check use it
    pm = positional(run, targets)
    d_pre, d_dec = timings(run.draft_tokens)
    t_pre, t_dec = timings(run.target_tokens)
    alpha = float(replay["leviathan_alpha"][0]) if replay.height else math.nan
    # the answers' real mean length: a length budget of 128 would understate the prefill's share
    mean_len = scores.group_by("sample_id").len()["len"].mean() if scores.height else None
    measured = [d_pre, d_dec, t_pre, t_dec, alpha]
    cost = None
    if all(math.isfinite(x) for x in measured) and mean_len:
        cost = acc.cost_model(d_pre, d_dec, t_pre, t_dec, alpha, gammas, new_tokens=max(1, round(mean_len)))
    loop_summ = {g: acc.rounds_summary(r, n_boot=n_boot).row(0, named=True) for g, r in loops.items()}

    is_greedy = greedy(decoding_cfg)
    summary, per_pos, loop_rows = [], [], []
    for row in replay.iter_rows(named=True):
        g = row["gamma"]
        out = {**run.keys, "gamma": g}
        if is_greedy:
            # exact: greedy speculative decoding replayed from the teacher-forced matches
            out.update({k: row[k] for k in ("n_samples", "rounds", "drafted", "accepted", "token_acceptance_rate",
                                             "tau", "tokens_per_call")})
            out["method"] = "greedy_replay"
            ci = row
        elif g in loop_summ:
            ls = loop_summ[g]
            out.update({k: ls[k] for k in ("n_samples", "rounds", "drafted", "accepted", "token_acceptance_rate",
                                            "tau", "tokens_per_call")})
            out["method"] = "loop"
            ci = ls
        else:
            # sampling without a loop run at this gamma: the i.i.d. prediction from alpha
            out.update({"n_samples": row["n_samples"], "rounds": None, "drafted": None, "accepted": None,
                        "token_acceptance_rate": acc.iid_token_acceptance(alpha, g),
                        "tau": acc.expected_tokens_per_call(alpha, g), "tokens_per_call": None})
            out["method"] = "iid_from_alpha"
            ci = {}
        out["leviathan_alpha"] = row["leviathan_alpha"]
        out["positional_match_rate"] = pm.positional_match_rate
        for k in ("token_acceptance_rate_lo", "token_acceptance_rate_hi", "tau_lo", "tau_hi"):
            out[k] = ci.get(k)
        out.update({
            "leviathan_alpha_lo": row["leviathan_alpha_lo"], "leviathan_alpha_hi": row["leviathan_alpha_hi"],
            "mapped_mass": row["mapped_mass"], "iid_token_acceptance": row["iid_token_acceptance"],
            "positional_match_rate_min_len": pm.positional_match_rate_min_len,
            "loop_token_acceptance_rate": loop_summ[g]["token_acceptance_rate"] if g in loop_summ else None,
            "loop_tau": loop_summ[g]["tau"] if g in loop_summ else None,
        })
        if cost is not None:
            c = cost.filter(pl.col("gamma") == g).row(0, named=True)
            out.update({"c": c["c"], "expected_speedup_iid": c["speedup_iid"], "latency_speedup": c["latency_speedup"],
                        "best_gamma": c["best_gamma"]})
        summary.append(out)
        src = ci if ci else {}
        for i in range(1, g + 1):
            per_pos.append({**run.keys, "gamma": g, "position": i, "method": out["method"],
                            "unconditional": src.get(f"pos{i}_uncond"), "conditional": src.get(f"pos{i}_cond")})

    for g, r in sorted(loops.items()):
        loop_rows.append(loop_vs_replay(run, scores, r, g, is_greedy, loop_summ[g], replay, targets))
    cost_rows = [{**run.keys, **c, "draft_prefill_ms": d_pre, "draft_decode_ms": d_dec, "target_prefill_ms": t_pre,
                  "target_decode_ms": t_dec} for c in (cost.iter_rows(named=True) if cost is not None else [])]
    return summary, per_pos, cost_rows, loop_rows


def loop_vs_replay(run: Run, scores: pl.DataFrame, rounds: pl.DataFrame, gamma: int, is_greedy: bool,
                   loop_summary: dict, replay: pl.DataFrame, targets: dict[str, list[int]]) -> dict:
    """Does the real loop do what the replay says? For greedy decoding it must, round for round."""
    # the greedy replay along the target's stream is comparable with the loop only under greedy decoding
    rep = replay.filter(pl.col("gamma") == gamma).row(0, named=True) if is_greedy else {}
    row = {**run.keys, "gamma": gamma, "loop_rounds": loop_summary["rounds"], "replay_rounds": rep.get("rounds"),
           "loop_accepted": loop_summary["accepted"], "replay_accepted": rep.get("accepted"),
           "loop_drafted": loop_summary["drafted"], "replay_drafted": rep.get("drafted"),
           "loop_token_acceptance_rate": loop_summary["token_acceptance_rate"],
           "replay_token_acceptance_rate": rep.get("token_acceptance_rate")}
    cols = ["sample_id", "round", "start", "drafted", "accepted", "emitted"]
    if is_greedy:
        replayed = acc.replay_rounds_table(scores, gamma).select(cols).sort("sample_id", "round")
        looped = rounds.select(cols).sort("sample_id", "round")
        row["rounds_identical"] = replayed.equals(looped)
        # greedy speculative output must be the target's greedy output
        out = rounds.sort("sample_id", "round").group_by("sample_id", maintain_order=True).agg(
            pl.col("tokens").list.explode())
        row["output_equals_target"] = all(targets.get(s) == list(t) for s, t in zip(out["sample_id"], out["tokens"]))
    else:
        row["rounds_identical"] = None
        row["output_equals_target"] = None
    # the step-by-step check runs for greedy decoding only (sampled acceptance has no argmax to flip)
    row["verify_flip_rate"] = float(rounds["verify_flip"].mean()) if is_greedy else None
    per_sample = rounds.group_by("sample_id").agg(
        (pl.col("draft_ms").sum() + pl.col("verify_ms").sum()).alias("loop_ms"),
        pl.col("target_only_ms").first())
    row["loop_ms"] = float(per_sample["loop_ms"].sum())
    row["target_only_ms"] = float(per_sample["target_only_ms"].sum())
    row["measured_speedup"] = row["target_only_ms"] / row["loop_ms"] if row["loop_ms"] > 0 else None
    return row
