# Free-running generation: every model x decoding preset x shard, each model with its own
# inputs and prompt. Shards are independent jobs; downstream stages read them lazily.


rule generate:
    input:
        manifest="results/data/{dataset}/manifest.parquet",
        model=lambda w: model_inputs(w.model),
        fingerprint=fingerprint("generate"),
        code=script_modules("generate.py"),
    output:
        tokens="results/generate/{dataset}/{model}/{decoding}/shard{shard}.parquet",
        errors="results/generate/{dataset}/{model}/{decoding}/shard{shard}.errors.parquet",
    log:
        "logs/generate/{dataset}/{model}/{decoding}/shard{shard}.log",
    resources:
        mem_mb=plan_mem_mb("generate"),
        gpu=lambda w: gpu_of(w.model),
    params:
        job=job_spec("generate"),
    script:
        "../workflow_scripts/generate.py"
