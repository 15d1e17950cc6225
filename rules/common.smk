# Validation and helpers shared by the rule files; no rules here.
# Every path comes from facedet3d.paths.Results (the stages use the same), every rerun trigger
# from facedet3d.stages (the config keys each job reads).
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from facedet3d.config import ConfigError, check_input_paths, schema_path, training_settings, write_resolved
from facedet3d.config import validate as validate_config
from facedet3d.data.manifest import manifest_chunks
from facedet3d.paths import Results
from facedet3d.stages import job_settings

# A clear message naming the key first (and input folders that do not exist); then the schema
# check Snakemake users expect.
try:
    validate_config(config)
    check_input_paths(config)
except ConfigError as err:
    raise WorkflowError(str(err))
validate(config, schema=str(schema_path()))

RESULTS = Results(config["results_dir"])
ENV = "../envs/facedet3d.yaml"
# The merged config (config.yaml + --configfile overlays + --config values), the single file
# every rule passes to the CLI. Written when a run starts (not by dry runs or lint).
CONFIG = str(RESULTS.config)


onstart:
    write_resolved(config, RESULTS.config)


# Rules call `facedet3d`: without a conda/container deployment, the one installed beside the
# Python running Snakemake (so `.venv/bin/snakemake` works without an activated venv).
if not workflow.deployment_settings.deployment_method:
    shell.prefix(f'set -euo pipefail; export PATH="{Path(sys.executable).parent}:$PATH"; ')


def settings(stage, part="run"):
    """The config values a job reads (its params: Snakemake reruns the job when they change)."""
    return job_settings(stage, config, part)


def training_devices(stage):
    """Devices (GPUs, or gloo processes on the CPU) of a training stage, its config `devices`."""
    return training_settings(config, stage)["devices"]


def training_threads(stage):
    """Threads of a training stage, its config `threads` for each of its processes."""
    s = training_settings(config, stage)
    return s["threads"] * s["devices"]


def synth_chunks():
    """Chunk ids of the synthetic generator: one Snakemake job per group of identities."""
    from facedet3d.synth.stage import chunks

    return chunks(config)


def ingest_inputs(wildcards):
    """The synthetic generator's manifest when the data source is synthetic; nothing for folders."""
    if config["data"]["source"] == "synthetic":
        return [RESULTS.synth_manifest]
    return []


def manifest_chunk_ids():
    """Chunk numbers of the ingested manifest (evaluated after the `ingest` checkpoint)."""
    return manifest_chunks(checkpoints.ingest.get().output.manifest)


def chunk_records(stage):
    """Input function: the records of every manifest chunk of `stage` (extract or annotate)."""
    return lambda wildcards: [RESULTS.chunk(stage, c) for c in manifest_chunk_ids()]


def final_targets():
    """The final targets: every implemented stage for the configured data source."""
    targets = [RESULTS.summary("extract"), RESULTS.extract_preview, RESULTS.summary("annotate"),
               RESULTS.shard_index, RESULTS.summary("shards")]
    for stage in ("train_detp", "train_rcan", "train_renderer"):
        targets += [RESULTS.stage(stage) / "final.pt", RESULTS.summary(stage), RESULTS.stage(stage) / "samples.png"]
    targets += [RESULTS.stage("evaluate") / "report.html", RESULTS.summary("evaluate")]
    if config["data"]["source"] == "synthetic":
        targets += [RESULTS.summary("synth"), RESULTS.contact_sheet]
    return targets


def ablation_weights(wildcards):
    """The ablation's weights when `make ablation` has made them: evaluate then shows Fig. 8."""
    path = RESULTS.stage("train_renderer_ablation") / "final.pt"
    return [path] if path.exists() else []
