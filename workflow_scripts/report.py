"""Rule report: results/report.md and the disagreement table."""
from specalign import jobs
from specalign.artifacts import write_text
from specalign.report import build_report

job = jobs.start(snakemake)  # noqa: F821
report, disagreements = build_report(job.runs, job.input)
write_text(disagreements, job.output.disagreements)
write_text(report, job.output.report)
job.log.info("report written")
