"""The embedded offline demo dataset: moving shapes, ESIM-style events.

Why it looks like this: the demo must have a KNOWN truth about where an
event-based draft and an RGB target disagree. Each clip is one shape of one
colour moving in one direction over a textured grey background, captioned
"a {colour} {shape} moves {direction}". The four colours have exactly the
same luma, so the events (simulated from grey-level log intensity) are
identical whichever colour the shape has: the draft can learn shape and
direction from events but can only guess the colour. Every colour is far
brighter than every background pixel, so a moving edge always fires events
and always with the same polarity pattern.

The reference caption stored with each clip is the target's rigid template;
the draft is trained on the same content mostly in its own phrasing
("there is a circle moving to the left", see DRAFT_STYLES), as the real pair
was trained on different instruction data, so that its free-running text and
the target's differ from the first word although teacher forcing along the
target's text still accepts most tokens.

It is written in the DSEC clip layout (see dataset.py) with clips.write_clip,
the raw-DSEC builder's writer, so the one reader serves demo and real data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .clips import N_EVENT_FRAMES, atomic_dataset_dir, write_clip

# Rec.601 luma weights in thousandths: luma*1000 = 299 R + 587 G + 114 B.
# Integer arithmetic makes "equal luma" exact, so the colours' event streams
# are bit-identical, not just close.
LUMA_WEIGHTS = (299, 587, 114)

# Found by integer search: every one has 299R + 587G + 114B = 136531
# (luma 136.531) while still reading as its name.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 86, 86),
    "green": (4, 229, 8),
    "blue": (114, 125, 255),
    "yellow": (161, 150, 3),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
# 4 x 3 x 4 = 48; clip i gets COMBINATIONS[i % 48], so n = 48 m clips hold
# every combination exactly m times.
COMBINATIONS = [(c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS]

# Background grey levels (texture included) stay inside this range, far below
# the shapes' luma 136.5: ln(136.5 / 95) = 0.36 > any contrast threshold used
# (0.2), so every edge crossing fires at least one event.
BACKGROUND_MEAN = (45.0, 75.0)
BACKGROUND_AMPLITUDE = (8.0, 20.0)
# Sizes relative to the frame side: radius (= square half-side) and speed.
RADIUS_FRACTION = (0.15, 0.22)   # large enough to tell a circle from a square at 32 px
SPEED_FRACTION = (0.015, 0.035)     # of the frame side per frame
LOG_EPS = 1e-3                      # L = log(luma / 255 + eps): finite at black
SPLITS = (("train", "demo_train"), ("test", "demo_test"))


@dataclass(frozen=True)
class DemoSpec:
    n_train: int = 768
    n_test: int = 48
    size: int = 64                  # frames are size x size
    frames: int = 16
    fps: float = 20
    contrast_threshold: float = 0.2
    seed: int = 0                   # the test split derives its own seed from this one


def caption(colour: str, shape: str, direction: str) -> str:
    """The target's caption, and the reference stored in the dataset: one rigid template."""
    return f"a {colour} {shape} moves {direction}"


# ---------------------------------------------------------------- the draft's own caption style
# EventGPT and Video-LLaVA were trained on different instruction data, so the same content comes out
# phrased differently ("In the scene ..." against "The ..."). The demo reproduces that: the target is
# trained on caption() alone, the draft on the same content in its OWN style for most clips and on the
# target's caption for the rest (TARGET_STYLE_SHARE), so that under teacher forcing it can still follow
# a target prefix once that prefix has shown the target's style. Shares of the draft's training clips:
#   20%  "a red circle moves left"               the target's caption (TARGET_STYLE_SHARE)
#   55%  "there is a circle moving to the left"   leaves the colour out: the draft cannot see it
#   25%  "a red circle is moving to the left"     guesses the colour (trained on the true one, which the
#                                                 events do not show, so it learns a uniform guess)
# Why these numbers: the draft's greedy choice at a fork is whichever continuation most of its training
# clips that agree with the prefix so far take. "there" (55%) beats "a" (45%) as the first word, so the
# free-running draft mostly writes its own style and a position-by-position comparison with the target
# fails from the first word on; along the target's prefix "a red circle", "is" (25%) beats "moves" (20%);
# every later target token is the only continuation left, and the colour word is a 1-in-4 guess. So
# teacher-forced acceptance lands near (0 + 1/4 + 1 + 0 + 1 + 1) / 6 = 0.54, not at the 0.86 of one
# template. A different target share splits the rest 55 : 25 between the two draft styles.
TARGET_STYLE_SHARE = 0.20
DRAFT_STYLES: tuple[tuple[str, float], ...] = (
    ("there is a {shape} moving {where}", 0.55),
    ("a {colour} {shape} is moving {where}", 0.25),
)
# "moving to the up" is not English: the draft says where only for the horizontal directions. The
# direction word itself stays one word, so the training augmentation's word swaps (left <-> right,
# up <-> down) apply to both styles unchanged.
WHERE = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
TARGET_STYLE = -1  # the style label of a clip that keeps the target's caption


def draft_caption(style: int, colour: str, shape: str, direction: str) -> str:
    """The caption of (colour, shape, direction) in draft style `style` (an index of DRAFT_STYLES),
    or the target's caption for TARGET_STYLE."""
    if style == TARGET_STYLE:
        return caption(colour, shape, direction)
    return DRAFT_STYLES[style][0].format(colour=colour, shape=shape, where=WHERE[direction])


def parse_caption(text: str) -> tuple[str | None, str, str] | None:
    """(colour or None, shape, direction) that a caption of either style names; None unless it
    names exactly one shape and one direction and at most one colour."""
    words = text.split()
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    directions = [w for w in words if w in DIRECTIONS]
    if len(shapes) != 1 or len(directions) != 1 or len(colours) > 1:
        return None
    return (colours[0] if colours else None), shapes[0], directions[0]


def draft_style_phrasings(captions: Iterable[str]) -> list[str]:
    """Every draft-style phrasing of every target caption, in either direction of its axis (the
    training augmentation swaps left/right and up/down): what the demo tokenizer must also learn.
    Captions that parse_caption cannot read, or that name no colour, give none. First occurrence
    order, no duplicates."""
    out: list[str] = []
    for text in captions:
        parsed = parse_caption(text)
        if parsed is None or parsed[0] is None:
            continue
        colour, shape, direction = parsed
        for d in (direction, OPPOSITE[direction]):
            out.extend(draft_caption(k, colour, shape, d) for k in range(len(DRAFT_STYLES)))
    return list(dict.fromkeys(out))


def caption_corpus(captions: Iterable[str]) -> list[str]:
    """The captions the demo tokenizers are trained on: the target's, then the draft style's."""
    captions = list(captions)
    return list(dict.fromkeys([*captions, *draft_style_phrasings(captions)]))


def draft_style_labels(n: int, seed: int, target_share: float = TARGET_STYLE_SHARE) -> list[int]:
    """The caption style of each of n draft training clips: TARGET_STYLE or an index of DRAFT_STYLES.

    Exactly round(target_share * n) clips keep the target's caption; the rest are split over
    DRAFT_STYLES by their weights (largest remainder, ties to the earlier style); which clip gets which
    is a permutation drawn from `seed` (the demo training seed) and nothing else.
    """
    if not 0.0 <= target_share <= 1.0:
        raise ValueError(f"target_share must lie in [0, 1], got {target_share}")
    n_target = int(round(target_share * n))
    rest = n - n_target
    weights = np.array([w for _, w in DRAFT_STYLES], dtype=np.float64)
    exact = rest * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts), kind="stable")[: rest - counts.sum()]:
        counts[k] += 1
    labels = np.array([TARGET_STYLE] * n_target + [k for k, c in enumerate(counts) for _ in range(c)])
    order = np.random.default_rng([seed, 0x57E1]).permutation(n)
    return [int(x) for x in labels[order]]


def draft_training_captions(references: Sequence[str], seed: int,
                            target_share: float = TARGET_STYLE_SHARE) -> list[str]:
    """The draft's training caption of each clip: its reference (the target's caption) re-phrased in
    the style draft_style_labels gives it. A reference that names no colour, shape and direction
    (parse_caption) keeps its text whatever its label."""
    out = []
    for text, style in zip(references, draft_style_labels(len(references), seed, target_share)):
        parsed = parse_caption(text)
        out.append(text if parsed is None or parsed[0] is None else draft_caption(style, *parsed))
    return out


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec.601 luma of uint8 RGB [..., 3] as float64 (exact integer weights / 1000)."""
    rgb = np.asarray(rgb).astype(np.int64)
    w = np.array(LUMA_WEIGHTS, dtype=np.int64)
    return (rgb @ w).astype(np.float64) / 1000.0


def simulate_events(luma_frames: np.ndarray, frame_times_us: np.ndarray, contrast_threshold: float,
                    eps: float = LOG_EPS) -> dict[str, np.ndarray]:
    """ESIM-style events from grey frames [F, H, W] (luma 0..255) at the given times.

    Per pixel a reference log intensity starts at the first frame. Between
    two frames the log intensity is taken to change linearly; every time it
    moves a further C past the reference an event fires (polarity 1 up, 0
    down) at the linearly interpolated time, and the reference moves by C.
    The leftover (< C) carries over to the next interval, as in a real
    sensor. Returns x, y (uint16), t (int64 us), p (uint8), sorted by t
    (stable, so simultaneous events keep pixel order).
    """
    frames = np.asarray(luma_frames, dtype=np.float64)
    times = np.asarray(frame_times_us, dtype=np.int64)
    if frames.ndim != 3 or times.shape != (frames.shape[0],):
        raise ValueError(f"need frames [F, H, W] and F times, got {frames.shape} and {times.shape}")
    if contrast_threshold <= 0:
        raise ValueError(f"contrast threshold must be > 0, got {contrast_threshold}")
    n_frames, height, width = frames.shape
    logs = np.log(frames.reshape(n_frames, -1) / 255.0 + eps)
    ref = logs[0].copy()
    pix_parts, t_parts, p_parts = [], [], []
    for k in range(n_frames - 1):
        a, b = logs[k], logs[k + 1]
        diff = b - ref
        count = np.floor(np.abs(diff) / contrast_threshold).astype(np.int64)
        pix = np.flatnonzero(count)
        if pix.size == 0:
            continue
        cnt = count[pix]
        sign = np.sign(diff[pix])
        rep = np.repeat(pix, cnt)
        # j = 1..cnt within each pixel's run of events.
        j = np.arange(rep.size) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1
        level = ref[rep] + np.repeat(sign, cnt) * j * contrast_threshold
        # |b - ref| < C held before this interval, so count > 0 implies b != a.
        frac = np.clip((level - a[rep]) / (b[rep] - a[rep]), 0.0, 1.0)
        dt = times[k + 1] - times[k]
        pix_parts.append(rep)
        t_parts.append(times[k] + np.rint(frac * dt).astype(np.int64))
        p_parts.append(np.repeat(sign > 0, cnt).astype(np.uint8))
        ref[pix] += sign * cnt * contrast_threshold
    if not pix_parts:
        empty = np.zeros(0, dtype=np.int64)
        return {"x": empty.astype(np.uint16), "y": empty.astype(np.uint16), "t": empty,
                "p": empty.astype(np.uint8)}
    pix = np.concatenate(pix_parts)
    t = np.concatenate(t_parts)
    p = np.concatenate(p_parts)
    order = np.argsort(t, kind="stable")
    pix, t, p = pix[order], t[order], p[order]
    return {"x": (pix % width).astype(np.uint16), "y": (pix // width).astype(np.uint16), "t": t, "p": p}


def _smooth_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random field in [-1, 1]: a coarse random grid, bilinearly upsampled."""
    cells = int(rng.integers(3, 7))
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1))
    u = np.linspace(0.0, cells, size)
    i0 = np.minimum(np.floor(u).astype(int), cells - 1)
    f = u - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]          # [size, cells+1]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]    # [size, size]


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Boolean [size, size] mask of the shape centred at (cx, cy) (pixel coordinates).

    All three span [-r, r] in both axes: circle of radius r, square of
    half-side r, upward triangle with apex (cx, cy - r) and base y = cy + r.
    Hard edges: a pixel is in or out, so pixels are exactly the shape's
    colour or the background (no mixed luma at the edges).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":
        return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_clip(colour: str, shape: str, direction: str, spec: DemoSpec,
                rng: np.random.Generator) -> np.ndarray:
    """uint8 [frames, size, size, 3]: the shape moving over a per-clip texture.

    Radius, speed and start are drawn so the whole shape stays in view for
    the whole clip (the speed is capped where a long clip would otherwise
    carry it off the frame).
    """
    s, n = spec.size, spec.frames
    r = rng.uniform(*RADIUS_FRACTION) * s
    speed = rng.uniform(*SPEED_FRACTION) * s
    travel_room = s - 1 - 2 * r
    speed = min(speed, travel_room / max(n - 1, 1))
    travel = speed * (n - 1)
    along = rng.uniform(r, r + travel_room - travel)      # start on the motion axis
    across = rng.uniform(r, s - 1 - r)
    step = {"right": (speed, 0.0), "left": (-speed, 0.0), "down": (0.0, speed), "up": (0.0, -speed)}[direction]
    if step[0] < 0 or step[1] < 0:
        along = s - 1 - along                              # moving towards 0: start from the far side
    cx0, cy0 = (along, across) if step[1] == 0 else (across, along)

    mean = rng.uniform(*BACKGROUND_MEAN)
    amp = rng.uniform(*BACKGROUND_AMPLITUDE)
    grey = np.clip(np.rint(mean + amp * _smooth_texture(rng, s)), 0, 255).astype(np.uint8)
    background = np.repeat(grey[:, :, None], 3, axis=2)
    colour_rgb = np.array(COLOURS[colour], dtype=np.uint8)
    clip = np.empty((n, s, s, 3), dtype=np.uint8)
    for k in range(n):
        clip[k] = background
        clip[k][shape_mask(shape, cx0 + k * step[0], cy0 + k * step[1], r, s)] = colour_rgb
    return clip


def frame_times_us(spec: DemoSpec, clip_start_us: int) -> np.ndarray:
    return clip_start_us + np.rint(np.arange(spec.frames) * 1e6 / spec.fps).astype(np.int64)


def make_clip(spec: DemoSpec, split_index: int, clip_index: int,
              global_index: int) -> tuple[np.ndarray, dict, str]:
    """(frames, event dict in the DSEC file format, caption) of one clip.

    Seeded by (spec.seed, split, clip) so each clip is reproducible on its
    own and the test split gets positions, speeds, sizes and textures the
    training split never saw.
    """
    colour, shape, direction = COMBINATIONS[clip_index % len(COMBINATIONS)]
    rng = np.random.default_rng([spec.seed, split_index, clip_index])
    span_us = int(round(spec.frames * 1e6 / spec.fps))
    times = frame_times_us(spec, 10**9 + global_index * span_us)
    for _attempt in range(100):
        frames = render_clip(colour, shape, direction, spec, rng)
        evs = simulate_events(luma(frames), times, spec.contrast_threshold)
        if evs["t"].size >= N_EVENT_FRAMES:
            break
    else:
        raise RuntimeError(f"demo clip {split_index}/{clip_index}: no events after 100 draws; check DemoSpec {spec}")
    data = dict(evs)
    data.update(
        time_start=np.int64(times[0]),
        time_end=np.int64(times[-1]),
        duration_ms=float(times[-1] - times[0]) / 1000.0,
        image_timestamp=times,
        image_idx=np.arange(spec.frames, dtype=np.int64) + clip_index * spec.frames,
        image_indices_in_clip=np.arange(spec.frames, dtype=np.int64),
        num_events=int(evs["t"].size),
    )
    return frames, data, caption(colour, shape, direction)


def build_demo_dataset(root: str | Path, spec: DemoSpec = DemoSpec()) -> int:
    """Write the demo dataset under root (DSEC layout + instructions.json); return the clip count.

    Everything is written into a temporary sibling directory that is renamed
    to root only when complete, so a killed run never leaves a root that
    looks finished. root must not exist (or be an empty directory).
    Deterministic given spec: the .npy, PNG and JSON bytes repeat exactly.
    """
    root = Path(root)
    if spec.size % 2:
        raise ValueError(f"DemoSpec.size must be even (H.264 yuv420p), got {spec.size}")
    if spec.frames < 2:
        raise ValueError(f"DemoSpec.frames must be >= 2 (events need motion), got {spec.frames}")
    if not (spec.fps > 0 and spec.contrast_threshold > 0 and spec.n_train >= 0 and spec.n_test >= 0):
        raise ValueError(f"DemoSpec needs fps > 0, contrast_threshold > 0, n_train/n_test >= 0: {spec}")
    entries = []
    global_index = 0
    with atomic_dataset_dir(root, "the demo dataset") as tmp:
        for split_index, ((split, seq), count) in enumerate(zip(SPLITS, (spec.n_train, spec.n_test))):
            for i in range(count):
                frames, data, text = make_clip(spec, split_index, i, global_index)
                global_index += 1
                paths = write_clip(tmp, seq, i, frames, data, spec.fps)
                entries.append({
                    "id": f"{seq}/{i:06d}",
                    "split": split,
                    **paths,
                    "conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": text}],
                })
        with open(tmp / "instructions.json", "w") as fh:
            json.dump(entries, fh, indent=1)
            fh.write("\n")
    return global_index
