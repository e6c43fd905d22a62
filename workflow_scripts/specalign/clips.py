"""Writing one clip in the event-video dataset layout (the DSEC clip layout, see dataset.py).

The one writer for the demo dataset (demo_data.py) and the raw-DSEC builder
(dsec_raw.py), so both produce byte-for-byte the same layout and dataset.py
reads both the same way.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from . import artifacts
from . import events as ev
from .video import write_mp4

N_EVENT_FRAMES = 5                  # EventGPT's chunks; a clip needs at least this many events


def _save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="PNG", compress_level=6)


def write_clip(root: Path, seq: str, clip_index: int, frames: np.ndarray, data: dict, fps: float,
               sensor_size: tuple[int, int] | None = None) -> dict:
    """Write one clip in the DSEC clip layout under root; return its instruction-entry paths.

    event_npy/{seq}/{clip:06d}.npy (the pickled dict ``data``), the frames as
    video/{seq}/{clip:06d}/{k:06d}.png and mp4/{seq}/{clip:06d}.mp4, and the
    five EventGPT event pictures event_image/{seq}/{clip:06d}_{k}.png on a
    ``sensor_size`` (height, width) canvas (default: the frames' size, which
    is the demo's sensor). The one writer for the demo and the raw-DSEC
    builder (dsec_raw.py), so both produce byte-for-byte the same layout.
    """
    name = f"{clip_index:06d}"
    (root / "event_npy" / seq).mkdir(parents=True, exist_ok=True)
    np.save(root / "event_npy" / seq / f"{name}.npy", data, allow_pickle=True)
    frame_dir = root / "video" / seq / name
    frame_dir.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        _save_png(frame, frame_dir / f"{k:06d}.png")
    write_mp4(frames, root / "mp4" / seq / f"{name}.mp4", fps=fps)
    height, width = frames.shape[1:3] if sensor_size is None else sensor_size
    image_dir = root / "event_image" / seq
    image_dir.mkdir(parents=True, exist_ok=True)
    image_paths = []
    # Sensor-sized canvases (not EventGPT's per-chunk size): the pictures
    # keep the events' true position and all five have one size.
    for k, img in enumerate(ev.eventgpt_frames(data, N_EVENT_FRAMES, height=height, width=width)):
        _save_png(img, image_dir / f"{name}_{k}.png")
        image_paths.append(f"{seq}/{name}_{k}.png")
    return {
        "event_data": f"{seq}/{name}.npy",
        "video_data": f"{seq}/{name}",
        "mp4_data": f"{seq}/{name}.mp4",
        "event_image": image_paths,
    }


@contextmanager
def atomic_dataset_dir(root: str | Path, what: str = "the dataset") -> Iterator[Path]:
    """artifacts.atomic_dir for a dataset root: yield a temporary sibling, renamed to root when complete.

    A killed or failed build never leaves a root that looks finished. Unlike
    a pipeline output, a dataset is never silently replaced: root must not
    exist or be an empty directory (``what`` names the dataset in that error).
    """
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root}: already exists and is not empty; remove it to rebuild {what}")
    with artifacts.atomic_dir(root) as tmp:
        yield tmp
