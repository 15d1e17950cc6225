"""The Snakemake workflow: lint-clean, dry-runs locally and on the SLURM profile, stops on bad config."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, REPO


def _results(tmp_path) -> str:
    return f"results_dir={tmp_path / 'results'}"


def _run(args: list, check: bool = True, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """run_cmd for module-scoped fixtures: from the repository root, the venv's tools first on PATH."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _overlay(folder: Path, name: str, data: dict) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def _plan(out: str) -> dict[str, int]:
    """The jobs a dry run plans, by rule (its "Job stats" table); {} when nothing is to be done."""
    if "Nothing to be done" in out:
        return {}
    jobs, in_table = {}, False
    for line in out.split("Job stats:", 1)[1].splitlines():
        if line.startswith("---"):
            in_table = True
        elif in_table:
            name, count = line.split()
            if name == "total":
                return jobs
            jobs[name] = int(count)
    raise AssertionError(f"no job table in:\n{out}")


def _rules_for(out: str, reason: str) -> set[str]:
    """Rules a dry run lists under one reason of its summary, e.g. "params have changed since last execution"."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == reason + ":":
            return {rule.strip() for rule in lines[i + 1].split(",")}
    return set()


def test_lint_is_clean(run_cmd, tiny_config, tmp_path):
    proc = run_cmd(["snakemake", "--lint", "--configfile", str(tiny_config), "--config", _results(tmp_path)])
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_dry_run_plans_chunked_jobs(run_cmd, tiny_config, tmp_path):
    proc = run_cmd(["snakemake", "-n", "--cores", "2", "--configfile", str(tiny_config), "--config", _results(tmp_path)])
    out = proc.stdout + proc.stderr
    assert "This was a dry-run" in out
    # 6 identities in chunks of 3: two synth_chunk jobs, one merge.
    assert any(line.split() == ["synth_chunk", "2"] for line in out.splitlines()), out
    # A dry run writes nothing, not even the resolved config (that is the last real run's).
    assert not (tmp_path / "results").exists()


def test_until_shards_includes_every_summary_the_readme_points_to(run_cmd, tiny_config, tmp_path):
    proc = run_cmd(["snakemake", "-n", "--cores", "2", "--until", "shards", "--configfile", str(tiny_config),
                    "--config", _results(tmp_path)])
    plan = _plan(proc.stdout + proc.stderr)
    assert {"synth", "ingest", "extract", "annotate", "shards"} <= set(plan), plan


def test_slurm_profile_dry_run_carries_resources(run_cmd, tiny_config, tmp_path):
    proc = run_cmd(["snakemake", "-n", "--profile", "profiles/slurm", "--configfile", str(tiny_config),
                    "--config", _results(tmp_path)])
    out = proc.stdout + proc.stderr
    assert "This was a dry-run" in out
    assert "slurm_partition=cpu" in out and "mem_mb=3000" in out and "runtime=30" in out
    profile = yaml.safe_load(open("profiles/slurm/config.yaml"))
    for rule in ("train_detp", "train_rcan", "train_renderer", "train_renderer_ablation"):
        # The GPU partition; the GPUs, CPUs and memory are the rule's (per device), not overridden.
        assert profile["set-resources"][rule]["slurm_partition"] == "gpu"
        assert not {"gpu", "cpus_per_task", "mem_mb"} & set(profile["set-resources"][rule])
    assert re.search(r"rule train_detp:(.|\n)*?resources: .*mem_mb=8000,.*gpu=1\n", out)


def test_training_rules_ask_for_a_gpu_threads_and_memory_per_device(run_cmd, tiny_config, tmp_path):
    overlay = tmp_path / "devices.yaml"
    overlay.write_text("train_detp: {devices: 2, threads: 3}\n")
    proc = run_cmd(["snakemake", "-n", "-p", "--profile", "profiles/slurm", "--configfile", str(tiny_config),
                    str(overlay), "--config", _results(tmp_path), "--", "train_detp"])
    out = proc.stdout + proc.stderr
    block = out.split("rule train_detp:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"resources: .*mem_mb=16000,.*gpu=2\n", block), block
    # Only the slurm profile: no profiles/default stacked under it as Snakemake's workflow profile.
    assert "workflow specific profile" not in out and "profiles/default" not in out


def test_slurm_runs_carry_no_global_gpu_limit_local_runs_do(monkeypatch, capsys):
    """Snakemake 9 stacks profiles/default under any --profile; its global gpu=1 would let one GPU
    job run at a time on the whole cluster. The one-machine settings are in profiles/local."""
    from snakemake.cli import parse_args

    monkeypatch.chdir(REPO)
    assert not (REPO / "profiles" / "default").exists()
    _, args = parse_args(["-n", "--profile", "profiles/slurm"])
    assert "gpu" not in (args.resources or {})
    assert args.cores is None and args.executor == "slurm"
    _, args = parse_args(["-n", "--profile", "profiles/local"])  # make demo, make detail-net
    assert args.resources["gpu"].value == 1 and args.cores == 2
    _, args = parse_args(["-n", "--cores", "2"])  # the plain README run: no profile at all
    assert "gpu" not in (args.resources or {})
    assert "workflow specific profile" not in capsys.readouterr().err


def test_conda_env_pins_are_pyproject_dependencies():
    """envs/facedet3d.yaml pins exactly pyproject.toml's dependencies and installs the package with
    its post-deploy script, never through a relative path (resolved under .snakemake/conda/)."""
    env = yaml.safe_load((REPO / "envs" / "facedet3d.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert pip == project["dependencies"]
    assert not any(p.startswith(".") or "/" in p for p in pip)
    assert "python=3.11" in env["dependencies"] and "pip" in env["dependencies"]
    # The rules' conda env is this file; Snakemake runs <env>.post-deploy.sh beside it.
    assert 'ENV = "../envs/facedet3d.yaml"' in (REPO / "rules" / "common.smk").read_text()
    assert (REPO / "envs" / "facedet3d.post-deploy.sh").is_file()


def test_conda_post_deploy_installs_the_repository(tmp_path):
    """The post-deploy script installs the working directory (Snakemake's: the repository) editable,
    without dependencies; elsewhere it stops with one line. `python` here records its arguments."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\necho "python $*"\n')
    (fake / "python").chmod(0o755)
    script = REPO / "envs" / "facedet3d.post-deploy.sh"
    env = dict(os.environ, PATH=f"{fake}:/usr/bin:/bin")
    proc = subprocess.run(["bash", script], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == f"python -m pip install --no-deps -e {REPO}"
    proc = subprocess.run(["bash", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "run snakemake from the facedet3d repository root" in proc.stderr


@pytest.mark.parametrize("overlay, message", [
    ({"synth": {"n_identitis": 3}}, "unknown config key 'synth.n_identitis'"),
    ({"train_detp": {"steps": -5}}, "'train_detp.steps'"),
    ({"train_rcan": {"device": "tpu"}}, "'train_rcan.device'"),
    ({"train_renderer": {"batch": 0}}, "'train_renderer.batch'"),
])
def test_a_bad_key_or_value_stops_snakemake_before_any_job(run_cmd, tiny_config, tmp_path, overlay, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(overlay))
    proc = run_cmd(["snakemake", "--cores", "2", "--configfile", str(tiny_config), str(bad),
                    "--config", _results(tmp_path)], check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert message in out
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("data, message", [
    ({"source": "folders"}, "data.source is 'folders' but neither data.images_dir nor data.videos_dir is set"),
    ({"source": "folders", "images_dir": "/no/such/faces"},
     "config key 'data.images_dir' points to /no/such/faces, which does not exist"),
])
def test_missing_images_dir_stops_a_dry_run_in_one_line(run_cmd, tmp_path, data, message):
    overlay = _overlay(tmp_path, "folders.yaml", {"data": data, "results_dir": str(tmp_path / "results")})
    proc = run_cmd(["snakemake", "-n", "--cores", "2", "--configfile", str(overlay)], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert f"invalid configuration: {message}" in out.splitlines()
    assert "Traceback" not in out and "This was a dry-run" not in out


def test_missing_configfile_is_named(run_cmd, tmp_path):
    """Best achievable: Snakemake reads --configfile files before the Snakefile runs, and its reader
    (snakemake/common/configfile.py, 9.27.1 and main) opens the file outside the `try` meant to turn
    FileNotFoundError into "Config file ... not found.", so it prints a traceback whose last line
    names the file. Nothing of the workflow runs, nothing is written."""
    missing = tmp_path / "my.yaml"
    proc = run_cmd(["snakemake", "-n", "--cores", "2", "--configfile", str(missing)], check=False)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 1
    assert out.splitlines()[-1] == f"FileNotFoundError: [Errno 2] No such file or directory: '{missing}'"
    assert not (tmp_path / "results").exists()


@pytest.mark.xfail(strict=True, reason="Snakemake prints a traceback for a missing --configfile, before the "
                   "Snakefile runs (open() outside the try in snakemake.common.configfile._load_configfile)")
def test_missing_configfile_without_traceback(run_cmd, tmp_path):
    proc = run_cmd(["snakemake", "-n", "--cores", "2", "--configfile", str(tmp_path / "my.yaml")], check=False)
    assert "Traceback" not in proc.stdout + proc.stderr


BROKEN_YAML = "synth:\n  n_identities: [6\n  image_size: 128\n"


def test_cli_names_an_overlay_with_a_yaml_syntax_error(run_cmd, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_YAML)
    proc = run_cmd(["facedet3d", "synth", "--config", "config.yaml", "--config", str(bad)], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"facedet3d synth: error: config file {bad} is not valid YAML: line 3, column 13: "
        "expected ',' or ']', but got ':'"]


def test_snakemake_reports_an_overlay_with_a_yaml_syntax_error(run_cmd, tmp_path):
    """Best achievable: Snakemake parses --configfile overlays before the Snakefile runs and its
    message names no file; it is short and nothing runs."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_YAML)
    proc = run_cmd(["snakemake", "-n", "--cores", "2", "--configfile", str(bad)], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "Config file is not valid JSON or YAML" in out
    assert "Traceback" not in out and "This was a dry-run" not in out


@pytest.mark.xfail(strict=True, reason="Snakemake's own message for a broken --configfile names no file "
                   "(snakemake.common.configfile._load_configfile), raised before the Snakefile runs")
def test_snakemake_names_an_overlay_with_a_yaml_syntax_error(run_cmd, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_YAML)
    proc = run_cmd(["snakemake", "-n", "--cores", "2", "--configfile", str(bad)], check=False)
    assert str(bad) in proc.stdout + proc.stderr


def test_snakemake_names_config_yaml_with_a_yaml_syntax_error(tmp_path):
    """The workflow's own config.yaml is read by the Snakefile: its error names the file and line."""
    for name in ("Snakefile", "rules"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "config.yaml").write_text(BROKEN_YAML)
    proc = _run(["snakemake", "-n", "--cores", "1"], check=False, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert ("config file config.yaml is not valid YAML: line 3, column 13: "
            "expected ',' or ']', but got ':'") in out.splitlines()
    assert "Traceback" not in out


def test_cli_reports_a_bad_config_in_one_line(run_cmd, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"synth": {"image_size": "large"}}))
    proc = run_cmd(["facedet3d", "synth", "--config", "config.yaml", "--config", str(bad)], check=False)
    assert proc.returncode == 2
    assert "config key 'synth.image_size'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_pins_one_blas_thread_per_job_unless_told_otherwise(monkeypatch, tmp_path):
    from facedet3d.cli import main

    missing = str(tmp_path / "missing.yaml")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert main(["synth", "--config", missing]) == 2  # fails on the config, after pinning
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    main(["synth", "--config", missing])
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"


def test_cli_help_does_not_import_torch():
    """`facedet3d --help` builds the whole parser; torch (3 s to import) loads only when a stage runs."""
    code = "import sys, facedet3d.cli; facedet3d.cli.build_parser(); print('torch' in sys.modules)"
    proc = _run([sys.executable, "-c", code])
    assert proc.stdout.strip() == "False"


def test_license_is_an_spdx_string_setuptools_accepts_without_warnings():
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert pyproject["build-system"]["requires"] == ["setuptools>=77,<82"]  # 77: the first with SPDX strings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert dist.metadata.license_expression == "Apache-2.0"
    assert not [w for w in caught if "license" in str(w.message).lower()]


@pytest.mark.slow
def test_make_clean_results_removes_results_and_their_snakemake_records(tiny_config, tmp_path):
    """`make clean-results` in a copy of the workflow: results/ and its records go, others stay."""
    import base64

    for name in ("Snakefile", "rules", "envs", "config.yaml", "Makefile"):
        (tmp_path / name).symlink_to(REPO / name)
    chunk = "results/synth/chunks/000.h5"
    _run(["snakemake", "--cores", "2", "--configfile", tiny_config, "--config", "results_dir=results", "--", chunk],
         cwd=tmp_path)
    metadata = tmp_path / ".snakemake" / "metadata"
    key = lambda path: base64.urlsafe_b64encode(path.encode()).decode()  # noqa: E731 (Snakemake's record names)
    assert (metadata / key(chunk)).is_file()
    (metadata / key("elsewhere/000.h5")).write_text((metadata / key(chunk)).read_text())
    proc = _run(["make", f"PYTHON={sys.executable}", "clean-results"], cwd=tmp_path)
    assert not (tmp_path / "results").exists()
    assert sorted(p.name for p in metadata.iterdir()) == [key("elsewhere/000.h5")]
    assert "removed results/ and" in proc.stdout
    proc = _run(["snakemake", "-n", "--cores", "2", "--configfile", tiny_config, "--config", "results_dir=results",
                 "--", chunk], cwd=tmp_path)
    assert _plan(proc.stdout + proc.stderr) == {"synth_chunk": 1}


@pytest.mark.slow
def test_snakemake_runs_the_tiny_dag_end_to_end(tiny_run):
    args, results = tiny_run
    summary = json.loads((results / "synth" / "summary.json").read_text())
    assert summary["n_identities"] == 6
    assert (results / "synth" / "contact_sheet.png").is_file()
    extract = json.loads((results / "extract" / "summary.json").read_text())
    assert extract["n_ok"] + extract["n_rejected"] == extract["n_total"] == 30
    assert json.loads((results / "annotate" / "summary.json").read_text())["n_ok"] == extract["n_ok"]
    index = json.loads((results / "shards" / "index.json").read_text())
    assert sum(s["n"] for s in index["shards"] if s["kind"] == "detp") == extract["n_ok"]
    assert (results / "logs" / "synth.log").is_file()
    assert len(list((results / "logs" / "synth").glob("chunk_*.log"))) == 2
    assert len(list((results / "benchmarks" / "synth").glob("*.tsv"))) == 2
    assert len(list((results / "logs" / "extract").glob("chunk_*.log"))) >= 1
    # The training rules ran (a few steps of tiny networks) and measured on held-out people.
    detp = json.loads((results / "train_detp" / "summary.json").read_text())
    assert detp["n_pairs"] > 0 and set(detp["vs_truth"]) == {"detp", "copy", "zero", "expression_mean"}
    rcan = json.loads((results / "train_rcan" / "summary.json").read_text())
    assert {"psnr", "psnr_bicubic", "psnr_nearest"} <= set(rcan)
    renderer = json.loads((results / "train_renderer" / "summary.json").read_text())
    assert renderer["n_images"] > 0 and renderer["augw"] and renderer["dsl"]
    assert {"psnr", "ssim", "detail_fidelity", "detail_response"} <= set(renderer)
    assert set(renderer["new_expression"]) == {"psnr", "ssim", "facenet_distance"}
    methods = renderer["methods"]
    assert set(methods["rerender"]) == {"renderer", "texture", "model"}
    assert set(methods["new_expression"]) == {"renderer", "texture", "model", "copy"}
    assert set(methods["detail_fidelity"]) == set(renderer["detail_fidelity_by_yaw"]) == {"yaw_-30", "yaw_+0", "yaw_+30"}
    assert methods["new_expression"]["renderer"]["facenet_distance"]["n"] == renderer["n_pairs"]
    for stage in ("train_detp", "train_rcan", "train_renderer"):
        for name in ("final.pt", "checkpoint.pt", "metrics.json", "samples.png", "loss.csv"):
            assert (results / stage / name).is_file(), (stage, name)
    # A second run finds nothing to do: the resolved config kept its timestamp.
    proc = _run(["snakemake", "-n", *args])
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_contact_sheet_rows_rerun_the_contact_sheet_and_nothing_else(tiny_run, tmp_path):
    """synth.contact_sheet_rows is read by the contact-sheet job only: no chunk, no merge, nothing downstream."""
    args, _ = tiny_run
    rows = _overlay(tmp_path, "rows.yaml", {"synth": {"contact_sheet_rows": 2}})
    proc = _run(["snakemake", "-n", *args[:3], args[3], rows, *args[4:]])
    out = proc.stdout + proc.stderr
    assert _plan(out) == {"synth_figure": 1, "all": 1}
    assert _rules_for(out, "params have changed since last execution") == {"synth_figure"}


@pytest.fixture(scope="module")
def folders_run(tmp_path_factory):
    """Real face photos in identity folders, ingested by a real run (`--until ingest`, seconds)."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image

    root = tmp_path_factory.mktemp("folders")
    astronaut = Image.fromarray(skimage.data.astronaut())
    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    (root / "faces" / "astronaut").mkdir(parents=True)
    (root / "faces" / "hopper").mkdir(parents=True)
    astronaut.save(root / "faces" / "astronaut" / "astronaut.png")
    astronaut.crop((100, 0, 400, 300)).save(root / "faces" / "astronaut" / "astronaut_face.png")
    hopper.save(root / "faces" / "hopper" / "grace_hopper.jpg")
    hopper.crop((100, 50, 450, 400)).save(root / "faces" / "hopper" / "grace_hopper_face.jpg")
    hopper.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "faces" / "hopper" / "grace_hopper_flip.jpg")
    config = _overlay(root, "folders.yaml", {
        "results_dir": str(root / "results"),
        "data": {"source": "folders", "images_dir": str(root / "faces"), "videos_dir": None},
        "ingest": {"chunk_size": 2},
    })
    args = ["--cores", "2", "--configfile", config]
    _run(["snakemake", *args, "--until", "ingest"])
    return args, root


@pytest.mark.slow
def test_folder_ingest_reruns_exactly_when_a_key_it_reads_changes(folders_run):
    args, root = folders_run
    manifest = (root / "results" / "data" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 5
    until = ["--until", "ingest"]
    proc = _run(["snakemake", "-n", *args, *until])
    assert _plan(proc.stdout + proc.stderr) == {}
    # seed: folder identities are split by a hash of (seed, identity).
    seed = _overlay(root, "seed.yaml", {"seed": 7})
    proc = _run(["snakemake", "-n", *args, seed, *until])
    out = proc.stdout + proc.stderr
    assert _plan(out) == {"ingest": 1}
    assert _rules_for(out, "params have changed since last execution") == {"ingest"}


@pytest.mark.slow
def test_folder_ingest_ignores_a_key_only_extraction_reads(folders_run):
    args, root = folders_run
    side = _overlay(root, "side.yaml", {"ingest": {"max_image_side": 4096}})
    proc = _run(["snakemake", "-n", *args, side, "--until", "ingest"])
    assert _plan(proc.stdout + proc.stderr) == {}
