# The demo model pair, trained offline on the demo's train split.


rule demo_model:
    input:
        data=lambda w: dataset_inputs(config["demo_training"]["dataset"]),
        tokenizer=lambda w: tokenizer_inputs(w.model),
        fingerprint=f"{FP}/demo_model/{{model}}.json",
        code=script_modules("demo_model.py"),
    output:
        directory("results/demo_models/{model}"),
    params:
        role=lambda w: config["models"][w.model]["demo"],
        tokenizer=lambda w: tokenizer_path(config, w.model),
        root=lambda w: dataset_root(config, config["demo_training"]["dataset"]),
        instructions=lambda w: config["datasets"][config["demo_training"]["dataset"]]["instructions"],
        questions=config["questions"],
        training=canonical(config["demo_training"]),
    threads: 1
    log:
        "logs/demo_model/{model}.log",
    script:
        "../workflow_scripts/demo_model.py"
