# The report: acceptance beside the seed's positional match, the cost model, and which
# tokens disagree, where and why.


rule report:
    input:
        summary="results/acceptance/summary.csv",
        per_position="results/acceptance/per_position.csv",
        cost="results/acceptance/cost_model.csv",
        loop="results/acceptance/loop_vs_replay.csv",
        distillation="results/acceptance/distillation.csv",
        trees="results/acceptance/trees.csv",
        grounding="results/acceptance/grounding.csv",
        oracle="results/acceptance/oracle.csv",
        scores=expand(
            "results/score/{dataset}/{pair}/{decoding}.parquet",
            dataset=EVALUATED,
            pair=PAIRS,
            decoding=DECODINGS,
        ),
        stats=expand("results/translation/{pair}.stats.json", pair=PAIRS),
        translation=expand("results/translation/{pair}.parquet", pair=PAIRS),
        vocab=expand("results/vocab/{model}.parquet", model=MODELS),
        clips=clip_datasets(),
        fingerprint=fingerprint("report"),
        code=script_modules("report.py"),
    output:
        report="results/report.md",
        disagreements="results/explain/disagreements.csv",
    log:
        "logs/report/report.log",
    resources:
        mem_mb=plan_mem_mb("report"),
    params:
        job=job_spec("report"),
    script:
        "../workflow_scripts/report.py"
