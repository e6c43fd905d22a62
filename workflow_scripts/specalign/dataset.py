"""The DSEC event-video clip layout: samples, safe event loading, manifest.

(Skeleton: the Sample record is fixed; the reader is being written.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One clip with its question; paths are absolute ("" / None when absent)."""

    sample_id: str                      # "{sequence}/{clip:06d}"
    split: str = "test"
    question: str = ""
    reference: str = ""                 # the gpt turn (demo: ground-truth caption)
    event_path: Path | None = None
    video_dir: Path | None = None
    mp4_path: Path | None = None
    event_image_paths: tuple[Path, ...] = field(default_factory=tuple)
    duration_ms: float = 0.0
    num_events: int = 0
    width: int = 0
    height: int = 0
