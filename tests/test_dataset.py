"""The DSEC-layout reader: restricted unpickling, instruction JSON, manifest."""
import json
import os
import pickle
import pickletools

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from specalign import artifacts, dataset, event_files, video
from specalign.dataset import SampleError
from specalign.event_files import EventFileError, UnsafePickleError


def _events(n=6, x0=0):
    return {
        "x": (np.arange(n) % 4 + x0).astype(np.uint16),
        "y": (np.arange(n) % 3).astype(np.uint16),
        "t": (10**9 + 1000 * np.arange(n)).astype(np.int64),
        "p": (np.arange(n) % 2).astype(np.uint8),
    }


def test_load_event_file_round_trip(tmp_path):
    d = dict(_events(), time_start=np.int64(5), duration_ms=5.0, image_timestamp=np.arange(3.0),
             image_idx=[1, 2], num_events=6, name="clip", flag=np.bool_(True), f=np.float32(0.5))
    np.save(tmp_path / "e.npy", d, allow_pickle=True)
    got = event_files.load_event_file(tmp_path / "e.npy")
    assert set(got) == set(d)
    for k in ("x", "y", "t", "p", "image_timestamp"):
        np.testing.assert_array_equal(got[k], d[k])
        assert got[k].dtype == np.asarray(d[k]).dtype
    assert got["image_idx"] == [1, 2] and got["name"] == "clip" and got["num_events"] == 6
    assert got["time_start"] == 5 and got["f"] == np.float32(0.5)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npy"
    np.save(path, dict(_events(), payload=_Evil(marker)), allow_pickle=True)
    # The file really does ask for os.system (posix.system) when unpickled.
    raw = path.read_bytes()
    strings = {arg for op, arg, _ in pickletools.genops(raw[raw.index(b"\x80"):]) if isinstance(arg, str)}
    assert "system" in strings
    with pytest.raises(UnsafePickleError) as info:
        event_files.load_event_file(path)
    msg = str(info.value)
    assert "evil.npy" in msg and "system" in msg
    assert not marker.exists()


def _npy_with_payload(path, payload: bytes):
    # An object-array .npy: header written by numpy, pickle payload supplied.
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(payload)


def test_other_globals_are_refused(tmp_path):
    path = tmp_path / "getattr.npy"
    _npy_with_payload(path, pickle.dumps(getattr, protocol=3))
    with pytest.raises(UnsafePickleError, match=r"getattr\.npy.*builtins\.getattr"):
        event_files.load_event_file(path)
    # A numpy name outside the allow-list is refused too.
    path = tmp_path / "load.npy"
    _npy_with_payload(path, pickle.dumps(np.load, protocol=3))
    with pytest.raises(UnsafePickleError, match="numpy"):
        event_files.load_event_file(path)


def test_old_numpy_module_names_and_protocols_load(tmp_path):
    arr = np.empty((), dtype=object)
    arr[()] = dict(_events(), s=np.float64(2.5), b=b"raw")
    # Protocol 2 writes globals as text lines; rename numpy 2's module to the
    # numpy 1.x one ("numpy.core") as old DSEC files carry it. Protocol 2 also
    # stores bytes via _codecs.encode(..., "latin1").
    old = pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old and b"_codecs" in old
    _npy_with_payload(tmp_path / "old.npy", old)
    got = event_files.load_event_file(tmp_path / "old.npy")
    np.testing.assert_array_equal(got["t"], arr[()]["t"])
    assert got["s"] == 2.5 and got["b"] == b"raw"
    # Protocol 5 reconstructs arrays through numpy._core.numeric._frombuffer.
    _npy_with_payload(tmp_path / "p5.npy", pickle.dumps(arr, protocol=5))
    np.testing.assert_array_equal(event_files.load_event_file(tmp_path / "p5.npy")["x"], arr[()]["x"])


def test_bad_event_files_name_the_file(tmp_path):
    cases = {
        "nokeys.npy": {"x": np.arange(3), "y": np.arange(3)},
        "lengths.npy": dict(_events(), p=np.zeros(2, np.uint8)),
        "twod.npy": dict(_events(), x=np.zeros((6, 1))),
        "list.npy": [1, 2, 3],
    }
    for name, obj in cases.items():
        np.save(tmp_path / name, np.array(obj, dtype=object) if name == "list.npy" else obj, allow_pickle=True)
        with pytest.raises(EventFileError, match=name):
            event_files.load_event_file(tmp_path / name)
    np.save(tmp_path / "plain.npy", np.arange(10))
    with pytest.raises(EventFileError, match="plain.npy.*pickled dict"):
        event_files.load_event_file(tmp_path / "plain.npy")
    good = tmp_path / "good.npy"
    np.save(good, _events(), allow_pickle=True)
    (tmp_path / "trunc.npy").write_bytes(good.read_bytes()[:-40])
    with pytest.raises(EventFileError, match="trunc.npy"):
        event_files.load_event_file(tmp_path / "trunc.npy")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(EventFileError, match="text.npy"):
        event_files.load_event_file(tmp_path / "text.npy")
    with pytest.raises(EventFileError, match="missing.npy"):
        event_files.load_event_file(tmp_path / "missing.npy")


def _entry(seq, clip, split="test", human="", gpt="", mp4=True, video=True, images=True):
    name = f"{seq}/{clip:06d}"
    e = {"id": clip, "split": split, "event_data": f"{name}.npy",
         "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]}
    if video:
        e["video_data"] = name
    if mp4:
        e["mp4_data"] = f"{name}.mp4"
    if images:
        e["event_image"] = [f"{name}_{k}.png" for k in range(5)]
    return e


def test_samples_from_instructions_questions_and_paths(tmp_path):
    entries = [
        _entry("s", 0, "train", human="<event>\nWhat is here?", gpt="a red circle"),
        _entry("s", 1, "test", human="", gpt=" answer "),
        _entry("s", 2, "test", human="<video>\n  ", mp4=False, images=False),
        _entry("s", 3, "test", human=""),
    ]
    del entries[3]["conversations"][1]                     # no gpt turn at all
    (tmp_path / "inst.json").write_text(json.dumps(entries))
    qs = ["Q0?", "Q1?", "Q2?"]
    root = tmp_path.resolve()
    all_samples = dataset.samples_from_instructions(tmp_path, tmp_path / "inst.json", qs, None)
    assert [s.sample_id for s in all_samples] == ["s/000000", "s/000001", "s/000002", "s/000003"]
    # Question index = the entry's position in the whole JSON: 1 -> Q1, 2 -> Q2, 3 -> Q0.
    assert [s.question for s in all_samples] == ["What is here?", "Q1?", "Q2?", "Q0?"]
    assert [s.reference for s in all_samples] == ["a red circle", "answer", "", ""]
    s0 = all_samples[0]
    assert s0.split == "train"
    assert s0.event_path == root / "event_npy/s/000000.npy"
    assert s0.video_dir == root / "video/s/000000"
    assert s0.mp4_path == root / "mp4/s/000000.mp4"
    assert s0.event_image_paths == tuple(root / f"event_image/s/000000_{k}.png" for k in range(5))
    s2 = all_samples[2]
    assert s2.mp4_path is None and s2.event_image_paths == ()

    test = dataset.samples_from_instructions(tmp_path, tmp_path / "inst.json", qs, "test")
    assert [(s.sample_id, s.question) for s in test] == [("s/000001", "Q1?"), ("s/000002", "Q2?"), ("s/000003", "Q0?")]
    with pytest.raises(ValueError, match="s/000001"):
        dataset.samples_from_instructions(tmp_path, tmp_path / "inst.json", [], "test")


def test_instruction_errors(tmp_path):
    (tmp_path / "obj.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="obj.json"):
        dataset.read_instructions(tmp_path / "obj.json")
    (tmp_path / "bad.json").write_text("[")
    with pytest.raises(ValueError, match="bad.json"):
        dataset.read_instructions(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="none.json"):
        dataset.read_instructions(tmp_path / "none.json")
    (tmp_path / "dup.json").write_text(json.dumps([_entry("s", 0), _entry("s", 0)]))
    with pytest.raises(ValueError, match="twice"):
        dataset.samples_from_instructions(tmp_path, tmp_path / "dup.json", ["q"], None)


def _write_clip(root, seq, clip, events=None, mp4=True, pngs=2, images=True, n_frames=3):
    name = f"{clip:06d}"
    if events is not None:
        (root / "event_npy" / seq).mkdir(parents=True, exist_ok=True)
        np.save(root / "event_npy" / seq / f"{name}.npy", events, allow_pickle=True)
    frames = np.full((n_frames, 8, 8, 3), 100, np.uint8)
    if mp4:
        video.write_mp4(frames, root / "mp4" / seq / f"{name}.mp4")
    if pngs is not None:
        d = root / "video" / seq / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(pngs):
            Image.fromarray(frames[0]).save(d / f"{k:06d}.png")
    if images:
        (root / "event_image" / seq).mkdir(parents=True, exist_ok=True)
        for k in range(5):
            Image.fromarray(frames[0]).save(root / "event_image" / seq / f"{name}_{k}.png")


@pytest.fixture
def small_root(tmp_path):
    """Clips 0-1 good; 2-6 each broken in one way."""
    root = tmp_path / "data"
    ev = _events(6)
    _write_clip(root, "s", 0, ev)                                     # mp4 + PNGs + images
    _write_clip(root, "s", 1, _events(6, x0=10), mp4=False)           # PNG folder only
    _write_clip(root, "s", 2, None)                                   # event file missing
    _write_clip(root, "s", 3, {k: v[:0] for k, v in ev.items()})      # zero events
    _write_clip(root, "s", 4, ev, mp4=False, pngs=None)               # no video at all
    _write_clip(root, "s", 5, ev)
    (root / "mp4/s/000005.mp4").write_bytes(b"corrupt" * 20)          # mp4 present but corrupt
    _write_clip(root, "s", 6, ev, mp4=False, pngs=0)                  # empty PNG folder
    entries = [_entry("s", i, gpt=f"ref {i}") for i in range(7)]
    (root / "inst.json").write_text(json.dumps(entries))
    return root


def test_build_manifest_good_and_bad(small_root):
    with pytest.raises(SampleError) as info:
        dataset.build_manifest(small_root, small_root / "inst.json", ["Q?"], "test", skip_bad=False)
    assert "s/000002" in str(info.value) and "event_npy/s/000002.npy" in str(info.value)
    assert isinstance(info.value, ValueError)

    manifest, errors = dataset.build_manifest(small_root, small_root / "inst.json", ["Q?"], "test", skip_bad=True)
    assert manifest.schema == artifacts.SCHEMAS["manifest"] and errors.schema == artifacts.SCHEMAS["errors"]
    rows = manifest.to_pylist()
    assert [r["sample_id"] for r in rows] == ["s/000000", "s/000001"]
    r0, r1 = rows
    assert r0 == {
        "sample_id": "s/000000", "sequence": "s", "split": "test", "question": "Q?", "reference": "ref 0",
        "event_path": "event_npy/s/000000.npy", "video_dir": "video/s/000000", "mp4_path": "mp4/s/000000.mp4",
        "event_image_paths": [f"event_image/s/000000_{k}.png" for k in range(5)],
        "duration_ms": 5.0,          # t spans 5 * 1000 us
        "num_events": 6, "width": 4, "height": 3,
        "num_frames": 3, "short_video": True,   # the mp4's 3 frames (< 8: marked, the default)
    }
    assert r1["mp4_path"] == "" and r1["video_dir"] == "video/s/000001" and r1["width"] == 14
    assert (r1["num_frames"], r1["short_video"]) == (2, True)   # its PNG folder's 2 files

    errs = {r["sample_id"]: r for r in errors.to_pylist()}
    assert set(errs) == {"s/000002", "s/000003", "s/000004", "s/000005", "s/000006"}
    assert all(r["stage"] == "manifest" for r in errs.values())
    assert errs["s/000002"]["file"] == "event_npy/s/000002.npy" and "does not exist" in errs["s/000002"]["error"]
    assert errs["s/000003"]["file"] == "event_npy/s/000003.npy" and "zero events" in errs["s/000003"]["error"]
    assert "no readable video" in errs["s/000004"]["error"] and "video/s/000004" in errs["s/000004"]["file"]
    assert errs["s/000005"]["file"] == "mp4/s/000005.mp4"
    assert "no readable video" in errs["s/000006"]["error"]


def test_manifest_round_trip_and_sample_helpers(small_root, tmp_path):
    manifest, errors = dataset.build_manifest(small_root, small_root / "inst.json", ["Q?"], None, skip_bad=True)
    out = tmp_path / "manifest.parquet"
    artifacts.write_parquet(manifest, out, "manifest")
    root = small_root.resolve()
    for source in (out, manifest):
        samples = dataset.samples_from_manifest(source, small_root)
        assert [s.sample_id for s in samples] == ["s/000000", "s/000001"]
        s0, s1 = samples
        assert s0.event_path == root / "event_npy/s/000000.npy" and s0.mp4_path == root / "mp4/s/000000.mp4"
        assert s0.event_image_paths[4] == root / "event_image/s/000000_4.png"
        assert (s0.duration_ms, s0.num_events, s0.width, s0.height) == (5.0, 6, 4, 3)
        assert (s0.num_frames, s0.short_video, s1.num_frames, s1.short_video) == (3, True, 2, True)
        assert s1.mp4_path is None and s1.video_dir == root / "video/s/000001"
        assert (s0.sequence, s1.sequence) == ("s", "s")
    assert pq.read_table(out).num_rows == 2

    np.testing.assert_array_equal(dataset.sample_events(s0)["x"], _events(6)["x"])
    frames = dataset.sample_video_frames(s0, k=8)          # from the mp4 (3 frames)
    assert frames.shape == (8, 8, 8, 3) and abs(float(frames.mean()) - 100) < 3
    frames = dataset.sample_video_frames(s1, k=4)          # from the PNG folder (2 frames)
    assert frames.shape == (4, 8, 8, 3) and (frames == 100).all()

    gone = dataset.Sample("s/000009", event_path=root / "event_npy/s/000009.npy")
    with pytest.raises(SampleError, match="s/000009.*000009.npy"):
        dataset.sample_events(gone)
    with pytest.raises(SampleError, match="s/000009"):
        dataset.sample_video_frames(gone)


# --------------------------------------------------------------------------
# Adversarial clips: events that would pass silently, short videos
# --------------------------------------------------------------------------

DSEC_SENSOR = (480, 640)   # (height, width): the schema's sensor_height, sensor_width defaults


def _bad_t_nan():
    ev = _events(6)
    ev["t"] = ev["t"].astype(np.float64)
    ev["t"][3] = np.nan
    return ev


def _bad_t_decreasing():
    ev = _events(6)
    ev["t"][4] = ev["t"][2] - 1
    return ev


def _bad_t_decreasing_unsigned():   # np.diff of uint32 wraps around: a decrease looks like a huge step
    ev = _events(6)
    ev["t"] = (1000 * np.array([1, 2, 3, 2, 5, 6])).astype(np.uint32)
    return ev


def _bad_x_beyond_sensor():
    ev = _events(6)
    ev["x"][2] = 9999                 # a 10000-px-wide EventGPT canvas
    return ev


def _bad_y_negative():
    ev = _events(6)
    ev["y"] = ev["y"].astype(np.int16)
    ev["y"][1] = -3
    return ev


def _bad_x_nan():
    ev = _events(6)
    ev["x"] = ev["x"].astype(np.float32)
    ev["x"][0] = np.nan
    return ev


BAD_EVENTS = {
    "nan_t": (_bad_t_nan, "'t' is not finite at event 3"),
    "decreasing_t": (_bad_t_decreasing, "timestamps decrease at event 4"),
    "decreasing_unsigned_t": (_bad_t_decreasing_unsigned, "timestamps decrease at event 3"),
    "x_9999_on_640": (_bad_x_beyond_sensor, "'x' = 9999 at event 2 lies outside the 480x640 sensor"),
    "negative_y": (_bad_y_negative, "'y' is negative at event 1"),
    "nan_x": (_bad_x_nan, "'x' is not finite at event 0"),
}


def _root_with(tmp_path, bad_events=None, n_frames=10, mp4=True, pngs=None):
    """Clip s/000000 good (10-frame mp4); s/000001 with `bad_events` and a video of n_frames."""
    root = tmp_path / "adv"
    _write_clip(root, "s", 0, _events(6), pngs=None, n_frames=10)
    _write_clip(root, "s", 1, bad_events if bad_events is not None else _events(6), mp4=mp4, pngs=pngs,
                n_frames=n_frames)
    (root / "inst.json").write_text(json.dumps([_entry("s", 0), _entry("s", 1, mp4=mp4, video=pngs is not None)]))
    return root


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
def test_bad_event_streams_are_errors_rows_naming_clip_and_reason(tmp_path, case):
    make, reason = BAD_EVENTS[case]
    root = _root_with(tmp_path, make())
    manifest, errors = dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=True,
                                              sensor_size=DSEC_SENSOR)
    assert manifest.column("sample_id").to_pylist() == ["s/000000"]
    (err,) = errors.to_pylist()
    assert (err["sample_id"], err["stage"], err["file"]) == ("s/000001", "manifest", "event_npy/s/000001.npy")
    assert reason in err["error"], err["error"]


@pytest.mark.parametrize("case", sorted(BAD_EVENTS))
def test_bad_event_streams_stop_naming_sample_and_file(tmp_path, case):
    make, reason = BAD_EVENTS[case]
    root = _root_with(tmp_path, make())
    with pytest.raises(SampleError) as info:
        dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=False, sensor_size=DSEC_SENSOR)
    msg = str(info.value)
    assert "s/000001" in msg and "event_npy/s/000001.npy" in msg and reason in msg
    assert (info.value.sample_id, info.value.file) == ("s/000001", "event_npy/s/000001.npy")


def test_sensor_bounds_are_exclusive_and_equal_timestamps_pass(tmp_path):
    ev = _events(6)
    ev["x"][0], ev["y"][1] = 639, 479          # the last pixel of a 640 x 480 sensor
    ev["t"][3] = ev["t"][2]                    # equal timestamps (DSEC has them): non-decreasing
    root = _root_with(tmp_path, ev)
    manifest, errors = dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=False,
                                              sensor_size=DSEC_SENSOR)
    assert errors.num_rows == 0
    assert manifest.to_pylist()[1]["width"] == 640 and manifest.to_pylist()[1]["height"] == 480
    # one pixel smaller and the same clip is outside
    with pytest.raises(SampleError, match=r"s/000001.*'x' = 639 at event 0 lies outside the 479x639 sensor"):
        dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=False, sensor_size=(479, 639))


def test_short_video_is_marked_by_default(tmp_path):
    root = _root_with(tmp_path, n_frames=5)
    manifest, errors = dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=False,
                                              sensor_size=DSEC_SENSOR)
    assert errors.num_rows == 0 and manifest.schema == artifacts.SCHEMAS["manifest"]
    rows = {r["sample_id"]: r for r in manifest.to_pylist()}
    assert (rows["s/000000"]["num_frames"], rows["s/000000"]["short_video"]) == (10, False)
    assert (rows["s/000001"]["num_frames"], rows["s/000001"]["short_video"]) == (5, True)
    assert manifest.schema.field("num_frames").type == "int32"
    # explicit mark, and a lower min_frames makes 5 frames enough
    marked = dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=False, short_video="mark",
                                    min_frames=8)[0]
    assert marked.column("short_video").to_pylist() == [False, True]
    enough = dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=False, min_frames=5)[0]
    assert enough.column("short_video").to_pylist() == [False, False]


def test_short_png_folder_is_counted_by_files(tmp_path):
    root = _root_with(tmp_path, n_frames=5, mp4=False, pngs=5)
    manifest, _ = dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=False)
    r1 = manifest.to_pylist()[1]
    assert (r1["mp4_path"], r1["video_dir"], r1["num_frames"], r1["short_video"]) == ("", "video/s/000001", 5, True)
    with pytest.raises(SampleError, match=r"s/000001 \(video/s/000001\): short video: 5 frames"):
        dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=False, short_video="refuse")


def test_short_video_refused_is_an_errors_row(tmp_path):
    root = _root_with(tmp_path, n_frames=5)
    manifest, errors = dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=True,
                                              short_video="refuse", sensor_size=DSEC_SENSOR)
    assert manifest.column("sample_id").to_pylist() == ["s/000000"]
    assert manifest.column("num_frames").to_pylist() == [10]
    (err,) = errors.to_pylist()
    assert (err["sample_id"], err["stage"], err["file"]) == ("s/000001", "manifest", "mp4/s/000001.mp4")
    assert "short video: 5 frames, fewer than min_frames 8" in err["error"]


def test_short_video_refused_stops_naming_sample_and_file(tmp_path):
    root = _root_with(tmp_path, n_frames=5)
    with pytest.raises(SampleError) as info:
        dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=False, short_video="refuse",
                               sensor_size=DSEC_SENSOR)
    msg = str(info.value)
    assert "s/000001" in msg and "mp4/s/000001.mp4" in msg and "short video: 5 frames" in msg
    with pytest.raises(ValueError, match="short_video must be one of"):
        dataset.build_manifest(root, root / "inst.json", ["Q?"], None, skip_bad=False, short_video="drop")


def test_count_frames_without_a_header_count(tmp_path):
    """A container that records no frame count (Matroska) is counted by packets, not decoded."""
    import av

    path = tmp_path / "five.mkv"
    with av.open(str(path), "w", format="matroska") as c:
        stream = c.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = 8, 8, "yuv420p"
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    with av.open(str(path)) as c:
        assert not c.streams.video[0].frames      # the header path is not what is tested here
    assert dataset.count_frames(path) == 5 == video.read_frames(path).shape[0]
    video.write_mp4(np.zeros((7, 8, 8, 3), np.uint8), tmp_path / "seven.mp4")
    assert dataset.count_frames(tmp_path / "seven.mp4") == 7 == video.read_frames(tmp_path / "seven.mp4").shape[0]


def test_demo_events_lie_inside_the_demo_frame(tmp_path):
    """For kind demo the sensor is demo.size x demo.size (what stages.spec passes): the demo's own
    events fit it, and its 4-frame clips are marked, not dropped."""
    from specalign.demo_data import DemoSpec, build_demo_dataset

    root = tmp_path / "demo"
    build_demo_dataset(root, DemoSpec(n_train=2, n_test=1, size=16, frames=4))
    manifest, errors = dataset.build_manifest(root, root / "instructions.json", ["q"], None, skip_bad=False,
                                              sensor_size=(16, 16))
    assert manifest.num_rows == 3 and errors.num_rows == 0
    assert set(manifest.column("num_frames").to_pylist()) == {4}
    assert all(manifest.column("short_video").to_pylist())


def test_manifest_spec_carries_the_sensor_and_short_video_keys():
    """What the manifest script passes to build_manifest comes from its spec: a dsec dataset's
    sensor_width / sensor_height, a demo's frame side; short_video and min_frames with their defaults."""
    import copy
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    from specalign import stages
    from specalign.specs import SCHEMA_PATH

    repo = Path(__file__).resolve().parents[1]
    real = yaml.safe_load((repo / "config" / "real_models.yaml").read_text())
    validate(real, str(SCHEMA_PATH))
    assert real["datasets"]
    for name in real["datasets"]:  # every real dataset is a DSEC build (test and train windows)
        spec = stages.spec(real, "manifest", dataset=name)
        assert (spec["sensor_size"], spec["short_video"], spec["min_frames"]) == ([480, 640], "mark", 8)
        for key, value in (("sensor_width", 1280), ("sensor_height", 720), ("short_video", "refuse"),
                           ("min_frames", 4)):
            cfg = copy.deepcopy(real)
            cfg["datasets"][name][key] = value
            assert stages.spec(cfg, "manifest", dataset=name) != spec, key
    demo = yaml.safe_load((repo / "config.yaml").read_text())
    validate(demo, str(SCHEMA_PATH))
    assert stages.spec(demo, "manifest", dataset="demo")["sensor_size"] == [64, 64]
    bad = copy.deepcopy(demo)
    bad["datasets"]["demo"]["short_video"] = "drop"
    with pytest.raises(Exception, match="drop"):
        validate(bad, str(SCHEMA_PATH))


# --------------------------------------------------------------------------
# Sequences (issue #19 defect 10): carried as a column, never parsed from the sample id
# --------------------------------------------------------------------------

def _flat_root(tmp_path, entries):
    """A dataset whose event files lie flat under event_npy/ (ids without "/")."""
    root = tmp_path / "flat"
    (root / "event_npy").mkdir(parents=True)
    for e in entries:
        np.save(root / "event_npy" / e["event_data"], _events(6), allow_pickle=True)
        video.write_mp4(np.full((3, 8, 8, 3), 100, np.uint8), root / "mp4" / e["mp4_data"])
    (root / "inst.json").write_text(json.dumps(entries))
    return root


def test_sequence_comes_from_the_clip_path_or_the_entry(tmp_path):
    entries = [_entry("zurich_a", 0), _entry("zurich_a/left", 1),
               {"id": 7, "event_data": "zurich_b_000002.npy", "mp4_data": "zurich_b_000002.mp4", "sequence": "zurich_b"},
               {"id": 8, "event_data": "lone_000003.npy", "mp4_data": "lone_000003.mp4"},
               {"id": "only/an/id"}]
    (tmp_path / "inst.json").write_text(json.dumps(entries))
    samples = dataset.samples_from_instructions(tmp_path, tmp_path / "inst.json", ["q"], None)
    assert [(s.sample_id, s.sequence) for s in samples] == [
        ("zurich_a/000000", "zurich_a"),            # the clip file's folder
        ("zurich_a/left/000001", "zurich_a/left"),  # the whole folder path
        ("zurich_b_000002", "zurich_b"),            # the entry's own "sequence" wins
        ("lone_000003", "lone_000003"),             # unknown: the clip is its own sequence (documented)
        ("only/an/id", "only/an/id"),               # an id is never parsed for a sequence
    ]
    assert dataset.Sample("x/000001").sequence == "x/000001"   # built by hand without one: its own


def test_manifest_carries_the_sequence_column(tmp_path):
    root = _flat_root(tmp_path, [
        {"id": 0, "event_data": "seqA_000000.npy", "mp4_data": "seqA_000000.mp4", "sequence": "seqA"},
        {"id": 1, "event_data": "seqA_000001.npy", "mp4_data": "seqA_000001.mp4", "sequence": "seqA"}])
    manifest, _ = dataset.build_manifest(root, root / "inst.json", ["q"], None, skip_bad=False)
    assert manifest.column("sequence").to_pylist() == ["seqA", "seqA"]
    assert [s.sequence for s in dataset.samples_from_manifest(manifest, root)] == ["seqA", "seqA"]


def test_check_disjoint_uses_the_sequence_column(tmp_path, caplog):
    """Ids without "/" (a flat layout naming its sequences in the entries): parsing the id would see
    two unrelated clips; the sequence column sees one sequence in train and evaluation."""
    entries = [{"id": i, "split": split, "event_data": f"zurich_a_{i:06d}.npy", "mp4_data": f"zurich_a_{i:06d}.mp4",
                "sequence": seq} for i, (split, seq) in enumerate([("train", "zurich_a"), ("test", "zurich_a"),
                                                                     ("test", "zurich_b")])]
    entries[2]["event_data"], entries[2]["mp4_data"] = "zurich_b_000002.npy", "zurich_b_000002.mp4"
    root = _flat_root(tmp_path, entries)
    train = dataset.samples_from_instructions(root, root / "inst.json", ["q"], "train")
    evaluated, _ = dataset.build_manifest(root, root / "inst.json", ["q"], "test", skip_bad=False)
    assert {s.sample_id.split("/")[0] for s in train} & set(evaluated.column("sample_id").to_pylist()) == set()
    with pytest.raises(ValueError, match=r"sequences \['zurich_a'\] hold both training and evaluated clips"):
        dataset.check_disjoint(train, [evaluated])
    # a Parquet manifest is read by path, and the message names it
    path = tmp_path / "manifest.parquet"
    artifacts.write_parquet(evaluated, path, "manifest")
    with pytest.raises(ValueError, match="manifest.parquet"):
        dataset.check_disjoint(train, [path])
    # disjoint: passes; a shared clip is named first
    dataset.check_disjoint(train, [evaluated.filter(pa_compute_equal(evaluated, "sequence", "zurich_b"))])
    with pytest.raises(ValueError, match=r"training clips are also evaluated.*zurich_a_000000"):
        dataset.check_disjoint(train, [dataset.build_manifest(root, root / "inst.json", ["q"], None, False)[0]])
    # clips with no known sequence are compared as their own sequences, and the check says so
    lone = dataset.Sample("lone_000009")
    with caplog.at_level("WARNING"):
        dataset.check_disjoint([lone], [evaluated.filter(pa_compute_equal(evaluated, "sequence", "zurich_b"))])
    assert "1 clip(s) have no known sequence" in caplog.text and "lone_000009" in caplog.text
    # a manifest from before the column existed is refused, naming it
    old = tmp_path / "old.parquet"
    pq.write_table(evaluated.drop_columns(["sequence"]), old)
    with pytest.raises(ValueError, match="old.parquet.*sequence.*rebuild"):
        dataset.check_disjoint(train, [old])


def pa_compute_equal(tbl, column, value):
    import pyarrow.compute as pc

    return pc.equal(tbl.column(column), value)
