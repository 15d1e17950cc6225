"""The config schema: the shipped config validates; bad keys and types are named."""

from __future__ import annotations

import pytest
import yaml

from facedet3d.config import ConfigError, check_yaml_file, load_config, load_schema, write_resolved
from tests.conftest import REPO


def _overlay(tmp_path, data) -> str:
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_shipped_config_and_tiny_overlay_validate(tiny_config):
    config = load_config([REPO / "config.yaml", tiny_config])
    assert config["synth"]["n_identities"] == 6  # overlay wins
    assert config["synth"]["max_yaw_deg"] == 30  # untouched keys stay


def test_every_schema_object_forbids_unknown_keys():
    def walk(node, where="<top>"):
        if node.get("type") == "object" or "properties" in node:
            assert node.get("additionalProperties") is False, where
            for key, child in node.get("properties", {}).items():
                walk(child, f"{where}.{key}")

    walk(load_schema())


def test_every_config_key_has_a_comment():
    lines = (REPO / "config.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue
        assert lines[i - 1].strip().startswith("#"), f"config.yaml line {i + 1} has no comment: {line}"


@pytest.mark.parametrize(
    "overlay, named",
    [
        ({"synth": {"n_identitis": 3}}, "synth.n_identitis"),
        ({"resuls_dir": "x"}, "resuls_dir"),
        ({"synth": {"split": {"train": 0.8, "vall": 0.1}}}, "synth.split.vall"),
        ({"synth": {"image_size": "big"}}, "synth.image_size"),
        ({"data": {"source": "ffhq"}}, "data.source"),
        ({"synth": {"split": {"train": 0.5, "val": 0.1, "test": 0.1}}}, "synth.split"),
        # Bad training values, named before any job starts (the Snakefile validates at parse time).
        ({"train_detp": {"steps": -5}}, "train_detp.steps"),
        ({"train_rcan": {"batch": 0}}, "train_rcan.batch"),
        ({"train_renderer": {"device": "tpu"}}, "train_renderer.device"),
        ({"train_renderer_ablation": {"steps": 0}}, "train_renderer_ablation.steps"),
        ({"train_renderer": {"size": 100}}, "train_renderer.size"),
        ({"evaluate": {"view_expression": "smug"}}, "evaluate.view_expression"),
    ],
)
def test_bad_key_or_type_names_the_key(tmp_path, overlay, named):
    with pytest.raises(ConfigError) as err:
        load_config([REPO / "config.yaml", _overlay(tmp_path, overlay)])
    assert f"'{named}'" in str(err.value)


def test_an_incomplete_config_names_each_missing_key_once(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config([_overlay(tmp_path, {"extract": {"detail_net": False}})])
    message = str(err.value)
    assert message.count("missing config key") == 2  # the top level and the extract section, once each
    assert "'results_dir'" in message and "'extract.backend'" in message


def test_missing_or_malformed_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("synth: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([bad])


def test_a_yaml_syntax_error_names_the_file_and_line_on_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nsynth:\n  n_identities: [6\n  image_size: 128\n")
    with pytest.raises(ConfigError) as err:
        load_config([REPO / "config.yaml", bad])
    assert str(err.value) == f"config file {bad} is not valid YAML: line 4, column 13: expected ',' or ']', but got ':'"
    # The Snakefile's check of config.yaml before `configfile:` says the same; a missing file is Snakemake's to report.
    with pytest.raises(ConfigError, match="line 4, column 13"):
        check_yaml_file(bad)
    check_yaml_file(tmp_path / "absent.yaml")
    check_yaml_file(REPO / "config.yaml")


def test_resolved_config_is_rewritten_only_on_change(tmp_path):
    config = load_config([REPO / "config.yaml"])
    path = write_resolved(config, tmp_path / "config.yaml")
    stamp = path.stat().st_mtime_ns
    write_resolved(config, path)
    assert path.stat().st_mtime_ns == stamp
    assert load_config([path]) == config
