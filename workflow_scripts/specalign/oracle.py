"""Oracle bounds from the stored match bits: what no deployable system can beat, beside what one got.

Two oracles, each computed from the teacher-forced "scores" tables only (no model runs), and each
written beside the real (measured) figure it bounds, in results/acceptance/oracle.csv:

1. The ROUTER across drafts (`kind` = oracle_router). The drafts configured for one target are all
   scored along that target's same streams (same dataset and decoding), so for every clip we know
   how each draft would have done. The oracle router sends each clip to the draft that needs the
   FEWEST target calls (rounds) on it at that gamma; ties go to the one accepting more tokens, then
   fewer drafted, then the first by name. Why fewer rounds: every draft emits the same N tokens of the
   clip, so fewer target calls is the whole benefit; and with that tie-break the router's pooled tau
   and tokens_per_call are >= every single draft's (proof in `route`).
   Its alpha is the per-clip best draft by sum of summin (the router that knows each clip's expected
   acceptance): valid under sampled decodings too, where summin is an expectation. Its speedup_at_c
   charges each clip's draft steps at that clip's draft's c; it is not guaranteed to beat every draft's
   (the router picks by target calls, and a cheaper draft may need more of them).

2. The PER-ROUND ORACLE GAMMA (`kind` = oracle_gamma), per run. "Chosen perfectly" means: in each
   round the draft proposes exactly the tokens the target will accept,
       g_r = min(run of matches from s, gamma_cap, max_new_tokens - s - 1, N - s - 1),
   so every proposal is accepted (token_acceptance_rate = 1 by construction) and every round emits
   g_r + 1 tokens: the target's own token at the first mismatch, and the stream's last token, come
   from the verify pass itself, so no draft step is spent on them. g_r = 0 (a plain target step)
   where the draft misses the very next token. `gamma_cap` = the largest configured gamma (what a
   chooser among 0..max(gammas) could do) and, on a second row, none (any lookahead).
   Why this is THE best choice, whatever the draft costs: with target steps costing 1 and draft steps
   c (the cost model of `speedup_at_c`), a policy's time is R + c D (R rounds, D drafted) and
   D >= N - R (a round emits at most its proposals + 1); the oracle takes the fewest rounds any
   policy with g <= gamma_cap can (`oracle_gamma_replay`) and exactly D = N - R, so for every c in
   [0, 1] no fixed or adaptive gamma <= gamma_cap is faster (c > 1: nothing beats plain decoding).
   Note that its ROUNDS at gamma_cap equal the fixed gamma_cap's (a = min(gamma, run) there too):
   what the oracle saves is the rejected proposals, so its gain shows in speedup_at_c, not in
   tokens_per_call; tau (which counts a bonus token also after an accepted EOS, never emitted) can
   even sit below the fixed gamma's. Compare tokens_per_call and speedup_at_c.

Both are BOUNDS (`is_bound` true): knowing the match bits before drafting is impossible, so they say
how much headroom a router or an adaptive-gamma policy could have, never what one gets. Rows with
`kind` = measured are the real drafts at fixed gammas (the exact greedy replay), on the same clips.

Exact only for GREEDY decodings: there a round's acceptance is fixed by the match bits. Under
sampling a round's acceptance is random and the output leaves the target's stored stream, so the
round columns (rounds, tau, ...) of sampled runs are left empty (method `summin_expectation`): only
the alpha columns (means of summin, an expectation) are filled; oracle_gamma rows are greedy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from . import acceptance as acc
from .replay import Rounds, Streams, _check_gamma, _lockstep_rounds, _ratio, _run_lengths, replay
from .specs import Run

ROUTER = "oracle_router"   # the `draft` of router rows

COLUMNS = {
    "dataset": pl.String, "target": pl.String, "decoding": pl.String, "draft": pl.String,
    "kind": pl.String,          # measured | oracle_router | oracle_gamma
    "is_bound": pl.Boolean,     # true: an oracle (not a deployable system), false: a measurement
    "method": pl.String,        # greedy_replay | summin_expectation (sampled: round columns empty)
    "gamma": pl.Int64,          # fixed gamma (measured, oracle_router); empty on oracle_gamma rows
    "gamma_cap": pl.Int64,      # oracle_gamma: the largest gamma a round may take (empty: unbounded)
    "candidates": pl.String,    # oracle_router: the drafts it routes between (comma-separated)
    "routed": pl.String,        # oracle_router: clips sent to each draft at this gamma ("a:3,b:1")
    "n_samples": pl.Int64, "rounds": pl.Int64, "drafted": pl.Int64, "accepted": pl.Int64,
    "emitted": pl.Int64, "tau": pl.Float64, "tau_lo": pl.Float64, "tau_hi": pl.Float64,
    "tokens_per_call": pl.Float64, "token_acceptance_rate": pl.Float64,
    "mean_gamma": pl.Float64,   # oracle_gamma: mean proposals per round (drafted / rounds)
    "leviathan_alpha": pl.Float64,   # measured: the draft's; oracle_router: the per-clip best draft's
    "c": pl.Float64,            # measured: the draft's c (summary.csv, the run's timing job); router: empty
    "speedup_at_c": pl.Float64,      # PREDICTED by the round cost model from these rounds and c:
                                     # emitted / (rounds + c * drafted); prefills, verify length ignored
    "best_fixed_gamma": pl.Int64,    # oracle_gamma: the fixed gamma with the highest speedup_at_c
    "best_fixed_speedup_at_c": pl.Float64,   # ... and that speedup, the oracle's headroom is against it
}


@dataclass(frozen=True)
class Group:
    """The runs of one dataset x target x decoding: the drafts a router could choose between."""

    dataset: str
    target: str
    decoding: str
    greedy: bool
    runs: tuple[Run, ...]


def groups(runs: Sequence[Run]) -> list[Group]:
    """Runs grouped by dataset x target x decoding, drafts sorted by name (the router's tie order)."""
    by: dict[tuple, list[Run]] = {}
    for r in runs:
        by.setdefault((r.dataset, r.target, r.decoding.name), []).append(r)
    return [Group(d, t, dec, rs[0].decoding.greedy, tuple(sorted(rs, key=lambda r: r.draft)))
            for (d, t, dec), rs in sorted(by.items())]


# ------------------------------------------------------------------------------ shared clips
def shared_scores(scores: Mapping[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Each draft's scores restricted to the clips every draft scored, after checking that they lie
    along the same target streams (a router compares drafts on the same tokens, or on nothing)."""
    names = sorted(scores)
    ids = set.intersection(*(set(scores[n]["sample_id"].unique().to_list()) for n in names))
    out = {n: scores[n].filter(pl.col("sample_id").is_in(sorted(ids))).sort("sample_id", "position")
           for n in names}
    ref = out[names[0]].select("sample_id", "position", "target_token")
    for n in names[1:]:
        other = out[n].select("sample_id", "position", "target_token")
        if not ref.equals(other):
            raise ValueError(f"drafts {names[0]!r} and {n!r} were not scored along the same target streams "
                             "(sample_id, position, target_token differ on the clips both scored)")
    return out


# ------------------------------------------------------------------------------ router
@dataclass(frozen=True)
class Routed:
    """The router's rounds at one gamma and which draft each clip went to (index into `drafts`)."""

    rounds: Rounds
    drafts: list[str]
    choice: np.ndarray


def route(per_draft: Mapping[str, Rounds]) -> Routed:
    """Per clip, the draft with the fewest rounds (ties: more accepted, fewer drafted, first name).

    All drafts' Rounds must cover the same clips in the same order (same target streams).
    Why this dominates every draft d in pooled tau = sum(N + e) / sum(r) (N: a clip's tokens, e: 1 if
    its last round accepted the EOS, so accepted = N + e - r): per clip r* <= r_d; where r* = r_d the
    tie-break gives e* >= e_d; so E_d - E* <= k, the clips where the router's r* <= r_d - 1, and
    R_d >= R* + k. Then (S + E_d) / R_d <= (S + E* + k) / (R* + k) <= (S + E*) / R* because
    S + E* >= R* (every round emits >= 1 token). tokens_per_call = S / R dominates directly.
    """
    names = sorted(per_draft)
    first = per_draft[names[0]]
    for n in names[1:]:
        if per_draft[n].sample_ids != first.sample_ids:
            raise ValueError(f"drafts {names[0]!r} and {n!r} cover different clips")
    stats = []
    for n in names:
        r = per_draft[n]
        stats.append((r.per_sample(None), r.per_sample(r.accepted), r.per_sample(r.drafted)))
    rounds = np.stack([s[0] for s in stats])        # (drafts, clips)
    accepted = np.stack([s[1] for s in stats])
    drafted = np.stack([s[2] for s in stats])
    # lexsort along the drafts axis, the LAST key primary: fewest rounds, then most accepted, then
    # fewest drafted, then the first name; each clip's first draft in that order is its choice
    index = np.broadcast_to(np.arange(len(names))[:, None], rounds.shape)
    choice = np.lexsort((index, drafted, -accepted, rounds), axis=0)[0].astype(np.int64)
    parts = []
    for i, n in enumerate(names):
        r = per_draft[n]
        keep = choice[r.sample] == i
        parts.append((r.sample[keep], r.start[keep], r.drafted[keep], r.accepted[keep], r.emitted[keep]))
    cols = [np.concatenate(c) for c in zip(*parts)]
    order = np.argsort(cols[0], kind="stable")      # each draft's rounds are already in round order
    sample, start, drafted_r, accepted_r, emitted = (c[order] for c in cols)
    out = Rounds(list(first.sample_ids), sample, start, drafted_r, accepted_r, emitted, first.lengths)
    return Routed(out, names, choice)


def routed_alpha(scores: Mapping[str, pl.DataFrame]) -> float:
    """Pooled alpha of the router that sends each clip to the draft with the largest summin sum on it
    (all drafts share the clips' positions, so the best sum is the best mean)."""
    sums = [s.group_by("sample_id").agg(pl.col("summin").cast(pl.Float64).sum().alias(n), pl.len().alias("n"))
            for n, s in sorted(scores.items())]
    joined = sums[0]
    for part in sums[1:]:
        joined = joined.join(part.drop("n"), on="sample_id", how="inner")
    best = joined.select(pl.max_horizontal(sorted(scores))).to_series()
    return float(best.sum() / joined["n"].sum()) if joined.height else float("nan")


# ------------------------------------------------------------------------------ oracle gamma
def oracle_gamma_replay(streams: Streams, gamma_cap: int | None) -> Rounds:
    """Rounds when each round's gamma is chosen perfectly (module docstring):

        g = a = max(0, min(run of matches from s, gamma_cap, max_new_tokens - s - 1, N - s - 1))
        emitted = a + 1

    Why the fewest rounds of any policy with g <= gamma_cap: from s, one round can reach at most
    s' = min(N, s + 1 + min(cap, run(s), budget - s - 1)) (a round accepts no more than its run of
    matches and its g); the oracle always reaches it (N - s - 1 only moves the last token from an
    accepted proposal to the verify pass's own, s' is the same). s' is non-decreasing in s because
    run(s + 1) >= run(s) - 1, so by induction after k rounds the oracle is at or ahead of any policy.
    """
    if gamma_cap is not None:
        _check_gamma(gamma_cap)
    n = streams.lengths
    first = streams.offsets[:-1]
    run = _run_lengths(streams.matches, np.repeat(streams.offsets[1:], n))

    def step(active, sa):
        # run is capped at the stream's end; N - s - 1 leaves its last token to the verify pass
        g = np.minimum(np.minimum(run[first[active] + sa], streams.budgets[active] - sa - 1), n[active] - sa - 1)
        if gamma_cap is not None:
            g = np.minimum(g, gamma_cap)
        g = np.maximum(0, g)
        return g, g, g + 1

    return _lockstep_rounds(streams.sample_ids, n, step)


# ------------------------------------------------------------------------------ rows
_ROUND_COLUMNS = ("n_samples", "rounds", "drafted", "accepted", "emitted", "tau", "tau_lo", "tau_hi",
                  "tokens_per_call", "token_acceptance_rate")


def _round_columns(rounds: Rounds, n_boot: int) -> dict:
    """The round columns, through the one summary function the replay and the loop share."""
    gamma = max(1, int(rounds.drafted.max()) if len(rounds.drafted) else 1)
    row = acc._summarise_gamma(gamma, rounds, gamma, n_boot, 0)
    return {k: row[k] for k in _ROUND_COLUMNS}


def _alpha(scores: pl.DataFrame) -> float:
    return float(scores["summin"].cast(pl.Float64).mean()) if scores.height else float("nan")


def _known(c) -> bool:
    return c is not None and bool(np.isfinite(c))


def speedup_at_c(emitted: float, rounds: float, drafted: float, c: float | None) -> float | None:
    """PREDICTED by the round cost model: plain decoding spends one target step per token, speculative
    decoding one target step per round plus c per drafted token: emitted / (rounds + c * drafted).
    Prefills and the verify pass's length are ignored (summary.csv's payoff columns count them)."""
    if not _known(c) or not rounds:
        return None
    return float(emitted) / (float(rounds) + float(c) * float(drafted))


def group_rows(group: Group, scores: Mapping[str, pl.DataFrame], gammas: Sequence[int], n_boot: int,
               costs: Mapping[str, float] | None = None) -> list[dict]:
    """oracle.csv's rows of one group: each draft measured at each gamma, the router at each gamma
    (only with two drafts or more), and each draft's oracle gamma (greedy only), all on the clips
    every draft of the group scored (`shared_scores`). `costs`: draft -> its measured c (none: the
    speedup_at_c columns stay empty)."""
    gammas = sorted({_check_gamma(g) for g in gammas})
    costs = dict(costs or {})
    shared = shared_scores(scores)
    names = sorted(shared)
    keys = {"dataset": group.dataset, "target": group.target, "decoding": group.decoding}
    method = "greedy_replay" if group.greedy else "summin_expectation"
    streams = {n: acc.streams(shared[n]) for n in names}
    n_samples = len(streams[names[0]].sample_ids)
    rows = []
    router_alpha = routed_alpha(shared) if len(names) > 1 else None
    best: dict[str, tuple[int | None, float | None]] = {n: (None, None) for n in names}
    for g in gammas:
        replays = {n: replay(streams[n], g) for n in names} if group.greedy else {}
        for n in names:
            row = {**keys, "draft": n, "kind": "measured", "is_bound": False, "method": method, "gamma": g,
                   "n_samples": n_samples, "leviathan_alpha": _alpha(shared[n]), "c": costs.get(n)}
            if group.greedy:
                row.update(_round_columns(replays[n], n_boot))
                row["speedup_at_c"] = speedup_at_c(row["emitted"], row["rounds"], row["drafted"], costs.get(n))
                if row["speedup_at_c"] is not None and (best[n][1] is None or row["speedup_at_c"] > best[n][1]):
                    best[n] = (g, row["speedup_at_c"])
            rows.append(row)
        if len(names) > 1:
            row = {**keys, "draft": ROUTER, "kind": "oracle_router", "is_bound": True, "method": method,
                   "gamma": g, "candidates": ",".join(names), "n_samples": n_samples,
                   "leviathan_alpha": router_alpha}
            if group.greedy:
                routed = route(replays)
                counts = np.bincount(routed.choice, minlength=len(names))
                row["routed"] = ",".join(f"{n}:{int(c)}" for n, c in zip(names, counts))
                row.update(_round_columns(routed.rounds, n_boot))
                if all(_known(costs.get(n)) for n in names):
                    # each clip's draft steps cost its own draft's c
                    c_round = np.array([costs[n] for n in names])[routed.choice[routed.rounds.sample]]
                    cost = row["rounds"] + float(np.sum(c_round * routed.rounds.drafted))
                    row["speedup_at_c"] = float(row["emitted"]) / cost if cost else None
            rows.append(row)
    if group.greedy:
        for n in names:
            for cap in (max(gammas), None):
                cols = _round_columns(oracle_gamma_replay(streams[n], cap), n_boot)
                rows.append({**keys, "draft": n, "kind": "oracle_gamma", "is_bound": True, "method": method,
                             "gamma_cap": cap, **cols, "leviathan_alpha": _alpha(shared[n]), "c": costs.get(n),
                             "speedup_at_c": speedup_at_c(cols["emitted"], cols["rounds"], cols["drafted"],
                                                          costs.get(n)),
                             "mean_gamma": _ratio(cols["drafted"], cols["rounds"]),
                             "best_fixed_gamma": best[n][0], "best_fixed_speedup_at_c": best[n][1]})
    return rows


def frame(rows: list[dict]) -> pl.DataFrame:
    """oracle.csv: COLUMNS in order, a null wherever a row has no such figure."""
    return pl.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], schema=COLUMNS, orient="row")


def run_costs(summary: pl.DataFrame) -> dict[tuple[str, str, str, str], float]:
    """(dataset, draft, target, decoding) -> the measured c of summary.csv's plain rows (the run's one
    paired timing job; the same on every gamma row), for `oracle_table`. Runs without c are left out."""
    if summary.is_empty() or "c" not in summary.columns:
        return {}
    plain = summary.filter(pl.col("ablation").is_null()) if "ablation" in summary.columns else summary
    keys = ["dataset", "draft", "target", "decoding"]
    firsts = plain.filter(pl.col("c").is_not_null()).group_by(keys).agg(pl.col("c").first())
    return {tuple(r[k] for k in keys): float(r["c"]) for r in firsts.iter_rows(named=True)}


def oracle_table(runs: Sequence[Run], gammas: Sequence[int], n_boot: int,
                 costs: Mapping[tuple[str, str, str, str], float] | None = None) -> pl.DataFrame:
    """Every group's rows (results/acceptance/oracle.csv), read from the plain runs' scores tables.
    `costs`: run keys (dataset, draft, target, decoding) -> measured c (`run_costs`)."""
    cols = ["sample_id", "position", "target_token", "match", "summin", "max_new_tokens"]
    costs = dict(costs or {})
    rows = []
    for group in groups([r for r in runs if not r.ablation]):   # an input ablation is no draft to route to
        scores = {r.draft: pl.read_parquet(r.scores, columns=cols) for r in group.runs}
        c = {r.draft: costs.get((r.dataset, r.draft, r.target, r.decoding.name)) for r in group.runs}
        rows.extend(group_rows(group, scores, gammas, n_boot, c))
    return frame(rows)
