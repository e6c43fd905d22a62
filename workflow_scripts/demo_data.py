"""Rule demo_data: write the offline demo dataset in the DSEC clip layout."""
import json
from pathlib import Path

from specalign import jobs
from specalign.demo_data import DemoSpec, build_demo_dataset

log = jobs.setup(snakemake)  # noqa: F821 (snakemake is injected by the script directive)
spec = DemoSpec(**json.loads(snakemake.params.spec))  # noqa: F821
n = build_demo_dataset(Path(snakemake.output[0]), spec)  # noqa: F821
log.info("wrote %d demo clips to %s", n, snakemake.output[0])  # noqa: F821
