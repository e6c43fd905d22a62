"""Rule translation: the draft -> target token map, its seed-format JSON and coverage stats."""
from transformers import AutoTokenizer

from specalign import jobs
from specalign.artifacts import write_json, write_parquet
from specalign.translation import build_translation

sm = snakemake  # noqa: F821
log = jobs.setup(sm)
draft = AutoTokenizer.from_pretrained(sm.params.draft)
target = AutoTokenizer.from_pretrained(sm.params.target)
tbl, stats, seed_map = build_translation(draft, target, list(sm.params.texts))
meta = jobs.provenance(sm, draft_tokenizer=jobs.model_identity(sm.params.draft),
                       target_tokenizer=jobs.model_identity(sm.params.target))
write_json(seed_map, sm.output.seed_map)
write_json(stats, sm.output.stats)
write_parquet(tbl, sm.output.table, "translation", meta)
log.info("translation stats: %s", stats)
