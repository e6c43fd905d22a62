# Acceptance: teacher-forced scoring of each draft along its target's streams, the real
# draft-verify loop (sharded like generation), and the summary tables (shared/reference/acceptance-metrics.md).


rule score:
    input:
        manifest="results/data/{dataset}/manifest.parquet",
        target_tokens=lambda w: shard_files(w.dataset, pair_models(w.pair)[1], w.decoding),
        translation="results/translation/{pair}.parquet",
        draft=lambda w: model_inputs(pair_models(w.pair)[0]),
        target=lambda w: model_inputs(pair_models(w.pair)[1]),
        fingerprint=f"{FP}/score/{{pair}}.{{decoding}}.json",
        code=script_modules("score.py"),
    output:
        scores="results/score/{dataset}/{pair}/{decoding}.parquet",
        errors="results/score/{dataset}/{pair}/{decoding}.errors.parquet",
    params:
        root=lambda w: dataset_root(config, w.dataset),
        draft=lambda w: model_json(pair_models(w.pair)[0]),
        target=lambda w: model_json(pair_models(w.pair)[1]),
        draft_tokenizer=lambda w: tokenizer_path(config, pair_models(w.pair)[0]),
        target_tokenizer=lambda w: tokenizer_path(config, pair_models(w.pair)[1]),
        decoding=lambda w: canonical({"name": w.decoding, **config["decodings"][w.decoding]}),
        skip_bad=config["skip_bad_samples"],
    resources:
        gpu=lambda w: gpu_of(*pair_models(w.pair)),
    log:
        "logs/score/{dataset}/{pair}/{decoding}.log",
    script:
        "../workflow_scripts/score.py"


rule speculative:
    input:
        manifest="results/data/{dataset}/manifest.parquet",
        translation="results/translation/{pair}.parquet",
        draft=lambda w: model_inputs(pair_models(w.pair)[0]),
        target=lambda w: model_inputs(pair_models(w.pair)[1]),
        fingerprint=f"{FP}/score/{{pair}}.{{decoding}}.json",
        code=script_modules("speculative.py"),
    output:
        rounds="results/speculative/{dataset}/{pair}/{decoding}/g{gamma}/shard{shard}.parquet",
        errors="results/speculative/{dataset}/{pair}/{decoding}/g{gamma}/shard{shard}.errors.parquet",
    params:
        root=lambda w: dataset_root(config, w.dataset),
        draft=lambda w: model_json(pair_models(w.pair)[0]),
        target=lambda w: model_json(pair_models(w.pair)[1]),
        draft_tokenizer=lambda w: tokenizer_path(config, pair_models(w.pair)[0]),
        target_tokenizer=lambda w: tokenizer_path(config, pair_models(w.pair)[1]),
        decoding=lambda w: canonical({"name": w.decoding, **config["decodings"][w.decoding]}),
        shards=config["shards"],
        skip_bad=config["skip_bad_samples"],
    resources:
        gpu=lambda w: gpu_of(*pair_models(w.pair)),
    log:
        "logs/speculative/{dataset}/{pair}/{decoding}/g{gamma}/shard{shard}.log",
    script:
        "../workflow_scripts/speculative.py"


rule acceptance:
    input:
        unpack(acceptance_inputs),
        fingerprint=f"{FP}/acceptance/all.json",
        code=script_modules("acceptance.py"),
    output:
        summary="results/acceptance/summary.csv",
        per_position="results/acceptance/per_position.csv",
        cost="results/acceptance/cost_model.csv",
        loop="results/acceptance/loop_vs_replay.csv",
    params:
        runs=acceptance_runs,
        decodings=canonical(config["decodings"]),
        gammas=config["gammas"],
        bootstrap=config["bootstrap"],
    log:
        "logs/acceptance/all.log",
    script:
        "../workflow_scripts/acceptance.py"
