"""Rule vocab: one model's tokenizer as a table."""
from transformers import AutoTokenizer

from specalign import jobs
from specalign.artifacts import write_parquet
from specalign.vocabulary import vocabulary_table

sm = snakemake  # noqa: F821
log = jobs.setup(sm)
tok = AutoTokenizer.from_pretrained(sm.params.tokenizer)
tbl = vocabulary_table(tok)
write_parquet(tbl, sm.output[0], "vocab", jobs.provenance(sm, tokenizer=jobs.model_identity(sm.params.tokenizer)))
log.info("%d ids", tbl.num_rows)
