"""Raw DSEC sequences -> clip datasets: exact windows, exact event slices, split by sequence, atomic.

Two small sequences are written in the raw DSEC layout (blosc-compressed
events.h5 with ms_to_idx and a nonzero t_offset, 32x24 PNGs at ~20 Hz over
4 s, timestamps.txt) and every assertion compares the built clips with
truths computed directly from the arrays the fixture wrote.
"""
import json
from dataclasses import asdict
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
from PIL import Image

from specalign import dataset, dsec_raw, event_files, video

T_OFFSET = 47_000_000_123           # DSEC-like: large, and not a whole millisecond
T0 = T_OFFSET + 30_017              # first image, 30 ms after the events' t = 0
N_IMAGES = 81                       # 50 ms apart: 4 s
IMAGE_HW = (24, 32)
SPLITS = {"seq_a": "train", "seq_b": "test"}
IMAGE_GAP = (1_500_000, 2_500_000)  # seq_a: no image here (relative to T0): 1 s window 3 is empty
EVENT_GAP = (1_480_000, 2_520_000)  # seq_b: no event here: 1 s window 3 has no events


def _image_times(gap=None):
    i = np.arange(N_IMAGES)
    times = T0 + 50_000 * i + (i * 7) % 13           # DSEC's frame times jitter a little
    if gap is not None:
        rel = times - T0
        times = times[(rel < gap[0]) | (rel >= gap[1])]
    return times.astype(np.int64)


def _events(seed, gap=None, n=6000):
    """Events with t relative to T_OFFSET (sorted), including events exactly on and next to every
    half-second boundary (twice, so equal timestamps straddle a boundary) to test [start, end)."""
    rng = np.random.default_rng(seed)
    first, last = 0, T0 - T_OFFSET + 4_200_000
    boundaries = T0 - T_OFFSET + 500_000 * np.arange(9)
    t = np.concatenate([rng.integers(first, last, n), boundaries - 1, boundaries, boundaries, boundaries + 1])
    if gap is not None:
        rel = t - (T0 - T_OFFSET)
        t = t[(rel < gap[0]) | (rel >= gap[1])]
    t = np.sort(t)
    return {
        "x": rng.integers(0, 640, t.size).astype(np.uint16),
        "y": rng.integers(0, 480, t.size).astype(np.uint16),
        "p": rng.integers(0, 2, t.size).astype(np.uint8),
        "t": t.astype(np.uint32),                    # DSEC stores relative t as uint32
    }


def write_raw_sequence(root: Path, name: str, image_times: np.ndarray, events: dict) -> dict:
    """One sequence in the raw DSEC layout; returns its truths (absolute t, image times and pixels)."""
    seq = root / name
    h5 = seq / "events" / "left" / "events.h5"
    h5.parent.mkdir(parents=True)
    t = events["t"].astype(np.int64)
    n_ms = int(t[-1]) // 1000 + 2 if t.size else 1
    ms_to_idx = np.searchsorted(t, np.arange(n_ms) * 1000, side="left").astype(np.uint64)
    blosc = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE)
    with h5py.File(h5, "w") as f:
        for k in "xytp":
            # Small chunks: a window's slice touches only a few of them.
            f.create_dataset(f"events/{k}", data=events[k], chunks=(max(1, min(512, t.size)),), **blosc)
        f.create_dataset("ms_to_idx", data=ms_to_idx, chunks=(max(1, min(512, n_ms)),), **blosc)
        f.create_dataset("t_offset", data=np.int64(T_OFFSET))
    img_dir = seq / "images" / "left" / "rectified"
    img_dir.mkdir(parents=True)
    pixels = []
    for i, ts in enumerate(image_times):
        arr = np.zeros((*IMAGE_HW, 3), dtype=np.uint8)
        arr[..., 0] = i % 256
        arr[..., 1] = np.arange(IMAGE_HW[1], dtype=np.uint8)[None, :] * 7
        arr[..., 2] = (ts // 1000) % 251
        Image.fromarray(arr).save(img_dir / f"{i:06d}.png")
        pixels.append(arr)
    (seq / "images" / "timestamps.txt").write_text("".join(f"{int(ts)}\n" for ts in image_times))
    return {"t": t + T_OFFSET, "x": events["x"], "y": events["y"], "p": events["p"],
            "image_times": np.asarray(image_times, np.int64), "pixels": np.stack(pixels), "h5": h5}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw_dsec")
    truth = {
        "seq_a": write_raw_sequence(root, "seq_a", _image_times(IMAGE_GAP), _events(1)),
        "seq_b": write_raw_sequence(root, "seq_b", _image_times(), _events(2, EVENT_GAP)),
    }
    return root, truth


@pytest.fixture(scope="module")
def built(raw, tmp_path_factory):
    """duration_ms -> (out_root, summary), built once per duration."""
    root, _ = raw
    out = tmp_path_factory.mktemp("clips")
    return {d: (out / f"{d}ms", dsec_raw.build_clips(root, ["seq_a", "seq_b"], d, 0.5, out / f"{d}ms", SPLITS))
            for d in (1000, 2000)}


def _entries(out: Path) -> list[dict]:
    return json.loads((out / dsec_raw.DEFAULT_INSTRUCTION_JSON).read_text())


# --------------------------------------------------------------------------
# Windows and event slicing
# --------------------------------------------------------------------------

def test_clip_windows_are_exact_and_whole():
    s = 1_000_003
    assert dsec_raw.clip_windows(s, s + 3_000_000, 1000) == [
        (s, s + 1_000_000), (s + 500_000, s + 1_500_000), (s + 1_000_000, s + 2_000_000),
        (s + 1_500_000, s + 2_500_000), (s + 2_000_000, s + 3_000_000)]
    # A tail shorter than the duration is not a window; nor is a span shorter than one.
    assert dsec_raw.clip_windows(s, s + 2_999_999, 1000)[-1] == (s + 1_500_000, s + 2_500_000)
    assert dsec_raw.clip_windows(s, s + 999_999, 1000) == []
    assert dsec_raw.clip_windows(0, 1_000_000, 500, overlap=0.0) == [(0, 500_000), (500_000, 1_000_000)]
    assert [a for a, _ in dsec_raw.clip_windows(0, 1_000_000, 500, overlap=0.75)] == [0, 125_000, 250_000,
                                                                                       375_000, 500_000]
    assert dsec_raw.clip_windows(0, 1_000, 0.5, overlap=0.5) == [(0, 500), (250, 750), (500, 1000)]
    for duration, overlap in ((1000, 1.0), (1000, -0.1), (0, 0.5), (0.0001, 0.5)):
        with pytest.raises(ValueError):
            dsec_raw.clip_windows(0, 10**7, duration, overlap)
    with pytest.raises(ValueError, match="whole number of microseconds"):
        dsec_raw.clip_windows(0, 10**7, 1, overlap=1 / 3)     # stride 666.67 us


def test_event_window_reads_only_its_slice_and_is_exact(raw):
    _, truth = raw
    tr = truth["seq_a"]
    t = tr["t"]
    with dsec_raw.EventWindows(tr["h5"]) as ew:
        assert ew.t_offset == T_OFFSET and ew.n_events == t.size
        assert ew.time_range() == (int(t[0]), int(t[-1]))
        for start, end in dsec_raw.clip_windows(T0, T0 + 4_000_000, 1000) + [(T0 - 123, T0 + 4567),
                                                                              (T0 + 5_000_000, T0 + 9_000_000)]:
            i0, i1 = ew.coarse_range(start, end)
            inside = (t >= start) & (t < end)
            idx = np.flatnonzero(inside)
            # The slice read from h5 holds the whole window and at most a millisecond either side.
            if idx.size:
                assert i0 <= idx[0] and idx[-1] < i1
            rel = t[i0:i1] - T_OFFSET
            assert np.all(rel >= (start - T_OFFSET) // 1000 * 1000)
            assert np.all(rel < -(-(end - T_OFFSET) // 1000) * 1000)
            got = ew.window(start, end)
            np.testing.assert_array_equal(got["t"], t[inside])
            np.testing.assert_array_equal(got["x"], tr["x"][inside])
            np.testing.assert_array_equal(got["p"], tr["p"][inside])
            assert got["t"].dtype == np.int64 and got["x"].dtype == np.uint16 and got["p"].dtype == np.uint8


# --------------------------------------------------------------------------
# Built clip datasets
# --------------------------------------------------------------------------

@pytest.mark.parametrize("duration", [1000, 2000])
def test_clips_match_the_raw_arrays(raw, built, duration):
    _, truth = raw
    out, summary = built[duration]
    dur_us, half = duration * 1000, duration * 500
    by_seq: dict[str, list[dict]] = {}
    for entry in _entries(out):
        by_seq.setdefault(entry["event_data"].split("/")[0], []).append(entry)
    assert set(by_seq) == set(SPLITS)
    for seq, entries in by_seq.items():
        tr = truth[seq]
        span_end = min(int(tr["image_times"][-1]), int(tr["t"][-1]) + 1)
        windows = dsec_raw.clip_windows(int(tr["image_times"][0]), span_end, duration)
        assert summary.windows_per_sequence[seq] == len(windows)
        starts = {}
        for entry in entries:
            k = int(Path(entry["event_data"]).stem)
            start, end = windows[k]
            ev = event_files.load_event_file(out / "event_npy" / entry["event_data"])
            inside = (tr["t"] >= start) & (tr["t"] < end)
            assert ev["num_events"] == int(np.sum(inside)) == ev["t"].size >= 5
            np.testing.assert_array_equal(ev["t"], tr["t"][inside])          # absolute times
            np.testing.assert_array_equal(ev["y"], tr["y"][inside])
            assert ev["x"].dtype == np.uint16 and ev["y"].dtype == np.uint16 and ev["p"].dtype == np.uint8
            assert (int(ev["time_start"]), int(ev["time_end"])) == (start, end)
            assert int(ev["time_end"]) - int(ev["time_start"]) == dur_us and ev["duration_ms"] == duration
            starts[k] = int(ev["time_start"])
            # The frames are exactly the images whose timestamp lies in the window, unchanged.
            img = np.flatnonzero((tr["image_times"] >= start) & (tr["image_times"] < end))
            np.testing.assert_array_equal(ev["image_idx"], img)
            np.testing.assert_array_equal(ev["image_timestamp"], tr["image_times"][img])
            frames = video.read_frames(out / "video" / entry["video_data"])
            np.testing.assert_array_equal(frames, tr["pixels"][img])
            assert video.read_frames(out / "mp4" / entry["mp4_data"]).shape == frames.shape
            assert entry["event_image"] == [f"{seq}/{k:06d}_{i}.png" for i in range(5)]
            with Image.open(out / "event_image" / entry["event_image"][0]) as im:
                assert im.size == (640, 480)
        # 50% overlap, exact to the microsecond, starting at the first image.
        assert starts[min(starts)] == int(tr["image_times"][0]) + min(starts) * half
        for k in starts:
            if k + 1 in starts:
                assert starts[k + 1] - starts[k] == half
        assert summary.clips_per_sequence[seq] == len(entries)
    assert summary.num_clips == sum(len(v) for v in by_seq.values())
    assert summary.stride_us == half and summary.duration_ms == duration and summary.overlap == 0.5
    assert not list(out.parent.glob(f".{out.name}.*"))                      # no temporary left over


def test_windows_without_images_or_events_are_errors_not_clips(built):
    out, summary = built[1000]
    assert [(e["sample_id"], e["stage"], e["file"]) for e in summary.errors] == [
        ("seq_a/000003", "build_clips", "seq_a/images/timestamps.txt"),
        ("seq_b/000003", "build_clips", "seq_b/events/left/events.h5"),
    ]
    assert "no image" in summary.errors[0]["error"]
    assert summary.errors[1]["error"].endswith("0 events; EventGPT needs at least 5 (one per event frame)")
    ids = {e["id"] for e in _entries(out)}
    assert "seq_a/000003" not in ids and "seq_b/000003" not in ids
    assert not (out / "event_npy" / "seq_a" / "000003.npy").exists()
    assert summary.windows_per_sequence == {"seq_a": 7, "seq_b": 7}
    assert summary.clips_per_sequence == {"seq_a": 6, "seq_b": 6}
    # 2 s windows all straddle the gaps, so every one is a clip.
    assert built[2000][1].errors == [] and built[2000][1].clips_per_sequence == {"seq_a": 3, "seq_b": 3}


@pytest.mark.parametrize("duration", [1000, 2000])
def test_split_by_sequence_and_read_back_by_the_dataset_reader(raw, built, duration):
    _, truth = raw
    out, summary = built[duration]
    json_path = out / dsec_raw.DEFAULT_INSTRUCTION_JSON
    entries = _entries(out)
    splits_of: dict[str, set] = {}
    for e in entries:
        seq = e["id"].split("/")[0]
        splits_of.setdefault(seq, set()).add(e["split"])
        assert e["conversations"] == [{"from": "human", "value": ""}, {"from": "gpt", "value": ""}]
    assert splits_of == {s: {split} for s, split in SPLITS.items()}      # no sequence in two splits
    assert summary.clips_per_split == {"train": summary.clips_per_sequence["seq_a"],
                                       "test": summary.clips_per_sequence["seq_b"]}

    samples = dataset.samples_from_instructions(out, json_path, ["What is this scene about?"], None)
    assert [s.sample_id for s in samples] == [e["id"] for e in entries]
    assert all(s.sample_id == f"{s.sample_id.split('/')[0]}/{int(s.sample_id.split('/')[1]):06d}" for s in samples)
    train = dataset.samples_from_instructions(out, json_path, ["q"], "train")
    assert {s.sample_id.split("/")[0] for s in train} == {"seq_a"}

    manifest, errors = dataset.build_manifest(out, json_path, ["q"], None, skip_bad=False)
    assert errors.num_rows == 0 and manifest.num_rows == len(entries)
    dur_us = duration * 1000
    for row in manifest.to_pylist():
        seq, k = row["sample_id"].split("/")
        start = int(truth[seq]["image_times"][0]) + int(k) * dur_us // 2
        t = truth[seq]["t"]
        assert row["num_events"] == int(np.sum((t >= start) & (t < start + dur_us)))
        assert row["width"] <= 640 and row["height"] <= 480 and len(row["event_image_paths"]) == 5
        assert row["mp4_path"] and row["video_dir"]

    saved = json.loads((out / dsec_raw.SUMMARY_JSON).read_text())
    assert saved == json.loads(json.dumps(asdict(summary)))


def test_too_few_events_is_an_error_and_the_instruction_name_is_a_parameter(tmp_path):
    raw_root = tmp_path / "raw"
    rel0 = T0 - T_OFFSET
    t = np.array([rel0 + 10, rel0 + 20, rel0 + 30, rel0 + 999_999] + [rel0 + 1_100_000 + i for i in range(10)])
    n = t.size
    events = {"x": np.zeros(n, np.uint16), "y": np.zeros(n, np.uint16), "p": np.ones(n, np.uint8),
              "t": t.astype(np.uint32)}
    write_raw_sequence(raw_root, "few", T0 + 50_000 * np.arange(25), events)
    out = tmp_path / "clips"
    summary = dsec_raw.build_clips(raw_root, ["few"], 1000, 0.5, out, {"few": "test"}, instruction_json="x.json")
    assert summary.windows_per_sequence == {"few": 1} and summary.num_clips == 0
    assert summary.errors[0]["sample_id"] == "few/000000"
    # the window starts at the first event (10 us after the first image): events and images both recorded
    assert f"[{T0 + 10}, {T0 + 1_000_010}) us: 4 events;" in summary.errors[0]["error"]
    assert json.loads((out / "x.json").read_text()) == []


# --------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------

def test_missing_files_raise_naming_the_path(raw, tmp_path):
    root, _ = raw
    broken = tmp_path / "raw"
    (broken / "seq_x" / "images" / "left" / "rectified").mkdir(parents=True)
    (broken / "seq_x" / "images" / "timestamps.txt").write_text("")
    out = tmp_path / "out"
    missing = broken / "seq_x" / "events" / "left" / "events.h5"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        dsec_raw.build_clips(broken, ["seq_x"], 1000, 0.5, out, {"seq_x": "test"})
    with pytest.raises(FileNotFoundError, match=str(root / "seq_nope")):
        dsec_raw.build_clips(root, ["seq_a", "seq_nope"], 1000, 0.5, out, {"seq_a": "train", "seq_nope": "test"})
    with pytest.raises(ValueError, match="without a split"):
        dsec_raw.build_clips(root, ["seq_a", "seq_b"], 1000, 0.5, out, {"seq_a": "train"})
    assert not out.exists()


def test_a_failed_build_leaves_no_output(raw, tmp_path, monkeypatch):
    root, _ = raw
    real, calls = dsec_raw.write_clip, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(dsec_raw, "write_clip", failing)
    out = tmp_path / "clips"
    with pytest.raises(RuntimeError, match="disk full"):
        dsec_raw.build_clips(root, ["seq_a", "seq_b"], 2000, 0.5, out, SPLITS)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []                 # neither out nor its temporary sibling
    (out / "old").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=str(out)):
        dsec_raw.build_clips(root, ["seq_a"], 2000, 0.5, out, SPLITS)


# --------------------------------------------------------------------------
# Issue #19 defect 9: windows where both streams have data; one bad PNG is one bad window
# --------------------------------------------------------------------------

def test_windows_start_where_the_events_begin_when_they_begin_after_the_first_image(tmp_path):
    """Events start 300.5 ms after the first image: a window starting at the first image would hold
    events for only part of its duration, so windows start at the first event."""
    raw_root = tmp_path / "raw"
    rel0 = T0 - T_OFFSET
    late = rel0 + 300_500
    rng = np.random.default_rng(5)
    t = np.sort(np.concatenate([[late], rng.integers(late, rel0 + 3_000_000, 3000)]))
    n = t.size
    events = {"x": rng.integers(0, 640, n).astype(np.uint16), "y": rng.integers(0, 480, n).astype(np.uint16),
              "p": rng.integers(0, 2, n).astype(np.uint8), "t": t.astype(np.uint32)}
    times = T0 + 50_000 * np.arange(61)                                  # images over 3 s
    write_raw_sequence(raw_root, "late", times, events)
    out = tmp_path / "clips"
    summary = dsec_raw.build_clips(raw_root, ["late"], 1000, 0.5, out, {"late": "test"})
    first_event = T_OFFSET + late
    # the span both streams cover: [first event, min(last image, last event + 1))
    want = dsec_raw.clip_windows(first_event, min(int(times[-1]), T_OFFSET + int(t[-1]) + 1), 1000)
    assert summary.windows_per_sequence == {"late": len(want)} and summary.errors == []
    starts = []
    for entry in _entries(out):
        ev = event_files.load_event_file(out / "event_npy" / entry["event_data"])
        starts.append(int(ev["time_start"]))
        assert int(ev["t"].min()) >= int(ev["time_start"]) >= first_event
    assert starts == [s for s, _ in want] and starts[0] == first_event


def test_an_unreadable_png_is_an_error_row_for_its_windows_only(tmp_path):
    raw_root = tmp_path / "raw"
    times = T0 + 50_000 * np.arange(41)                                  # images over 2 s
    write_raw_sequence(raw_root, "bad_png", times, _events(3))
    broken = raw_root / "bad_png" / "images" / "left" / "rectified" / "000012.png"   # 600 ms after T0
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "clips"
    summary = dsec_raw.build_clips(raw_root, ["bad_png"], 1000, 0.5, out, {"bad_png": "test"})
    # windows [0, 1 s) and [0.5 s, 1.5 s) hold image 12; [1 s, 2 s) does not
    assert summary.windows_per_sequence == {"bad_png": 3}
    assert [(e["sample_id"], e["stage"], e["file"]) for e in summary.errors] == [
        ("bad_png/000000", "build_clips", "bad_png/images/left/rectified/000012.png"),
        ("bad_png/000001", "build_clips", "bad_png/images/left/rectified/000012.png")]
    assert all("cannot read PNG" in e["error"] for e in summary.errors)
    assert [e["id"] for e in _entries(out)] == ["bad_png/000002"] and summary.clips_per_sequence == {"bad_png": 1}
