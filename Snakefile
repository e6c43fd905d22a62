# specalign: measure, explain and raise draft-token acceptance in speculative decoding.
# Thin by design: config + schema, the rule files, and `rule all`. Logic lives in
# workflow_scripts/specalign/ (the importable package); helpers in rules/common.smk.

from snakemake.utils import min_version, validate

min_version("9.0")


# The embedded demo, unless the user names a config (`--configfile config/real_models.yaml`):
# Snakemake would otherwise merge that file INTO the demo config.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


validate(config, "schemas/config.schema.yaml")


# `snakemake --report report.zip`: the workflow's description; the plots and the HTML page are
# the report_html rule's report() outputs, with their captions under report/.
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/tokens.smk"
include: "rules/models.smk"
include: "rules/generate.smk"
include: "rules/acceptance.smk"
include: "rules/timing.smk"
include: "rules/report.smk"
include: "rules/report_html.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
