"""RGB clips: the one frame sampler, reading (mp4 or PNG folder), writing mp4.

Every stage that gives a video model its frames goes through
``sample_frames`` -> ``uniform_frame_indices``, so the target model sees the
same 8 frames whichever stage (generation, scoring, speculative loop) asks.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from .artifacts import atomic_path


def uniform_frame_indices(n_frames: int, k: int = 8) -> list[int]:
    """The k frame indices used everywhere: ``np.linspace(0, n_frames-1, k).astype(int)``.

    Why this one: the seed's scripts disagreed (the first 8 frames, an
    ``arange`` with a step, and ``linspace``); the first two see only part of
    a long clip or a step-dependent part of it, while linspace always spans
    the whole clip and always includes its first and last frames. The floor
    (``astype(int)``) is what Video-LLaVA's own example does. Clips shorter
    than k repeat frames (n=5, k=8 -> [0, 0, 1, 1, 2, 2, 3, 4]) so the model
    always gets exactly k.
    """
    if n_frames < 1:
        raise ValueError(f"uniform_frame_indices: a clip needs at least 1 frame, got {n_frames}")
    if k < 1:
        raise ValueError(f"uniform_frame_indices: k must be >= 1, got {k}")
    return [int(i) for i in np.linspace(0, n_frames - 1, k).astype(int)]


def _png_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read PNG frame: {exc}") from exc


def _stack(frames: list[np.ndarray], files: list[Path]) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        bad = next(p for p, f in zip(files, frames) if f.shape != frames[0].shape)
        raise ValueError(f"{bad}: frame shape {shapes - {frames[0].shape}} differs from {files[0]} {frames[0].shape}")
    return np.stack(frames)


def read_pngs(files) -> np.ndarray:
    """These PNG files (in the order given) as uint8 [N, H, W, 3] RGB; errors name the file.

    For callers that pick the frames themselves (e.g. the images of one time
    window of a raw sequence) rather than reading a whole folder.
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("read_pngs: no PNG files given")
    return _stack([_read_png(f) for f in files], files)


def _decode_video(path: Path) -> np.ndarray:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot decode video: {exc}") from exc
    if not frames:
        raise ValueError(f"{path}: video has no frames")
    return np.stack(frames)


def _source(path: str | Path) -> tuple[Path, list[Path] | None]:
    """(path, its PNG files) for a frame folder, (path, None) for a video file; errors name the path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file or frame folder")
    if not path.is_dir():
        return path, None
    files = _png_files(path)
    if not files:
        raise ValueError(f"{path}: frame folder has no .png files")
    return path, files


def read_frames(path: str | Path) -> np.ndarray:
    """All frames of a clip, uint8 [N, H, W, 3] RGB.

    ``path`` is a video file (mp4 or anything FFmpeg decodes, via PyAV) or a
    folder of PNG frames taken in file-name order (DSEC's zero-padded names
    sort in time order).
    """
    path, files = _source(path)
    if files is not None:
        return read_pngs(files)
    return _decode_video(path)


def check_readable(path: str | Path) -> None:
    """Raise (naming the file) unless the clip yields at least one frame.

    Cheap on purpose (the manifest checks every clip): a video decodes only
    up to its first frame, a PNG folder opens only its first file.
    """
    path, files = _source(path)
    if files is not None:
        _read_png(files[0])
        return
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            for _ in container.decode(video=0):
                return
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot decode video: {exc}") from exc
    raise ValueError(f"{path}: video has no frames")


def sample_frames(path: str | Path, k: int = 8) -> np.ndarray:
    """The k uniformly sampled frames of a clip, uint8 [k, H, W, 3].

    A video is decoded whole and then indexed (clips are seconds long, and
    seeking by timestamp in short H.264 clips is less reliable than
    decoding). A PNG folder loads only the chosen files.
    """
    path = Path(path)
    if path.is_dir():
        files = _png_files(path)
        if not files:
            raise ValueError(f"{path}: frame folder has no .png files")
        return read_pngs([files[i] for i in uniform_frame_indices(len(files), k)])
    frames = read_frames(path)
    return frames[uniform_frame_indices(frames.shape[0], k)]


def write_mp4(frames, path: str | Path, fps: float = 20, crf: int = 18) -> None:
    """Encode uint8 [N, H, W, 3] RGB frames as H.264 (libx264, yuv420p) mp4.

    yuv420p halves the chroma resolution, so H and W must be even. crf 18 is
    close to visually lossless, keeping colours (the demo's whole point)
    intact on tiny frames. Written to a temporary sibling and renamed, so an
    interrupted encode never leaves a file that looks complete.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: frames must be [N, H, W, 3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8, got {frames.dtype}")
    n, h, w, _ = frames.shape
    if n < 1:
        raise ValueError(f"{path}: no frames to write")
    if h % 2 or w % 2:
        raise ValueError(f"{path}: yuv420p H.264 needs even height and width, got {h}x{w}")
    if not fps > 0:
        raise ValueError(f"{path}: fps must be > 0, got {fps}")
    # PyAV wants an exact rational rate; config files give 20 or 29.97.
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp, av.open(tmp, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # One thread: tiny frames gain nothing from threads, and the
        # machines running this are shared.
        # x264's macroblock-tree rate control made identical frames encode differently from
        # run to run (3-5 outputs in 10 encodes); without it the bytes are reproducible.
        stream.options = {"crf": str(crf), "threads": "1", "x264-params": "no-mbtree=1:rc-lookahead=0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
