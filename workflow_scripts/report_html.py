"""Rule report_html: results/report/index.html (self-contained), its plots as PNG files with their
data as CSV beside them, and summary.md."""
from pathlib import Path

from specalign import jobs
from specalign.artifacts import atomic_path, write_text
from specalign.report_html import PLOTS, build_html_report

job = jobs.start(snakemake)  # noqa: F821
page = build_html_report(job.runs, job.input, manifests=job.spec["manifests"], n_boot=job.spec["bootstrap"])
data = {Path(p).name: p for p in job.output.data}
for key, (name, _) in PLOTS.items():
    with atomic_path(job.output[key]) as tmp:
        Path(tmp).write_bytes(page.plots[key].png)
    write_text(page.plots[key].data.write_csv(float_precision=6), data[name.removesuffix(".png") + ".csv"])
write_text(page.markdown, job.output.summary)
write_text(page.html, job.output.html)
job.log.info("report written: %s (%d bytes, %d plots with their data)", job.output.html, len(page.html), len(PLOTS))
