"""Stage `extract` ("FDS extraction", paper Eq. 1): per manifest chunk, one record file.

Outputs under ``<results_dir>/extract/``:
  chunks/<chunk>.h5            one row per accepted input (see :mod:`facedet3d.extract.backends`)
  chunks/<chunk>.rejects.csv   input, stage, reason for every input the chunk could not use
  rejects.csv                  all rejects, those of `ingest` included
  summary.json                 n_ok, n_rejected, n_total, detail_corr (+ _pooled, _sfs, _sfs_pooled),
                               landmark_error_px, s_per_image
  preview.png                  input | texture map | detail map | (synthetic) true detail map | shaded geometry
Every input is accounted for: n_ok + n_rejected = n_total.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facedet3d.data.manifest import read_manifest
from facedet3d.data.rejects import read_rejects, write_rejects
from facedet3d.data.records import read_records, stack_fields, write_records
from facedet3d.data.jsonfile import write_json_atomic
from facedet3d.errors import UserError
from facedet3d.extract.backends import SCORE_FIELDS

log = logging.getLogger(__name__)

_ROW_FIELDS = ["id", "path", "identity", "split", "kind", "sequence", "frame"]


def extract_dir(config: dict) -> Path:
    return Path(config["results_dir"]) / "extract"


def manifest_path(config: dict) -> Path:
    return Path(config["results_dir"]) / "data" / "manifest.csv"


def run_chunk(config: dict, chunk: int) -> Path:
    """Extract every manifest row of one chunk; failures become rejects, the chunk goes on."""
    from facedet3d.extract.backends import make_backend

    manifest = manifest_path(config)
    rows = [r for r in read_manifest(manifest) if int(r["chunk"]) == chunk]
    if not rows:
        raise UserError(f"chunk {chunk} has no rows in {manifest}; run `facedet3d ingest` first")
    backend = make_backend(config)
    fields: dict[str, list] = defaultdict(list)
    rejects = []
    start = time.perf_counter()
    for row in tqdm(rows, desc=f"extract chunk {chunk:03d}", unit="image"):
        try:
            record = backend.extract_row(row, manifest.parent)
        except UserError as err:  # bad input: one row in rejects.csv, the chunk goes on
            rejects.append({"input": row["path"], "stage": "extract", "reason": str(err)})
            continue
        for key in _ROW_FIELDS:
            fields[key].append(row[key])
        for key, value in record.items():
            fields[key].append(value)
    elapsed = time.perf_counter() - start
    out = extract_dir(config) / "chunks"
    name = f"{chunk:03d}"
    arrays = stack_fields(fields)
    if not arrays:  # every row rejected: an empty record file that merge and annotate can still read
        arrays = {k: np.zeros(0, dtype=object) for k in _ROW_FIELDS}
        arrays |= {k: np.zeros((0, 6)) if k.endswith("_moments") else np.zeros(0, np.float32) for k in SCORE_FIELDS}
        arrays |= {"landmark_error_px": np.zeros(0, np.float32)}
        arrays |= {"landmarks": np.zeros((0, 68, 2), np.float32), "expr": np.zeros((0, 17), np.float32)}
    write_records(out / f"{name}.h5", arrays, attrs={"backend": backend.name, "chunk": chunk, "n": len(fields["id"])})
    write_rejects(out / f"{name}.rejects.csv", rejects)
    (out / f"{name}.timing.json").write_text(json.dumps({"seconds": elapsed, "n_rows": len(rows)}))
    log.info("extract chunk %s: %d ok, %d rejected, %.1f s", name, len(fields["id"]), len(rejects), elapsed)
    return out / f"{name}.h5"


def chunk_ids(config: dict) -> list[int]:
    return sorted({int(r["chunk"]) for r in read_manifest(manifest_path(config))})


def merge(config: dict) -> dict:
    """Merge chunk rejects with ingest's, write summary.json and the preview."""
    out = extract_dir(config)
    chunks = chunk_ids(config)
    paths = [out / "chunks" / f"{c:03d}.h5" for c in chunks]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"extract chunks missing: {', '.join(map(str, missing))}; run `facedet3d extract --chunk N`")
    ingest_rejects = Path(config["results_dir"]) / "ingest" / "rejects.csv"
    rejects = read_rejects(ingest_rejects) if ingest_rejects.is_file() else []
    small: dict[str, list] = defaultdict(list)
    seconds, n_rows = 0.0, 0
    for path in paths:
        rejects += read_rejects(path.with_name(path.stem + ".rejects.csv"))
        for key, value in read_records(path, ["id", "split", *SCORE_FIELDS, "landmark_error_px"]).items():
            small[key].extend(value.tolist())
        timing = json.loads(path.with_suffix(".timing.json").read_text())
        seconds += timing["seconds"]
        n_rows += timing["n_rows"]
    write_rejects(out / "rejects.csv", rejects)
    from facedet3d.extract.preview import extract_preview

    extract_preview(config, paths, out / "preview.png")
    summary = _summary(config, small, rejects, seconds, n_rows)
    write_json_atomic(out / "summary.json", summary)
    return summary


def _pooled(moments) -> float | None:
    """Pooled correlation over images from their summed moments (quality.detail_moments)."""
    from facedet3d.extract.quality import correlation_from_moments

    rows = [m for m in moments if np.isfinite(m).all()]
    value = correlation_from_moments(np.sum(rows, axis=0)) if rows else float("nan")
    return round(float(value), 4) if np.isfinite(value) else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return round(float(np.mean(values)), 4) if values else None


def _summary(config: dict, small: dict, rejects: list[dict], seconds: float, n_rows: int) -> dict:
    n_ok = len(small["id"])
    test = [s == "test" for s in small["split"]]
    held_out = {k: [v for v, t in zip(small[k], test) if t] for k in SCORE_FIELDS}
    reasons: dict[str, int] = defaultdict(int)
    for r in rejects:
        reasons[r["reason"].split(":")[0]] += 1
    return {
        "backend": config["extract"]["backend"],
        "n_ok": n_ok,
        "n_rejected": len(rejects),
        "n_total": n_ok + len(rejects),
        "reject_reasons": dict(sorted(reasons.items())),
        # Pearson correlation of extracted vs ground-truth detail maps (fine scales, face
        # region), on held-out (test split) synthetic identities; None without ground truth.
        "detail_corr": _mean(held_out["detail_corr"]),
        "detail_corr_all": _mean(small["detail_corr"]),
        # One correlation over all held-out texels together (maps with deep wrinkles weigh more).
        "detail_corr_pooled": _pooled(held_out["detail_moments"]),
        # The same two for shape from shading alone (builtin backend, before the detail network).
        "detail_corr_sfs": _mean(held_out["detail_sfs_corr"]),
        "detail_corr_sfs_pooled": _pooled(held_out["detail_sfs_moments"]),
        "detail_net": bool(config["extract"]["backend"] == "builtin" and config["extract"]["detail_net"]),
        "landmark_error_px": _mean(small["landmark_error_px"]),
        "s_per_image": round(seconds / n_rows, 4) if n_rows else None,
    }


def run_all(config: dict) -> dict:
    for chunk in chunk_ids(config):
        run_chunk(config, chunk)
    return merge(config)
