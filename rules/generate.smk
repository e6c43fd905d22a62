# Free-running generation: every model x decoding preset x shard, each model with its own
# inputs and prompt. Shards are independent jobs; downstream stages read them lazily.


rule generate:
    input:
        manifest="results/data/{dataset}/manifest.parquet",
        model=lambda w: model_inputs(w.model),
        fingerprint=f"{FP}/generate/{{model}}.{{decoding}}.json",
        code=script_modules("generate.py"),
    output:
        tokens="results/generate/{dataset}/{model}/{decoding}/shard{shard}.parquet",
        errors="results/generate/{dataset}/{model}/{decoding}/shard{shard}.errors.parquet",
    params:
        root=lambda w: dataset_root(config, w.dataset),
        model=lambda w: model_json(w.model),
        decoding=lambda w: canonical({"name": w.decoding, **config["decodings"][w.decoding]}),
        shards=config["shards"],
        skip_bad=config["skip_bad_samples"],
    resources:
        gpu=lambda w: gpu_of(w.model),
    log:
        "logs/generate/{dataset}/{model}/{decoding}/shard{shard}.log",
    script:
        "../workflow_scripts/generate.py"
