"""Rule generate: one model x decoding preset x shard of the dataset -> token streams."""
import torch

from specalign import jobs
from specalign.backends import load_backend
from specalign.generation import ProgressLog, device_name, generate, tokens_table

job = jobs.start(snakemake)  # noqa: F821
spec, decoding = job.model_spec(), job.decoding
samples = job.samples()
job.log.info("%s / %s: shard %d of %d holds %d samples", spec.name, decoding.name, job.spec["shard"],
             job.spec["shards"], len(samples))
backend = load_backend(spec)
job.log.info("timing on %s, %d torch threads; the first batch is run once untimed (warm-up)",
             device_name(backend.device), torch.get_num_threads())
prompts, errors = job.prepare(backend, samples)
# ProgressLog writes to stderr, which jobs.start copies into the rule's log
results = generate(backend, prompts, decoding, batch_size=spec.batch_size, progress=ProgressLog(total=len(prompts)),
                   warmup=True)
job.write("errors", errors)
job.write("tokens", tokens_table(results))
job.log.info("wrote %d streams, %d tokens", len(results), sum(len(r.token_ids) for r in results))
