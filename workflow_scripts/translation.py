"""Rule translation: the draft -> target token map, its seed-format JSON and coverage stats."""
from transformers import AutoTokenizer

from specalign import jobs
from specalign.artifacts import write_json
from specalign.translation import build_translation

job = jobs.start(snakemake)  # noqa: F821
draft = AutoTokenizer.from_pretrained(job.spec["draft_tokenizer"])
target = AutoTokenizer.from_pretrained(job.spec["target_tokenizer"])
tbl, stats, seed_map = build_translation(draft, target, job.spec["texts"])
write_json(seed_map, job.output.seed_map)
write_json(stats, job.output.stats)
job.write("translation", tbl)
job.log.info("translation stats: %s", stats)
