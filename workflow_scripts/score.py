"""Rule score: the draft teacher-forced along the target's streams (one pass per model per sample)."""
import json

from specalign import jobs
from specalign.artifacts import read_streams, table, write_parquet
from specalign.dataset import samples_from_manifest
from specalign.generation import Decoding, ProgressLog
from specalign.models import ModelSpec, load_backend, prepare_pairs
from specalign.scoring import score_table
from specalign.translation import TokenMap

sm = snakemake  # noqa: F821
log = jobs.setup(sm)
draft_name, target_name = sm.wildcards.pair.split("__")
draft = load_backend(ModelSpec.from_config(draft_name, json.loads(sm.params.draft)))
target = load_backend(ModelSpec.from_config(target_name, json.loads(sm.params.target)))
decoding = Decoding.from_config(sm.params.decoding)
token_map = TokenMap.from_table(sm.input.translation, draft.tokenizer, target.tokenizer)

streams = read_streams(sm.input.target_tokens)
samples = [s for s in samples_from_manifest(sm.input.manifest, sm.params.root) if s.sample_id in streams]
pairs, errors = prepare_pairs(draft, target, samples, bool(sm.params.skip_bad), "score")
items = [(dp, tp, streams[tp.sample_id]) for dp, tp in pairs]
log.info("scoring %s along %s (%s): %d samples", draft_name, target_name, decoding.name, len(items))
scores = score_table(draft, target, items, token_map, decoding, progress=ProgressLog(total=len(items)))
meta = jobs.provenance(sm, draft=jobs.model_identity(json.loads(sm.params.draft)["path"]),
                       target=jobs.model_identity(json.loads(sm.params.target)["path"]),
                       decoding=json.loads(sm.params.decoding))
write_parquet(table("errors", errors), sm.output.errors, "errors", meta)
write_parquet(scores, sm.output.scores, "scores", meta)
