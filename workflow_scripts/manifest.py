"""Rule manifest: read a dataset in the DSEC clip layout into manifest + errors tables."""
from pathlib import Path

from specalign import jobs
from specalign.artifacts import write_parquet
from specalign.dataset import build_manifest

sm = snakemake  # noqa: F821 (injected by the script directive)
log = jobs.setup(sm)
root = Path(sm.params.root)
manifest, errors = build_manifest(root, root / sm.params.instructions, list(sm.params.questions),
                                  sm.params.split, bool(sm.params.skip_bad))
meta = jobs.provenance(sm, dataset_root=str(root))
write_parquet(errors, sm.output.errors, "errors", meta)
write_parquet(manifest, sm.output.manifest, "manifest", meta)
log.info("%d samples, %d recorded as bad", manifest.num_rows, errors.num_rows)
