# Validation and helpers shared by the rule files; no rules here.
import math

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from facedet3d.config import ConfigError, schema_path, write_resolved
from facedet3d.config import validate as validate_config

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
