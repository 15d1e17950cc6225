"""The `synth` stage: deterministic bytes, chunking-invariant, splits by identity, real detector check."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facedet3d.config import load_config, merge
from facedet3d.data.records import read_records
from facedet3d.synth.stage import merge as merge_stage
from facedet3d.synth.stage import run as run_all, run_chunk
from facedet3d.errors import UserError
from tests.conftest import REPO


def _config(tmp_path: Path, name: str, **synth) -> dict:
    base = load_config([REPO / "config.yaml", REPO / "tests" / "configs" / "tiny.yaml"])
    return merge(base, {"results_dir": str(tmp_path / name), "synth": synth})


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".timing.json")}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[dict, dict]:
    tmp = tmp_path_factory.mktemp("synth")
    config = _config(tmp, "a")
    summary = run_all(config)
    return config, summary


def test_same_seed_same_bytes(tiny_run, tmp_path):
    config, _ = tiny_run
    again = merge(config, {"results_dir": str(tmp_path / "b")})
    run_chunk(again, 1)
    first = _digests(Path(config["results_dir"]) / "synth")
    second = _digests(Path(again["results_dir"]) / "synth")
    assert second and all(first[k] == v for k, v in second.items()), "re-rendering a chunk changed its bytes"
    other_seed = merge(again, {"results_dir": str(tmp_path / "c"), "seed": 1})
    run_chunk(other_seed, 1)
    third = _digests(Path(other_seed["results_dir"]) / "synth")
    assert third["chunks/001.h5"] != first["chunks/001.h5"]


def test_chunking_does_not_change_images(tiny_run, tmp_path):
    config, _ = tiny_run
    regrouped = merge(config, {"results_dir": str(tmp_path / "d"), "synth": {"identities_per_chunk": 2}})
    run_chunk(regrouped, 1)  # identities 2 and 3, which the tiny run renders in chunks 0 and 1
    a = Path(config["results_dir"]) / "synth"
    b = Path(regrouped["results_dir"]) / "synth"
    records = read_records(b / "chunks" / "001.h5", ["id", "path"])
    assert set(i.split("_")[0] for i in records["id"]) == {"s00002", "s00003"}
    for image_id, rel in zip(records["id"], records["path"]):
        old = next(a.glob(f"images/*/{image_id}.png"))
        assert np.array_equal(np.asarray(Image.open(old)), np.asarray(Image.open(b / rel)))


def test_manifest_splits_and_summary(tiny_run):
    config, summary = tiny_run
    root = Path(config["results_dir"]) / "synth"
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    s = config["synth"]
    per_identity = s["expressions_per_identity"] + s["videos_per_identity"] * s["video_frames"]
    assert len(rows) == s["n_identities"] * per_identity == summary["n_images"]
    split_of = {}
    for row in rows:
        assert split_of.setdefault(row["identity"], row["split"]) == row["split"], "identity crosses splits"
        assert (root / row["path"]).is_file()
    assert set(split_of.values()) == {"train", "val", "test"}
    videos = [r for r in rows if r["kind"] == "video"]
    assert {r["frame"] for r in videos} == {str(i) for i in range(s["video_frames"])}
    assert summary == json.loads((root / "summary.json").read_text())
    assert 0.0 <= summary["detector_rate"] <= 1.0
    assert (root / "contact_sheet.png").stat().st_size > 10_000


def test_ground_truth_is_complete_and_consistent(tiny_run):
    config, _ = tiny_run
    s = config["synth"]
    rec = read_records(Path(config["results_dir"]) / "synth" / "chunks" / "000.h5")
    n = len(rec["id"])
    assert rec["detail"].shape == (n, s["detail_size"], s["detail_size"])
    assert rec["texture"].shape == (n, s["texture_size"], s["texture_size"], 3)
    assert rec["aus"].shape == (n, 17) and rec["aus"].min() >= 0 and rec["aus"].max() <= 5
    assert rec["sh"].shape == (n, 27) and rec["landmarks"].shape == (n, 68, 2)
    assert np.all(np.abs(rec["pose"][:, 0]) <= np.deg2rad(s["max_yaw_deg"]) + 1e-6)
    # Video frames start neutral and share pose and light with their sequence.
    first = [i for i in range(n) if rec["frame"][i] == 0]
    assert first and all(np.all(rec["aus"][i] == 0) for i in first)
    # Landmarks land on the rendered face: the nose tip (30) is inside the image.
    assert np.all((rec["landmarks"][:, 30] > 0) & (rec["landmarks"][:, 30] < s["image_size"]))
    # Images of one identity with more AU intensity carry more detail energy.
    energy = np.abs(rec["detail"].astype(np.float32)).mean(axis=(1, 2))
    intensity = rec["aus"].sum(axis=1)
    assert np.corrcoef(energy, intensity)[0, 1] > 0.3


def test_demo_sized_renders_are_seen_by_a_real_face_detector(tmp_path):
    config = _config(tmp_path, "det", n_identities=4, identities_per_chunk=4, image_size=256,
                     mesh_resolution=192, detail_size=512, expressions_per_identity=4, videos_per_identity=0)
    run_chunk(config, 0)
    rec = read_records(Path(config["results_dir"]) / "synth" / "chunks" / "000.h5", ["n_faces"])
    rate = float(np.mean(rec["n_faces"] >= 1))
    assert rate >= 0.9, f"dlib found faces in only {rate:.0%} of 256² renders"


def test_merge_without_chunks_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="synth chunks missing"):
        merge_stage(_config(tmp_path, "empty"))
    with pytest.raises(UserError, match="chunk 9 does not exist"):
        run_chunk(_config(tmp_path, "empty"), 9)
