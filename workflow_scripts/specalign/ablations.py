"""Input ablations: one model's input taken away or scrambled, scored along the target's PLAIN stream.

An ablation (config `ablations:`, name -> {side, kind, seed, decodings, models}) changes the inputs of
ONE side of a pair (the draft's or the target's) and scores the draft teacher-forced along the target's
unablated greedy/sampled stream, exactly as the score job does (scoring.py), so its table has the
scores schema and is measured like any run (summary.py, `ablation` column). What moves between the
plain and the ablated table says which tokens that side's input grounds (issue 22).

Event inputs (an EventGPT-family side):
- `blank`: no events at all. EventGPT then sees 5 white pictures (events.eventgpt_frames: an empty
  stream is a defined blank input): what the model says from its language prior and the question.
- `time_reversed`: the scene played backwards, t' = t_min + t_max - t, array order reversed (so t'
  ascends again) and polarity flipped (a pixel that brightened going forward darkens going back).
  Same pixels, same counts: only the time order, which carries the direction of motion, changes.
- `shuffled`: another clip's events, by a seeded derangement of the dataset's clips (no clip keeps
  its own): a real, well-formed input that is about the wrong scene.
RGB inputs (a Video-LLaVA or LLaVA side):
- `mean_frame`: every frame replaced by the DATASET's mean frame (the pixel mean of every clip's 8
  sampled frames). The dataset's, not the clip's: a clip's own mean still shows its colours, shapes
  and layout (only the motion is averaged away), so the target could still name the colour; the
  dataset's mean carries nothing of the clip while keeping the image statistics (brightness, colour
  balance, a road's layout on DSEC) close to what the model was trained on, unlike a black frame.
- `shuffled`: another clip's 8 frames, by the same seeded derangement.

How: the ablated input is written to a temporary clip folder (an event .npy, or 8 PNG frames) and the
REAL backend's `prepare` reads it through a Sample pointing there, so nothing of a backend's input path
(frame sampling, rendering, processors, prompt) is bypassed. A sample whose input (or whose donor's)
cannot be read fails like in the score job: named, or an errors-table row with skip_bad.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .specs import schema_defaults

EVENT_KINDS = ("blank", "time_reversed", "shuffled")
RGB_KINDS = ("mean_frame", "shuffled")
# what each model family sees (the ablations it can take); causal_lm sees text only: nothing to ablate
FAMILY_INPUT = {"eventgpt": "events", "video_llava": "rgb", "llava": "rgb", "causal_lm": None}
INPUT_KINDS = {"events": EVENT_KINDS, "rgb": RGB_KINDS}
SIDES = ("draft", "target")
INPUT_NAMES = {"events": "event", "rgb": "RGB"}


# ------------------------------------------------------------------------------ the transforms
def _four(events: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    missing = [k for k in ("x", "y", "t", "p") if k not in events]
    if missing:
        raise ValueError(f"event dict lacks keys {missing}")
    out = {k: np.asarray(events[k]) for k in ("x", "y", "t", "p")}
    if len({a.shape for a in out.values()}) != 1 or out["x"].ndim != 1:
        raise ValueError(f"x, y, t, p must be 1-D arrays of one length, got {[a.shape for a in out.values()]}")
    return out


def blank_events(events: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    """No events: four empty arrays of the stream's own dtypes."""
    return {k: a[:0].copy() for k, a in _four(events).items()}


def flip_polarity(p: np.ndarray) -> np.ndarray:
    """Positive <-> negative in the stream's own convention: 0/1 (DSEC) or -1/1 (events.py reads p > 0
    as positive, anything else as negative, so both are flipped by sending p > 0 to the negative value)."""
    p = np.asarray(p)
    if p.dtype == np.bool_:
        return ~p
    negative = -1 if (p < 0).any() else 0
    return np.where(p > 0, negative, 1).astype(p.dtype)


def time_reversed(events: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
    """The stream played backwards: t' = t_min + t_max - t in reversed array order (t' ascends for a
    stream sorted by t), polarity flipped; x, y untouched. Applied twice it gives the stream back."""
    e = _four(events)
    if e["t"].size == 0:
        return {k: a.copy() for k, a in e.items()}
    t = e["t"]
    rev = (t.min() + t.max() - t)[::-1].astype(t.dtype)
    return {"x": e["x"][::-1].copy(), "y": e["y"][::-1].copy(), "t": rev, "p": flip_polarity(e["p"])[::-1].copy()}


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded uniformly random permutation of range(n) without a fixed point (perm[i] != i), by
    rejection (about e draws): clip i takes clip perm[i]'s input."""
    if n < 2:
        raise ValueError(f"a shuffled ablation needs at least 2 clips to give each another's input, got {n}")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm


def donors(sample_ids: Sequence[str], seed: int) -> dict[str, str]:
    """sample id -> the id of the clip whose input it gets, a derangement over the ids in sorted order
    (so it depends on the dataset's clips and the seed only, not on the manifest's order)."""
    ids = sorted(sample_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("sample ids repeat: a shuffle over them is not defined")
    perm = derangement(len(ids), seed)
    return {ids[i]: ids[int(perm[i])] for i in range(len(ids))}


def mean_frame(clips: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
    """The pixel mean of every frame of every clip (each uint8 [k, H, W, 3]), rounded to uint8 [H, W, 3]."""
    if not clips:
        raise ValueError("mean_frame: no clip's frames could be read")
    shape = clips[0].shape[1:]
    total = np.zeros(shape, dtype=np.float64)
    count = 0
    for i, frames in enumerate(clips):
        if frames.shape[1:] != shape:
            who = names[i] if names is not None else f"clip {i}"
            raise ValueError(f"mean_frame needs one frame size across the dataset: {who} has {frames.shape[1:]}, "
                             f"the first clip {shape}")
        total += frames.astype(np.float64).sum(axis=0)
        count += frames.shape[0]
    return np.rint(total / count).clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ config
def configured(cfg: dict) -> dict[str, dict]:
    """The config's ablations with the schema's defaults filled in, each checked against the models it
    applies to; errors name the config key (`ablations.NAME.kind` ...)."""
    from .config import model_spec_dict

    defaults = schema_defaults("ablations", "*")
    out = {}
    for name, entry in sorted((cfg.get("ablations") or {}).items()):
        a = {**defaults, **entry}
        key = f"ablations.{name}"
        if a["side"] not in SIDES:
            raise ValueError(f"{key}.side: {a['side']!r} is not one of {', '.join(SIDES)}")
        for dec in a["decodings"] or []:
            if dec not in cfg["decodings"]:
                raise ValueError(f"{key}.decodings: {dec!r} is not a decoding (known: {', '.join(sorted(cfg['decodings']))})")
        side_models = sorted({p[a["side"]] for p in cfg["pairs"]})
        for m in a["models"] or []:
            if m not in side_models:
                raise ValueError(f"{key}.models: {m!r} is no pair's {a['side']} (those are: {', '.join(side_models)})")
        for m in (a["models"] or side_models):
            family = model_spec_dict(cfg, m)["family"]
            seen = FAMILY_INPUT.get(family)
            kinds = INPUT_KINDS.get(seen, ())
            if a["kind"] not in kinds:
                takes = f"takes {'|'.join(kinds)}" if kinds else "sees text only: nothing to ablate"
                raise ValueError(
                    f"{key}.kind: {a['kind']!r} cannot apply to the {a['side']} {m!r} (family {family}, "
                    f"{INPUT_NAMES.get(seen, 'text-only')} inputs), which {takes}"
                    + ("" if a["models"] else f"; name the models it applies to in {key}.models"))
        out[name] = a
    return out


def applies(a: dict, pair: tuple[str, str], decoding: str) -> bool:
    """Whether ablation `a` (resolved by `configured`) has a job for this (draft, target) and decoding."""
    side_model = pair[0] if a["side"] == "draft" else pair[1]
    return ((a["decodings"] is None or decoding in a["decodings"])
            and (a["models"] is None or side_model in a["models"]))


def job_entry(name: str, a: dict) -> dict:
    """What a score_ablation job reads of the ablation (its `models`/`decodings` only decide which jobs exist)."""
    return {"name": name, "side": a["side"], "kind": a["kind"], "seed": int(a["seed"])}


# ------------------------------------------------------------------------------ applying one
class Ablator:
    """The ablated Sample of each clip of one dataset, its input written under a temporary folder (a
    context manager: the folder goes when the job is done preparing)."""

    def __init__(self, ablation: dict, samples: Sequence, log=None):
        self.name, self.side, self.kind = ablation["name"], ablation["side"], ablation["kind"]
        self.seed = int(ablation["seed"])
        self.samples = {s.sample_id: s for s in samples}
        self.log = log
        self._donors: dict[str, str] | None = None
        self._mean: np.ndarray | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> "Ablator":
        self._tmp = tempfile.TemporaryDirectory(prefix=f"ablation_{self.name}_")
        return self

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def wrap(self, backend) -> "AblatedBackend":
        return AblatedBackend(backend, self)

    def donor(self, sample_id: str) -> str:
        if self._donors is None:
            self._donors = donors(list(self.samples), self.seed)
        return self._donors[sample_id]

    def _folder(self, sample) -> Path:
        if self._tmp is None:
            raise RuntimeError("Ablator used outside its `with` block")
        d = Path(self._tmp.name) / sample.sample_id.replace("/", "__")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def dataset_mean(self) -> np.ndarray:
        """The mean frame over the clips whose frames read (a clip that cannot is reported when it is
        itself prepared, and so is left out of the mean rather than failing every clip)."""
        if self._mean is None:
            from .dataset import SampleError, sample_video_frames

            clips, names = [], []
            for sid, s in sorted(self.samples.items()):
                try:
                    clips.append(sample_video_frames(s, 8))
                    names.append(sid)
                except SampleError as exc:
                    if self.log is not None:
                        self.log.warning("mean_frame: %s left out of the mean: %s", sid, exc)
            self._mean = mean_frame(clips, names)
        return self._mean

    def sample(self, sample, k_frames: int):
        """The sample with this ablation's input in place of its own (a new Sample; files written)."""
        from .dataset import sample_events, sample_video_frames

        if self.kind in ("blank", "time_reversed") or (self.kind == "shuffled" and k_frames == 0):
            if self.kind == "shuffled":
                events = sample_events(self.samples[self.donor(sample.sample_id)])
            else:
                events = sample_events(sample)
                events = blank_events(events) if self.kind == "blank" else time_reversed(events)
            path = self._folder(sample) / "events.npy"
            np.save(path, {k: np.ascontiguousarray(v) for k, v in events.items()}, allow_pickle=True)
            return dataclasses.replace(sample, event_path=path, num_events=int(events["x"].size))
        if self.kind == "mean_frame":
            frames = np.repeat(self.dataset_mean()[None], k_frames, axis=0)
        elif self.kind == "shuffled":
            frames = sample_video_frames(self.samples[self.donor(sample.sample_id)], k_frames)
        else:
            raise ValueError(f"ablation {self.name!r}: unknown kind {self.kind!r}")
        folder = self._folder(sample) / "frames"
        folder.mkdir(exist_ok=True)
        from PIL import Image

        for i, f in enumerate(frames):  # PNG: lossless, so the backend reads exactly these pixels
            Image.fromarray(np.ascontiguousarray(f)).save(folder / f"{i:06d}.png", format="PNG", compress_level=1)
        return dataclasses.replace(sample, mp4_path=None, video_dir=folder, num_frames=len(frames), short_video=False)


class AblatedBackend:
    """A backend whose `prepare` reads the ablated input (everything else is the backend's own)."""

    def __init__(self, backend, ablator: Ablator):
        self._backend, self._ablator = backend, ablator
        family = getattr(backend, "family", None)
        seen = FAMILY_INPUT.get(family)
        if ablator.kind not in INPUT_KINDS.get(seen, ()):
            raise ValueError(f"ablation {ablator.name!r} ({ablator.kind}) cannot apply to {backend.name} "
                             f"(family {family})")
        # the RGB side reads the clip through the 8-frame sampler: writing exactly k frames makes it
        # read them back one for one (uniform_frame_indices(k, k) is the identity)
        self._k = int(getattr(backend, "num_frames", 8)) if seen == "rgb" else 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def prepare(self, sample):
        return self._backend.prepare(self._ablator.sample(sample, self._k))
