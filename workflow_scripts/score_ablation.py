"""Rule score_ablation: the score job with one side's input ablated (specalign/ablations.py), along the
target's PLAIN stream; the same scores schema, so the tables measure it like any run."""
from specalign import jobs
from specalign.ablations import Ablator
from specalign.artifacts import read_streams
from specalign.backends import load_backend
from specalign.generation import ProgressLog
from specalign.scoring import score_table
from specalign.translation import TokenMap

job = jobs.start(snakemake)  # noqa: F821
ablation = job.spec["ablation"]
draft, target = load_backend(job.model_spec("draft")), load_backend(job.model_spec("target"))
decoding = job.decoding
token_map = TokenMap.from_table(job.input.translation, draft.tokenizer, target.tokenizer)
streams = read_streams(job.input.target_tokens)
samples = job.samples()  # every clip of the dataset: the shuffle's derangement and the mean frame span them all
with Ablator(ablation, samples, log=job.log) as ablator:
    sides = {"draft": draft, "target": target}
    sides[ablation["side"]] = ablator.wrap(sides[ablation["side"]])
    pairs, errors = job.prepare_pairs(sides["draft"], sides["target"],
                                      [s for s in samples if s.sample_id in streams])
items = [(dp, tp, streams[tp.sample_id]) for dp, tp in pairs]
job.log.info("scoring %s along %s (%s), %s input ablated (%s): %d samples", draft.name, target.name,
             decoding.name, ablation["side"], ablation["kind"], len(items))
scores = score_table(draft, target, items, token_map, decoding, progress=ProgressLog(total=len(items)),
                     rank_k=job.spec["rank_k"])
job.write("errors", errors)
job.write("scores", scores)
