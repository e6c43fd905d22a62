# Acceptance: teacher-forced scoring of each draft along its target's streams, the real
# draft-verify loop (sharded like generation), and the summary tables (shared/reference/acceptance-metrics.md).


rule score:
    input:
        unpack(pair_model_inputs),
        manifest="results/data/{dataset}/manifest.parquet",
        target_tokens=target_tokens,
        translation="results/translation/{pair}.parquet",
        fingerprint=fingerprint("score"),
        code=script_modules("score.py"),
    output:
        scores="results/score/{dataset}/{pair}/{decoding}.parquet",
        errors="results/score/{dataset}/{pair}/{decoding}.errors.parquet",
    log:
        "logs/score/{dataset}/{pair}/{decoding}.log",
    resources:
        mem_mb=plan_mem_mb("score"),
        gpu=pair_gpu,
    params:
        job=job_spec("score"),
    script:
        "../workflow_scripts/score.py"


# An input ablation (config `ablations:`, specalign/ablations.py): the score job's two passes with one
# side's input ablated, along the target's plain stream; its own output file, so adding one runs only it.
rule score_ablation:
    input:
        unpack(pair_model_inputs),
        manifest="results/data/{dataset}/manifest.parquet",
        target_tokens=target_tokens,
        translation="results/translation/{pair}.parquet",
        fingerprint=fingerprint("score_ablation"),
        code=script_modules("score_ablation.py"),
    output:
        scores="results/score/{dataset}/{pair}/{decoding}.{ablation}.parquet",
        errors="results/score/{dataset}/{pair}/{decoding}.{ablation}.errors.parquet",
    log:
        "logs/score/{dataset}/{pair}/{decoding}.{ablation}.log",
    resources:
        mem_mb=plan_mem_mb("score_ablation"),
        gpu=pair_gpu,
    params:
        job=job_spec("score_ablation"),
    script:
        "../workflow_scripts/score_ablation.py"


rule speculative:
    input:
        unpack(pair_model_inputs),
        manifest="results/data/{dataset}/manifest.parquet",
        target_tokens=target_tokens,
        translation="results/translation/{pair}.parquet",
        fingerprint=fingerprint("speculative"),
        code=script_modules("speculative.py"),
    output:
        rounds="results/speculative/{dataset}/{pair}/{decoding}/g{gamma}/shard{shard}.parquet",
        errors="results/speculative/{dataset}/{pair}/{decoding}/g{gamma}/shard{shard}.errors.parquet",
    log:
        "logs/speculative/{dataset}/{pair}/{decoding}/g{gamma}/shard{shard}.log",
    resources:
        mem_mb=plan_mem_mb("speculative"),
        gpu=pair_gpu,
    params:
        job=job_spec("speculative"),
    script:
        "../workflow_scripts/speculative.py"


rule acceptance:
    input:
        unpack(acceptance_inputs),
        fingerprint=fingerprint("acceptance"),
        code=script_modules("acceptance.py"),
    output:
        summary="results/acceptance/summary.csv",
        per_position="results/acceptance/per_position.csv",
        cost="results/acceptance/cost_model.csv",
        loop="results/acceptance/loop_vs_replay.csv",
        distillation="results/acceptance/distillation.csv",
        histograms="results/acceptance/histograms.csv",
        histogram_checks="results/acceptance/histogram_checks.csv",
        # bounds beside the measured figures (oracle.py), and the grounding classes (grounding.py)
        oracle="results/acceptance/oracle.csv",
        grounding="results/acceptance/grounding.csv",
        # tree drafting replayed from the scores (tree_tables.py)
        trees="results/acceptance/trees.csv",
        tree_histograms="results/acceptance/tree_histograms.csv",
        ranks="results/acceptance/ranks.csv",
        # one JSON per dataset x pair x decoding; written whole, so a run gone from the config leaves none
        profiles=directory("results/acceptance/profiles"),
    log:
        "logs/acceptance/all.log",
    resources:
        mem_mb=plan_mem_mb("acceptance"),
    params:
        job=job_spec("acceptance"),
    script:
        "../workflow_scripts/acceptance.py"
