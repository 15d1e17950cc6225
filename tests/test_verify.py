"""`facedet3d verify`: a finished tiny run is consistent; a changed shard, a truncated model and
counts that do not add up are each named, with exit status 2."""

from __future__ import annotations

import json
import shutil

import pytest

from facedet3d.verify import check_counts

pytestmark = pytest.mark.slow


def test_counts_that_do_not_add_up_are_named():
    ok = {"extract": {"n_ok": 5, "n_rejected": 1, "n_total": 6}, "annotate": {"n_ok": 5, "n_rejected": 0},
          "shards": {"n_samples": 4, "n_skipped_unannotated": 1}}
    assert check_counts(ok) == []
    bad = {**ok, "annotate": {"n_ok": 4, "n_rejected": 0}}
    assert check_counts(bad) == ["annotate: n_ok 4 + n_rejected 0 = 4, but extract's n_ok is 5"]


def test_verify_a_run_then_its_corruptions(run_cmd, tiny_run, tmp_path):
    _, results = tiny_run
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    proc = run_cmd(["facedet3d", "verify", str(copy)])
    assert "all consistent" in proc.stdout and "shards/index.json" in proc.stdout

    shard = next((copy / "shards").glob("detp-train-*.h5"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    model = copy / "train_rcan" / "final.pt"
    model.write_bytes(model.read_bytes()[:100])
    summary = copy / "extract" / "summary.json"
    s = json.loads(summary.read_text())
    s["n_rejected"] += 1
    summary.write_text(json.dumps(s))

    proc = run_cmd(["facedet3d", "verify", str(copy)], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    findings = [line for line in proc.stdout.splitlines() if line.startswith("facedet3d verify:")]
    assert any(f"{shard.name}: sha256 mismatch" in f for f in findings)
    assert any("train_rcan/final.pt" in f and "truncated" in f for f in findings)
    assert any(f.startswith("facedet3d verify: extract: n_ok") for f in findings)
    assert len(findings) == 3


def test_verify_names_a_folder_that_is_not_there(run_cmd, tmp_path):
    proc = run_cmd(["facedet3d", "verify", str(tmp_path / "nothing")], check=False)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr and "Traceback" not in proc.stderr
