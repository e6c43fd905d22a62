"""Cutting raw DSEC sequences into event-video clips (the DSEC clip layout).

Raw DSEC, per sequence (shared/reference/models-and-data.md):
``{seq}/events/left/events.h5`` with ``events/{x,y,p,t}`` (t in us relative
to ``t_offset``; absolute time = t + t_offset), ``ms_to_idx`` (ms_to_idx[k]
= index of the first event with t >= k * 1000 us) and the scalar
``t_offset``, blosc-compressed; ``images/left/rectified/*.png`` (zero-padded
names, time order) and ``images/timestamps.txt`` (one absolute us timestamp
per image, same order).

Each sequence is cut into windows of a fixed duration with an overlap
(EventGPT's DSEC clips: 50%) over the span where BOTH streams have data:
from the later of the first image and the first event to the earlier of the
last image and the last event (so no clip holds events for only part of its
duration because the event recording began late). A
window [start, end) becomes clip k of the sequence (k = the window's index,
so a skipped window leaves a gap in the numbering and a clip id always says
where in the sequence it lies), written with clips.write_clip, the
writer the demo dataset uses, so dataset.py reads both the same way.

A sequence's events are never loaded whole (DSEC sequences hold 10^8-10^9
events): ms_to_idx gives each window's index range to within a millisecond,
only that slice is read from the h5 file, and a searchsorted on the slice
makes the boundaries exact to the microsecond.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import h5py
import hdf5plugin  # noqa: F401  (registers the blosc filter DSEC's events.h5 files need)
import numpy as np

from .clips import N_EVENT_FRAMES, atomic_dataset_dir, write_clip
from .dataset import relative_path
from .video import read_pngs

# The public EventGPT DSEC builds name their instruction file this way.
DEFAULT_INSTRUCTION_JSON = "EventGPT_Instruction_Subset.json"
SUMMARY_JSON = "build_summary.json"
SENSOR_SIZE = (480, 640)          # (height, width) of DSEC's event cameras
STAGE = "build_clips"             # the "stage" of this builder's errors rows
MIN_EVENTS = N_EVENT_FRAMES       # EventGPT splits a clip into 5 equal-count chunks: none may be empty

EVENTS_H5 = Path("events/left/events.h5")
IMAGE_DIR = Path("images/left/rectified")
TIMESTAMPS = Path("images/timestamps.txt")


class RawSequenceError(ValueError):
    """A raw DSEC sequence whose files are missing or malformed (names the file)."""


# --------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------

def _exact(value: float | int | str, what: str) -> Fraction:
    # Through str so 0.3 means 3/10, not the nearest binary float.
    try:
        return Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None


def window_stride_us(duration_ms: float, overlap: float = 0.5) -> tuple[int, int]:
    """(duration, stride) in whole microseconds; stride = duration * (1 - overlap).

    Raises when either is not a whole number of microseconds, so clip
    boundaries never depend on float rounding.
    """
    dur = _exact(duration_ms, "duration_ms") * 1000
    ov = _exact(overlap, "overlap")
    if dur <= 0 or dur.denominator != 1:
        raise ValueError(f"duration_ms must be a positive whole number of microseconds, got {duration_ms}")
    if not 0 <= ov < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = dur * (1 - ov)
    if stride.denominator != 1:
        raise ValueError(f"duration {duration_ms} ms with overlap {overlap} gives a stride of {float(stride)} us, "
                         f"not a whole number of microseconds")
    return int(dur), int(stride)


def clip_windows(t_start_us: int, t_end_us: int, duration_ms: float,
                 overlap: float = 0.5) -> list[tuple[int, int]]:
    """The windows [start, end) (absolute us) cut from the span [t_start, t_end].

    start_k = t_start + k * stride, end_k = start_k + duration; only whole
    windows (end_k <= t_end) are returned: a shorter tail would be a clip of
    another duration.
    """
    dur, stride = window_stride_us(duration_ms, overlap)
    t_start, t_end = int(t_start_us), int(t_end_us)
    if t_end - t_start < dur:
        return []
    n = (t_end - t_start - dur) // stride + 1
    return [(t_start + k * stride, t_start + k * stride + dur) for k in range(n)]


# --------------------------------------------------------------------------
# One raw sequence
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class RawSequence:
    """The files of one raw DSEC sequence (checked to exist by ``raw_sequence``)."""

    name: str
    root: Path
    events_h5: Path
    image_dir: Path
    timestamps: Path


def raw_sequence(raw_root: str | Path, name: str) -> RawSequence:
    """The sequence's files; FileNotFoundError naming the first one that is missing."""
    root = Path(raw_root) / name
    seq = RawSequence(name, root, root / EVENTS_H5, root / IMAGE_DIR, root / TIMESTAMPS)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: DSEC sequence folder {name!r} does not exist")
    for path, kind in ((seq.events_h5, "event file"), (seq.timestamps, "image timestamps"),
                       (seq.image_dir, "image folder")):
        if not path.exists():
            raise FileNotFoundError(f"{path}: {kind} of DSEC sequence {name!r} does not exist")
    return seq


def read_images(seq: RawSequence) -> tuple[list[Path], np.ndarray]:
    """(PNG files in time order, their absolute us timestamps as int64), checked to pair up."""
    files = sorted(p for p in seq.image_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    stamps = []
    with open(seq.timestamps) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                stamps.append(int(line))
            except ValueError:
                raise RawSequenceError(f"{seq.timestamps}:{lineno}: not an integer timestamp: {line!r}") from None
    times = np.asarray(stamps, dtype=np.int64)
    if times.size != len(files):
        raise RawSequenceError(f"{seq.timestamps}: {times.size} timestamps but {len(files)} PNG images "
                               f"in {seq.image_dir}")
    if times.size == 0:
        raise RawSequenceError(f"{seq.image_dir}: DSEC sequence {seq.name!r} has no images")
    if np.any(np.diff(times) <= 0):
        raise RawSequenceError(f"{seq.timestamps}: timestamps are not strictly increasing")
    return files, times


class EventWindows:
    """Windowed reads of one events.h5 that never load the whole stream.

    Use as a context manager (it holds the h5 file open). ms_to_idx (one
    entry per millisecond: small) is read once; x, y, p, t are read only
    slice by slice.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise RawSequenceError(f"{self.path}: cannot open as HDF5: {exc}") from exc
        try:
            missing = [k for k in ("events/x", "events/y", "events/p", "events/t", "ms_to_idx", "t_offset")
                       if k not in self._file]
            if missing:
                raise RawSequenceError(f"{self.path}: lacks {missing}")
            self._ds = {k: self._file[f"events/{k}"] for k in "xytp"}
            lengths = {k: d.shape[0] if d.ndim == 1 else None for k, d in self._ds.items()}
            if None in lengths.values() or len(set(lengths.values())) != 1:
                raise RawSequenceError(f"{self.path}: events/x, y, t, p must be 1-D of one length: "
                                       f"{ {k: d.shape for k, d in self._ds.items()} }")
            self.n_events = lengths["t"]
            self.t_offset = int(np.asarray(self._file["t_offset"][()]).reshape(-1)[0])
            self.ms_to_idx = np.asarray(self._file["ms_to_idx"][()], dtype=np.int64).reshape(-1)
            if self.ms_to_idx.size == 0 or np.any(np.diff(self.ms_to_idx) < 0) \
                    or self.ms_to_idx[0] < 0 or self.ms_to_idx[-1] > self.n_events:
                raise RawSequenceError(f"{self.path}: ms_to_idx must be non-empty, non-decreasing and within "
                                       f"[0, {self.n_events}]")
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> EventWindows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def time_range(self) -> tuple[int, int] | None:
        """(first, last) absolute event time, reading two elements; None without events."""
        if self.n_events == 0:
            return None
        t = self._ds["t"]
        return int(t[0]) + self.t_offset, int(t[self.n_events - 1]) + self.t_offset

    def coarse_range(self, start_us: int, end_us: int) -> tuple[int, int]:
        """An index range [i0, i1) holding every event of [start, end) (absolute us), from ms_to_idx alone.

        It starts at the first event of start's millisecond and ends at the
        first event of the millisecond at or after end, so it holds at most
        the window plus a millisecond on each side.
        """
        rel_start, rel_end = start_us - self.t_offset, end_us - self.t_offset
        last = self.ms_to_idx.size - 1
        lo = rel_start // 1000                       # floor: that ms begins at or before start
        hi = -(-rel_end // 1000)                     # ceil: that ms begins at or after end
        i0 = 0 if lo < 0 else int(self.ms_to_idx[min(lo, last)])
        # Past the table's end every remaining event may still be before end.
        i1 = self.n_events if hi > last else int(self.ms_to_idx[max(hi, 0)])
        return i0, max(i0, i1)

    def window(self, start_us: int, end_us: int) -> dict[str, np.ndarray]:
        """The events with start <= t + t_offset < end: x, y (uint16), t (int64, absolute us), p (uint8)."""
        i0, i1 = self.coarse_range(start_us, end_us)
        t = self._ds["t"][i0:i1].astype(np.int64)
        if t.size and np.any(np.diff(t) < 0):
            raise RawSequenceError(f"{self.path}: events/t is not sorted in [{i0}, {i1})")
        rel_start, rel_end = start_us - self.t_offset, end_us - self.t_offset
        a = int(np.searchsorted(t, rel_start, side="left"))
        b = int(np.searchsorted(t, rel_end, side="left"))
        j0, j1 = i0 + a, i0 + b
        return {
            "x": self._ds["x"][j0:j1].astype(np.uint16),
            "y": self._ds["y"][j0:j1].astype(np.uint16),
            "t": t[a:b] + self.t_offset,
            "p": self._ds["p"][j0:j1].astype(np.uint8),
        }


# --------------------------------------------------------------------------
# Building the clip dataset
# --------------------------------------------------------------------------

@dataclass
class BuildSummary:
    """What build_clips wrote (also saved as build_summary.json in out_root).

    clips_per_sequence / windows_per_sequence: clips written and windows cut
    per sequence (windows - clips = that sequence's errors);
    clips_per_split: clips per split name; errors: one row per skipped
    window, the fields of the "errors" artifact (sample_id "{seq}/{k:06d}",
    stage "build_clips", file relative to raw_root, error).
    """

    raw_root: str
    instruction_json: str
    duration_ms: float
    overlap: float
    stride_us: int
    splits: dict[str, str]
    clips_per_sequence: dict[str, int] = field(default_factory=dict)
    windows_per_sequence: dict[str, int] = field(default_factory=dict)
    clips_per_split: dict[str, int] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)

    @property
    def num_clips(self) -> int:
        return sum(self.clips_per_sequence.values())


def _skip(summary: BuildSummary, sid: str, raw_root: Path, start: int, end: int, file: Path, reason: str) -> None:
    # A window that is not written is an errors row, never silently dropped.
    summary.errors.append({"sample_id": sid, "stage": STAGE, "file": relative_path(file, raw_root),
                           "error": f"window [{start}, {end}) us: {reason}"})


def _fps(times: np.ndarray) -> float:
    # The sequence's own frame rate (DSEC: 20 Hz) so the mp4 plays in real time.
    if times.size < 2:
        return 20.0
    return 1e6 / float(np.median(np.diff(times)))


def _check_inputs(sequences: Sequence[str], splits: Mapping[str, str]) -> None:
    dupes = sorted(s for s, n in Counter(sequences).items() if n > 1)
    if dupes:
        raise ValueError(f"sequences listed more than once: {dupes}")
    no_split = [s for s in sequences if not splits.get(s)]
    if no_split:
        raise ValueError(f"sequences without a split (splits maps sequence -> split name): {no_split}")


def _build_sequence(seq: RawSequence, split: str, raw_root: Path, tmp: Path, duration_ms: float,
                    overlap: float, sensor_size: tuple[int, int], summary: BuildSummary) -> list[dict]:
    """Write one sequence's clips under tmp; return their instruction entries (errors go to summary)."""
    files, times = read_images(seq)
    fps = _fps(times)
    height, width = sensor_size
    entries = []
    with EventWindows(seq.events_h5) as events:
        span = events.time_range()
        # Windows start at the first image (DSEC's clips do) unless the events begin later, and stay
        # where both the camera and the event sensor recorded: a window starting before the first event
        # would be a clip with events for only part of its duration. (No events at all: the windows are
        # cut over the images and each becomes a "0 events" error row below.)
        t_start = int(times[0]) if span is None else max(int(times[0]), span[0])
        t_end = int(times[-1]) if span is None else min(int(times[-1]), span[1] + 1)
        windows = clip_windows(t_start, t_end, duration_ms, overlap)
        summary.windows_per_sequence[seq.name] = len(windows)
        written = 0
        for k, (start, end) in enumerate(windows):
            sid = f"{seq.name}/{k:06d}"
            skip = partial(_skip, summary, sid, raw_root, start, end)
            i0, i1 = (int(i) for i in np.searchsorted(times, [start, end], side="left"))
            if i1 == i0:
                skip(seq.timestamps, "no image in the window")
                continue
            evs = events.window(start, end)
            n = int(evs["t"].size)
            if n < MIN_EVENTS:
                skip(seq.events_h5, f"{n} events; EventGPT needs at least {MIN_EVENTS} (one per event frame)")
                continue
            if int(evs["x"].max()) >= width or int(evs["y"].max()) >= height:
                skip(seq.events_h5, f"events outside the {height}x{width} sensor: x max {int(evs['x'].max())}, "
                                    f"y max {int(evs['y'].max())}")
                continue
            try:
                frames = read_pngs(files[i0:i1])
            except ValueError as exc:
                # One unreadable or odd-sized frame costs its windows, not the build; the message
                # starts with the offending file's path (video.read_pngs).
                bad = next((f for f in files[i0:i1] if str(exc).startswith(f"{f}:")), seq.image_dir)
                skip(bad, str(exc))
                continue
            data = dict(evs)
            data.update(
                time_start=np.int64(start),
                time_end=np.int64(end),                   # exclusive: events have t < time_end
                duration_ms=float(end - start) / 1000.0,
                image_timestamp=times[i0:i1].copy(),
                image_idx=np.arange(i0, i1, dtype=np.int64),   # index in the sequence's image list
                image_indices_in_clip=np.arange(i1 - i0, dtype=np.int64),
                num_events=n,
            )
            paths = write_clip(tmp, seq.name, k, frames, data, fps, sensor_size=sensor_size)
            entries.append({
                "id": sid,
                "split": split,
                **paths,
                # Empty turns, as in the public builds: the benchmarks ask fixed questions.
                "conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": ""}],
            })
            written += 1
    summary.clips_per_sequence[seq.name] = written
    summary.clips_per_split[split] = summary.clips_per_split.get(split, 0) + written
    return entries


def build_clips(raw_root: str | Path, sequences: Sequence[str], duration_ms: float, overlap: float,
                out_root: str | Path, splits: Mapping[str, str],
                instruction_json: str = DEFAULT_INSTRUCTION_JSON,
                sensor_size: tuple[int, int] = SENSOR_SIZE) -> BuildSummary:
    """Cut the raw DSEC sequences into clips in the DSEC clip layout under out_root.

    splits maps each sequence to its split name: splits are by sequence, so
    overlapping clips of one sequence never land in two splits. Windows with
    no image, fewer than 5 events or events outside ``sensor_size``
    (height, width), or an unreadable PNG are not written but recorded in
    the summary's errors (file: the offending file). A
    missing sequence folder or file raises before anything is written.
    Everything is written into a temporary sibling renamed to out_root when
    complete (out_root must not exist, or be empty). Returns the summary,
    also written to out_root/build_summary.json.
    """
    raw_root = Path(raw_root)
    sequences = list(sequences)
    _check_inputs(sequences, splits)
    _, stride = window_stride_us(duration_ms, overlap)       # bad arguments fail before any file is read
    seqs = [raw_sequence(raw_root, s) for s in sequences]   # a missing sequence fails before a long build
    summary = BuildSummary(raw_root=str(raw_root.resolve()), instruction_json=instruction_json,
                           duration_ms=duration_ms, overlap=overlap, stride_us=stride,
                           splits={s: str(splits[s]) for s in sequences})
    with atomic_dataset_dir(out_root, f"the {duration_ms} ms clip dataset") as tmp:
        entries = []
        for seq in seqs:
            entries.extend(_build_sequence(seq, summary.splits[seq.name], raw_root, tmp, duration_ms, overlap,
                                           sensor_size, summary))
        with open(tmp / instruction_json, "w") as fh:
            json.dump(entries, fh, indent=1)
            fh.write("\n")
        with open(tmp / SUMMARY_JSON, "w") as fh:
            json.dump(asdict(summary), fh, indent=1)
            fh.write("\n")
    return summary
