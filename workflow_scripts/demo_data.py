"""Rule demo_data: write the offline demo dataset in the DSEC clip layout."""
from pathlib import Path

from specalign import jobs
from specalign.demo_data import DemoSpec, build_demo_dataset

job = jobs.start(snakemake)  # noqa: F821 (snakemake is injected by the script directive)
n = build_demo_dataset(Path(job.output[0]), DemoSpec(**job.spec["demo"]))
job.log.info("wrote %d demo clips to %s", n, job.output[0])
