"""Shared test fixtures: paths of the repository and a runner for its command-line tools."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def run_cmd():
    """Run a command from the repository root with the venv's tools first on PATH."""

    def run(args: list[str], check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    return run


def run_tool(args: list, check: bool = True, cwd: Path = REPO, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command (from the repository root) with the venv's tools first on PATH; for fixtures."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One real run of the whole tiny DAG (~2 min), shared by every test that needs a finished results
    folder: (snakemake arguments, results folder)."""
    tiny = REPO / "tests" / "configs" / "tiny.yaml"
    results = tmp_path_factory.mktemp("tiny") / "results"
    args = ["--cores", "2", "--configfile", tiny, "--config", f"results_dir={results}"]
    run_tool(["snakemake", *args])
    return args, results


def artifact_dir() -> Path:
    """Where tests leave PNGs for people to look at ($FACEDET3D_TEST_ARTIFACTS or results/test-artifacts)."""
    return Path(os.environ.get("FACEDET3D_TEST_ARTIFACTS", REPO / "results" / "test-artifacts"))


@pytest.fixture
def tiny_config() -> Path:
    return REPO / "tests" / "configs" / "tiny.yaml"
