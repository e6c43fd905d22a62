"""Rule generate: one model x decoding preset x shard of the dataset -> token streams."""
import json

from specalign import jobs
from specalign.artifacts import table, write_parquet
from specalign.dataset import samples_from_manifest
from specalign.generation import Decoding, ProgressLog, generate, tokens_table
from specalign.models import ModelSpec, load_backend, prepare_samples

sm = snakemake  # noqa: F821
log = jobs.setup(sm)
spec = ModelSpec.from_config(sm.wildcards.model, json.loads(sm.params.model))
decoding = Decoding.from_config(sm.params.decoding)
shard, shards = int(sm.wildcards.shard), int(sm.params.shards)
samples = samples_from_manifest(sm.input.manifest, sm.params.root)[shard::shards]  # strided: balanced shards
log.info("%s / %s: shard %d of %d holds %d samples", spec.name, decoding.name, shard, shards, len(samples))

backend = load_backend(spec)
prompts, errors = prepare_samples(backend, samples, bool(sm.params.skip_bad), "generate")
# ProgressLog writes to stderr, which jobs.setup copies into the rule's log
results = generate(backend, prompts, decoding, batch_size=spec.batch_size, progress=ProgressLog(total=len(prompts)))
meta = jobs.provenance(sm, model=jobs.model_identity(spec.path), dtype=spec.dtype,
                       decoding=json.loads(sm.params.decoding), shard=f"{shard}/{shards}")
write_parquet(table("errors", errors), sm.output.errors, "errors", meta)
write_parquet(tokens_table(results, backend.tokenizer), sm.output.tokens, "tokens", meta)
log.info("wrote %d streams, %d tokens", len(results), sum(len(r.token_ids) for r in results))
