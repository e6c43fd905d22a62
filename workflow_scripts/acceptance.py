"""Rule acceptance: the summary, per-position, cost-model, loop-vs-replay, distillation, histogram and
histogram-check tables, one exported profile per run (results/acceptance/profiles/), the oracle bounds
(oracle.csv: router across drafts, per-round oracle gamma), the grounding classes (grounding.csv) and the
tree tables (trees.csv, tree_histograms.csv, ranks.csv: tree_tables.py)."""
from specalign import jobs
from specalign.artifacts import write_text
from specalign.grounding import grounding_table
from specalign.oracle import oracle_table, run_costs
from specalign.profiles import write_all
from specalign.specs import Run
from specalign.summary import acceptance_tables
from specalign.tree_tables import tree_tables

job = jobs.start(snakemake)  # noqa: F821
tables = acceptance_tables(job.runs, job.spec["gammas"], job.spec["bootstrap"], log=job.log,
                           comparisons=job.spec["comparisons"],
                           ablation_runs=[Run(**r) for r in job.spec.get("ablation_runs", [])])
for name, df in tables.items():
    write_text(df.write_csv(float_precision=6), job.output[name])
# the profiles describe the deployable (plain) runs: an input ablation's rows are a diagnosis, not a draft
summary = tables["summary"]
plain = summary.filter(summary["ablation"].is_null()) if "ablation" in summary.columns else summary
names = write_all(job.runs, {**tables, "summary": plain}, job.output["profiles"])
job.log.info("%d profiles in %s", len(names), job.output["profiles"])
# bounds, not measurements (oracle.py): from the plain runs' match bits, beside the real drafts' figures,
# each run's measured c taken from its summary rows (the one paired timing job)
write_text(oracle_table(job.runs, job.spec["gammas"], job.spec["bootstrap"], run_costs(plain))
           .write_csv(float_precision=6), job.output["oracle"])
# the grounding classes (grounding.py): empty unless the config's `grounding:` names two ablations
write_text(grounding_table(job.runs, [Run(**r) for r in job.spec.get("ablation_runs", [])],
                           job.spec.get("grounding"), job.spec["bootstrap"]).write_csv(float_precision=6),
           job.output["grounding"])
# tree drafting (tree_tables.py): every chain, the configured trees and the best tree per node budget
# (greedy runs: exact), and how often the target's token is the draft's 1st, 2nd, ... choice
tree_spec = job.spec["trees"]
for name, df in tree_tables(job.runs, job.spec["gammas"], tree_spec["trees"], tree_spec["budgets"],
                            tree_spec["rank_k"], job.spec["bootstrap"]).items():
    write_text(df.write_csv(float_precision=6), job.output[name])
