# The HTML report: one self-contained results/report/index.html (plots embedded as base64 PNG, no
# network), the same plots as PNG files and the page's Markdown summary; why the draft and the
# target disagree (specalign/divergence.py). Its outputs are marked for `snakemake --report`.


rule report_html:
    input:
        # every run's stored artifacts (the acceptance stage's), then the tables, the target
        # vocabularies and the manifests of the runs' datasets
        unpack(acceptance_inputs),
        summary="results/acceptance/summary.csv",
        per_position="results/acceptance/per_position.csv",
        loop="results/acceptance/loop_vs_replay.csv",
        trees="results/acceptance/trees.csv",
        ranks="results/acceptance/ranks.csv",
        grounding="results/acceptance/grounding.csv",
        oracle="results/acceptance/oracle.csv",
        vocab=sorted({r.target_vocab for r in stages.runs(config)}),
        manifest=sorted(stages.spec(config, "report_html")["manifests"].values()),
        fingerprint=fingerprint("report_html"),
        code=script_modules("report_html.py"),
    output:
        html=report(
            "results/report/index.html",
            caption="../report/index.rst",
            category="HTML report",
        ),
        summary="results/report/summary.md",
        gamma=report(
            "results/report/acceptance_vs_gamma.png",
            caption="../report/acceptance_vs_gamma.rst",
            category="Acceptance",
        ),
        temperature=report(
            "results/report/acceptance_vs_temperature.png",
            caption="../report/acceptance_vs_temperature.rst",
            category="Acceptance",
        ),
        per_position=report(
            "results/report/per_position.png",
            caption="../report/per_position.rst",
            category="Acceptance",
        ),
        speedup=report(
            "results/report/speedup_grid.png",
            caption="../report/speedup_grid.rst",
            category="Speedup",
        ),
        divergence=report(
            "results/report/first_divergence.png",
            caption="../report/first_divergence.rst",
            category="Why the draft disagrees",
        ),
        disagreements=report(
            "results/report/disagreements.png",
            caption="../report/disagreements.rst",
            category="Why the draft disagrees",
        ),
        attributes=report(
            "results/report/sample_attributes.png",
            caption="../report/sample_attributes.rst",
            category="Why the draft disagrees",
        ),
        trees=report(
            "results/report/tree_budget.png",
            caption="../report/tree_budget.rst",
            category="Trees",
        ),
        ranks=report(
            "results/report/rank_shares.png",
            caption="../report/rank_shares.rst",
            category="Trees",
        ),
        # each figure's numbers, beside its PNG (same name), for whoever re-plots
        data=[
            "results/report/speedup_grid.csv",
            "results/report/acceptance_vs_gamma.csv",
            "results/report/acceptance_vs_temperature.csv",
            "results/report/per_position.csv",
            "results/report/tree_budget.csv",
            "results/report/rank_shares.csv",
            "results/report/first_divergence.csv",
            "results/report/disagreements.csv",
            "results/report/sample_attributes.csv",
        ],
    log:
        "logs/report_html/report_html.log",
    resources:
        mem_mb=plan_mem_mb("report_html"),
    params:
        job=job_spec("report_html"),
    script:
        "../workflow_scripts/report_html.py"
