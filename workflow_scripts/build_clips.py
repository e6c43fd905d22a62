"""Rule build_clips: cut raw DSEC sequences into one clip dataset of one duration (DSEC clip layout)."""
from specalign import jobs
from specalign.dsec_raw import build_clips

job = jobs.start(snakemake)  # noqa: F821
spec = job.spec
summary = build_clips(spec["raw_root"], sorted(spec["sequences"]), spec["duration_ms"], spec["overlap"],
                      job.output.clips, spec["sequences"], instruction_json=spec["instructions"],
                      sensor_size=tuple(spec["sensor_size"]))
job.write("errors", summary.errors)
job.log.info("%d clips of %d ms (%s per split), %d windows skipped: %s", summary.num_clips, spec["duration_ms"],
             summary.clips_per_split, len(summary.errors), summary.clips_per_sequence)
