"""HDF5 training shards: deterministic, atomic writing and the shard index.

A shard is one HDF5 file of equal-length arrays (one row per sample), written like the
per-chunk records (:mod:`facedet3d.data.records`): a temporary name then ``os.replace``,
no HDF5 timestamps (``track_times=False``), fixed libver (v110), datasets and attributes in
sorted order and deterministic compression, so the same arrays give byte-identical files.
Large per-row arrays (maps, patches) are chunked one row per HDF5 chunk so that a loader
reads a sample without touching its neighbours.

``index.json`` lists every shard (path relative to the index, sha256, n, kind, split); it
is written last and atomically, so a killed job leaves the previous index (or none).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np

from facedet3d.data.records import write_records


def write_shard(path: str | Path, fields: dict[str, np.ndarray], attrs: dict | None = None,
                compression: str = "none") -> Path:
    """Write one shard atomically and reproducibly: :func:`records.write_records` with the
    shards' compression (default none: shards are read far more often than written)."""
    return write_records(path, fields, attrs, compression)


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def code_version() -> dict:
    """facedet3d.__version__ and `git describe --always --dirty` of the repository (None without git)."""
    import facedet3d

    repo = Path(facedet3d.__file__).resolve().parent.parent
    try:
        proc = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10)
        git = proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        git = None
    return {"facedet3d": facedet3d.__version__, "git": git}


def read_index(index_path: str | Path) -> dict:
    from facedet3d.errors import UserError

    index_path = Path(index_path)
    if not index_path.is_file():
        raise UserError(f"shard index {index_path} missing; run `facedet3d shards` first")
    return json.loads(index_path.read_text(encoding="utf-8"))


def split_digest(index_path: str | Path, kind: str, split: str) -> str:
    """One hash of a split's shard checksums (training options carry it: other data restarts training)."""
    entries = sorted(e["sha256"] for e in read_index(index_path)["shards"] if e["kind"] == kind and e["split"] == split)
    return hashlib.sha256("".join(entries).encode()).hexdigest()[:16]


def verify_index(index_path: str | Path, raise_on_error: bool = False) -> list[str]:
    """Check every shard of an index against its sha256; returns the problems (empty when all match).

    Done on demand only (it reads every byte); loaders never hash per sample.
    """
    from facedet3d.errors import UserError

    index_path = Path(index_path)
    problems = []
    for entry in read_index(index_path)["shards"]:
        path = index_path.parent / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 mismatch (corrupted or rewritten)")
    if problems and raise_on_error:
        raise UserError(f"shard index {index_path} does not match its shards: " + "; ".join(problems))
    return problems
