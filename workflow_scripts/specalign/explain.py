"""Which tokens the draft gets wrong, where, and why — from the teacher-forced scores.

Every mismatch is a place where the draft, given exactly the target's prefix, would
have proposed another token. Grouping them by (target token, draft token) shows what
the draft cannot see (the demo's known truth: colour words); grouping by position
shows whether the trouble is the opening (different answer styles) or the content.
"""
from __future__ import annotations

import math

import polars as pl

UNSURE = math.log(0.2)  # the target token still had >= 20% of the draft's probability


def reasons(scores: pl.DataFrame, reachable: list[int] | None = None) -> pl.DataFrame:
    """Add a `reason` to every mismatched position (`reachable`: target ids the draft can propose;
    without it a draft log-prob of -inf stands in, which under top-p also marks tokens outside
    the draft's nucleus):
    unreachable      the draft cannot propose this target token at all (vocabulary gap);
    first_token      the answer's opening word (answer style, e.g. "In" vs "The");
    draft_unsure     the draft gave the target's token >= 20% but preferred another;
    draft_confident  the draft was sure of something else (it lacks the information)."""
    unreachable = (~pl.col("target_token").is_in(reachable) if reachable is not None
                   else pl.col("draft_logprob").is_infinite())
    return scores.filter(~pl.col("match")).with_columns(
        pl.when(unreachable).then(pl.lit("unreachable"))
        .when(pl.col("position") == 0).then(pl.lit("first_token"))
        .when(pl.col("draft_logprob") > UNSURE).then(pl.lit("draft_unsure"))
        .otherwise(pl.lit("draft_confident")).alias("reason"))


def disagreement_table(scores: pl.DataFrame, target_text: dict[int, str], top: int = 50,
                       reachable: list[int] | None = None) -> pl.DataFrame:
    """The most frequent (target token, draft token) disagreements with their share of all mismatches."""
    mism = reasons(scores, reachable)
    n = max(1, mism.height)
    text = lambda col: pl.col(col).replace_strict(target_text, default="<unmapped>", return_dtype=pl.String)  # noqa: E731
    return (mism.group_by("target_token", "draft_token")
            .agg(pl.len().alias("count"), pl.col("position").mean().alias("mean_position"),
                 pl.col("draft_logprob").mean().alias("mean_draft_logprob_of_target_token"),
                 pl.col("reason").mode().first().alias("reason"))
            .with_columns((pl.col("count") / n).alias("share_of_mismatches"),
                          text("target_token").alias("target_text"), text("draft_token").alias("draft_text"))
            .sort(["count", "target_token", "draft_token"], descending=[True, False, False]).head(top))


def by_position(scores: pl.DataFrame) -> pl.DataFrame:
    return (scores.group_by("position").agg(pl.len().alias("n"), (1 - pl.col("match").mean()).alias("mismatch_rate"))
            .sort("position"))


def by_reason(scores: pl.DataFrame, reachable: list[int] | None = None) -> pl.DataFrame:
    mism = reasons(scores, reachable)
    return (mism.group_by("reason").agg(pl.len().alias("count"))
            .with_columns((pl.col("count") / max(1, mism.height)).alias("share")).sort("count", descending=True))
