"""`facedet3d bench NAME` prints one JSON object per line with the contract's keys (no timing asserts)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("name, keys", [
    ("rasterize", {"image_size", "triangles", "batch", "ms_per_face"}),
    ("synth", {"images_per_s"}),
    ("extract", {"s_per_image", "s_detect", "s_landmarks", "s_fit", "s_unwrap", "s_detail"}),
    ("loader", {"workers", "samples_per_s"}),
    ("train-detp", {"size", "batch", "samples_per_s", "ms_per_step"}),
    ("train-rcan", {"batch", "patch", "samples_per_s", "ms_per_step"}),
    ("train-renderer", {"size", "batch", "samples_per_s", "ms_per_step", "raster_ms_per_step", "raster_share"}),
])
def test_bench_prints_json_lines_with_contract_keys(run_cmd, name, keys):
    proc = run_cmd(["facedet3d", "bench", name, "--quick"])
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert rows and all(row["bench"] == name and keys <= set(row) for row in rows)
    assert all(row[k] > 0 for row in rows for k in keys if k != "workers")
    if name == "extract":  # the extractor the config builds: with the shipped detail network
        assert all(row["detail_net"] is True for row in rows)
    if name == "loader":
        loaders = {"shards", "shards_collate", "files", "memcpy", "memcpy_batch"}
        assert loaders <= {row["loader"] for row in rows} <= loaders | {"detp_batch_fn", "detp_batch_fn_memory"}
        assert {row["order"] for row in rows} == {"sequential", "shuffled"}
        assert all(row["vs_files"] > 0 and row["vs_memcpy"] > 0 for row in rows if row["loader"].startswith("shards"))


def test_bench_config_overlays_apply(run_cmd, tmp_path):
    overlay = tmp_path / "no_net.yaml"
    overlay.write_text("extract:\n  detail_net: false\n")
    proc = run_cmd(["facedet3d", "bench", "extract", "--quick", "--config", "config.yaml", "--config", str(overlay)])
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert rows and rows[0]["detail_net"] is False and rows[0]["s_per_image"] > 0
