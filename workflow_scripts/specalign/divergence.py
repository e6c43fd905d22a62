"""Why the draft and the target disagree: where, on what, and on which samples.

Read from the stored Parquet only (no model runs): the free-running token streams of both
models (`tokens`), the teacher-forced scores (`scores`), the translation map, the target's
vocabulary table and the dataset manifest. Every figure here is MEASURED; nothing is predicted.

Two different comparisons, kept apart on purpose:

- FREE-RUNNING (the seed note's measure): the draft's own answer, mapped to target ids through
  the translation table exactly as `summary.positional` maps it (a draft id becomes its target
  ids, an unmapped one -1), against the target's own answer, position by position. Once the two
  answers differ they drift apart and never re-synchronise: `first_divergence` says where that
  happens, and the positional match after it is near chance.
- TEACHER-FORCED (what speculative decoding gets): the draft's argmax given the TARGET's prefix at
  every position (`scores.match`) and the expected acceptance sum_x min(p, q) (`scores.summin`; for
  greedy decoding 1[match]). The draft is re-conditioned on the target's text every round, so a
  disagreement at one position costs only that position.

Token classes (`token_class`), from the target token's text (the vocabulary table's `text`,
stripped of surrounding whitespace) and its flags:

  special        EOS (`scores.is_eos`) or a special / added token of the vocabulary (`<s>`, `</s>`,
                 `<image>`, `<pad>`...)
  punctuation    the text is empty after stripping (whitespace, newline) and the piece is no byte
                 fragment, or every character is Unicode punctuation or a symbol (categories P*, S*)
  number         only digits and the separators . , : % + - / with at least one digit
  function_word  the lower-cased text is one of FUNCTION_WORDS (English articles, determiners,
                 pronouns, prepositions, conjunctions, auxiliaries and particles)
  content_word   everything else: words and word pieces (a sub-word piece such as "ing" is part of
                 a content word; so is a byte fragment of a multi-byte character)

Intervals are 95% percentile bootstraps over SAMPLES (`bootstrap.bootstrap_ci`, the same engine
and seed as every interval of the package): positions of one answer are correlated.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import polars as pl

from .artifacts import read_streams
from .bootstrap import N_BOOT, bootstrap_ci
from .explain import disagreement_table
from .specs import Run
from .summary import UNMAPPED, mapped_draft_streams  # noqa: F401 (UNMAPPED: re-exported for callers)

TOKEN_CLASSES = ("special", "punctuation", "number", "function_word", "content_word")

FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every either neither no all both few many much more most
other another such what which whose who whom whatever whichever
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its
itself we us our ours ourselves they them their theirs themselves one ones
of in on at by for with without from to into onto upon over under above below between among through
across along around behind beyond near off out up down about after before during since until till
toward towards against via per within
and or but nor so yet if then than because although though while whereas unless whether as
is are was were be been being am do does did doing done have has had having will would shall should
can could may might must ought
not there here when where why how also just only very too again ever even still
""".split())

_NUMBER_CHARS = set("0123456789.,:%+-/")


def token_class(text: str, special: bool = False, is_byte: bool = False) -> str:
    """The class of one token from its text and flags (module docstring)."""
    if special:
        return "special"
    s = (text or "").strip()
    if not s:
        return "content_word" if is_byte else "punctuation"
    if all(unicodedata.category(ch)[0] in "PS" for ch in s):
        return "punctuation"
    if any(ch.isdigit() for ch in s) and all(ch in _NUMBER_CHARS for ch in s):
        return "number"
    if s.lower() in FUNCTION_WORDS:
        return "function_word"
    if all(not unicodedata.category(ch).startswith(("L", "N")) for ch in s):
        return "content_word" if is_byte else "punctuation"
    return "content_word"


def vocab_classes(vocab: pl.DataFrame) -> dict[int, str]:
    """Target id -> token class, for every id of a vocabulary table (artifacts "vocab")."""
    special = (vocab["is_special"] | vocab["is_added"]).to_list()
    return {int(i): token_class(t, s, b) for i, t, s, b in
            zip(vocab["id"].to_list(), vocab["text"].to_list(), special, vocab["is_byte"].to_list())}


def vocab_text(vocab: pl.DataFrame) -> dict[int, str]:
    return dict(zip(vocab["id"].to_list(), vocab["text"].to_list()))


# ------------------------------------------------------------------------------------ free-running
def first_divergence(drafts: Mapping[str, Sequence[int]], targets: Mapping[str, Sequence[int]]) -> pl.DataFrame:
    """Per sample in both: the first position where the free-running outputs differ.

    `first_divergence` is the first i with draft[i] != target[i], or min(len) when one answer is a
    prefix of the other and they differ in length; null when the two answers are identical
    (`identical`). Columns: sample_id, first_divergence, draft_len, target_len, identical.
    """
    rows = []
    for sid in sorted(set(drafts) & set(targets)):
        d, t = np.asarray(drafts[sid], dtype=np.int64), np.asarray(targets[sid], dtype=np.int64)
        k = min(len(d), len(t))
        diff = np.flatnonzero(d[:k] != t[:k])
        if len(diff):
            pos = int(diff[0])
        elif len(d) != len(t):
            pos = k
        else:
            pos = None
        rows.append((sid, pos, len(d), len(t), pos is None))
    return pl.DataFrame(rows, schema={"sample_id": pl.String, "first_divergence": pl.Int64, "draft_len": pl.Int64,
                                      "target_len": pl.Int64, "identical": pl.Boolean}, orient="row")


def divergence_distribution(first: pl.DataFrame) -> pl.DataFrame:
    """How many samples first diverge at each position (null position: the answers are identical).

    Columns: first_divergence, n, share, cumulative_share (share diverged at or before it).
    """
    n = max(1, first.height)
    dist = (first.group_by("first_divergence").agg(pl.len().alias("n"))
            .sort("first_divergence", nulls_last=True)
            .with_columns((pl.col("n") / n).alias("share")))
    return dist.with_columns(pl.when(pl.col("first_divergence").is_not_null())
                             .then(pl.col("share").cum_sum()).otherwise(None).alias("cumulative_share"))


def positional_by_position(drafts: Mapping[str, Sequence[int]], targets: Mapping[str, Sequence[int]],
                           n_boot: int = N_BOOT, seed: int = 0) -> pl.DataFrame:
    """The seed's measure per target position i: the share of samples whose free-running draft
    output (mapped) has the target's token at i, over the samples whose target answer reaches i
    (a draft answer shorter than i counts as a mismatch), with its bootstrap interval; and
    `still_identical`, the share whose two answers agree on every position up to and including i.
    """
    sids = sorted(set(drafts) & set(targets))
    first = dict(zip(*first_divergence(drafts, targets).select("sample_id", "first_divergence")))
    longest = max((len(targets[s]) for s in sids), default=0)
    # per sample, padded to the longest target answer: does the draft have the target's token at i,
    # are the answers still identical through i, does the target answer reach i
    match = np.zeros((len(sids), longest))
    same = np.zeros((len(sids), longest))
    reach = np.zeros((len(sids), longest), dtype=bool)
    for k, s in enumerate(sids):
        t, d = np.asarray(targets[s], dtype=np.int64), np.asarray(drafts[s], dtype=np.int64)
        n = min(len(t), len(d))
        match[k, :n] = d[:n] == t[:n]
        reach[k, :len(t)] = True
        f = first[s]
        same[k, :len(t) if f is None else min(f, len(t))] = 1.0
    rows = []
    for i in range(longest):
        m = match[reach[:, i], i]
        lo, hi = bootstrap_ci(m, np.ones(len(m)), n_boot, seed)
        rows.append((i, len(m), float(m.mean()), lo, hi, float(same[reach[:, i], i].mean())))
    return pl.DataFrame(rows, schema={"position": pl.Int64, "n": pl.Int64, "positional_match_rate": pl.Float64,
                                      "positional_match_rate_lo": pl.Float64, "positional_match_rate_hi": pl.Float64,
                                      "still_identical": pl.Float64}, orient="row")


# ------------------------------------------------------------------------------------ teacher-forced
def _grouped_rates(scores: pl.DataFrame, by: str, n_boot: int, seed: int) -> pl.DataFrame:
    """Per value of `by`: n (positions), n_samples, match_rate and mean_summin (pooled over
    positions) with bootstrap intervals over the samples that have positions in the group."""
    per = (scores.group_by(by, "sample_id")
           .agg(pl.col("match").cast(pl.Float64).sum().alias("m"), pl.col("summin").cast(pl.Float64).sum().alias("s"),
                pl.len().alias("n"))
           .sort(by, "sample_id"))
    rows = []
    for (key,), part in per.group_by(by, maintain_order=True):
        n = part["n"].to_numpy().astype(np.float64)
        m_lo, m_hi = bootstrap_ci(part["m"].to_numpy(), n, n_boot, seed)
        s_lo, s_hi = bootstrap_ci(part["s"].to_numpy(), n, n_boot, seed)
        total = float(n.sum())
        rows.append({by: key, "n": int(total), "n_samples": part.height,
                     "match_rate": float(part["m"].sum()) / total, "match_rate_lo": m_lo, "match_rate_hi": m_hi,
                     "mean_summin": float(part["s"].sum()) / total, "mean_summin_lo": s_lo, "mean_summin_hi": s_hi})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def teacher_forced_by_position(scores: pl.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pl.DataFrame:
    """Per answer position: the draft's match rate given the target's prefix and its mean summin."""
    return _grouped_rates(scores.with_columns(pl.col("position").cast(pl.Int64)), "position", n_boot, seed)


def class_of_positions(scores: pl.DataFrame, classes: Mapping[int, str]) -> pl.DataFrame:
    """`scores` with the target token's `token_class` (EOS positions are `special`)."""
    cls = pl.col("target_token").replace_strict(dict(classes), default="content_word", return_dtype=pl.String)
    return scores.with_columns(pl.when(pl.col("is_eos")).then(pl.lit("special")).otherwise(cls).alias("token_class"))


def by_token_class(scores: pl.DataFrame, classes: Mapping[int, str], n_boot: int = N_BOOT,
                   seed: int = 0) -> pl.DataFrame:
    """Acceptance by the class of the target token (match rate and mean summin, with intervals)."""
    out = _grouped_rates(class_of_positions(scores, classes), "token_class", n_boot, seed)
    if not out.height:
        return out
    order = {c: i for i, c in enumerate(TOKEN_CLASSES)}
    return out.sort(pl.col("token_class").replace_strict(order, default=len(order), return_dtype=pl.Int64))


def _context(tokens: Sequence[int], position: int, text: Mapping[int, str], width: int) -> str:
    start = max(0, position - width)
    ctx = "".join(text.get(t, "<unmapped>") for t in tokens[start:position])
    return ("…" if start > 0 else "") + ctx


def disagreements(scores: pl.DataFrame, target_text: Mapping[int, str], top: int = 10, examples: int = 2,
                  context: int = 8, reachable: list[int] | None = None) -> pl.DataFrame:
    """The most frequent teacher-forced (target token, draft token) disagreements, each with its
    count and share (explain.disagreement_table) and `examples` example contexts: the preceding
    target tokens (at most `context`, as text) of its first occurrences by sample and position,
    columns example_1, example_1_at ("sample_id@position"), example_2, ..."""
    top_pairs = disagreement_table(scores, dict(target_text), top=top, reachable=reachable)
    if not top_pairs.height:
        return top_pairs
    streams = {sid: part["target_token"].to_list() for (sid,), part in
               scores.sort("sample_id", "position").group_by("sample_id", maintain_order=True)}
    wanted = top_pairs.select("target_token", "draft_token")
    occ = (scores.filter(~pl.col("match")).join(wanted, on=["target_token", "draft_token"])
           .sort("sample_id", "position").group_by("target_token", "draft_token", maintain_order=True)
           .agg(pl.col("sample_id").head(examples), pl.col("position").head(examples)))
    found = {(a, b): (s, p) for a, b, s, p in occ.iter_rows()}
    cols: dict[str, list] = {f"example_{k + 1}{suffix}": [] for k in range(examples) for suffix in ("", "_at")}
    for a, b in wanted.iter_rows():
        sids, positions = found.get((a, b), ([], []))
        for k in range(examples):
            if k < len(sids):
                cols[f"example_{k + 1}"].append(_context(streams[sids[k]], positions[k], target_text, context))
                cols[f"example_{k + 1}_at"].append(f"{sids[k]}@{positions[k]}")
            else:
                cols[f"example_{k + 1}"].append(None)
                cols[f"example_{k + 1}_at"].append(None)
    return top_pairs.with_columns(*(pl.Series(k, v, dtype=pl.String) for k, v in cols.items()))


# ------------------------------------------------------------------------------------ samples
ATTRIBUTES = ("duration_ms", "num_events", "question")


def _bins(values: pl.Series, max_bins: int) -> tuple[list[str], list[int]]:
    """Labels and bin index per value: every distinct value when there are at most max_bins,
    else quantile bins (equal counts as far as ties allow), labelled by their range."""
    vals = values.to_list()
    distinct = sorted(set(vals))
    if len(distinct) <= max_bins:
        labels = [_num(v) for v in distinct]
        return labels, [distinct.index(v) for v in vals]
    edges = np.unique(np.quantile(np.asarray(vals, dtype=np.float64), np.linspace(0, 1, max_bins + 1)))
    idx = np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, len(edges) - 2)
    labels = [f"{_num(edges[k])}–{_num(edges[k + 1])}" for k in range(len(edges) - 1)]
    return labels, [int(i) for i in idx]


def _num(v) -> str:
    v = float(v)
    return f"{v:.0f}" if v == int(v) else f"{v:.4g}"


def by_sample_attribute(scores: pl.DataFrame, manifest: pl.DataFrame, attributes: Sequence[str] = ATTRIBUTES,
                        max_bins: int = 4, n_boot: int = N_BOOT, seed: int = 0) -> pl.DataFrame:
    """Acceptance against sample attributes of the manifest: per attribute and group (a value,
    or a quantile bin of a numeric attribute with many values), the pooled teacher-forced match
    rate and mean summin with bootstrap intervals over the group's samples.

    Columns: attribute, group, order, n_samples, n (positions), match_rate(_lo/_hi), mean_summin(_lo/_hi).
    """
    per = (scores.group_by("sample_id")
           .agg(pl.col("match").cast(pl.Float64).sum().alias("m"), pl.col("summin").cast(pl.Float64).sum().alias("s"),
                pl.len().alias("n"))
           .join(manifest.select("sample_id", *[a for a in attributes if a in manifest.columns]), on="sample_id")
           .sort("sample_id"))
    rows = []
    for attr in attributes:
        if attr not in per.columns or not per.height:
            continue
        col = per[attr]
        if col.dtype == pl.String:
            labels = sorted(set(col.to_list()))
            idx = [labels.index(v) for v in col.to_list()]
        else:
            labels, idx = _bins(col, max_bins)
        groups = pl.Series("g", idx)
        for k, label in enumerate(labels):
            part = per.filter(groups == k)
            if not part.height:
                continue
            n = part["n"].to_numpy().astype(np.float64)
            m_lo, m_hi = bootstrap_ci(part["m"].to_numpy(), n, n_boot, seed)
            s_lo, s_hi = bootstrap_ci(part["s"].to_numpy(), n, n_boot, seed)
            total = float(n.sum())
            rows.append({"attribute": attr, "group": label, "order": k, "n_samples": part.height, "n": int(total),
                         "match_rate": float(part["m"].sum()) / total, "match_rate_lo": m_lo, "match_rate_hi": m_hi,
                         "mean_summin": float(part["s"].sum()) / total, "mean_summin_lo": s_lo,
                         "mean_summin_hi": s_hi})
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


# ------------------------------------------------------------------------------------ one run
@dataclass
class Divergence:
    """Everything this module measures for one run (one dataset x pair x decoding)."""

    run: Run
    first: pl.DataFrame              # per sample: first_divergence, lengths, identical
    distribution: pl.DataFrame       # divergence_distribution(first)
    positional: pl.DataFrame         # the seed's measure per position (free-running)
    teacher_forced: pl.DataFrame     # per position: match_rate, mean_summin (teacher-forced)
    top: pl.DataFrame                # disagreements with example contexts
    classes: pl.DataFrame            # by_token_class
    attributes: pl.DataFrame         # by_sample_attribute
    targets: dict[str, list[int]] = field(repr=False, default_factory=dict)   # target streams
    drafts: dict[str, list[int]] = field(repr=False, default_factory=dict)    # draft streams, target ids
    text: dict[int, str] = field(repr=False, default_factory=dict)            # target id -> text
    scores: pl.DataFrame = field(repr=False, default_factory=pl.DataFrame)

    @property
    def label(self) -> str:
        return self.run.label(with_dataset=True)

    @property
    def median_first_divergence(self) -> float:
        pos = self.first["first_divergence"].drop_nulls()
        return float(pos.median()) if len(pos) else math.nan


def analyse_run(run: Run, manifest: pl.DataFrame | str | None, n_boot: int = N_BOOT, seed: int = 0,
                top: int = 10) -> Divergence:
    """Every table of this module for one run, from its stored artifacts."""
    from .translation import TokenMap

    scores = pl.read_parquet(run.scores)
    vocab = pl.read_parquet(run.target_vocab)
    text, classes = vocab_text(vocab), vocab_classes(vocab)
    targets = read_streams(run.target_tokens)
    drafts = mapped_draft_streams(run)
    first = first_divergence(drafts, targets)
    reachable = TokenMap.from_table(run.translation, None, None).reachable_ids()
    if isinstance(manifest, str):
        manifest = pl.read_parquet(manifest)
    attrs = by_sample_attribute(scores, manifest, n_boot=n_boot, seed=seed) if manifest is not None else pl.DataFrame()
    return Divergence(
        run=run, first=first, distribution=divergence_distribution(first),
        positional=positional_by_position(drafts, targets, n_boot, seed),
        teacher_forced=teacher_forced_by_position(scores, n_boot, seed),
        top=disagreements(scores, text, top=top, reachable=reachable),
        classes=by_token_class(scores, classes, n_boot, seed), attributes=attrs,
        targets=targets, drafts=drafts, text=text, scores=scores)
