"""`facedet3d bench NAME` prints one JSON object per line with the contract's keys (no timing asserts)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("name, keys", [
    ("rasterize", {"image_size", "triangles", "batch", "ms_per_face"}),
    ("synth", {"images_per_s"}),
    ("extract", {"s_per_image", "s_detect", "s_landmarks", "s_fit", "s_unwrap", "s_detail"}),
    ("loader", {"workers", "samples_per_s"}),
])
def test_bench_prints_json_lines_with_contract_keys(run_cmd, name, keys):
    proc = run_cmd(["facedet3d", "bench", name, "--quick"])
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert rows and all(row["bench"] == name and keys <= set(row) for row in rows)
    assert all(row[k] > 0 for row in rows for k in keys if k != "workers")
    if name == "loader":
        assert {row["loader"] for row in rows} == {"shards", "files", "memcpy"}
