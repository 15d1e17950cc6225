"""The README's commands work exactly as written on a fresh clone: from the repository root,
tools called by path (`.venv/bin/snakemake`, `.venv/bin/facedet3d`), no activated venv.

Every command here runs with PATH=/usr/bin:/bin, which does not hold the venv: before
rules/common.smk put the venv first on the jobs' PATH, each job failed with
`facedet3d: command not found` unless `make` had set PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

VENV_BIN = Path(sys.executable).parent  # `.venv/bin` of a fresh clone: the tools beside this Python
BARE_PATH = "/usr/bin:/bin"
STAMP = ".venv/.installed-stamp"  # as the Makefile names it: `make -o` matches names, not files


def bare(args: list, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command from the repository root with a PATH that does not hold the venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["PATH"] = BARE_PATH
    proc = subprocess.run([str(a) for a in args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(autouse=True)
def _venv_is_not_on_the_bare_path():
    if str(VENV_BIN) in BARE_PATH.split(os.pathsep) or shutil.which("facedet3d", path=BARE_PATH):
        pytest.skip("facedet3d is on the bare PATH already (no venv): nothing to show")


@pytest.fixture
def my_yaml(tmp_path, tiny_config) -> Path:
    """The README's `my.yaml`: an overlay of config.yaml (here the tiny set, results in tmp)."""
    overlay = yaml.safe_load(tiny_config.read_text())
    overlay["results_dir"] = str(tmp_path / "results")
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


def test_slurm_dry_run_by_path(my_yaml, tmp_path):
    # README: .venv/bin/snakemake -n --profile profiles/slurm
    proc = bare([VENV_BIN / "snakemake", "-n", "--profile", "profiles/slurm", "--configfile", my_yaml])
    out = proc.stdout + proc.stderr
    assert "This was a dry-run" in out
    assert "Using profile profiles/slurm for setting" in out
    assert "workflow specific profile" not in out  # no profiles/default stacked under it
    assert "slurm_partition=cpu" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_snakemake_by_path_runs_a_job_without_the_venv_on_path(my_yaml, tmp_path):
    # README: .venv/bin/snakemake --cores 2 --configfile my.yaml (here: one job, one synth chunk)
    results = tmp_path / "results"
    chunk = results / "synth" / "chunks" / "000.h5"
    proc = bare([VENV_BIN / "snakemake", "--cores", "2", "--configfile", my_yaml, "--", chunk])
    out = proc.stdout + proc.stderr
    assert "command not found" not in out
    assert chunk.is_file() and (results / "synth" / "images" / "000").is_dir()
    assert "chunk 000: 15 images" in (results / "logs" / "synth" / "chunk_000.log").read_text()
    assert (results / "config.yaml").is_file()  # written when the run started


@pytest.mark.slow
def test_cli_by_path_with_an_overlay(my_yaml, tmp_path):
    # README: .venv/bin/facedet3d STAGE --config config.yaml --config my.yaml
    bare([VENV_BIN / "facedet3d", "synth", "--config", "config.yaml", "--config", my_yaml, "--chunk", "1"])
    assert (tmp_path / "results" / "synth" / "chunks" / "001.h5").is_file()


@pytest.mark.parametrize("target, expected", [
    ("dry-run", "This was a dry-run"),
    ("lint", "Congratulations, your workflow is in a good condition!"),
])
def test_make_targets_that_plan_or_lint(target, expected):
    # README: make dry-run, make lint (-o: the venv is installed already; BIN: this Python's)
    proc = bare(["make", "-o", STAMP, f"BIN={VENV_BIN}", target])
    out = proc.stdout + proc.stderr
    # A finished demo in results/ leaves nothing to plan: Snakemake says so instead.
    assert expected in out or (target == "dry-run" and "Nothing to be done" in out), out
    if target == "dry-run":
        assert "Using profile profiles/local for setting" in out


def test_make_recipes_call_the_documented_commands():
    proc = bare(["make", "-n", "-o", STAMP, "demo", "detail-net", "clean-results"])
    lines = proc.stdout.replace("\\\n", " ").splitlines()
    assert ".venv/bin/snakemake --profile profiles/local" in lines  # make demo
    detail = next(line for line in lines if "configs/detail_net.yaml" in line)
    assert detail.split() == [".venv/bin/snakemake", "--profile", "profiles/local", "--configfile", "config.yaml",
                              "configs/detail_net.yaml", "--", "detail_net"]
    assert "rm -rf results" in lines
    # No recipe leans on a PATH set by make to find the venv's tools.
    assert not any("PATH=" in line for line in lines)


def test_make_detail_net_plans_the_detail_net_rule():
    # The command `make detail-net` runs, as a dry run: the synthetic set, then rule detail_net.
    proc = bare([VENV_BIN / "snakemake", "-n", "--profile", "profiles/local", "--configfile", "config.yaml",
                 "configs/detail_net.yaml", "--", "detail_net"])
    out = proc.stdout + proc.stderr
    assert "rule detail_net:" in out or "localrule detail_net:" in out
    assert "results/detail_net_set/detail_net/detail_net.pt" in out
    assert "synth_chunk" in out
