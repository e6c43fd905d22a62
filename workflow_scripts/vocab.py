"""Rule vocab: one model's tokenizer as a table."""
from transformers import AutoTokenizer

from specalign import jobs
from specalign.vocabulary import vocabulary_table

job = jobs.start(snakemake)  # noqa: F821
tbl = vocabulary_table(AutoTokenizer.from_pretrained(job.spec["tokenizer"]))
job.write("vocab", tbl)
job.log.info("%d ids", tbl.num_rows)
