"""Rule manifest: read a dataset in the DSEC clip layout into manifest + errors tables."""
from pathlib import Path

from specalign import jobs
from specalign.dataset import build_manifest

job = jobs.start(snakemake)  # noqa: F821 (injected by the script directive)
root = Path(job.spec["root"])
manifest, errors = build_manifest(root, root / job.spec["instructions"], job.spec["questions"], job.spec["split"],
                                  job.skip_bad, sensor_size=tuple(job.spec["sensor_size"]),
                                  min_frames=job.spec["min_frames"], short_video=job.spec["short_video"])
job.write("errors", errors)
job.write("manifest", manifest)
job.log.info("%d samples, %d recorded as bad", manifest.num_rows, errors.num_rows)
