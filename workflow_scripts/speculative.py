"""Rule speculative: the real draft-verify loop at one gamma over the dataset -> rounds."""
import json

from specalign import jobs
from specalign.artifacts import table, write_parquet
from specalign.dataset import samples_from_manifest
from specalign.generation import Decoding, ProgressLog
from specalign.models import ModelSpec, load_backend, prepare_pairs
from specalign.speculative import run_speculative
from specalign.translation import TokenMap

sm = snakemake  # noqa: F821
log = jobs.setup(sm)
draft_name, target_name = sm.wildcards.pair.split("__")
dspec = ModelSpec.from_config(draft_name, json.loads(sm.params.draft))
tspec = ModelSpec.from_config(target_name, json.loads(sm.params.target))
draft, target = load_backend(dspec), load_backend(tspec)
decoding = Decoding.from_config(sm.params.decoding)
gamma = int(sm.wildcards.gamma)
token_map = TokenMap.from_table(sm.input.translation, draft.tokenizer, target.tokenizer)

shard, shards = int(sm.wildcards.shard), int(sm.params.shards)
samples = samples_from_manifest(sm.input.manifest, sm.params.root)[shard::shards]  # as in generation
pairs, errors = prepare_pairs(draft, target, samples, bool(sm.params.skip_bad), "speculative")
log.info("speculative loop %s -> %s, %s, gamma %d: %d samples", draft_name, target_name, decoding.name, gamma,
         len(pairs))
rounds = run_speculative(draft, target, pairs, token_map, gamma, decoding, progress=ProgressLog(total=len(pairs)))
meta = jobs.provenance(sm, draft=jobs.model_identity(dspec.path), target=jobs.model_identity(tspec.path),
                       decoding=json.loads(sm.params.decoding), gamma=gamma, shard=f"{shard}/{shards}")
write_parquet(table("errors", errors), sm.output.errors, "errors", meta)
write_parquet(rounds, sm.output.rounds, "rounds", meta)
