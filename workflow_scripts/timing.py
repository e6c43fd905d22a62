"""Rule timing: both models of a pair timed side by side on the same clips in one job -> timing table."""
from specalign import jobs
from specalign.artifacts import read_streams
from specalign.backends import load_backend
from specalign.generation import ProgressLog
from specalign.speculative import loop_device
from specalign.timing import pair_dtype, time_pairs
from specalign.translation import TokenMap

job = jobs.start(snakemake)  # noqa: F821
draft, target = load_backend(job.model_spec("draft")), load_backend(job.model_spec("target"))
decoding, spec = job.decoding, job.spec
token_map = TokenMap.from_table(job.input.translation, draft.tokenizer, target.tokenizer)
streams = read_streams(job.input.target_tokens)
# the first `clips` clips by sample id that the target generated a stream for (the same in every
# decoding's job, so their c can be compared clip for clip)
samples = sorted((s for s in job.samples() if s.sample_id in streams), key=lambda s: s.sample_id)[:spec["clips"]]
pairs, errors = job.prepare_pairs(draft, target, samples)
items = [(dp, tp, streams[tp.sample_id]) for dp, tp in pairs]
job.log.info("timing %s and %s (%s) on %s, %s: %d clips x %d reps, verify gammas %s, loop gammas %s", draft.name,
             target.name, decoding.name, loop_device(draft, target), pair_dtype(draft, target), len(items),
             spec["reps"], spec["verify_gammas"], spec["loop_gammas"])
table = time_pairs(draft, target, items, token_map, decoding, spec["verify_gammas"], spec["loop_gammas"], spec["reps"],
                   warmup=True, progress=ProgressLog(total=len(items)),
                   draft_sampling=spec.get("draft_sampling", "sample"))
job.write("errors", errors)
job.write("timing", table)
