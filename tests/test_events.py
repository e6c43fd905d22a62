"""Event representations checked against hand-worked pictures and sums."""
import numpy as np
import pytest

from specalign import events as ev

W, R, B = (255, 255, 255), (255, 0, 0), (0, 0, 255)


def test_split_equal_count_last_chunk_takes_remainder():
    assert ev.split_equal_count(12, 5) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 12)]
    assert ev.split_equal_count(5, 5) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert ev.split_equal_count(10, 1) == [(0, 10)]
    # Fewer events than chunks: the first chunks are empty (eventgpt_frames refuses this).
    assert ev.split_equal_count(3, 5) == [(0, 0), (0, 0), (0, 0), (0, 0), (0, 3)]
    with pytest.raises(ValueError):
        ev.split_equal_count(10, 0)


# Six hand-placed events, in time order. (0,0) is hit twice (red then blue),
# (2,1) twice (blue then red): the later event must win.
X = np.array([0, 2, 0, 3, 2, 1], dtype=np.uint16)
Y = np.array([0, 1, 0, 2, 1, 2], dtype=np.uint16)
P = np.array([1, 0, 0, 1, 1, 0], dtype=np.uint8)
T = np.array([10, 20, 30, 40, 50, 60], dtype=np.int64)

EXPECTED = np.array([
    [B, W, W, W],      # (0,0): red, then blue wins
    [W, W, R, W],      # (2,1): blue, then red wins
    [W, B, W, R],      # (1,2) blue, (3,2) red
], dtype=np.uint8)


def test_render_polarity_hand_placed_events_last_wins():
    img = ev.render_polarity(X, Y, P)
    assert img.dtype == np.uint8 and img.shape == (3, 4, 3)   # (y.max+1, x.max+1)
    np.testing.assert_array_equal(img, EXPECTED)


def test_render_polarity_given_canvas_and_bounds():
    img = ev.render_polarity(X, Y, P, height=4, width=6)
    assert img.shape == (4, 6, 3)
    np.testing.assert_array_equal(img[:3, :4], EXPECTED)
    assert (img[3] == 255).all() and (img[:, 4:] == 255).all()
    with pytest.raises(ValueError, match="outside"):
        ev.render_polarity(X, Y, P, height=2, width=4)
    # -1/1 polarity convention draws the same picture.
    np.testing.assert_array_equal(ev.render_polarity(X, Y, P.astype(np.int8) * 2 - 1), EXPECTED)
    # No events: a white canvas when the size is known, an error when it is not.
    assert (ev.render_polarity([], [], [], height=2, width=2) == 255).all()
    with pytest.raises(ValueError):
        ev.render_polarity([], [], [])


def test_eventgpt_frames_equal_count_chunks():
    events = {"x": X, "y": Y, "t": T, "p": P}
    frames = ev.eventgpt_frames(events, n=5)
    # chunks: [0], [1], [2], [3], [4, 5]; each canvas sized by its own events (EventGPT).
    assert [f.shape[:2] for f in frames] == [(1, 1), (2, 3), (1, 1), (3, 4), (3, 3)]
    assert tuple(frames[0][0, 0]) == R
    assert tuple(frames[1][1, 2]) == B and (frames[1].reshape(-1, 3)[:-1] == 255).all()
    assert tuple(frames[2][0, 0]) == B
    assert tuple(frames[3][2, 3]) == R
    assert tuple(frames[4][1, 2]) == R and tuple(frames[4][2, 1]) == B
    assert int((frames[4] != 255).any(axis=2).sum()) == 2

    fixed = ev.eventgpt_frames(events, n=5, height=3, width=4)
    assert all(f.shape == (3, 4, 3) for f in fixed)
    assert int(sum((f != 255).any(axis=2).sum() for f in fixed)) == 6

    with pytest.raises(ValueError, match="chunk"):
        ev.eventgpt_frames({k: v[:4] for k, v in events.items()}, n=5)


def test_histogram_counts_per_polarity():
    h = ev.histogram({"x": X, "y": Y, "t": T, "p": P}, height=3, width=4)
    assert h.dtype == np.float32 and h.shape == (2, 3, 4)
    expected = np.zeros((2, 3, 4), np.float32)
    expected[1, 0, 0] = 1      # (0,0) once positive ...
    expected[0, 0, 0] = 1      # ... once negative
    expected[0, 1, 2] = 1
    expected[1, 1, 2] = 1
    expected[1, 2, 3] = 1
    expected[0, 2, 1] = 1
    np.testing.assert_array_equal(h, expected)
    assert h.sum() == 6


def test_voxel_grid_hand_worked():
    # B = 3, t0 = 0, tN = 100: t* = 2 t / 100 = [0, 0.5, 1, 2].
    events = {"x": np.array([0, 0, 1, 1]), "y": np.array([0, 0, 0, 0]),
              "t": np.array([0, 25, 50, 100]), "p": np.array([1, 0, 1, 1])}
    v = ev.voxel_grid(events, bins=3, height=1, width=2)
    assert v.dtype == np.float32 and v.shape == (3, 1, 2)
    expected = np.zeros((3, 1, 2), np.float32)
    expected[0, 0, 0] = 1.0 - 0.5      # +1 at t*=0; -1 split 0.5/0.5 over bins 0, 1
    expected[1, 0, 0] = -0.5
    expected[1, 0, 1] = 1.0            # +1 at t*=1
    expected[2, 0, 1] = 1.0            # +1 at t*=2 (last bin, nothing spills past it)
    np.testing.assert_allclose(v, expected, atol=1e-7)


def test_voxel_grid_matches_formula_and_degenerate_time():
    rng = np.random.default_rng(1)
    n, h, w, bins = 200, 4, 5, 4
    t = np.sort(rng.integers(1000, 5000, n))
    events = {"x": rng.integers(0, w, n), "y": rng.integers(0, h, n), "t": t, "p": rng.integers(0, 2, n)}
    v = ev.voxel_grid(events, bins, h, w)
    # The formula, literally, one event and one bin at a time.
    ref = np.zeros((bins, h, w))
    tstar = (bins - 1) * (t - t[0]) / (t[-1] - t[0])
    for k in range(n):
        for b in range(bins):
            ref[b, events["y"][k], events["x"][k]] += (2 * events["p"][k] - 1) * max(0.0, 1 - abs(b - tstar[k]))
    np.testing.assert_allclose(v, ref, atol=1e-5)

    same_t = dict(events, t=np.full(n, 7))
    v0 = ev.voxel_grid(same_t, bins, h, w)
    assert np.isfinite(v0).all() and (v0[1:] == 0).all()
    np.testing.assert_allclose(v0[0], ev.histogram(events, h, w)[1] - ev.histogram(events, h, w)[0])
    assert ev.voxel_grid(events, 1, h, w).shape == (1, h, w)
