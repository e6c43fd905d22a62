"""Rule acceptance: the summary, per-position, cost-model and loop-vs-replay tables."""
import json

import polars as pl

from specalign import jobs
from specalign.artifacts import SUMMARY_COLUMNS, write_text
from specalign.summary import Run, run_tables

sm = snakemake  # noqa: F821
log = jobs.setup(sm)
tables = {"summary": [], "per_position": [], "cost": [], "loop": []}
for r in sm.params.runs:
    run = Run(**r)
    parts = run_tables(run, json.loads(sm.params.decodings)[run.decoding], list(sm.params.gammas), int(sm.params.bootstrap))
    for name, rows in zip(tables, parts):
        tables[name].extend(rows)
    log.info("%s %s: %d summary rows", run.pair, run.decoding, len(parts[0]))


def frame(rows, first=()):
    df = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
    return df.select([*first, *[c for c in df.columns if c not in first]]) if rows else df


for name, first in (("summary", SUMMARY_COLUMNS), ("per_position", ()), ("cost", ()), ("loop", ())):
    write_text(frame(tables[name], first).write_csv(float_precision=6), sm.output[name])
