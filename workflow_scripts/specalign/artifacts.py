"""Every artifact's Parquet schema, in one place, and atomic writers.

Why atomic: a job killed mid-write must never leave a file that looks
complete (Snakemake would otherwise treat it as done on a rerun), so every
writer writes a temporary sibling and renames it over the target.

Why metadata: a Parquet file must say where it came from (model path and
hash, dtype, decoding, package versions, config fingerprint) so a number in a
table can always be traced to what produced it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

_i64, _i32, _f32, _f64, _str, _bool = pa.int64(), pa.int32(), pa.float32(), pa.float64(), pa.string(), pa.bool_()

SCHEMAS: dict[str, pa.Schema] = {
    # results/data/{dataset}/manifest.parquet: one row per usable sample.
    # Paths are relative to the dataset root so results do not depend on where data is mounted.
    "manifest": pa.schema([
        ("sample_id", _str),            # "{sequence}/{clip:06d}"
        ("sequence", _str),             # the recording it was cut from (dataset.py: entry "sequence", else the
                                        # clip file's folder, else the sample id itself: unknown)
        ("split", _str),                # from the instruction JSON ("train", "test", ...)
        ("question", _str),             # human turn, or the configured question list when empty
        ("reference", _str),            # gpt turn ("" when absent); the demo's ground-truth caption
        ("event_path", _str),           # event_npy/{seq}/{clip}.npy
        ("video_dir", _str),            # video/{seq}/{clip} ("" when absent)
        ("mp4_path", _str),             # mp4/{seq}/{clip}.mp4 ("" when absent)
        ("event_image_paths", pa.list_(_str)),
        ("duration_ms", _f64),
        ("num_events", _i64),
        ("width", _i32),                # sensor resolution as seen in the events (x.max+1)
        ("height", _i32),               # (y.max+1)
        ("num_frames", _i32),           # frames of the video source the sampler reads (mp4, else PNG folder)
        ("short_video", _bool),         # num_frames < the dataset's min_frames: the 8-frame sampler repeats frames
    ]),
    # .../errors.parquet: every sample that failed a stage, never silently dropped.
    "errors": pa.schema([
        ("sample_id", _str),
        ("stage", _str),                # manifest, generate, score, speculative
        ("file", _str),                 # the file that was bad ("" if none)
        ("error", _str),                # the message
    ]),
    # results/vocab/{model}.parquet: one row per token id.
    "vocab": pa.schema([
        ("id", _i64),
        ("token", _str),                # the raw piece ("▁the", "Ġthe", "<0x0A>", "<s>")
        ("text", _str),                 # what the piece contributes to decoded text (" the", "\n")
        ("is_special", _bool),          # a role token (bos/eos/unk/pad) or registered special
        ("is_added", _bool),            # added after training (<image>, <video>, <pad>, ...)
        ("is_byte", _bool),             # a byte-fallback piece <0xNN> or a byte-level single byte
    ]),
    # results/translation/{draft}__{target}.parquet: one row per draft id.
    "translation": pa.schema([
        ("draft_id", _i64),
        ("draft_token", _str),
        ("kind", _str),                 # exact | normalised | byte | special | retokenised | unmapped
        ("target_ids", pa.list_(_i64)), # 1 id for 1:1 kinds, n for retokenised, empty for unmapped
        ("target_tokens", pa.list_(_str)),
    ]),
    # results/generate/{dataset}/{model}/{decoding}/shard{k}.parquet: one row per generated token.
    "tokens": pa.schema([
        ("sample_id", _str),
        ("position", _i32),             # 0-based index among NEW tokens (the prompt is never included)
        ("token_id", _i64),             # in the model's own id space
        ("logprob", _f32),              # log prob of the token under the distribution it was drawn from
        # (no text column: a token's piece is the vocab artifact's `text` at id = token_id; storing it
        # here again cost 2.9 of 14.2 bytes per token, docs/benchmarks.md section 6)
        ("prefill_ms", _f32),           # per sample (repeated): the prompt pass incl. vision encoder
        ("decode_ms", _f32),            # this token's decode step (0 for position 0: it comes from prefill)
        ("finish_reason", _str),        # per sample: "eos" or "length"
        ("prompt_tokens", _i32),        # per sample: prompt length after placeholder expansion
        ("peak_mem_mb", _f32),          # per sample: peak accelerator memory (0 on CPU)
        ("device", _str),               # per sample: what the timings ran on (generation.device_name)
        ("torch_threads", _i32),        # per sample: torch CPU threads while timing
    ]),
    # results/score/{dataset}/{draft}__{target}/{decoding}.parquet: teacher-forced draft along the
    # target stream, one row per target token. Enough to replay any gamma without a model.
    "scores": pa.schema([
        ("sample_id", _str),
        ("position", _i32),
        ("target_token", _i64),         # y_j, target ids
        ("draft_token", _i64),          # draft argmax at y_<j, mapped to target ids (-1: unmapped)
        ("draft_argmax_id", _i64),      # the same in draft ids
        ("match", _bool),               # m_j = draft_token == target_token
        ("draft_logprob", _f32),        # log q(y_j | draft inputs, y_<j) after mapping (-inf: unreachable)
        ("target_logprob", _f32),       # log p(y_j | target inputs, y_<j)
        ("summin", _f32),               # sum_x min(p_j(x), q_j(x)); greedy: 1[match]
        ("mapped_mass", _f32),          # sum of p_j over target tokens the draft can propose
        ("target_prob_of_draft_argmax", _f32),  # p_j(draft_token), 0 unmapped: acceptance of an argmax
                                        # draft (engines' default); mean = alpha_argmax; greedy: 1[match]
        ("target_rank", _i32),          # index of the first of the draft's top rank_k ids (draft order) proposing
                                        # y_j; rank_k if none (scoring.target_ranks); 0 iff match
        ("is_eos", _bool),
        ("max_new_tokens", _i32),       # per sample: the length budget the stream was generated with
    ]),
    # results/speculative/{dataset}/{draft}__{target}/{decoding}/g{gamma}/shard{k}.parquet: one row per round.
    "rounds": pa.schema([
        ("sample_id", _str),
        ("gamma", _i32),
        ("draft_sampling", _str),       # how the draft proposed: "argmax" (greedy decodings, and sampled
                                        # ones with speculative.draft_sampling argmax) or "sample" (x ~ q)
        ("round", _i32),
        ("start", _i32),                # s: target tokens emitted before this round
        ("drafted", _i32),              # d_r
        ("accepted", _i32),             # a_r
        ("emitted", _i32),              # a_r + 1, or a_r when an accepted EOS ends the stream
        ("tokens", pa.list_(_i64)),     # target ids emitted this round (concatenated: the output)
        ("draft_ms", _f32),
        ("verify_ms", _f32),
        ("verify_flip", _bool),         # chunked verification argmax != step-by-step argmax somewhere
        ("draft_flip", _bool),          # a step-by-step draft proposal != the draft's one-pass argmax there
        ("target_only_ms", _f32),       # per sample (repeated): plain target decoding of the same output
                                        # (the workflow: from the target's generation-stage timings)
        ("device", _str),               # per sample: what draft_ms / verify_ms ran on (generation.device_name;
                                        # "draft X, target Y" when the two models are on different devices)
        ("torch_threads", _i32),        # per sample: torch CPU threads while timing
    ]),
    # results/timing/{dataset}/{draft}__{target}/{decoding}.parquet: one row per timed pass or run of
    # the paired timing job (timing.py): both models, one job, interleaved, so ratios never cross jobs.
    "timing": pa.schema([
        ("sample_id", _str),
        ("kind", _str),                 # draft_prefill | target_prefill | draft_step | target_step | verify
                                        # | loop | target_only (timing.KINDS)
        ("rep", _i32),                  # repetition (timing.reps); loop / target_only alternate order by rep
        ("position", _i32),             # steps and verify: the stream position j whose token the pass makes
        ("context", _i32),              # steps and verify: target cache length before the pass (0 otherwise)
        ("gamma", _i32),                # verify: proposals k (k + 1 tokens fed); loop / target_only: gamma
        ("tokens", _i32),               # tokens fed (prefill: the prompt) or made (loop / target_only)
        ("rounds", _i32),               # loop: its rounds (0 otherwise)
        ("ms", _f64),                   # wall time of the pass or run
        ("forward_ms", _f64),           # loop: its rounds' draft_ms + verify_ms (= ms otherwise)
        ("device", _str),               # generation.device_name; "draft X, target Y" on two devices
        ("dtype", _str),                # likewise
        ("torch_threads", _i32),
    ]),
}

SUMMARY_COLUMNS = [
    "dataset", "draft", "target", "decoding", "ablation", "gamma", "n_samples", "rounds", "drafted", "accepted",
    "token_acceptance_rate", "tau", "leviathan_alpha", "alpha_argmax", "positional_match_rate",
]


def table(name: str, rows: Iterable[dict] | dict[str, list]) -> pa.Table:
    """Build a table of artifact `name` from row dicts or columns, in schema order."""
    schema = SCHEMAS[name]
    if isinstance(rows, dict):
        return pa.table({f.name: pa.array(rows[f.name], type=f.type) for f in schema}, schema=schema)
    return pa.Table.from_pylist(list(rows), schema=schema)


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary sibling of `path` to write; it replaces `path` only if the block ends
    without an error (a failure or a kill leaves the old file, or none, never a partial one).
    The one atomic write of the package: every artifact, fingerprint and video goes through it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling directory; it is renamed to `path` (replacing an old one)
    only when the block ends without an error, so a directory output appears whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if path.exists():
            shutil.rmtree(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet(tbl: pa.Table, path: str | Path, name: str, metadata: dict[str, Any] | None = None) -> None:
    """Validate `tbl` against artifact `name` and write it atomically with provenance metadata."""
    schema = SCHEMAS[name]
    if tbl.schema.remove_metadata() != schema:
        tbl = tbl.select(schema.names).cast(schema)
    meta = {"specalign.artifact": name}
    for k, v in (metadata or {}).items():
        meta[f"specalign.{k}"] = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    tbl = tbl.replace_schema_metadata(meta)
    # Float columns (log-probs, timings) are near-random float32: dictionary encoding cannot shrink them,
    # byte-stream-split + zstd can (a real shard's tokens file: 12.1 -> 7.7 bytes per token,
    # docs/benchmarks.md section 6); every other column keeps pyarrow's dictionary encoding.
    floats = [f.name for f in schema if pa.types.is_floating(f.type)]
    with atomic_path(path) as tmp:
        pq.write_table(tbl, tmp, compression="zstd", use_byte_stream_split=floats or False,
                       use_dictionary=[f.name for f in schema if f.name not in floats])


def read_streams(token_files: Iterable[str | Path]) -> dict[str, list[int]]:
    """Token streams of "tokens" artifacts (all shards): sample_id -> token ids in position order."""
    import polars as pl

    g = (pl.read_parquet([str(f) for f in token_files], columns=["sample_id", "position", "token_id"])
         .sort("sample_id", "position")
         .group_by("sample_id", maintain_order=True).agg(pl.col("token_id")))
    return dict(zip(g["sample_id"].to_list(), g["token_id"].to_list()))


def read_stream_timings(token_files: Iterable[str | Path]) -> dict[str, tuple[float, list[float]]]:
    """Timings of "tokens" artifacts: sample_id -> (prefill_ms, decode_ms in position order)."""
    import polars as pl

    g = (pl.read_parquet([str(f) for f in token_files], columns=["sample_id", "position", "prefill_ms", "decode_ms"])
         .sort("sample_id", "position").group_by("sample_id", maintain_order=True)
         .agg(pl.col("prefill_ms").first(), pl.col("decode_ms")))
    return {sid: (float(pre), [float(x) for x in dec])
            for sid, pre, dec in zip(g["sample_id"], g["prefill_ms"], g["decode_ms"])}


def read_metadata(path: str | Path) -> dict[str, str]:
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"specalign.")}


def write_json(obj: Any, path: str | Path) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
