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

import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facedet3d.atomic import write_json_atomic
from facedet3d.data.manifest import manifest_chunks, read_manifest, resolve_path
from facedet3d.data.records import read_records, read_timings, stack_fields, write_records, write_timing
from facedet3d.data.rejects import read_rejects, reason_counts, reject, write_rejects
from facedet3d.errors import UserError
from facedet3d.extract.backends import SCORE_FIELDS
from facedet3d.paths import Results

log = logging.getLogger(__name__)

_ROW_FIELDS = ["id", "path", "identity", "split", "kind", "sequence", "frame"]


def chunks(config: dict) -> list[int]:
    """The chunk numbers of the ingested manifest: one job each."""
    return manifest_chunks(Results.of(config).manifest)


def run_chunk(config: dict, chunk: int) -> Path:
    """Extract every manifest row of one chunk; failures become rejects, the chunk goes on."""
    from facedet3d.extract.backends import make_backend

    paths = Results.of(config)
    manifest = paths.manifest
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
            rejects.append(reject(resolve_path(manifest.parent, row), "extract", str(err)))
            continue
        for key in _ROW_FIELDS:
            fields[key].append(row[key])
        for key, value in record.items():
            fields[key].append(value)
    elapsed = time.perf_counter() - start
    arrays = stack_fields(fields)
    if not arrays:  # every row rejected: an empty record file that merge and annotate can still read
        arrays = {k: np.zeros(0, dtype=object) for k in _ROW_FIELDS}
        arrays |= {k: np.zeros((0, 6)) if k.endswith("_moments") else np.zeros(0, np.float32) for k in SCORE_FIELDS}
        arrays |= {"landmark_error_px": np.zeros(0, np.float32)}
        arrays |= {"landmarks": np.zeros((0, 68, 2), np.float32), "expr": np.zeros((0, 17), np.float32)}
    path = write_records(paths.chunk("extract", chunk), arrays,
                         attrs={"backend": backend.name, "chunk": chunk, "n": len(fields["id"])})
    write_rejects(paths.chunk_rejects("extract", chunk), rejects)
    write_timing(paths.chunk_timing("extract", chunk), elapsed, len(rows))
    log.info("extract chunk %03d: %d ok, %d rejected, %.1f s", chunk, len(fields["id"]), len(rejects), elapsed)
    return path


def merge(config: dict) -> dict:
    """Merge chunk rejects with ingest's, write summary.json and the preview."""
    from facedet3d.extract.preview import extract_preview

    results = Results.of(config)
    numbers = chunks(config)
    paths = [results.chunk("extract", c) for c in numbers]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"extract chunks missing: {', '.join(map(str, missing))}; run `facedet3d extract --chunk N`")
    ingest_rejects = results.rejects("ingest")
    rejects = read_rejects(ingest_rejects) if ingest_rejects.is_file() else []
    small: dict[str, list] = defaultdict(list)
    for c, path in zip(numbers, paths):
        rejects += read_rejects(results.chunk_rejects("extract", c))
        for key, value in read_records(path, ["id", "split", *SCORE_FIELDS, "landmark_error_px"]).items():
            small[key].extend(value.tolist())
    seconds, n_rows = read_timings(results.chunk_timing("extract", c) for c in numbers)
    write_rejects(results.rejects("extract"), rejects)
    extract_preview(config, paths, results.extract_preview)
    summary = _summary(config, small, rejects, seconds, n_rows)
    write_json_atomic(results.summary("extract"), summary)
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
    return {
        "backend": config["extract"]["backend"],
        "n_ok": n_ok,
        "n_rejected": len(rejects),
        "n_total": n_ok + len(rejects),
        "reject_reasons": reason_counts(rejects),
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


def run(config: dict) -> dict:
    """Every chunk, then the merge (for use without Snakemake)."""
    for chunk in chunks(config):
        run_chunk(config, chunk)
    return merge(config)
