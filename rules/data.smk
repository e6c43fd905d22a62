# Datasets: the offline demo in the DSEC clip layout, and the manifest of any dataset.


rule demo_data:
    input:
        fingerprint=f"{FP}/demo_data/{{dataset}}.json",
        code=script_modules("demo_data.py"),
    output:
        directory("results/demo_data/{dataset}"),
    params:
        spec=lambda w: canonical(config["datasets"][w.dataset]["demo"]),
    log:
        "logs/demo_data/{dataset}.log",
    script:
        "../workflow_scripts/demo_data.py"


rule manifest:
    input:
        data=lambda w: dataset_inputs(w.dataset),
        fingerprint=f"{FP}/manifest/{{dataset}}.json",
        code=script_modules("manifest.py"),
    output:
        manifest="results/data/{dataset}/manifest.parquet",
        errors="results/data/{dataset}/errors.parquet",
    params:
        root=lambda w: dataset_root(config, w.dataset),
        instructions=lambda w: config["datasets"][w.dataset]["instructions"],
        split=lambda w: config["datasets"][w.dataset]["split"],
        questions=config["questions"],
        skip_bad=config["skip_bad_samples"],
    log:
        "logs/manifest/{dataset}.log",
    script:
        "../workflow_scripts/manifest.py"
