"""What every rule script does first, `job = jobs.start(snakemake)`: log to the rule's log
file, pin threads, and hand the script its job spec (stages.spec) as typed records.

A script reads nothing of the config but this spec, which is also the job's fingerprint
(rules/common.smk), so a job cannot read a key that would not rerun it when edited.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .specs import Decoding, ModelSpec, Run

PACKAGES = ("specalign", "torch", "transformers", "tokenizers", "snakemake", "pyarrow", "polars", "numpy", "av")


@dataclass
class Job:
    """One job: its spec (a dict, see stages.spec), Snakemake's input/output, and a logger."""

    rule: str
    spec: dict
    input: Any
    output: Any
    wildcards: dict
    log: logging.Logger

    # ---- typed views of the spec
    def model_spec(self, role: str = "model") -> ModelSpec:
        """`role` is "model" (one-model stages), "draft" or "target"."""
        return ModelSpec(**self.spec[role])

    @property
    def decoding(self) -> Decoding:
        return Decoding(**self.spec["decoding"])

    @property
    def runs(self) -> list[Run]:
        return [Run(**r) for r in self.spec["runs"]]

    @property
    def skip_bad(self) -> bool:
        return bool(self.spec["skip_bad"])

    def samples(self):
        """The manifest's samples, paths under the spec's root; this job's shard (strided, so
        shards are balanced) when the stage is sharded."""
        from .dataset import samples_from_manifest

        samples = samples_from_manifest(self.input.manifest, self.spec["root"])
        if "shard" in self.spec:
            samples = samples[self.spec["shard"]::self.spec["shards"]]
        if self.spec.get("max_samples") is not None:  # a check on a subset (speculative.greedy_samples)
            samples = samples[:self.spec["max_samples"]]
        return samples

    # ---- preparing samples: a failure names the sample, or becomes an errors row (skip_bad)
    def prepare(self, backend, samples):
        """`backend.prepare` every sample: (prompts, error rows). A failure stops the job with a
        message naming the sample and file, or, with skip_bad, becomes an errors-table row."""
        from .dataset import SampleError

        prompts, errors = [], []
        for s in samples:
            try:
                prompts.append(backend.prepare(s))
            except Exception as exc:  # noqa: BLE001 - every failure is reported with its sample
                file = str(s.event_path or s.mp4_path or s.video_dir or "")
                if not self.skip_bad:
                    raise SampleError(s.sample_id, file, f"{backend.name}: {exc}") from exc
                errors.append({"sample_id": s.sample_id, "stage": self.rule, "file": file,
                               "error": f"{backend.name}: {exc}"})
        return prompts, errors

    def prepare_pairs(self, draft, target, samples):
        """Each sample prepared for both models, each with its own inputs and prompt:
        ([(draft prompt, target prompt)], error rows); a sample either cannot take is an error."""
        dprompts, derr = self.prepare(draft, samples)
        tprompts, terr = self.prepare(target, samples)
        dmap = {p.sample_id: p for p in dprompts}
        return [(dmap[tp.sample_id], tp) for tp in tprompts if tp.sample_id in dmap], derr + terr

    # ---- writing
    def provenance(self, **extra: Any) -> dict[str, Any]:
        """Key-value metadata every artifact carries: rule, wildcards, versions, the job spec, and
        the identity (path + cheap hash) of every model and tokenizer the job read."""
        meta: dict[str, Any] = {"rule": self.rule, "wildcards": self.wildcards, "versions": package_versions(),
                                "job": self.spec}
        for role in ("model", "draft", "target"):
            if isinstance(self.spec.get(role), dict):
                meta[role] = model_identity(self.spec[role]["path"])
        for key in ("tokenizer", "draft_tokenizer", "target_tokenizer"):
            if isinstance(self.spec.get(key), str):
                meta[key] = model_identity(self.spec[key])
        meta.update(extra)
        return meta

    def write(self, name: str, tbl, **extra: Any) -> None:
        """Write artifact `name` (its schema in artifacts.SCHEMAS) to the output of the same name."""
        from .artifacts import table, write_parquet

        if not hasattr(tbl, "schema"):  # rows
            tbl = table(name, tbl)
        write_parquet(tbl, self.output[name], name, self.provenance(**extra))


def start(snakemake) -> Job:
    """The first line of every rule script: logging, threads, the job's spec."""
    log = setup(snakemake)
    spec = snakemake.params.job
    fp = getattr(snakemake.input, "fingerprint", None)
    if fp is not None and json.loads(Path(fp).read_text()) != spec:
        # The fingerprint decides reruns; a job reading anything else would rerun on the wrong edits.
        raise RuntimeError(f"{fp} does not hold this job's spec: rerun snakemake (it rewrites fingerprints)")
    return Job(rule=snakemake.rule, spec=spec, input=snakemake.input, output=snakemake.output,
               wildcards=dict(snakemake.wildcards), log=log)


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
    # torchao (quantized drafts; peft imports it too) logs a warning for each CUDA kernel library it
    # cannot load on a CPU machine: expected there, and not this job's news.
    logging.getLogger("torchao").setLevel(logging.ERROR)
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
