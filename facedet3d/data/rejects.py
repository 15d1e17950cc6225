"""rejects.csv: one row (input, stage, reason) per input a stage could not use.

``input`` is always the absolute, normalised path of the file (whichever stage rejected it), so
the rows of ingest, extract and annotate read alike and can be opened as they stand.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from pathlib import Path

from facedet3d.data.manifest import write_csv

REJECT_COLUMNS = ["input", "stage", "reason"]


def reject(path: str | Path, stage: str, reason: str) -> dict:
    """One rejects.csv row for the file at ``path``."""
    return {"input": os.path.normpath(os.path.abspath(path)), "stage": stage, "reason": str(reason)}


def write_rejects(path: str | Path, rows: list[dict]) -> Path:
    """Write rejects atomically; a header even when there are none."""
    return write_csv(path, REJECT_COLUMNS, rows)


def read_rejects(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def reason_kind(row: dict) -> str:
    """A reason with what varies per input taken out, for counting: the file's own path or name
    becomes ``<input>``, other paths ``<path>``, numbers ``N``
    (``"no face found in the 3000x1980 image"`` -> ``"no face found in the NxN image"``)."""
    text = row["reason"]
    for name in (row.get("input", ""), Path(row.get("input", "")).name):
        if name:
            text = text.replace(name, "<input>")
    text = re.sub(r"(?<![\w<])(/|\.\.?/)[^\s:;,'\"]+", "<path>", text)
    return re.sub(r"\d+(\.\d+)?", "N", text)


def reason_counts(rows: list[dict]) -> dict[str, int]:
    """{reason kind: count}, sorted by kind (for stage summaries)."""
    return dict(sorted(Counter(reason_kind(r) for r in rows).items()))
