"""Faults and reproducibility: a training rule killed with SIGKILL mid-run, rerun by Snakemake with --rerun-incomplete,
resumes from its last checkpoint and ends with the weights of an uninterrupted run (CPU, fixed seed);
two clean runs give byte-identical shards and the same training figures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import BIN, REPO, run_tool

pytestmark = pytest.mark.slow
LONGER = {"train_detp": {"steps": 240, "checkpoint_every": 20, "log_every": 10}}


def _args(tiny_args: list, results: Path, overlay: Path) -> list:
    """The tiny run's snakemake arguments for another results folder, with an overlay."""
    config = tiny_args[tiny_args.index("--configfile") + 1]
    return ["--cores", "2", "--configfile", config, overlay, "--config", f"results_dir={results}"]


def _copy(results: Path, to: Path) -> Path:
    shutil.copytree(results, to, ignore=shutil.ignore_patterns("train_detp", "evaluate"))
    return to


def _weights(results: Path) -> dict:
    return torch.load(results / "train_detp" / "final.pt", weights_only=True)["nets"]


def test_sigkilled_training_resumes_to_the_uninterrupted_weights(tiny_run, tmp_path):
    tiny_args, results = tiny_run
    overlay = tmp_path / "longer.yaml"
    overlay.write_text(yaml.safe_dump(LONGER))
    target = lambda r: r / "train_detp" / "final.pt"  # noqa: E731

    whole = _copy(results, tmp_path / "whole")
    run_tool(["snakemake", target(whole), *_args(tiny_args, whole, overlay)])

    killed = _copy(results, tmp_path / "killed")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.Popen([str(BIN / "snakemake"), str(target(killed)), *map(str, _args(tiny_args, killed, overlay))],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    loss = killed / "train_detp" / "loss.csv"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        rows = loss.read_text().splitlines() if loss.is_file() else []
        if len(rows) > 1 and int(rows[-1].split(",")[0]) >= 70:  # past checkpoints at 20, 40, 60
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed: raise LONGER's steps"
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the rule's job, no clean-up
    proc.wait()
    try:
        assert not target(killed).exists() and (killed / "train_detp" / "checkpoint.pt").is_file()
    finally:  # a killed Snakemake leaves its lock: --unlock, as after any crash
        run_tool(["snakemake", "--unlock", *_args(tiny_args, killed, overlay)])
    out = run_tool(["snakemake", target(killed), "--rerun-incomplete", *_args(tiny_args, killed, overlay)])
    log = (killed / "logs" / "train_detp.log").read_text()
    assert "resumed at step" in log, out.stdout[-2000:]
    a, b = _weights(whole), _weights(killed)
    for net in a:
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), (net, key)


def test_two_clean_runs_give_the_same_shards_and_training_figures(tiny_run, tmp_path):
    import json

    tiny_args, first = tiny_run
    second = tmp_path / "results"
    config = tiny_args[tiny_args.index("--configfile") + 1]
    run_tool(["snakemake", "--cores", "2", "--configfile", config, "--config", f"results_dir={second}"])
    index = lambda r: [(e["path"], e["sha256"]) for e in json.loads((r / "shards" / "index.json").read_text())["shards"]]  # noqa: E731
    assert index(first) == index(second)
    figures = lambda path: {k: v for k, v in json.loads(path.read_text()).items() if "seconds" not in k}  # noqa: E731
    for stage in ("train_detp", "train_rcan", "train_renderer"):
        assert figures(first / stage / "metrics.json") == figures(second / stage / "metrics.json"), stage
