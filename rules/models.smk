# The demo model pair, trained offline on the demo's train split.


rule demo_model:
    input:
        data=demo_training_inputs,
        tokenizer=lambda w: tokenizer_inputs(w.model),
        fingerprint=fingerprint("demo_model"),
        code=script_modules("demo_model.py"),
    output:
        directory("results/demo_models/{model}"),
    log:
        "logs/demo_model/{model}.log",
    threads: 1
    resources:
        mem_mb=plan_mem_mb("demo_model"),
    params:
        job=job_spec("demo_model"),
    script:
        "../workflow_scripts/demo_model.py"


rule distill:
    input:
        unpack(distill_inputs),
        fingerprint=fingerprint("distill"),
        code=script_modules("distill.py"),
    output:
        directory("results/distilled/{model}"),
    log:
        "logs/distill/{model}.log",
    threads: 1
    resources:
        mem_mb=plan_mem_mb("distill"),
        gpu=lambda w: gpu_of(w.model, *distill_models(w.model)),
    params:
        job=job_spec("distill"),
    script:
        "../workflow_scripts/distill.py"
