"""Rule report: results/report.md and the disagreement table."""
import json

import polars as pl

from specalign import jobs
from specalign.artifacts import write_text
from specalign.explain import by_position, by_reason, disagreement_table, reachable_targets
from specalign.report import render

sm = snakemake  # noqa: F821
log = jobs.setup(sm)


def csv(path):
    try:
        return pl.read_csv(path, infer_schema_length=None)
    except pl.exceptions.NoDataError:
        return pl.DataFrame()


stats = {}
for path in sm.input.stats:
    stats[path.split("/")[-1].removesuffix(".stats.json")] = json.load(open(path))
explained, tables = {}, []
for r in sm.params.runs:
    scores = pl.read_parquet(r["scores"])
    vocab = pl.read_parquet(r["target_vocab"], columns=["id", "text"])
    text = dict(zip(vocab["id"].to_list(), vocab["text"].to_list()))
    reachable = reachable_targets(pl.read_parquet(r["translation"], columns=["target_ids"]))
    key = f"{r['dataset']} · {r['draft']} -> {r['target']} · {r['decoding']}"
    top = disagreement_table(scores, text, reachable=reachable)
    explained[key] = (top, by_reason(scores, reachable), by_position(scores))
    tables.append(top.with_columns(pl.lit(r["dataset"]).alias("dataset"), pl.lit(r["draft"]).alias("draft"),
                                   pl.lit(r["target"]).alias("target"), pl.lit(r["decoding"]).alias("decoding")))
write_text(pl.concat(tables).write_csv(float_precision=6) if tables else "", sm.output.disagreements)
write_text(render(csv(sm.input.summary), csv(sm.input.loop), csv(sm.input.cost), stats, explained), sm.output.report)
log.info("report written")
