"""Event streams -> the tensors the models see.

An event stream is a dict of equal-length 1-D arrays ``x, y, t, p`` (pixel
column, pixel row, time in microseconds, polarity), sorted by ``t``, as
stored in the DSEC clip files (see event_files.load_event_file). Nothing here
reads files: every function takes arrays, so the same code serves real and
demo data and can be tested with hand-placed events.

Polarity: DSEC stores 0 (darker) / 1 (brighter); some datasets use -1 / 1.
Every function here treats ``p > 0`` as positive and anything else as
negative, so both conventions give the same pictures.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

# EventGPT's colours: positive events red, negative events blue, on white.
POSITIVE_RGB = (255, 0, 0)
NEGATIVE_RGB = (0, 0, 255)
BACKGROUND_RGB = (255, 255, 255)
# The canvas of an empty stream when no size is given. Not 1 x 1: a side of 1 or 3 makes transformers'
# image processors guess the channel axis wrongly ("channel dimension is ambiguous").
EMPTY_CANVAS = (32, 32)


def split_equal_count(n_events: int, n: int = 5) -> list[tuple[int, int]]:
    """Index ranges [start, end) of EventGPT's n equal-COUNT chunks.

    Each chunk holds ``n_events // n`` events; the last one also takes the
    remainder (EventGPT's rule, so chunk sizes differ by at most n - 1).
    """
    if n < 1:
        raise ValueError(f"split_equal_count: n must be >= 1, got {n}")
    if n_events < 0:
        raise ValueError(f"split_equal_count: n_events must be >= 0, got {n_events}")
    size = n_events // n
    return [(i * size, (i + 1) * size if i < n - 1 else n_events) for i in range(n)]


def _canvas_size(x: np.ndarray, y: np.ndarray, height: int | None, width: int | None) -> tuple[int, int]:
    if height is None or width is None:
        if x.size == 0:
            raise ValueError("no events: the canvas size cannot come from the events; pass height and width")
        # EventGPT sizes the canvas from the events themselves (y.max+1, x.max+1).
        height = int(y.max()) + 1 if height is None else height
        width = int(x.max()) + 1 if width is None else width
    if x.size and (x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height):
        raise ValueError(
            f"events outside the {height}x{width} canvas: x in [{x.min()}, {x.max()}], y in [{y.min()}, {y.max()}]"
        )
    return int(height), int(width)


def _int_coords(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D arrays of one length, got shapes {x.shape} and {y.shape}")
    # int64 so that y * width + x cannot overflow uint16 arithmetic.
    return x.astype(np.int64), y.astype(np.int64)


def render_polarity(x, y, p, height: int | None = None, width: int | None = None) -> np.ndarray:
    """EventGPT's polarity picture: uint8 [H, W, 3].

    White canvas (default size y.max+1 by x.max+1, as EventGPT does), a
    positive event paints its pixel red, a negative one blue, and where
    several events hit one pixel the LAST in array (= time) order wins,
    exactly what a Python loop over the events would draw. Numpy's fancy
    assignment leaves repeated indices unspecified, so the last event per
    pixel is found explicitly and each pixel is written once.
    """
    x, y = _int_coords(x, y)
    p = np.asarray(p)
    if p.shape != x.shape:
        raise ValueError(f"p has shape {p.shape}, x has {x.shape}")
    height, width = _canvas_size(x, y, height, width)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[...] = BACKGROUND_RGB
    if x.size == 0:
        return img
    flat = y * width + x
    # np.unique on the reversed array returns each pixel's first index there,
    # which is its last occurrence in the original order.
    pix, first_in_reversed = np.unique(flat[::-1], return_index=True)
    last = x.size - 1 - first_in_reversed
    colours = np.where((p[last] > 0)[:, None], np.array(POSITIVE_RGB, np.uint8), np.array(NEGATIVE_RGB, np.uint8))
    img.reshape(-1, 3)[pix] = colours
    return img


def _xytp(events: Mapping[str, Sequence]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    missing = [k for k in ("x", "y", "t", "p") if k not in events]
    if missing:
        raise ValueError(f"event dict lacks keys {missing}")
    x, y = _int_coords(events["x"], events["y"])
    t = np.asarray(events["t"])
    p = np.asarray(events["p"])
    if t.shape != x.shape or p.shape != x.shape:
        raise ValueError(f"x, y, t, p lengths differ: {x.shape}, {y.shape}, {t.shape}, {p.shape}")
    return x, y, t, p


def eventgpt_frames(events: Mapping[str, Sequence], n: int = 5, height: int | None = None,
                    width: int | None = None) -> list[np.ndarray]:
    """EventGPT's input: n polarity pictures, one per equal-count chunk.

    With height/width None each chunk's canvas is sized from that chunk's
    own events, which is what EventGPT's code does (so the n pictures may
    differ in size; its CLIP processor resizes each). Pass the sensor size to
    get n pictures of one size.
    """
    x, y, _, p = _xytp(events)
    if x.size == 0:
        # No events (a blank ablation, or a scene where nothing changed): n white pictures, defined
        # rather than an error. Their size cannot come from the events: EMPTY_CANVAS unless the sensor
        # size is given (any uniform picture becomes the same CLIP input once resized and cropped).
        h, w = EMPTY_CANVAS if height is None or width is None else (height, width)
        return [render_polarity(x, y, p, h, w) for _ in range(n)]
    if x.size < n:
        raise ValueError(f"{x.size} events cannot fill {n} equal-count chunks (a chunk would be empty)")
    return [render_polarity(x[a:b], y[a:b], p[a:b], height, width) for a, b in split_equal_count(x.size, n)]


def histogram(events: Mapping[str, Sequence], height: int, width: int) -> np.ndarray:
    """Event counts per polarity: float32 [2, H, W], channel 0 negative, 1 positive."""
    x, y, _, p = _xytp(events)
    height, width = _canvas_size(x, y, height, width)
    channel = (p > 0).astype(np.int64)
    counts = np.bincount((channel * height + y) * width + x, minlength=2 * height * width)
    return counts.astype(np.float32).reshape(2, height, width)


def voxel_grid(events: Mapping[str, Sequence], bins: int, height: int, width: int) -> np.ndarray:
    """Bilinear-in-time voxel grid: float32 [B, H, W].

    t*_k = (B-1)(t_k - t_0)/(t_N - t_0) with t_0, t_N the first and last
    event times (taken as min / max, which is the same for a sorted stream
    and keeps every t* inside [0, B-1] for an unsorted one); V[b] += s_k max(0, 1 - |b - t*_k|), s_k = +1 / -1 by
    polarity. So each event splits its weight between the two bins around
    t*_k. When all events share one time (t_N == t_0) they all sit at t* = 0.
    """
    if bins < 1:
        raise ValueError(f"voxel_grid: bins must be >= 1, got {bins}")
    x, y, t, p = _xytp(events)
    height, width = _canvas_size(x, y, height, width)
    grid = np.zeros(bins * height * width, dtype=np.float64)
    if x.size == 0:
        return grid.astype(np.float32).reshape(bins, height, width)
    t = t.astype(np.float64)
    t0, tn = t.min(), t.max()
    tstar = (bins - 1) * (t - t0) / (tn - t0) if tn != t0 else np.zeros_like(t)
    lower = np.floor(tstar).astype(np.int64)
    frac = tstar - lower
    sign = np.where(p > 0, 1.0, -1.0)
    pix = y * width + x
    for b, w in ((lower, 1.0 - frac), (lower + 1, frac)):
        ok = (b >= 0) & (b < bins) & (w > 0)
        grid += np.bincount(b[ok] * (height * width) + pix[ok], weights=(sign * w)[ok], minlength=grid.size)
    return grid.astype(np.float32).reshape(bins, height, width)
