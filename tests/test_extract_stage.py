"""The `ingest` → `extract` stages: every input accounted for, bad input in rejects.csv, summaries."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from facedet3d.config import load_config, merge, validate
from facedet3d.ingest.stage import run as ingest
from facedet3d.data.records import read_records
from facedet3d.synth.stage import run as synth_all
from facedet3d.extract import stage
from tests.conftest import REPO


def _config(tmp_path: Path, **overlay) -> dict:
    base = load_config([REPO / "config.yaml", REPO / "tests" / "configs" / "tiny.yaml"])
    return validate(merge(base, {"results_dir": str(tmp_path / "results"), **overlay}))


def _bad_inputs(folder: Path) -> dict[str, str]:
    """One real photo plus every kind of bad input; returns file name -> expected outcome."""
    folder.mkdir(parents=True)
    astronaut = skdata.astronaut()
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    Image.fromarray(astronaut).convert("L").save(folder / "astronaut_gray.png")  # converted, accepted
    Image.fromarray(astronaut).convert("CMYK").save(folder / "astronaut_cmyk.jpg")
    rgba = Image.fromarray(astronaut).convert("RGBA")
    rgba.save(folder / "astronaut_alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° on display
    Image.fromarray(np.rot90(astronaut, 1).copy()).save(folder / "astronaut_exif.jpg", exif=exif)
    raw = (folder / "astronaut.png").read_bytes()
    (folder / "truncated.png").write_bytes(raw[: len(raw) // 3])
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).bytes(5000))
    Image.new("RGB", (40, 40), (120, 100, 90)).save(folder / "tiny.png")
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(folder / "no_face.png")
    (folder / "notes.txt").write_text("not an image")
    return {"astronaut.png": "ok", "astronaut_gray.png": "ok", "astronaut_cmyk.jpg": "ok",
            "astronaut_alpha.png": "ok", "astronaut_exif.jpg": "ok", "truncated.png": "corrupt",
            "random.jpg": "not an image", "tiny.png": "too small", "no_face.png": "no face",
            "notes.txt": "not an image"}


def test_every_input_is_accepted_or_rejected_with_a_reason(tmp_path):
    expected = _bad_inputs(tmp_path / "photos")
    config = _config(tmp_path, data={"source": "folders", "images_dir": str(tmp_path / "photos"), "videos_dir": None},
                     ingest={"image_identity": "file", "chunk_size": 4})
    ingest(config)
    summary = stage.run(config)
    with open(Path(config["results_dir"]) / "extract" / "rejects.csv", newline="") as f:
        rejects = {Path(r["input"]).name: r for r in csv.DictReader(f)}
    accepted = set()
    for path in (Path(config["results_dir"]) / "extract" / "chunks").glob("*.h5"):
        accepted |= {Path(p).name for p in read_records(path, ["path"])["path"]}
    assert summary["n_ok"] + summary["n_rejected"] == summary["n_total"] == len(expected)
    assert accepted | set(rejects) == set(expected) and not accepted & set(rejects)
    for name, outcome in expected.items():
        if outcome == "ok":
            assert name in accepted, f"{name} should be extracted: {rejects.get(name)}"
        else:
            assert outcome in rejects[name]["reason"].lower(), (name, rejects[name])
    assert json.loads((Path(config["results_dir"]) / "extract" / "summary.json").read_text()) == summary
    # Every stage writes the same kind of input: an absolute path to the file itself.
    photos = (tmp_path / "photos").resolve()
    assert all(Path(r["input"]).is_absolute() and Path(r["input"]).parent == photos for r in rejects.values())
    # Reasons are counted by kind: no file name or path is a key, and no reason is cut short.
    kinds = summary["reject_reasons"]
    assert sum(kinds.values()) == summary["n_rejected"]
    assert not any(name in kind for kind in kinds for name in expected), kinds
    assert kinds.get("not an image: extension .txt") == 1, kinds


@pytest.fixture(scope="module")
def synthetic_results(tmp_path_factory) -> dict:
    config = _config(tmp_path_factory.mktemp("synthetic"))
    synth_all(config)
    ingest(config)
    return config


def test_synthetic_gt_backend_is_an_exact_upper_bound(synthetic_results, tmp_path):
    config = merge(synthetic_results, {"extract": {"backend": "synthetic-gt"}})
    summary = stage.run(config)
    assert summary["n_ok"] == 30 and summary["n_rejected"] == 0
    assert summary["detail_corr"] == pytest.approx(1.0)
    assert (Path(config["results_dir"]) / "extract" / "preview.png").stat().st_size > 10_000


def test_builtin_backend_on_synthetic_renders_reports_detail_corr(synthetic_results):
    config = synthetic_results
    summary = stage.run_chunk(config, 0) and stage.merge(config)
    assert summary["n_ok"] >= 25  # tiny 128² renders: a few may be missed by the detector
    assert summary["detail_corr"] is not None and -1.0 <= summary["detail_corr"] <= 1.0
    for key in ("detail_corr_pooled", "detail_corr_sfs", "detail_corr_sfs_pooled"):
        assert summary[key] is not None and -1.0 <= summary[key] <= 1.0, key
    assert summary["detail_net"] is True
    assert summary["landmark_error_px"] < 5.0
