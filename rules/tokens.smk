# Tokenizers: the demo pair's tokenizers, each model's vocabulary, draft -> target translation.


rule demo_tokenizers:
    input:
        data=demo_training_inputs,
        fingerprint=fingerprint("demo_tokenizers"),
        code=script_modules("demo_tokenizers.py"),
    output:
        draft=directory("results/demo_tokenizers/draft"),
        target=directory("results/demo_tokenizers/target"),
    log:
        "logs/demo_tokenizers/demo.log",
    resources:
        mem_mb=plan_mem_mb("demo_tokenizers"),
    params:
        job=job_spec("demo_tokenizers"),
    script:
        "../workflow_scripts/demo_tokenizers.py"


rule vocab:
    input:
        tokenizer=lambda w: tokenizer_inputs(w.model),
        fingerprint=fingerprint("vocab"),
        code=script_modules("vocab.py"),
    output:
        vocab="results/vocab/{model}.parquet",
    log:
        "logs/vocab/{model}.log",
    resources:
        mem_mb=plan_mem_mb("vocab"),
    params:
        job=job_spec("vocab"),
    script:
        "../workflow_scripts/vocab.py"


rule translation:
    input:
        unpack(pair_tokenizer_inputs),
        fingerprint=fingerprint("translation"),
        code=script_modules("translation.py"),
    output:
        translation="results/translation/{pair}.parquet",
        seed_map="results/translation/{pair}.json",
        stats="results/translation/{pair}.stats.json",
    log:
        "logs/translation/{pair}.log",
    resources:
        mem_mb=plan_mem_mb("translation"),
    params:
        job=job_spec("translation"),
    script:
        "../workflow_scripts/translation.py"
