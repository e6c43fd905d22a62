"""Frame sampling, PNG folders and real libx264 mp4 round trips."""
import numpy as np
import pytest
from PIL import Image

from specalign import video


def test_uniform_frame_indices_hand_worked():
    # linspace(0, 15, 8) = 0, 2.14, 4.29, 6.43, 8.57, 10.71, 12.86, 15 -> floor
    assert video.uniform_frame_indices(16) == [0, 2, 4, 6, 8, 10, 12, 15]
    # linspace(0, 4, 8) = 0, .57, 1.14, 1.71, 2.29, 2.86, 3.43, 4 -> floor (repeats)
    assert video.uniform_frame_indices(5) == [0, 0, 1, 1, 2, 2, 3, 4]
    assert video.uniform_frame_indices(8) == list(range(8))
    assert video.uniform_frame_indices(1) == [0] * 8
    assert video.uniform_frame_indices(10, k=3) == [0, 4, 9]
    assert all(type(i) is int for i in video.uniform_frame_indices(16))
    with pytest.raises(ValueError):
        video.uniform_frame_indices(0)


def _grey_frames(n, h=32, w=48):
    # Frame i is a flat grey 20 * i + 10: its mean identifies it after decoding.
    return np.stack([np.full((h, w, 3), 20 * i + 10, np.uint8) for i in range(n)])


def test_mp4_round_trip(tmp_path):
    frames = _grey_frames(10)
    path = tmp_path / "sub" / "clip.mp4"
    video.write_mp4(frames, path, fps=20)
    assert [p.name for p in path.parent.iterdir()] == ["clip.mp4"]      # no temp file left behind
    back = video.read_frames(path)
    assert back.dtype == np.uint8 and back.shape == (10, 32, 48, 3)
    np.testing.assert_allclose(back.reshape(10, -1).mean(axis=1), 20 * np.arange(10) + 10, atol=2.0)

    sampled = video.sample_frames(path, k=8)           # indices [0, 1, 2, 3, 5, 6, 7, 9]
    assert sampled.shape == (8, 32, 48, 3)
    np.testing.assert_allclose(sampled.reshape(8, -1).mean(axis=1),
                               [10, 30, 50, 70, 110, 130, 150, 190], atol=2.0)
    video.check_readable(path)


def test_mp4_keeps_colour(tmp_path):
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    frames[:] = (255, 86, 86)
    video.write_mp4(frames, tmp_path / "red.mp4")
    back = video.read_frames(tmp_path / "red.mp4")
    np.testing.assert_allclose(back[:, 4:12, 4:12].reshape(-1, 3).mean(axis=0), (255, 86, 86), atol=3.0)


def test_mp4_fractional_rate(tmp_path):
    import av
    video.write_mp4(_grey_frames(3, 16, 16), tmp_path / "ntsc.mp4", fps=29.97)
    with av.open(str(tmp_path / "ntsc.mp4")) as c:
        assert float(c.streams.video[0].average_rate) == pytest.approx(29.97)
    assert video.read_frames(tmp_path / "ntsc.mp4").shape == (3, 16, 16, 3)


def test_write_mp4_rejects_odd_size_and_bad_input(tmp_path):
    with pytest.raises(ValueError, match="even"):
        video.write_mp4(np.zeros((2, 15, 16, 3), np.uint8), tmp_path / "odd.mp4")
    with pytest.raises(ValueError, match="uint8"):
        video.write_mp4(np.zeros((2, 16, 16, 3), np.float32), tmp_path / "f.mp4")
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        video.write_mp4(np.zeros((16, 16, 3), np.uint8), tmp_path / "s.mp4")
    assert list(tmp_path.iterdir()) == []


def test_png_folder_sorted_by_name_and_sampled(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    # Written out of order; names sort as time order. A non-PNG file is ignored.
    for i in (4, 0, 3, 1, 2):
        Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)).save(folder / f"{i:06d}.png")
    (folder / "notes.txt").write_text("not a frame")
    frames = video.read_frames(folder)
    assert frames.shape == (5, 6, 8, 3)
    assert list(frames[:, 0, 0, 0]) == [0, 40, 80, 120, 160]
    sampled = video.sample_frames(folder, k=8)          # [0, 0, 1, 1, 2, 2, 3, 4]
    assert list(sampled[:, 0, 0, 0]) == [0, 0, 40, 40, 80, 80, 120, 160]
    video.check_readable(folder)


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        video.read_frames(missing)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        video.check_readable(missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video at all" * 50)
    with pytest.raises(ValueError, match="garbage.mp4"):
        video.read_frames(garbage)
    with pytest.raises(ValueError, match="garbage.mp4"):
        video.check_readable(garbage)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty_dir"):
        video.sample_frames(empty)
    with pytest.raises(ValueError, match="empty_dir"):
        video.check_readable(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(mixed / "0.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(mixed / "1.png")
    with pytest.raises(ValueError, match="1.png"):
        video.read_frames(mixed)
    bad_png = tmp_path / "badpng"
    bad_png.mkdir()
    (bad_png / "0.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="0.png"):
        video.check_readable(bad_png)
