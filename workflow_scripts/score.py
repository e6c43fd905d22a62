"""Rule score: the draft teacher-forced along the target's streams (one pass per model per sample)."""
from specalign import jobs
from specalign.artifacts import read_streams
from specalign.backends import load_backend
from specalign.generation import ProgressLog
from specalign.scoring import score_table
from specalign.translation import TokenMap

job = jobs.start(snakemake)  # noqa: F821
draft, target = load_backend(job.model_spec("draft")), load_backend(job.model_spec("target"))
decoding = job.decoding
token_map = TokenMap.from_table(job.input.translation, draft.tokenizer, target.tokenizer)
streams = read_streams(job.input.target_tokens)
pairs, errors = job.prepare_pairs(draft, target, [s for s in job.samples() if s.sample_id in streams])
items = [(dp, tp, streams[tp.sample_id]) for dp, tp in pairs]
job.log.info("scoring %s along %s (%s): %d samples", draft.name, target.name, decoding.name, len(items))
scores = score_table(draft, target, items, token_map, decoding, progress=ProgressLog(total=len(items)),
                     rank_k=job.spec["rank_k"])
job.write("errors", errors)
job.write("scores", scores)
