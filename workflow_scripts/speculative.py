"""Rule speculative: the real draft-verify loop at one gamma over one shard of the dataset -> rounds."""
from specalign import jobs
from specalign.artifacts import read_stream_timings
from specalign.backends import load_backend
from specalign.generation import ProgressLog
from specalign.speculative import effective_draft_sampling, loop_device, run_speculative
from specalign.translation import TokenMap

job = jobs.start(snakemake)  # noqa: F821
draft, target = load_backend(job.model_spec("draft")), load_backend(job.model_spec("target"))
decoding, gamma = job.decoding, job.spec["gamma"]
# only a sampled decoding's spec holds it (a greedy draft proposes its argmax whatever the setting)
draft_sampling = job.spec.get("draft_sampling", "sample")
token_map = TokenMap.from_table(job.input.translation, draft.tokenizer, target.tokenizer)
pairs, errors = job.prepare_pairs(draft, target, job.samples())  # the shard, strided as in generation
job.log.info("speculative loop %s -> %s, %s (draft proposes: %s), gamma %d: %d samples", draft.name, target.name,
             decoding.name, effective_draft_sampling(decoding, draft_sampling), gamma, len(pairs))
job.log.info("timing on %s; the first pair runs once untimed (warm-up)", loop_device(draft, target))
# the target-only baseline: the target's own generated streams (same model, device and decoding)
rounds = run_speculative(draft, target, pairs, token_map, gamma, decoding, progress=ProgressLog(total=len(pairs)),
                         target_streams=read_stream_timings(job.input.target_tokens), warmup=True,
                         draft_sampling=draft_sampling)
job.write("errors", errors)
job.write("rounds", rounds)
