"""What every rule script does first: log to the rule's log file, pin threads,
and describe its provenance for the Parquet metadata."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("specalign", "torch", "transformers", "tokenizers", "snakemake", "pyarrow", "polars", "numpy", "av")


def setup(snakemake) -> logging.Logger:
    """Route stderr (logging, warnings, progress lines, tracebacks) also to the rule's log file;
    pin torch threads to the rule's threads.

    Pinning matters: on a 2-core machine two jobs each using every core slowed
    training 50-100x.
    """
    threads = max(1, int(getattr(snakemake, "threads", 1) or 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # data-only stages do not need torch
        pass
    log_path = snakemake.log[0] if len(snakemake.log) else None
    if log_path:
        # Everything the job writes to stderr (log lines, ProgressLog lines, warnings, and the
        # traceback of an uncaught error naming the sample and file) also goes to its log file.
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = _Tee(sys.stderr, open(log_path, "w", buffering=1, encoding="utf-8"))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.captureWarnings(True)
    logger = logging.getLogger(f"specalign.{snakemake.rule}")
    logger.info("rule %s wildcards %s", snakemake.rule, dict(snakemake.wildcards))
    if os.environ.get("SLURM_JOB_ID"):  # submitted through SLURM (profiles/slurm): say which job and GPU
        logger.info("SLURM_JOB_ID=%s SLURM_JOB_NODELIST=%s CUDA_VISIBLE_DEVICES=%s",
                    os.environ["SLURM_JOB_ID"], os.environ.get("SLURM_JOB_NODELIST", ""),
                    os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    return logger


class _Tee:
    """A text stream writing to the original stderr and to the job's log file."""

    def __init__(self, stream, log_file):
        self.stream, self.log_file = stream, log_file

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log_file.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log_file.flush()

    def __getattr__(self, name: str):  # isatty, fileno, encoding, ...: the original stream's
        return getattr(self.stream, name)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def model_identity(path: str | Path) -> dict[str, Any]:
    """Path plus a cheap content hash: config.json and the names and sizes of weight files.

    Hashing 14 GB of 7B weights per job would cost minutes; the HF cache's snapshot
    folder name is the revision, recorded when the path is inside one.
    """
    path = Path(path)
    ident: dict[str, Any] = {"path": str(path)}
    if "snapshots" in path.parts:
        ident["revision"] = path.parts[path.parts.index("snapshots") + 1]
    h = hashlib.sha256()
    if (path / "config.json").exists():
        h.update((path / "config.json").read_bytes())
    for f in sorted(path.glob("*")):
        if f.suffix in (".safetensors", ".bin", ".json", ".model"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    ident["hash"] = h.hexdigest()[:16]
    return ident


def provenance(snakemake, **extra: Any) -> dict[str, Any]:
    """Key-value metadata every Parquet carries."""
    meta: dict[str, Any] = {"rule": snakemake.rule, "wildcards": dict(snakemake.wildcards),
                            "versions": package_versions()}
    fps = [f for f in snakemake.input if "/.fingerprints/" in str(f)]
    if fps:
        meta["config_fingerprint"] = {str(f): json.loads(Path(f).read_text()) for f in fps}
    meta.update(extra)
    return meta
