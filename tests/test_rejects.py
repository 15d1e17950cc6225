"""rejects.csv rows: one path form for every stage, reasons counted by kind."""

from __future__ import annotations

import os
from pathlib import Path

from facedet3d.data.rejects import read_rejects, reason_counts, reason_kind, reject, write_rejects


def test_reject_rows_name_the_file_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    row = reject(Path("results/data/../../faces/x.png"), "extract", "no face found in the 3000x1980 image")
    assert row == {"input": os.path.join(str(tmp_path), "faces", "x.png"), "stage": "extract",
                   "reason": "no face found in the 3000x1980 image"}
    write_rejects(tmp_path / "rejects.csv", [row])
    assert read_rejects(tmp_path / "rejects.csv") == [row]


def test_reason_kinds_drop_what_varies_per_file_and_keep_the_rest():
    rows = [
        reject("/data/a.png", "extract", "no face found in the 3000x1980 image"),
        reject("/data/b.png", "extract", "no face found in the 640x480 image"),
        reject("/data/c.png", "extract", "cannot read /data/c.png: image file is truncated (43 bytes not processed)"),
        reject("/data/notes.txt", "ingest", "not an image: extension .txt"),
        reject("/data/d.png", "annotate", "c.png: expected one successfully tracked image, got 0"),
    ]
    assert reason_kind(rows[2]) == "cannot read <input>: image file is truncated (N bytes not processed)"
    assert reason_counts(rows) == {
        "c.png: expected one successfully tracked image, got N": 1,
        "cannot read <input>: image file is truncated (N bytes not processed)": 1,
        "no face found in the NxN image": 2,
        "not an image: extension .txt": 1,
    }
