"""The `annotate` stage on extracted synthetic images: real FaceNet and age nets, scored vs ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facedet3d.annotate import stage
from facedet3d.config import load_config, merge, validate
from facedet3d.ingest.stage import run as ingest
from facedet3d.data.records import read_records
from facedet3d.synth.stage import run as synth_all
from facedet3d.extract import stage as extract_stage
from tests.conftest import REPO


def test_annotate_writes_aus_embeddings_ages_and_scores(tmp_path):
    config = validate(merge(load_config([REPO / "config.yaml", REPO / "tests" / "configs" / "tiny.yaml"]), {
        "results_dir": str(tmp_path / "results"), "extract": {"backend": "synthetic-gt"},
        "synth": {"image_size": 192}}))
    synth_all(config)
    ingest(config)
    extract_stage.run(config)
    summary = stage.run(config)
    assert summary["n_ok"] == 30 and summary["n_rejected"] == 0
    rec = read_records(Path(config["results_dir"]) / "annotate" / "chunks" / "000.h5")
    assert rec["facenet"].shape == (30, 512) and rec["age_dist"].shape == (30, 81)
    assert np.allclose(np.linalg.norm(rec["facenet"], axis=1), 1.0, atol=1e-4)
    assert np.allclose(rec["age_dist"].sum(1), 1.0, atol=1e-3)
    # builtin AUs from the ground-truth fit reproduce the labels except where lids were limited.
    assert summary["au_mae"] < 0.1
    assert 0.0 <= summary["id_auc"] <= 1.0 and -1.0 <= summary["age_spearman"] <= 1.0
    assert set(summary["au_corr"]) >= {"AU01", "AU12", "AU45"}
    assert json.loads((Path(config["results_dir"]) / "annotate" / "summary.json").read_text()) == summary
