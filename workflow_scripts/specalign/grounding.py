"""Grounding classes: which target tokens depend on the RGB input, on the events, on neither.

For every target token y_j of a run (the target's plain stream, teacher-forced):
- rgb_drop   = log p(y_j | RGB, y_<j) - log p(y_j | ablated RGB, y_<j): how much the TARGET's
  log-probability of its own token falls when its input is ablated (scores' `target_logprob`, the
  plain table against a target-side ablation's, joined on sample_id, position);
- event_drop = log q(y_j | events, y_<j) - log q(y_j | ablated events, y_<j): the same for the
  DRAFT's probability of the target's token when the draft's input is ablated (`draft_logprob`).
Both in nats; positive = the input mattered. A token is grounded on a side when its drop is
>= that side's threshold (config `grounding:`), and falls in one class:

    language        neither drop reaches its threshold (style, templates, syntax)
    event_grounded  only the draft's events matter
    rgb_only        only the target's RGB matters: what no draft that sees only events can get
                    from its input (the colour of a shape), the ceiling of every event distillation
    both            both matter (what the two modalities share: shape, motion)

Per class the table gives the token count, the draft's MEASURED acceptance on those tokens (match
rate; mean summin = Leviathan alpha restricted to the class) and each class's share of all the
draft's mismatches (and of the rejection mass sum(1 - summin), which is what a sampled decoding
loses); shares sum to 1 over the classes. The classes are a measurement on these two ablations
and these thresholds, not a causal proof: an ablation removes one kind of evidence, and another
ablation of the same input can move other tokens.

Unreachable tokens: draft_logprob is -inf where the draft cannot propose the target's token at all.
A drop between two equal values (both -inf) is 0 (the ablation cannot change it); -inf only under the
ablation is a drop of +inf (grounded); -inf only in the plain pass is -inf (not grounded).

Pure polars: the functions take scores tables (artifacts.SCHEMAS["scores"]) and are unit-tested on
hand-built ones.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import polars as pl

from .bootstrap import N_BOOT, bootstrap_ci
from .config import ConfigError
from .specs import Run

CLASSES = ("language", "event_grounded", "rgb_only", "both")
KEYS = ["sample_id", "position"]

# grounding.csv, after the run keys (dataset, draft, target, decoding)
COLUMNS = {
    "dataset": pl.String, "draft": pl.String, "target": pl.String, "decoding": pl.String,
    "target_ablation": pl.String, "draft_ablation": pl.String,
    "target_threshold_nats": pl.Float64, "draft_threshold_nats": pl.Float64,
    "grounding": pl.String,             # one of CLASSES
    "n_samples": pl.Int64,
    "tokens": pl.Int64, "token_share": pl.Float64,
    "matches": pl.Int64,
    "match_rate": pl.Float64,           # measured: the draft's greedy match on the class's tokens
    "match_rate_lo": pl.Float64, "match_rate_hi": pl.Float64,   # 95% bootstrap over clips
    "mean_summin": pl.Float64,          # measured: alpha restricted to the class
    "mismatches": pl.Int64,
    "mismatch_share": pl.Float64,       # the class's mismatches / all mismatches of the run
    "mismatch_share_lo": pl.Float64, "mismatch_share_hi": pl.Float64,   # 95% bootstrap over clips
    "rejection_mass_share": pl.Float64,  # the class's sum(1 - summin) / the run's
    "mean_rgb_drop": pl.Float64, "mean_event_drop": pl.Float64,   # nats (inf where one is unbounded)
}


@dataclass(frozen=True)
class Settings:
    """The `grounding:` config: which ablations define the classes, and the thresholds (nats)."""

    target_ablation: str
    draft_ablation: str
    target_threshold_nats: float
    draft_threshold_nats: float

    def __post_init__(self):
        for name in ("target_threshold_nats", "draft_threshold_nats"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"grounding.{name} must be > 0, got {getattr(self, name)}")


def settings(grounding: Mapping | None, ablations: Mapping[str, Mapping]) -> Settings | None:
    """The checked `grounding:` config, None when it names no ablation (no classes are computed).

    `ablations`: the config's `ablations:` (name -> {side: draft|target, kind: ...}). A name that is
    not configured, or whose side is not the one the key needs, is an error naming the key.
    """
    g = dict(grounding or {})
    names = {k: g.get(k) for k in ("target_ablation", "draft_ablation")}
    if not any(names.values()):
        return None
    for key, side in (("target_ablation", "target"), ("draft_ablation", "draft")):
        name = names[key]
        if not name:
            other = "draft_ablation" if key == "target_ablation" else "target_ablation"
            raise ConfigError(f"grounding.{key} is not set but grounding.{other} is: the classes need a "
                             f"{side}-side ablation too")
        if name not in ablations:
            raise ConfigError(f"grounding.{key}: {name!r} is not an entry of ablations: "
                             f"(configured: {', '.join(sorted(ablations)) or 'none'})")
        if ablations[name].get("side") != side:
            raise ConfigError(f"grounding.{key}: ablation {name!r} has side {ablations[name].get('side')!r}, "
                             f"not {side!r}")
    return Settings(names["target_ablation"], names["draft_ablation"],
                    float(g.get("target_threshold_nats", 1.0)), float(g.get("draft_threshold_nats", 1.0)))


def spec_entry(cfg: dict) -> dict | None:
    """The acceptance job's `grounding` slice of a validated config (checked against `ablations:`), or
    None when no classes are configured. Called at parse time, so a bad name stops the workflow there."""
    from .ablations import configured

    s = settings(cfg.get("grounding"), configured(cfg))
    return None if s is None else asdict(s)


def _drop(plain: str, ablated: str) -> pl.Expr:
    # equal values (both -inf included, whose difference would be NaN) drop by 0
    return pl.when(pl.col(plain) == pl.col(ablated)).then(0.0).otherwise(
        pl.col(plain).cast(pl.Float64) - pl.col(ablated).cast(pl.Float64))


def _aligned(plain: pl.DataFrame, ablated: pl.DataFrame, what: str) -> pl.DataFrame:
    """`ablated` joined to `plain` on (sample_id, position) over the clips both scored, checked to lie
    along the same target tokens (an ablation is scored along the plain run's streams, or is useless)."""
    shared = set(plain["sample_id"].unique().to_list()) & set(ablated["sample_id"].unique().to_list())
    p = plain.filter(pl.col("sample_id").is_in(sorted(shared)))
    a = ablated.filter(pl.col("sample_id").is_in(sorted(shared)))
    j = p.select(*KEYS, "target_token").join(a.select(*KEYS, pl.col("target_token").alias("_t")), on=KEYS,
                                             how="full", coalesce=True)
    bad = j.filter(pl.col("target_token").is_null() | pl.col("_t").is_null()
                   | (pl.col("target_token") != pl.col("_t")))
    if bad.height:
        r = bad.sort(KEYS).row(0, named=True)
        raise ValueError(f"the {what} ablation was not scored along the plain run's target streams: "
                         f"sample {r['sample_id']!r} position {r['position']} differs")
    return a


def token_drops(plain: pl.DataFrame, target_ablated: pl.DataFrame, draft_ablated: pl.DataFrame) -> pl.DataFrame:
    """Per target token of the clips all three tables scored: sample_id, position, target_token, match,
    summin, rgb_drop, event_drop (nats)."""
    t = _aligned(plain, target_ablated, "target")
    d = _aligned(plain, draft_ablated, "draft")
    shared = set(t["sample_id"].unique().to_list()) & set(d["sample_id"].unique().to_list())
    base = plain.filter(pl.col("sample_id").is_in(sorted(shared))).select(
        *KEYS, "target_token", "match", pl.col("summin").cast(pl.Float64), "target_logprob", "draft_logprob")
    return (base
            .join(t.select(*KEYS, pl.col("target_logprob").alias("_tl")), on=KEYS)
            .join(d.select(*KEYS, pl.col("draft_logprob").alias("_dl")), on=KEYS)
            .with_columns(_drop("target_logprob", "_tl").alias("rgb_drop"),
                          _drop("draft_logprob", "_dl").alias("event_drop"))
            .select(*KEYS, "target_token", "match", "summin", "rgb_drop", "event_drop")
            .sort(KEYS))


def classify(drops: pl.DataFrame, target_threshold_nats: float, draft_threshold_nats: float) -> pl.DataFrame:
    """`drops` with a `grounding` column (CLASSES): grounded on a side when its drop >= its threshold."""
    rgb = pl.col("rgb_drop") >= target_threshold_nats
    ev = pl.col("event_drop") >= draft_threshold_nats
    return drops.with_columns(
        pl.when(rgb & ev).then(pl.lit("both"))
        .when(rgb).then(pl.lit("rgb_only"))
        .when(ev).then(pl.lit("event_grounded"))
        .otherwise(pl.lit("language")).alias("grounding"))


def class_table(classified: pl.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pl.DataFrame:
    """One row per class (all four, in CLASSES order, even when empty): tokens, acceptance, shares, and
    the intervals of match_rate and mismatch_share (percentile bootstrap over clips, bootstrap.py's)."""
    c = classified.with_columns((~pl.col("match")).alias("_miss"), (1.0 - pl.col("summin")).alias("_rej"))
    # per clip (sorted: the bootstrap's resamples follow the order) and class: tokens, matches, misses
    clips = c.group_by("sample_id").agg(pl.col("_miss").sum().alias("all_miss")).sort("sample_id")
    counts = clips.join(c.group_by("sample_id", "grounding").agg(
        pl.len().alias("n"), pl.col("match").sum().alias("m"), pl.col("_miss").sum().alias("x")),
        on="sample_id", how="left")
    total_tokens, total_miss, total_rej = c.height, int(c["_miss"].sum()), float(c["_rej"].sum())
    per = {r["grounding"]: r for r in c.group_by("grounding").agg(
        pl.len().alias("tokens"), pl.col("match").sum().alias("matches"), pl.col("summin").mean().alias("ms"),
        pl.col("_miss").sum().alias("mismatches"), pl.col("_rej").sum().alias("rej"),
        pl.col("rgb_drop").mean().alias("rgb"), pl.col("event_drop").mean().alias("ev")).iter_rows(named=True)}

    def ratio(num, den):   # NaN where nothing was observed
        return float(num) / float(den) if den else float("nan")

    def per_clip(name: str, col: str):
        mine = counts.filter(pl.col("grounding") == name).select("sample_id", col)
        return clips.join(mine, on="sample_id", how="left")[col].fill_null(0).to_numpy()

    rows = []
    for name in CLASSES:
        r = per.get(name)
        n = int(r["tokens"]) if r else 0
        match_ci = bootstrap_ci(per_clip(name, "m"), per_clip(name, "n"), n_boot, seed)
        miss_ci = bootstrap_ci(per_clip(name, "x"), clips["all_miss"].to_numpy(), n_boot, seed)
        rows.append({
            "grounding": name, "tokens": n, "token_share": ratio(n, total_tokens),
            "matches": int(r["matches"]) if r else 0, "match_rate": ratio(r["matches"], n) if r else float("nan"),
            "match_rate_lo": match_ci[0], "match_rate_hi": match_ci[1],
            "mean_summin": float(r["ms"]) if r else float("nan"),
            "mismatches": int(r["mismatches"]) if r else 0,
            "mismatch_share": ratio(r["mismatches"] if r else 0, total_miss),
            "mismatch_share_lo": miss_ci[0], "mismatch_share_hi": miss_ci[1],
            "rejection_mass_share": ratio(r["rej"] if r else 0.0, total_rej),
            "mean_rgb_drop": float(r["rgb"]) if r else float("nan"),
            "mean_event_drop": float(r["ev"]) if r else float("nan"),
        })
    return pl.DataFrame(rows, schema={k: COLUMNS[k] for k in rows[0]}, orient="row")


def by_token(classified: pl.DataFrame) -> pl.DataFrame:
    """Per target token id: its occurrences, the share of them in each class (`{class}_share`), the
    draft's match rate on it and its mean drops; most frequent first. What a known truth is checked
    on (the demo's colour words must be rgb_only), and what a report names classes by."""
    shares = [(pl.col("grounding") == c).mean().alias(f"{c}_share") for c in CLASSES]
    return (classified.group_by("target_token")
            .agg(pl.len().alias("tokens"), *shares, pl.col("match").mean().alias("match_rate"),
                 pl.col("rgb_drop").mean().alias("mean_rgb_drop"),
                 pl.col("event_drop").mean().alias("mean_event_drop"))
            .sort(["tokens", "target_token"], descending=[True, False]))


def run_rows(keys: Mapping[str, str], plain: pl.DataFrame, target_ablated: pl.DataFrame,
             draft_ablated: pl.DataFrame, s: Settings, n_boot: int = N_BOOT) -> pl.DataFrame:
    """grounding.csv's four rows of one run (keys: dataset, draft, target, decoding)."""
    classified = classify(token_drops(plain, target_ablated, draft_ablated), s.target_threshold_nats,
                          s.draft_threshold_nats)
    table = class_table(classified, n_boot)
    head = {**{k: keys[k] for k in ("dataset", "draft", "target", "decoding")},
            "target_ablation": s.target_ablation, "draft_ablation": s.draft_ablation,
            "target_threshold_nats": s.target_threshold_nats, "draft_threshold_nats": s.draft_threshold_nats,
            "n_samples": classified["sample_id"].n_unique()}
    return table.with_columns(*(pl.lit(v, dtype=COLUMNS[k]).alias(k) for k, v in head.items())).select(list(COLUMNS))


def frame(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """grounding.csv: every run's rows, COLUMNS in order (an empty table with them when there is none)."""
    return pl.concat([pl.DataFrame(schema=COLUMNS), *parts], how="vertical")


def grounding_table(runs: Sequence[Run], ablation_runs: Sequence[Run], entry: Mapping | None,
                    n_boot: int = N_BOOT) -> pl.DataFrame:
    """grounding.csv from the artifacts: for every plain run that has both configured ablations scored
    (an ablation applies only to the models and decodings it names: ablations.applies), its four rows.
    `entry`: the acceptance spec's `grounding` (spec_entry), None: an empty table."""
    if not entry:
        return frame([])
    s = Settings(**entry)
    by = {(r.dataset, r.pair, r.decoding.name, r.ablation): r for r in ablation_runs}
    cols = ["sample_id", "position", "target_token", "match", "summin", "target_logprob", "draft_logprob"]
    parts = []
    for run in runs:
        if run.ablation:
            continue
        key = (run.dataset, run.pair, run.decoding.name)
        t, d = by.get((*key, s.target_ablation)), by.get((*key, s.draft_ablation))
        if t is None or d is None:
            continue
        parts.append(run_rows(run.keys, *(pl.read_parquet(r.scores, columns=cols) for r in (run, t, d)), s, n_boot))
    return frame(parts)
