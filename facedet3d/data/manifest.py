"""The image manifest (`results/data/manifest.csv`) that extraction and annotation read.

One row per input image or video frame: id, path (relative to the manifest's folder,
or absolute), identity, split, kind (image | video), sequence, frame, chunk, and
expression / age where the source knows them (empty otherwise).
"""

from __future__ import annotations

import csv
from pathlib import Path

from facedet3d.errors import UserError

COLUMNS = ["id", "path", "identity", "split", "kind", "sequence", "frame", "chunk", "expression", "age"]


def read_manifest(path: str | Path) -> list[dict]:
    """Rows of a manifest as dicts of strings; a clear error when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest {path} does not exist; run `facedet3d ingest` first")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("id", "path", "chunk") if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"manifest {path} lacks column(s) {', '.join(missing)}")
        return list(reader)


def resolve_path(manifest_dir: Path, row: dict) -> Path:
    """The file a manifest row points at."""
    p = Path(row["path"])
    return p if p.is_absolute() else manifest_dir / p
