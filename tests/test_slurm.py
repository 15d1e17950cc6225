"""Cluster submission without a cluster: the tiny DAG (from its shards on; the data stages are the
session's tiny run, copied) through `snakemake --profile profiles/slurm`, with stand-in SLURM
commands first on PATH (tests/slurm_standin: `sbatch` records its arguments and runs the job here;
`sacct`/`squeue` report its state from the exit code; `srun` runs the job step).

Every job Snakemake runs goes through sbatch, the training rules ask for a GPU, memory and a time
limit on the profile's partition, a job that fails for real (a corrupt checkpoint.pt) is reported
failed, and the rerun submits only what is missing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from facedet3d.config import load_config
from tests.conftest import BIN, REPO

pytestmark = pytest.mark.slow
STANDIN = REPO / "tests" / "slurm_standin"
TRAINING = ("train_detp", "train_rcan", "train_renderer")
# Stages the test submits; the data stages before them come from the session's tiny run (copied).
REDONE = ("shards", *TRAINING, "evaluate")
# Fast status polling for the test (the profile's defaults suit a real cluster): the plugin checks
# 1 s after a job finished, then every 10 s more while none does.
FAST = ["--latency-wait", "5", "--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "1"]


class Cluster:
    """The stand-ins on PATH, their state folder, and Snakemake runs through the slurm profile."""

    def __init__(self, tmp: Path, configfile: list[str], results: Path):
        self.bin, self.state = tmp / "slurm-bin", tmp / "slurm-state"
        shutil.copytree(STANDIN, self.bin)  # executable however the checkout stored the bits
        for tool in self.bin.iterdir():
            tool.chmod(0o755)
        self.env = dict(os.environ, FACEDET3D_FAKE_SLURM_DIR=str(self.state),
                        PATH=os.pathsep.join([str(self.bin), str(BIN), os.environ.get("PATH", "")]))
        self.args = ["--profile", "profiles/slurm", "--configfile", *configfile, "--config", f"results_dir={results}",
                     "--slurm-logdir", str(tmp / "slurm-logs"), *FAST]

    def snakemake(self, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "snakemake"), *self.args, *extra], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=900, check=False)

    def dry_run(self) -> Counter:
        proc = self.snakemake("-n")
        assert proc.returncode == 0, proc.stderr[-3000:]
        return plan(proc.stdout + proc.stderr)

    def submissions(self) -> list[dict]:
        path = self.state / "sbatch.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def steps(self) -> set[str]:
        """SLURM job ids whose job ran its Snakemake job step through srun."""
        path = self.state / "srun.jsonl"
        return {json.loads(line)["jobid"] for line in path.read_text().splitlines()} if path.exists() else set()


def rule_of(submission: dict) -> str:
    """The rule of a submission, from the plugin's --comment rule_<name>[_wildcards_<values>]."""
    return submission["opts"]["--comment"].removeprefix("rule_").split("_wildcards_")[0]


def started(out: str) -> tuple[Counter, Counter]:
    """Jobs Snakemake started, by rule: (cluster jobs, local jobs), from its log."""
    jobs = re.findall(r"^(localrule|localcheckpoint|rule|checkpoint) (\w+):$", out, re.MULTILINE)
    return (Counter(name for kind, name in jobs if not kind.startswith("local")),
            Counter(name for kind, name in jobs if kind.startswith("local")))


def plan(out: str) -> Counter:
    """The jobs a dry run plans, by rule (its "Job stats" table)."""
    if "Nothing to be done" in out:
        return Counter()
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return Counter({name: int(n) for name, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)})


def check_submissions(subs: list[dict], profile: dict, settings: dict) -> None:
    """Each job: one run's job name, the profile's partition, memory, a time limit, the submitting
    environment, a job step that runs the rule with Snakemake; the training rules ask for a GPU, and
    a job asks for one exactly when it goes to the profile's GPU partition."""
    def partition(rule: str) -> str:
        default = profile["default-resources"]["slurm_partition"]
        return profile["set-resources"].get(rule, {}).get("slurm_partition", default)

    gpu_partitions = {partition(rule) for rule in TRAINING}
    for sub in subs:
        opts, rule = sub["opts"], rule_of(sub)
        assert opts.get("-p") == partition(rule), (rule, opts)
        assert int(opts.get("--mem", opts.get("--mem-per-cpu", 0))) > 0, (rule, opts)
        assert int(opts.get("-t", 0)) > 0, (rule, opts)
        assert opts.get("-D") == str(REPO) and "--executor slurm-jobstep" in opts["--wrap"], (rule, opts)
        assert opts.get("--export") == "ALL", (rule, opts)  # the job inherits the submitting shell's environment
        gpus = int(opts.get("--gpus", "0").split(":")[-1]) or int("gpu" in opts.get("--gres", ""))
        if rule in TRAINING:  # per device of the stage's config: one GPU and its threads
            s = settings[rule]
            assert gpus == s["devices"] and int(opts["--cpus-per-task"]) == s["threads"] * s["devices"], (rule, opts)
        assert (opts["-p"] in gpu_partitions) == (gpus >= 1), f"{rule}: GPU request and partition disagree: {opts}"
    assert len({sub["opts"]["--job-name"] for sub in subs}) == 1  # the run's id: what sacct --name asks for


def test_slurm_profile_submits_every_job_reports_a_failure_and_reruns_only_the_missing(tiny_run, tmp_path):
    tiny_args, tiny_results = tiny_run
    configfile = str(tiny_args[tiny_args.index("--configfile") + 1])
    results = tmp_path / "results"
    shutil.copytree(tiny_results, results, ignore=shutil.ignore_patterns(*REDONE))
    # A real failure: a truncated checkpoint.pt left by an earlier crash stops train-rcan ("delete it").
    corrupt = results / "train_rcan" / "checkpoint.pt"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a checkpoint")
    # DetP on 2 devices: its job asks for 2 GPUs and runs 2 processes under torchrun (gloo: no GPU here).
    devices = tmp_path / "devices.yaml"
    devices.write_text("train_detp: {devices: 2, device: cpu, threads: 1}\n")
    configfile = [configfile, str(devices)]
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    settings = load_config([REPO / "config.yaml", *configfile])
    cluster = Cluster(tmp_path, configfile, results)

    # 1. Every job goes through sbatch; train_rcan fails and Snakemake says so (--keep-going: the rest runs).
    first = cluster.snakemake("--keep-going")
    out = first.stdout + first.stderr
    assert first.returncode != 0, out[-3000:]
    subs = cluster.submissions()
    remote, local = started(out)
    assert Counter(map(rule_of, subs)) == remote == Counter(REDONE[:-1]), out[-3000:]  # evaluate waits on train_rcan
    assert not local  # `all` never ran
    check_submissions(subs, profile, settings)
    assert cluster.steps() == {sub["jobid"] for sub in subs}  # each job ran its step with srun
    rcan = next(sub["jobid"] for sub in subs if rule_of(sub) == "train_rcan")
    assert "Error in rule train_rcan" in out and f"SLURM-job '{rcan}' failed" in out, out[-3000:]
    assert "is truncated or not a facedet3d checkpoint" in (results / "logs" / "train_rcan.log").read_text()
    assert not (results / "train_rcan" / "final.pt").exists()
    assert all((results / stage / "final.pt").is_file() for stage in ("train_detp", "train_renderer"))
    assert "starting 2 processes with torchrun" in (results / "logs" / "train_detp.log").read_text()

    # 2. The cause removed, the rerun submits exactly what is missing and completes the DAG.
    corrupt.unlink()
    missing = cluster.dry_run()
    assert missing == Counter(["train_rcan", "evaluate", "all"]), missing
    second = cluster.snakemake()
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    resubs = cluster.submissions()[len(subs):]
    assert Counter(map(rule_of, resubs)) == started(out)[0] == missing - Counter(["all"]), out[-3000:]
    assert started(out)[1] == Counter(["all"])  # the target rule runs on the submitting host
    check_submissions(resubs, profile, settings)
    assert (results / "evaluate" / "report.html").is_file()
    assert cluster.dry_run() == Counter()  # nothing left to do
