"""The Snakemake workflow: lint-clean, dry-runs locally and on the SLURM profile, stops on bad config."""

from __future__ import annotations

import json
import os

import pytest
import yaml


def _results(tmp_path) -> str:
    return f"results_dir={tmp_path / 'results'}"


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


def test_slurm_profile_dry_run_carries_resources(run_cmd, tiny_config, tmp_path):
    proc = run_cmd(["snakemake", "-n", "--profile", "profiles/slurm", "--configfile", str(tiny_config),
                    "--config", _results(tmp_path)])
    out = proc.stdout + proc.stderr
    assert "This was a dry-run" in out
    assert "slurm_partition=cpu" in out and "mem_mb=3000" in out and "runtime=30" in out
    profile = yaml.safe_load(open("profiles/slurm/config.yaml"))
    for rule in ("train_detp", "train_rcan", "train_renderer"):
        assert profile["set-resources"][rule]["gpu"] == 1


def test_unknown_key_stops_snakemake_before_any_job(run_cmd, tiny_config, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"synth": {"n_identitis": 3}}))
    proc = run_cmd(["snakemake", "--cores", "2", "--configfile", str(tiny_config), str(bad),
                    "--config", _results(tmp_path)], check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "unknown config key 'synth.n_identitis'" in out
    assert "Traceback" not in out
    assert not (tmp_path / "results").exists()


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


@pytest.mark.slow
def test_snakemake_runs_the_tiny_dag_end_to_end(run_cmd, tiny_config, tmp_path):
    args = ["--configfile", str(tiny_config), "--config", _results(tmp_path)]
    run_cmd(["snakemake", "--cores", "2", *args])
    results = tmp_path / "results"
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
    # A second run finds nothing to do: the resolved config kept its timestamp.
    proc = run_cmd(["snakemake", "-n", "--cores", "2", *args])
    assert "Nothing to be done" in proc.stdout + proc.stderr
