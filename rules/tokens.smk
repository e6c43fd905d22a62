# Tokenizers: the demo pair's tokenizers, each model's vocabulary, draft -> target translation.


rule demo_tokenizers:
    input:
        data=lambda w: dataset_inputs(config["demo_training"]["dataset"]),
        fingerprint=f"{FP}/demo_tokenizers/demo.json",
        code=script_modules("demo_tokenizers.py"),
    output:
        draft=directory("results/demo_tokenizers/draft"),
        target=directory("results/demo_tokenizers/target"),
    params:
        root=lambda w: dataset_root(config, config["demo_training"]["dataset"]),
        instructions=lambda w: config["datasets"][config["demo_training"]["dataset"]]["instructions"],
        questions=config["questions"],
        vocab_size=config["demo_training"]["vocab_size"],
    log:
        "logs/demo_tokenizers/demo.log",
    script:
        "../workflow_scripts/demo_tokenizers.py"


rule vocab:
    input:
        tokenizer=lambda w: tokenizer_inputs(w.model),
        fingerprint=f"{FP}/vocab/{{model}}.json",
        code=script_modules("vocab.py"),
    output:
        "results/vocab/{model}.parquet",
    params:
        tokenizer=lambda w: tokenizer_path(config, w.model),
    log:
        "logs/vocab/{model}.log",
    script:
        "../workflow_scripts/vocab.py"


rule translation:
    input:
        draft=lambda w: tokenizer_inputs(pair_models(w.pair)[0]),
        target=lambda w: tokenizer_inputs(pair_models(w.pair)[1]),
        fingerprint=f"{FP}/translation/{{pair}}.json",
        code=script_modules("translation.py"),
    output:
        table="results/translation/{pair}.parquet",
        seed_map="results/translation/{pair}.json",
        stats="results/translation/{pair}.stats.json",
    params:
        draft=lambda w: tokenizer_path(config, pair_models(w.pair)[0]),
        target=lambda w: tokenizer_path(config, pair_models(w.pair)[1]),
        texts=config["translation_test_texts"],
    log:
        "logs/translation/{pair}.log",
    script:
        "../workflow_scripts/translation.py"
