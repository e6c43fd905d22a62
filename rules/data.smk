# Datasets: the offline demo in the DSEC clip layout, and the manifest of any dataset.


rule demo_data:
    input:
        fingerprint=fingerprint("demo_data"),
        code=script_modules("demo_data.py"),
    output:
        directory("results/demo_data/{dataset}"),
    log:
        "logs/demo_data/{dataset}.log",
    resources:
        mem_mb=plan_mem_mb("demo_data"),
    params:
        job=job_spec("demo_data"),
    script:
        "../workflow_scripts/demo_data.py"


rule manifest:
    input:
        data=lambda w: dataset_inputs(w.dataset),
        fingerprint=fingerprint("manifest"),
        code=script_modules("manifest.py"),
    output:
        manifest="results/data/{dataset}/manifest.parquet",
        errors="results/data/{dataset}/errors.parquet",
    log:
        "logs/manifest/{dataset}.log",
    resources:
        mem_mb=plan_mem_mb("manifest"),
    params:
        job=job_spec("manifest"),
    script:
        "../workflow_scripts/manifest.py"


rule build_clips:
    input:
        raw=raw_inputs,
        fingerprint=fingerprint("build_clips"),
        code=script_modules("build_clips.py"),
    output:
        clips=directory("results/clips/{dataset}"),
        errors="results/clips/{dataset}.errors.parquet",
    log:
        "logs/build_clips/{dataset}.log",
    resources:
        mem_mb=plan_mem_mb("build_clips"),
    params:
        job=job_spec("build_clips"),
    script:
        "../workflow_scripts/build_clips.py"
