"""The DSEC-layout reader: restricted unpickling, instruction JSON, manifest."""
import json
import os
import pickle
import pickletools

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from specalign import artifacts, dataset, video
from specalign.dataset import EventFileError, SampleError, UnsafePickleError


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
    got = dataset.load_event_file(tmp_path / "e.npy")
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
        dataset.load_event_file(path)
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
        dataset.load_event_file(path)
    # A numpy name outside the allow-list is refused too.
    path = tmp_path / "load.npy"
    _npy_with_payload(path, pickle.dumps(np.load, protocol=3))
    with pytest.raises(UnsafePickleError, match="numpy"):
        dataset.load_event_file(path)


def test_old_numpy_module_names_and_protocols_load(tmp_path):
    arr = np.empty((), dtype=object)
    arr[()] = dict(_events(), s=np.float64(2.5), b=b"raw")
    # Protocol 2 writes globals as text lines; rename numpy 2's module to the
    # numpy 1.x one ("numpy.core") as old DSEC files carry it. Protocol 2 also
    # stores bytes via _codecs.encode(..., "latin1").
    old = pickle.dumps(arr, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old and b"_codecs" in old
    _npy_with_payload(tmp_path / "old.npy", old)
    got = dataset.load_event_file(tmp_path / "old.npy")
    np.testing.assert_array_equal(got["t"], arr[()]["t"])
    assert got["s"] == 2.5 and got["b"] == b"raw"
    # Protocol 5 reconstructs arrays through numpy._core.numeric._frombuffer.
    _npy_with_payload(tmp_path / "p5.npy", pickle.dumps(arr, protocol=5))
    np.testing.assert_array_equal(dataset.load_event_file(tmp_path / "p5.npy")["x"], arr[()]["x"])


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
            dataset.load_event_file(tmp_path / name)
    np.save(tmp_path / "plain.npy", np.arange(10))
    with pytest.raises(EventFileError, match="plain.npy.*pickled dict"):
        dataset.load_event_file(tmp_path / "plain.npy")
    good = tmp_path / "good.npy"
    np.save(good, _events(), allow_pickle=True)
    (tmp_path / "trunc.npy").write_bytes(good.read_bytes()[:-40])
    with pytest.raises(EventFileError, match="trunc.npy"):
        dataset.load_event_file(tmp_path / "trunc.npy")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(EventFileError, match="text.npy"):
        dataset.load_event_file(tmp_path / "text.npy")
    with pytest.raises(EventFileError, match="missing.npy"):
        dataset.load_event_file(tmp_path / "missing.npy")


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


def _write_clip(root, seq, clip, events=None, mp4=True, pngs=2, images=True):
    name = f"{clip:06d}"
    if events is not None:
        (root / "event_npy" / seq).mkdir(parents=True, exist_ok=True)
        np.save(root / "event_npy" / seq / f"{name}.npy", events, allow_pickle=True)
    frames = np.full((3, 8, 8, 3), 100, np.uint8)
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
        "sample_id": "s/000000", "split": "test", "question": "Q?", "reference": "ref 0",
        "event_path": "event_npy/s/000000.npy", "video_dir": "video/s/000000", "mp4_path": "mp4/s/000000.mp4",
        "event_image_paths": [f"event_image/s/000000_{k}.png" for k in range(5)],
        "duration_ms": 5.0,          # t spans 5 * 1000 us
        "num_events": 6, "width": 4, "height": 3,
    }
    assert r1["mp4_path"] == "" and r1["video_dir"] == "video/s/000001" and r1["width"] == 14

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
        assert s1.mp4_path is None and s1.video_dir == root / "video/s/000001"
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
