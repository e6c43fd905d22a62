"""Rule acceptance: the summary, per-position, cost-model, loop-vs-replay, distillation, histogram and
histogram-check tables, and one exported profile per run (results/acceptance/profiles/)."""
from specalign import jobs
from specalign.artifacts import write_text
from specalign.profiles import write_all
from specalign.summary import acceptance_tables

job = jobs.start(snakemake)  # noqa: F821
tables = acceptance_tables(job.runs, job.spec["gammas"], job.spec["bootstrap"], log=job.log,
                           comparisons=job.spec["comparisons"])
for name, df in tables.items():
    write_text(df.write_csv(float_precision=6), job.output[name])
names = write_all(job.runs, tables, job.output["profiles"])
job.log.info("%d profiles in %s", len(names), job.output["profiles"])
