"""The demo dataset: hand-worked event simulation, equal-luma colours, layout round trip."""
import json
from collections import Counter

import numpy as np
import pytest

from specalign import dataset, demo_data, event_files, events
from specalign.demo_data import COLOURS, DemoSpec

C = 0.2
EPS = demo_data.LOG_EPS


def _luma_after(luma0, dlog):
    # The luma whose log intensity is exactly dlog above (below) luma0's.
    return (np.exp(np.log(luma0 / 255 + EPS) + dlog) - EPS) * 255


def test_simulate_events_hand_built_two_frames():
    # 1 x 3 pixels: pixel 0 brightens by 0.5 in log, pixel 1 stays, pixel 2 darkens by 0.65.
    f0 = np.array([[100.0, 80.0, 150.0]])
    f1 = np.array([[_luma_after(100.0, 0.5), 80.0, _luma_after(150.0, -0.65)]])
    ev = demo_data.simulate_events(np.stack([f0, f1]), np.array([1_000_000, 1_050_000]), C)
    # Pixel 0: levels +0.2, +0.4 reached at 0.2/0.5 and 0.4/0.5 of 50 ms -> +20000, +40000 us, polarity 1.
    # Pixel 2: levels -0.2, -0.4, -0.6 of -0.65 -> 15384.6, 30769.2, 46153.8 us -> rounded, polarity 0.
    # Sorted by time:
    assert ev["t"].tolist() == [1_015_385, 1_020_000, 1_030_769, 1_040_000, 1_046_154]
    assert ev["x"].tolist() == [2, 0, 2, 0, 2]
    assert ev["y"].tolist() == [0, 0, 0, 0, 0]
    assert ev["p"].tolist() == [0, 1, 0, 1, 0]
    assert ev["x"].dtype == np.uint16 and ev["y"].dtype == np.uint16
    assert ev["t"].dtype == np.int64 and ev["p"].dtype == np.uint8


def test_simulate_events_reference_carries_over():
    # +0.3 then +0.15 more: one event at 2/3 of the first interval (ref -> +0.2, 0.1 left over),
    # then the +0.4 level is crossed 0.1/0.15 = 2/3 into the second interval.
    l0 = 60.0
    frames = np.array([l0, _luma_after(l0, 0.3), _luma_after(l0, 0.45)]).reshape(3, 1, 1)
    ev = demo_data.simulate_events(frames, np.array([0, 30_000, 60_000]), C)
    assert ev["t"].tolist() == [20_000, 50_000] and ev["p"].tolist() == [1, 1]
    # Nothing changes -> no events (and a well-formed empty stream).
    still = demo_data.simulate_events(np.full((4, 2, 2), 90.0), np.arange(4) * 50_000, C)
    assert still["t"].size == 0 and still["x"].dtype == np.uint16


def test_colours_have_equal_luma_far_from_background():
    lumas = {name: demo_data.luma(np.array(rgb, np.uint8)) for name, rgb in COLOURS.items()}
    assert set(lumas.values()) == {136.531}
    # Each channel pattern reads as its name.
    r, g, b, y = (COLOURS[k] for k in ("red", "green", "blue", "yellow"))
    assert r[0] > 2 * max(r[1:]) and g[1] > 2 * max(g[0], g[2]) and b[2] > 2 * max(b[:2])
    assert min(y[:2]) > 10 * y[2]
    # Every background pixel is far darker than every shape: an edge crossing
    # always moves the log intensity by more than the contrast threshold.
    spec = DemoSpec(size=32, frames=4)
    for i in range(12):
        frames = demo_data.render_clip("red", "circle", "left", spec, np.random.default_rng(i))
        lum = demo_data.luma(frames[0])
        background = lum[lum != 136.531]
        assert np.log(136.531 / 255 + EPS) - np.log(background.max() / 255 + EPS) > 0.3


def test_events_do_not_depend_on_colour():
    spec = DemoSpec(size=32, frames=8)
    times = demo_data.frame_times_us(spec, 0)
    streams = []
    for colour in COLOURS:
        frames = demo_data.render_clip(colour, "triangle", "up", spec, np.random.default_rng(7))
        streams.append(demo_data.simulate_events(demo_data.luma(frames), times, C))
    assert streams[0]["t"].size > 0
    for s in streams[1:]:
        for k in "xytp":
            np.testing.assert_array_equal(s[k], streams[0][k])


@pytest.mark.parametrize("direction,axis,sign", [("left", 1, -1), ("right", 1, 1), ("up", 0, -1), ("down", 0, 1)])
def test_shapes_move_in_the_captioned_direction_and_stay_in_view(direction, axis, sign):
    spec = DemoSpec(size=32, frames=8)
    for shape in demo_data.SHAPES:
        frames = demo_data.render_clip("blue", shape, direction, spec, np.random.default_rng(3))
        masks = (frames == COLOURS["blue"]).all(axis=3)
        centroids = [np.argwhere(m).mean(axis=0)[axis] for m in masks]
        assert sign * (centroids[-1] - centroids[0]) > 2
        # Fully in view: the shape's pixel count never drops below the first frame's by much.
        counts = masks.reshape(len(masks), -1).sum(axis=1)
        assert counts.min() > 0.8 * counts.max()


def test_shapes_share_one_extent():
    masks = {s: demo_data.shape_mask(s, 20.0, 20.0, 8.0, 41) for s in demo_data.SHAPES}
    for s, m in masks.items():
        ys, xs = np.nonzero(m)
        assert (ys.min(), ys.max(), xs.min(), xs.max()) == (12, 28, 12, 28), s


def test_combinations_are_balanced():
    assert len(demo_data.COMBINATIONS) == 48 and len(set(demo_data.COMBINATIONS)) == 48
    counts = Counter(demo_data.COMBINATIONS[i % 48] for i in range(DemoSpec().n_train))
    assert set(counts.values()) == {16}


TINY = DemoSpec(n_train=4, n_test=2, size=32, frames=8)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "tiny"
    assert demo_data.build_demo_dataset(root, TINY) == 6
    return root


def test_tiny_dataset_layout(tiny_root):
    entries = json.loads((tiny_root / "instructions.json").read_text())
    assert [e["id"] for e in entries] == [f"demo_train/{i:06d}" for i in range(4)] + \
        [f"demo_test/{i:06d}" for i in range(2)]
    assert [e["split"] for e in entries] == ["train"] * 4 + ["test"] * 2
    e = entries[5]
    assert e["event_data"] == "demo_test/000001.npy" and e["video_data"] == "demo_test/000001"
    assert e["mp4_data"] == "demo_test/000001.mp4"
    assert e["event_image"] == [f"demo_test/000001_{k}.png" for k in range(5)]
    assert e["conversations"] == [{"from": "human", "value": ""},
                                  {"from": "gpt", "value": "a red circle moves right"}]   # COMBINATIONS[1]
    assert [x["conversations"][1]["value"] for x in entries[:4]] == [
        "a red circle moves left", "a red circle moves right", "a red circle moves up", "a red circle moves down"]
    assert len(list((tiny_root / "video/demo_train/000003").glob("*.png"))) == 8
    d = event_files.load_event_file(tiny_root / "event_npy/demo_train/000000.npy")
    assert d["num_events"] == d["t"].size >= 5
    assert np.all(np.diff(d["t"]) >= 0) and d["time_start"] < d["t"][0] <= d["t"][-1] <= d["time_end"]
    assert d["image_timestamp"].tolist() == [d["time_start"] + 50_000 * k for k in range(8)]
    assert d["duration_ms"] == 350.0 and d["image_indices_in_clip"].tolist() == list(range(8))
    assert not list(tiny_root.parent.glob(".tiny.*"))                # no temp dir left behind


def test_tiny_dataset_round_trips_through_manifest(tiny_root):
    manifest, errors = dataset.build_manifest(tiny_root, tiny_root / "instructions.json", ["Describe."], None,
                                              skip_bad=False)
    assert manifest.num_rows == 6 and errors.num_rows == 0
    samples = dataset.samples_from_manifest(manifest, tiny_root)
    assert [s.split for s in samples] == ["train"] * 4 + ["test"] * 2
    s = samples[4]
    assert s.sample_id == "demo_test/000000" and s.question == "Describe."
    assert s.reference == "a red circle moves left"
    assert s.width <= 32 and s.height <= 32 and s.num_events > 0
    frames = dataset.sample_video_frames(s, k=8)
    assert frames.shape == (8, 32, 32, 3)
    ev = dataset.sample_events(s)
    # The stored event images are eventgpt_frames at sensor size.
    from PIL import Image
    stored = np.asarray(Image.open(s.event_image_paths[2]))
    np.testing.assert_array_equal(stored, events.eventgpt_frames(ev, 5, 32, 32)[2])
    # The mp4 keeps the shape's colour: red where the first PNG frame is red.
    png = np.asarray(Image.open(s.video_dir / "000000.png"))
    red = (png == COLOURS["red"]).all(axis=2)
    assert red.sum() > 0
    decoded = dataset.sample_video_frames(s, k=8)[0]
    assert np.abs(decoded[red].mean(axis=0) - COLOURS["red"]).max() < 25
    train = dataset.build_manifest(tiny_root, tiny_root / "instructions.json", ["q"], "train", skip_bad=False)[0]
    assert train.num_rows == 4


def test_rebuild_is_byte_identical_and_refuses_existing(tiny_root, tmp_path):
    again = tmp_path / "again"
    demo_data.build_demo_dataset(again, TINY)
    for rel in ("instructions.json", "event_npy/demo_train/000002.npy", "video/demo_test/000001/000005.png",
                "event_image/demo_train/000001_4.png"):
        assert (again / rel).read_bytes() == (tiny_root / rel).read_bytes(), rel
    with pytest.raises(FileExistsError, match="again"):
        demo_data.build_demo_dataset(again, TINY)
    # The test split is not the training split re-drawn: same combination, new clip.
    a = np.asarray(event_files.load_event_file(again / "event_npy/demo_train/000000.npy")["x"])
    b = np.asarray(event_files.load_event_file(again / "event_npy/demo_test/000000.npy")["x"])
    assert a.shape != b.shape or (a != b).any()


def test_failed_build_leaves_nothing(tmp_path):
    # A threshold no edge can reach: the first clip never gets events, after the temp dir exists.
    with pytest.raises(RuntimeError, match="no events"):
        demo_data.build_demo_dataset(tmp_path / "broken", DemoSpec(n_train=2, n_test=0, size=16, frames=4,
                                                                   contrast_threshold=50.0))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="fps"):
        demo_data.build_demo_dataset(tmp_path / "fps", DemoSpec(n_train=1, n_test=0, size=16, fps=0))
    with pytest.raises(ValueError, match="even"):
        demo_data.build_demo_dataset(tmp_path / "odd", DemoSpec(n_train=1, n_test=0, size=15))


def test_skip_bad_on_demo_data(tmp_path):
    root = tmp_path / "d"
    demo_data.build_demo_dataset(root, DemoSpec(n_train=3, n_test=0, size=16, frames=6))
    (root / "event_npy/demo_train/000000.npy").unlink()
    empty = {k: np.zeros(0, dt) for k, dt in (("x", np.uint16), ("y", np.uint16), ("t", np.int64), ("p", np.uint8))}
    np.save(root / "event_npy/demo_train/000002.npy", empty, allow_pickle=True)
    with pytest.raises(dataset.SampleError, match="demo_train/000000.*event_npy/demo_train/000000.npy"):
        dataset.build_manifest(root, root / "instructions.json", ["q"], "train", skip_bad=False)
    manifest, errors = dataset.build_manifest(root, root / "instructions.json", ["q"], "train", skip_bad=True)
    assert manifest.column("sample_id").to_pylist() == ["demo_train/000001"]
    assert errors.to_pylist() == [
        {"sample_id": "demo_train/000000", "stage": "manifest", "file": "event_npy/demo_train/000000.npy",
         "error": errors.column("error")[0].as_py()},
        {"sample_id": "demo_train/000002", "stage": "manifest", "file": "event_npy/demo_train/000002.npy",
         "error": "event file holds zero events"},
    ]
    assert "does not exist" in errors.column("error")[0].as_py()
