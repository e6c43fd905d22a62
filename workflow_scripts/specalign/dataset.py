"""The DSEC event-video clip layout: samples, manifest (event files are read by event_files.py).

Layout under a dataset root (shared/reference/models-and-data.md):
``event_npy/{seq}/{clip}.npy`` (a pickled dict x, y, t, p, ...),
``video/{seq}/{clip}/*.png``, ``mp4/{seq}/{clip}.mp4``,
``event_image/{seq}/{clip}_{k}.png`` and an instruction JSON listing the
clips. The demo dataset (demo_data.py) is written in the same layout, so
this one reader serves both.

Sequences: clips cut from one recording overlap in time, so train / evaluation
splits must be disjoint by sequence, not only by clip (`check_disjoint`). A
clip's sequence is its instruction entry's "sequence" field when present, else
the folder of its clip file ("zurich_city_00_a" for
``event_data: zurich_city_00_a/000123.npy``), else - when no sequence can be
known (a flat layout, an id-only entry) - the clip's own sample id: such a clip
counts as a sequence of its own, and `check_disjoint` says how many there are.
The sequence is carried as a manifest column; it is never parsed from a sample id.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import artifacts, video
from .event_files import EventFileError, load_event_file


@dataclass(frozen=True)
class Sample:
    """One clip with its question; paths are absolute ("" / None when absent)."""

    sample_id: str                      # "{sequence}/{clip:06d}"
    split: str = "test"
    question: str = ""
    reference: str = ""                 # the gpt turn (demo: ground-truth caption)
    event_path: Path | None = None
    video_dir: Path | None = None
    mp4_path: Path | None = None
    event_image_paths: tuple[Path, ...] = field(default_factory=tuple)
    duration_ms: float = 0.0
    num_events: int = 0
    width: int = 0
    height: int = 0
    num_frames: int = 0                 # frames of the video source the sampler reads (0: unknown)
    short_video: bool = False           # fewer than the configured min_frames (the sampler repeats frames)
    sequence: str = ""                  # the recording the clip was cut from; "" -> unknown: the sample id

    def __post_init__(self):
        # An unknown sequence is the clip's own (module docstring): explicit, never parsed from the id.
        if not self.sequence:
            object.__setattr__(self, "sequence", str(self.sample_id))


class SampleError(ValueError):
    """A sample that cannot be used (names the sample id and the file)."""

    def __init__(self, sample_id: str, file: str | Path | None, reason: str):
        self.sample_id, self.file, self.reason = sample_id, "" if file is None else str(file), reason
        where = f" ({self.file})" if self.file else ""
        super().__init__(f"sample {sample_id}{where}: {reason}")


# --------------------------------------------------------------------------
# Instruction JSON -> samples
# --------------------------------------------------------------------------

_PLACEHOLDERS = ("<event>", "<image>", "<video>")


def read_instructions(json_path: str | Path) -> list[dict]:
    """The instruction JSON: a list of entry dicts (error names the file otherwise)."""
    json_path = Path(json_path)
    try:
        with open(json_path) as fh:
            entries = json.load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{json_path}: instruction JSON does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{json_path}: not valid JSON: {exc}") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{json_path}: expected a JSON list of entry objects")
    return entries


def _turn(entry: dict, role: str) -> str | None:
    for turn in entry.get("conversations") or []:
        if isinstance(turn, dict) and turn.get("from") == role:
            return str(turn.get("value") or "")
    return None


def _sample_key(entry: dict, index: int) -> tuple[str, str]:
    """(sample id, sequence) of an instruction entry.

    The "{sequence}/{clip}" id comes from the clip's own file path, which every
    layout has; the JSON "id" field's format is not documented, so it is used as
    the id only without a path and is never parsed. The sequence: the entry's
    "sequence" field, else the clip path's folder, else the id itself (unknown)."""
    sid = folder = None
    for key, suffix in (("event_data", ".npy"), ("mp4_data", ".mp4"), ("video_data", "")):
        rel = entry.get(key)
        if rel:
            rel = str(rel).strip("/")
            sid = rel[: -len(suffix)] if suffix and rel.endswith(suffix) else rel
            folder = sid.rpartition("/")[0] or None
            break
    if sid is None:
        if entry.get("id") is None:
            raise ValueError(f"entry {index} has none of event_data, mp4_data, video_data, id")
        sid = str(entry["id"])
    return sid, str(entry.get("sequence") or folder or sid)


def samples_from_instructions(root: str | Path, json_path: str | Path, questions: Sequence[str],
                              split: str | None) -> list[Sample]:
    """Samples for the entries of one split (all entries when split is None).

    question: the human turn without its <event>/<image>/<video> placeholders;
    when that is empty (as in the built DSEC files) ``questions[i % len]``
    with i the entry's index in the whole JSON, so a clip's question does not
    depend on which split or subset is read. An entry without a "split" field
    belongs to the requested split (or "test"). Paths are absolute; a piece
    the entry does not name is None. Files are not opened here (build_manifest
    checks them).
    """
    root = Path(root).resolve()
    entries = read_instructions(json_path)
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        entry_split = str(entry.get("split") or split or "test")
        if split is not None and entry_split != split:
            continue
        sid, sequence = _sample_key(entry, i)
        if sid in seen:
            raise ValueError(f"{json_path}: sample {sid} appears twice (entries {seen[sid]} and {i})")
        seen[sid] = i
        question = _turn(entry, "human") or ""
        for ph in _PLACEHOLDERS:
            question = question.replace(ph, "")
        question = question.strip()
        if not question:
            if not questions:
                raise ValueError(f"{json_path}: sample {sid} has an empty human turn and no questions are configured")
            question = questions[i % len(questions)]

        def under(sub: str, key: str) -> Path | None:
            rel = entry.get(key)
            return root / sub / str(rel) if rel else None

        samples.append(Sample(
            sample_id=sid,
            sequence=sequence,
            split=entry_split,
            question=question,
            reference=(_turn(entry, "gpt") or "").strip(),
            event_path=under("event_npy", "event_data"),
            video_dir=under("video", "video_data"),
            mp4_path=under("mp4", "mp4_data"),
            event_image_paths=tuple(root / "event_image" / str(p) for p in entry.get("event_image") or ()),
        ))
    return samples


# --------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------

def relative_path(path: Path | None, root: Path) -> str:
    """`path` relative to a dataset root for tables and messages ("" for None; as is outside root)."""
    if path is None:
        return ""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


SHORT_VIDEO_POLICIES = ("refuse", "mark")


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def check_events(ev: dict, sensor_size: tuple[int, int] | None = None) -> None:
    """Raise ValueError (the reason, with the first offending event) unless the stream is usable.

    t: finite and non-decreasing (equal timestamps are allowed: DSEC has them); x, y: finite,
    >= 0 and, when ``sensor_size`` (height, width) is given, x < width and y < height. The
    comparisons are done on the arrays as stored (no np.diff: it wraps around for unsigned t).
    """
    t, x, y = ev["t"], ev["x"], ev["y"]
    for k, arr in (("t", t), ("x", x), ("y", y)):
        if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
            i = _first(~np.isfinite(arr))
            raise ValueError(f"'{k}' is not finite at event {i} ({k}={arr[i]})")
    if t.shape[0] > 1:
        down = t[1:] < t[:-1]
        if down.any():
            i = _first(down) + 1
            raise ValueError(f"timestamps decrease at event {i} (t[{i - 1}]={t[i - 1]}, t[{i}]={t[i]}): "
                             "events must be sorted by t")
    for k, arr in (("x", x), ("y", y)):
        if arr.dtype != np.bool_ and arr.min() < 0:
            i = _first(arr < 0)
            raise ValueError(f"'{k}' is negative at event {i} ({k}={arr[i]})")
    if sensor_size is not None:
        height, width = (int(v) for v in sensor_size)
        for k, arr, limit in (("x", x, width), ("y", y, height)):
            if arr.max() >= limit:
                i = _first(arr >= limit)
                raise ValueError(f"'{k}' = {arr[i]} at event {i} lies outside the {height}x{width} sensor "
                                 f"({k} must be < {limit})")


def count_frames(src: str | Path) -> int:
    """Frames the sampler (video.sample_frames) would choose from: the PNG files of a frame
    folder, or a video's frame count, read from its container header when it records one
    (mp4 does) and else by counting packets; nothing is decoded."""
    src = Path(src)
    if src.is_dir():
        return len(video._png_files(src))
    try:
        with av.open(str(src)) as container:
            if not container.streams.video:
                raise ValueError(f"{src}: no video stream")
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as exc:
        raise ValueError(f"{src}: cannot read video: {exc}") from exc


def _manifest_row(sample: Sample, root: Path, sensor_size: tuple[int, int] | None = None,
                  min_frames: int = 8, short_video: str = "mark") -> dict:
    """One manifest row, or SampleError naming the sample and the bad file."""
    sid = sample.sample_id
    if sample.event_path is None:
        raise SampleError(sid, None, "the instruction entry names no event file")
    try:
        ev = load_event_file(sample.event_path)
    except EventFileError as exc:
        raise SampleError(sid, relative_path(sample.event_path, root), str(exc)) from exc
    n = int(ev["t"].shape[0])
    if n == 0:
        raise SampleError(sid, relative_path(sample.event_path, root), "event file holds zero events")
    try:
        check_events(ev, sensor_size)
    except ValueError as exc:
        raise SampleError(sid, relative_path(sample.event_path, root), str(exc)) from exc

    # The video is the target's input: a declared mp4 must decode (it is what
    # sample_video_frames reads first); a declared but absent mp4 or PNG
    # folder is left out of the row, and at least one of the two must work.
    mp4 = sample.mp4_path if sample.mp4_path is not None and sample.mp4_path.exists() else None
    vdir = sample.video_dir if sample.video_dir is not None and sample.video_dir.is_dir() else None
    if mp4 is not None:
        try:
            video.check_readable(mp4)
        except (OSError, ValueError) as exc:
            raise SampleError(sid, relative_path(mp4, root), f"unreadable video: {exc}") from exc
    png_problem = ""
    if vdir is not None:
        try:
            video.check_readable(vdir)
        except (OSError, ValueError) as exc:
            png_problem, vdir = f" ({exc})", None
    if mp4 is None and vdir is None:
        declared = [relative_path(p, root) for p in (sample.mp4_path, sample.video_dir) if p is not None]
        raise SampleError(sid, ", ".join(declared) or None,
                          f"no readable video: mp4 absent, PNG frame folder absent or unreadable{png_problem}")

    # The frame count of the source sample_video_frames reads (the mp4 first): with fewer than
    # min_frames the sampler repeats frames, so such a clip is refused or marked, per config.
    src = mp4 if mp4 is not None else vdir
    try:
        num_frames = count_frames(src)
    except (OSError, ValueError) as exc:
        raise SampleError(sid, relative_path(src, root), f"cannot count video frames: {exc}") from exc
    short = num_frames < min_frames
    if short and short_video == "refuse":
        raise SampleError(sid, relative_path(src, root),
                          f"short video: {num_frames} frames, fewer than min_frames {min_frames} "
                          f"(short_video: refuse)")

    # Pre-rendered event images are optional (they can be rendered from the
    # events): keep the list only when all of them exist.
    images = sample.event_image_paths
    images = images if images and all(p.is_file() for p in images) else ()
    t = ev["t"]
    return {
        "sample_id": sid,
        "sequence": sample.sequence,
        "split": sample.split,
        "question": sample.question,
        "reference": sample.reference,
        "event_path": relative_path(sample.event_path, root),
        "video_dir": relative_path(vdir, root),
        "mp4_path": relative_path(mp4, root),
        "event_image_paths": [relative_path(p, root) for p in images],
        "duration_ms": float(t.max() - t.min()) / 1000.0,
        "num_events": n,
        "width": int(ev["x"].max()) + 1,
        "height": int(ev["y"].max()) + 1,
        "num_frames": num_frames,
        "short_video": short,
    }


def build_manifest(root: str | Path, json_path: str | Path, questions: Sequence[str], split: str | None,
                   skip_bad: bool, *, sensor_size: tuple[int, int] | None = None, min_frames: int = 8,
                   short_video: str = "mark") -> tuple[pa.Table, pa.Table]:
    """(manifest, errors) tables for every sample of the split.

    Each sample's events are loaded (restricted unpickler) and checked
    (check_events: t finite and non-decreasing, x, y >= 0 and inside
    ``sensor_size`` = (height, width) when given; the workflow always gives
    it) to record duration_ms, num_events, width = x.max+1, height = y.max+1;
    its video is checked and its frames counted (num_frames). A video with
    fewer than ``min_frames`` frames is kept with short_video true
    (``short_video="mark"``) or is a bad sample (``"refuse"``). A bad sample
    raises SampleError, or with skip_bad becomes an errors row (stage
    "manifest") and is left out: never silently dropped. Paths in the
    manifest are relative to root.
    """
    if short_video not in SHORT_VIDEO_POLICIES:
        raise ValueError(f"short_video must be one of {SHORT_VIDEO_POLICIES}, got {short_video!r}")
    root = Path(root).resolve()
    rows, errors = [], []
    for sample in samples_from_instructions(root, json_path, questions, split):
        try:
            rows.append(_manifest_row(sample, root, sensor_size, int(min_frames), short_video))
        except SampleError as exc:
            if not skip_bad:
                raise
            errors.append({"sample_id": exc.sample_id, "stage": "manifest", "file": exc.file, "error": exc.reason})
    return artifacts.table("manifest", rows), artifacts.table("errors", errors)


def samples_from_manifest(manifest: str | Path | pa.Table, root: str | Path) -> list[Sample]:
    """Samples from a manifest table or Parquet file, paths made absolute under root."""
    tbl = manifest if isinstance(manifest, pa.Table) else pq.read_table(manifest)
    root = Path(root).resolve()

    def absolute(rel: str | None) -> Path | None:
        return root / rel if rel else None

    return [
        Sample(
            sample_id=r["sample_id"],
            split=r["split"],
            question=r["question"],
            reference=r["reference"],
            event_path=absolute(r["event_path"]),
            video_dir=absolute(r["video_dir"]),
            mp4_path=absolute(r["mp4_path"]),
            event_image_paths=tuple(root / p for p in r["event_image_paths"] or ()),
            duration_ms=float(r["duration_ms"]),
            num_events=int(r["num_events"]),
            width=int(r["width"]),
            height=int(r["height"]),
            num_frames=int(r.get("num_frames") or 0),
            short_video=bool(r.get("short_video") or False),
            sequence=r.get("sequence") or "",
        )
        for r in tbl.to_pylist()
    ]


def check_disjoint(train: Sequence[Sample], evaluated_manifests: Sequence[str | Path | pa.Table]) -> None:
    """Raise ValueError unless no training clip is evaluated and no sequence holds both training and
    evaluated clips (clips of one sequence overlap in time), comparing the samples' `sequence` with
    the manifests' `sequence` column (module docstring). A manifest lacking the column (written
    before it existed) is refused. Clips whose sequence is unknown (sequence == sample id) are
    compared as their own sequences, with a warning naming how many."""
    train_ids = {s.sample_id for s in train}
    train_seqs = {s.sequence: s.sample_id for s in train}
    unknown = sorted(s.sample_id for s in train if s.sequence == s.sample_id)
    for m in evaluated_manifests:
        name = "a manifest table" if isinstance(m, pa.Table) else str(m)
        names = m.column_names if isinstance(m, pa.Table) else pq.read_schema(m).names
        if "sequence" not in names:
            raise ValueError(f"{name}: has no 'sequence' column (written by an older version): rebuild the "
                             "manifest (rerun its rule) before checking disjointness")
        tbl = m if isinstance(m, pa.Table) else pq.read_table(m, columns=["sample_id", "sequence"])
        ids = tbl.column("sample_id").to_pylist()
        seqs = [q or sid for sid, q in zip(ids, tbl.column("sequence").to_pylist())]
        unknown += [sid for sid, q in zip(ids, seqs) if q == sid]
        shared = sorted(train_ids.intersection(ids))
        if shared:
            raise ValueError(f"{name}: {len(shared)} training clips are also evaluated, e.g. {shared[:3]}")
        both = sorted(train_seqs.keys() & set(seqs))
        if both:
            raise ValueError(f"{name}: sequences {both[:3]} hold both training and evaluated clips (overlapping "
                             f"windows), e.g. training clip {train_seqs[both[0]]}")
    if unknown:
        logging.getLogger(__name__).warning(
            "%d clip(s) have no known sequence (no folder in their clip path, no 'sequence' in their instruction "
            "entry), e.g. %s: each is compared as a sequence of its own", len(unknown), unknown[:3])


def sample_events(sample: Sample) -> dict:
    """The sample's event dict (restricted loader); errors name the sample."""
    if sample.event_path is None:
        raise SampleError(sample.sample_id, None, "no event file")
    try:
        return load_event_file(sample.event_path)
    except EventFileError as exc:
        raise SampleError(sample.sample_id, sample.event_path, str(exc)) from exc


def sample_video_frames(sample: Sample, k: int = 8) -> np.ndarray:
    """The sample's k uniformly sampled RGB frames, uint8 [k, H, W, 3].

    The mp4 when the sample has one, else the PNG folder (the manifest keeps
    only sources that were readable).
    """
    src = sample.mp4_path or sample.video_dir
    if src is None:
        raise SampleError(sample.sample_id, None, "no mp4 and no PNG frame folder")
    try:
        return video.sample_frames(src, k)
    except (OSError, ValueError) as exc:
        raise SampleError(sample.sample_id, src, str(exc)) from exc
