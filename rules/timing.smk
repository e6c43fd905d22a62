# Paired timing: one job per dataset x pair x decoding loads both models on their devices and times
# them side by side on the same clips (prefills, decode steps, verify passes, the loop against plain
# decoding), so every cost ratio of the tables comes from one job (workflow_scripts/specalign/timing.py).


rule timing:
    input:
        unpack(pair_model_inputs),
        manifest="results/data/{dataset}/manifest.parquet",
        target_tokens=target_tokens,
        translation="results/translation/{pair}.parquet",
        fingerprint=fingerprint("timing"),
        code=script_modules("timing.py"),
    output:
        timing="results/timing/{dataset}/{pair}/{decoding}.parquet",
        errors="results/timing/{dataset}/{pair}/{decoding}.errors.parquet",
    log:
        "logs/timing/{dataset}/{pair}/{decoding}.log",
    resources:
        mem_mb=plan_mem_mb("timing"),
        gpu=pair_gpu,
    params:
        job=job_spec("timing"),
    script:
        "../workflow_scripts/timing.py"
