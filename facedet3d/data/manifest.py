"""The image manifest (`results/data/manifest.csv`) that extraction and annotation read.

One row per input image or video frame: id, path (relative to the manifest's folder,
or absolute), identity, split, kind (image | video), sequence, frame, chunk, and
expression / age where the source knows them (empty otherwise).
"""

from __future__ import annotations

import csv
from pathlib import Path

from facedet3d.atomic import atomic_path
from facedet3d.errors import UserError

SPLITS = ("train", "val", "test")
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


def manifest_chunks(path: str | Path) -> list[int]:
    """The chunk numbers of a manifest, sorted: one extract/annotate job each."""
    return sorted({int(row["chunk"]) for row in read_manifest(path)})


def resolve_path(manifest_dir: Path, row: dict) -> Path:
    """The file a manifest row points at."""
    p = Path(row["path"])
    return p if p.is_absolute() else manifest_dir / p


def write_csv(path: str | Path, columns: list[str], rows: list[dict]) -> Path:
    """Write dict rows as CSV (missing values empty) via a temporary name and a rename."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row.get(c, "") for c in columns])
    return Path(path)
