# FaceDet3D pipeline: rebuilds the FaceDet3D dataset and trains its networks.
# Run:   .venv/bin/snakemake --cores 2 [--configfile overlay.yaml]   (no activated venv needed)
#        .venv/bin/snakemake --profile profiles/local  (one machine: also one GPU job at a time)
#        .venv/bin/snakemake --profile profiles/slurm  (cluster)
# Every rule is a thin call of `facedet3d STAGE`; the stages live in the package.
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from facedet3d.config import ConfigError, check_yaml_file

min_version("9.0")

# Snakemake's message for a YAML syntax error in config.yaml names no file; ours names it and the line.
try:
    check_yaml_file("config.yaml")
except ConfigError as err:
    raise WorkflowError(str(err))


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/synth.smk"
include: "rules/extract.smk"
include: "rules/annotate.smk"
include: "rules/shards.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        final_targets(),
