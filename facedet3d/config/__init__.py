"""Loading and validating the pipeline configuration.

One `config.yaml` holds every setting; overlay files (``--config a.yaml --config b.yaml``
on the CLI, ``--configfile`` for Snakemake) replace values key by key. The merged
dictionary is validated against ``schema.yaml`` shipped beside this file; an unknown
or misspelled key, a missing key or a wrong type raises :class:`ConfigError` with a
message naming the key.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from facedet3d.atomic import write_text_atomic
from facedet3d.errors import UserError


class ConfigError(UserError):
    """The configuration is invalid; the message names the offending key."""


def schema_path() -> Path:
    """Path of the JSON schema (YAML) shipped inside the package."""
    return Path(str(resources.files(__package__).joinpath("schema.yaml")))


def load_schema() -> dict:
    with open(schema_path(), encoding="utf-8") as f:
        return yaml.safe_load(f)


def merge(base: dict, overlay: dict) -> dict:
    """Return base updated by overlay, recursing into nested dictionaries."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file with --config")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML syntax error on one line: where (1-based line and column) and what."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def check_yaml_file(path: str | Path) -> None:
    """Raise ConfigError naming ``path`` (and the line) when it exists but is not a YAML mapping.

    The Snakefile runs it on config.yaml before its ``configfile:`` directive, whose own
    message for a syntax error names no file. (``--configfile`` overlays are read by
    Snakemake before the Snakefile runs: their errors are Snakemake's.)
    """
    if Path(path).is_file():
        _read(path)


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        keys = ", ".join(f"'{where + '.' if where else ''}{k}'" for k in unknown)
        section = f"section '{where}'" if where else "the top level"
        return f"unknown config key {keys}; known keys in {section}: {', '.join(known)}"
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        keys = ", ".join(f"'{where + '.' if where else ''}{k}'" for k in missing)
        return f"missing config key {keys}"
    return f"config key '{where or '<top level>'}': {error.message}"


TRAINING_STAGES = ("train_detp", "train_rcan", "train_renderer", "train_renderer_ablation")


def training_settings(config: dict, stage: str) -> dict:
    """A training stage's settings: its config section; for ``train_renderer_ablation``, the keys
    of its section over ``train_renderer``'s (the same training with some switches changed)."""
    if stage == "train_renderer_ablation":
        return config["train_renderer"] | config[stage]
    return config[stage]


def validate(config: dict) -> dict:
    """Validate a merged configuration; return it unchanged or raise ConfigError."""
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        # dict.fromkeys: one message per problem, however many schema branches report it.
        raise ConfigError("invalid configuration: " + "; ".join(dict.fromkeys(_describe(e) for e in errors)))
    split = config["synth"]["split"]
    if abs(split["train"] + split["val"] + split["test"] - 1.0) > 1e-6:
        raise ConfigError("config key 'synth.split': train + val + test must sum to 1")
    lo, hi = config["synth"]["age_range"]
    if lo >= hi:
        raise ConfigError("config key 'synth.age_range': the first age must be below the second")
    for section in TRAINING_STAGES:
        s = training_settings(config, section)
        if s["batch"] % s["devices"]:
            raise ConfigError(f"config key '{section}.batch': {s['batch']} does not split over devices: "
                              f"{s['devices']}; use a multiple of devices (each device computes batch / devices)")
    return config


# Paths the config names, by the setting under which they are needed: (key, needed when, kind).
_INPUT_PATHS = (
    ("data.images_dir", lambda c: c["data"]["source"] == "folders", "folder"),
    ("data.videos_dir", lambda c: c["data"]["source"] == "folders", "folder"),
    ("extract.fds_dir", lambda c: c["extract"]["backend"] == "fds", "folder"),
    ("extract.bfm_path", lambda c: c["extract"]["model"] == "bfm2017", "file"),
    ("extract.detail_net_weights", lambda c: c["extract"]["detail_net"], "file"),
    ("annotate.openface_dir", lambda c: c["annotate"]["aus_backend"] == "openface", "folder"),
    ("annotate.facenet_weights", lambda c: c["annotate"]["facenet_backend"] == "pytorch", "file"),
    ("annotate.age_model_dir", lambda c: True, "folder"),
    ("train_renderer.perceptual_weights", lambda c: c["train_renderer"]["perceptual"] == "vgg16", "file"),
    ("evaluate.photos_dir", lambda c: True, "folder"),
)
_REQUIRED = {"extract.fds_dir": "extract.backend is fds", "extract.bfm_path": "extract.model is bfm2017",
             "annotate.openface_dir": "annotate.aus_backend is openface",
             "train_renderer.perceptual_weights": "train_renderer.perceptual is vgg16"}


def check_input_paths(config: dict) -> dict:
    """Raise ConfigError naming every input path the config needs that is unset or does not exist.

    Run by the Snakefile before any job is planned, so `snakemake -n` already reports them.
    """
    problems = []
    for key, needed, kind in _INPUT_PATHS:
        if not needed(config):
            continue
        section, name = key.split(".")
        value = config[section].get(name)
        if value in (None, ""):
            if key in _REQUIRED:
                problems.append(f"config key '{key}' must name a {kind} when {_REQUIRED[key]}")
            continue
        path = Path(value).expanduser()
        if not path.exists():
            problems.append(f"config key '{key}' points to {path}, which does not exist")
        elif (kind == "folder") != path.is_dir():
            problems.append(f"config key '{key}' points to {path}, which is not a {kind}")
    data = config["data"]
    if data["source"] == "folders" and not data.get("images_dir") and not data.get("videos_dir"):
        problems.append("data.source is 'folders' but neither data.images_dir nor data.videos_dir is set")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return config


def load_config(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Read config files in order (later ones overlay earlier ones) and validate the result."""
    paths = list(paths)
    if not paths:
        raise ConfigError("no config file given; pass --config config.yaml")
    config: dict = {}
    for path in paths:
        config = merge(config, _read(path))
    return validate(config)


def write_resolved(config: dict, path: str | Path) -> Path:
    """Write the merged configuration to path, only when its content changed.

    The Snakefile writes the run's resolved config once at parse time and every
    rule hands this single file to the CLI, so overlays and ``--config key=value``
    reach each stage exactly as Snakemake merged them. Leaving an unchanged file
    untouched keeps its modification time, so nothing reruns for it.
    """
    path = Path(path)
    text = "# Resolved by the Snakefile from config.yaml and its overlays; do not edit.\n"
    text += yaml.safe_dump(config, sort_keys=True)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    return write_text_atomic(path, text)
