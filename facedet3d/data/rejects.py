"""rejects.csv: one row (input, stage, reason) per input a stage could not use."""

from __future__ import annotations

import csv
from pathlib import Path

from facedet3d.data.manifest import write_csv

REJECT_COLUMNS = ["input", "stage", "reason"]


def write_rejects(path: str | Path, rows: list[dict]) -> Path:
    """Write rejects atomically; a header even when there are none."""
    return write_csv(path, REJECT_COLUMNS, rows)


def read_rejects(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
