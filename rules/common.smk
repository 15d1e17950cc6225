# Validation and helpers shared by the rule files; no rules here.
import math

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from facedet3d.config import ConfigError, schema_path, write_resolved
from facedet3d.config import validate as validate_config
from facedet3d.data.manifest import read_manifest

# A clear message naming the key first; then the schema check Snakemake users expect.
try:
    validate_config(config)
except ConfigError as err:
    raise WorkflowError(str(err))
validate(config, schema=str(schema_path()))

RESULTS = config["results_dir"].rstrip("/")
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"
ENV = "../envs/facedet3d.yaml"

# The merged config (config.yaml + --configfile overlays + --config values), the single
# file every rule passes to the CLI.
CONFIG = str(write_resolved(config, f"{RESULTS}/config.yaml"))


def synth_chunks():
    """Chunk ids of the synthetic generator: one Snakemake job per group of identities."""
    n = math.ceil(config["synth"]["n_identities"] / config["synth"]["identities_per_chunk"])
    return [f"{i:03d}" for i in range(n)]


def ingest_inputs(wildcards):
    """The synthetic generator's manifest when the data source is synthetic; nothing for folders."""
    if config["data"]["source"] == "synthetic":
        return [f"{RESULTS}/synth/manifest.csv"]
    return []


def manifest_chunks():
    """Chunk numbers of the ingested manifest (evaluated after the `ingest` checkpoint)."""
    manifest = checkpoints.ingest.get().output.manifest
    return sorted({int(row["chunk"]) for row in read_manifest(manifest)})


def extract_chunk_records(wildcards):
    return [f"{RESULTS}/extract/chunks/{c:03d}.h5" for c in manifest_chunks()]


def annotate_chunk_records(wildcards):
    return [f"{RESULTS}/annotate/chunks/{c:03d}.h5" for c in manifest_chunks()]


def final_targets():
    """The final targets: every implemented stage for the configured data source."""
    targets = [f"{RESULTS}/extract/summary.json", f"{RESULTS}/extract/preview.png",
               f"{RESULTS}/annotate/summary.json", f"{RESULTS}/shards/index.json"]
    if config["data"]["source"] == "synthetic":
        targets += [f"{RESULTS}/synth/summary.json", f"{RESULTS}/synth/contact_sheet.png"]
    return targets
