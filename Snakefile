# FaceDet3D pipeline: rebuilds the FaceDet3D dataset and trains its networks.
# Run:   snakemake --cores 2 [--configfile overlay.yaml] [--profile profiles/default]
# Every rule is a thin call of `facedet3d STAGE`; the stages live in the package.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/synth.smk"
include: "rules/extract.smk"
include: "rules/annotate.smk"
include: "rules/shards.smk"


rule all:
    input:
        final_targets(),
