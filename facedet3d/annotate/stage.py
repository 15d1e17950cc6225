"""Stage `annotate`: 17 AU intensities, a FaceNet identity embedding and age features per image.

Reads each extract chunk (its records hold the detected landmarks and the fitted
expression) and writes, one row per annotated image, beside it:
  annotate/chunks/<chunk>.h5           id, aus (17,), facenet (512,), age_dist (81,), age
  annotate/chunks/<chunk>.rejects.csv  input, stage, reason
  annotate/summary.json                au_mae, au_corr, id_auc, age_spearman on held-out
                                       synthetic identities (test split), counts
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facedet3d.annotate import metrics
from facedet3d.atomic import write_json_atomic
from facedet3d.data.images import load_image
from facedet3d.data.manifest import manifest_chunks, resolve_path
from facedet3d.data.records import read_records, stack_fields, write_records, write_timing
from facedet3d.data.rejects import read_rejects, reject, write_rejects
from facedet3d.errors import UserError
from facedet3d.face.layout import AU_NAMES
from facedet3d.paths import Results


def chunks(config: dict) -> list[int]:
    """The chunk numbers of the ingested manifest (one annotate job per extract chunk)."""
    return manifest_chunks(Results.of(config).manifest)


def _record_aus(config: dict, row: dict, truth) -> np.ndarray:
    from facedet3d.annotate.aus import estimate_aus

    backend = config["annotate"]["aus_backend"]
    if backend == "builtin":
        return estimate_aus("builtin", {"expr": row["expr"]})
    if backend == "openface":
        folder = config["annotate"]["openface_dir"]
        if not folder:
            raise UserError("config key 'annotate.openface_dir' must name the folder of OpenFace CSVs")
        return estimate_aus("openface", {"openface_csv": Path(folder) / f"{Path(row['path']).stem}.csv"})
    if truth is None or row["id"] not in truth:
        raise UserError("AU backend 'synthetic-oracle' needs a synthetic image with ground truth")
    return estimate_aus("synthetic-oracle", {"aus": truth.get(row).aus})


def run_chunk(config: dict, chunk: int) -> Path:
    """Annotate every extracted image of one chunk; failures become rejects, the chunk goes on."""
    from facedet3d.annotate.age import AgeEstimator
    from facedet3d.annotate.identity import FaceNetEmbedder
    from facedet3d.synth.truth import SyntheticGroundTruth

    paths = Results.of(config)
    source = paths.chunk("extract", chunk)
    if not source.is_file():
        raise UserError(f"extract records {source} missing; run `facedet3d extract --chunk {chunk}` first")
    rec = read_records(source, ["id", "path", "landmarks", "expr"])
    embedder, age_net = FaceNetEmbedder.from_config(config), AgeEstimator.from_config(config)
    truth = SyntheticGroundTruth(config["results_dir"]) if config["data"]["source"] == "synthetic" else None
    manifest_dir = paths.manifest.parent
    fields: dict[str, list] = defaultdict(list)
    rejects = []
    start = time.perf_counter()
    for i in tqdm(range(len(rec["id"])), desc=f"annotate chunk {chunk:03d}", unit="image"):
        row = {k: v[i] for k, v in rec.items()}
        try:
            if not np.all(np.isfinite(row["landmarks"])):
                raise UserError("no landmarks in the extract record (the fds backend detects none)")
            image = load_image(resolve_path(manifest_dir, row)).rgb
            aus = _record_aus(config, row, truth)
            age = age_net.estimate(image, row["landmarks"])
            facenet = embedder.embed(image, row["landmarks"])
        except UserError as err:
            rejects.append(reject(resolve_path(manifest_dir, row), "annotate", str(err)))
            continue
        for key, value in (("id", row["id"]), ("aus", aus), ("facenet", facenet),
                           ("age_dist", age["distribution"]), ("age", np.float32(age["expected"]))):
            fields[key].append(value)
    arrays = stack_fields(fields)
    if not arrays:  # keep the file's fields present even when every row failed
        arrays = {"id": np.zeros(0, dtype=object), "aus": np.zeros((0, 17), np.float32)}
    path = write_records(paths.chunk("annotate", chunk), arrays,
                         attrs={"aus_backend": config["annotate"]["aus_backend"]})
    write_rejects(paths.chunk_rejects("annotate", chunk), rejects)
    write_timing(paths.chunk_timing("annotate", chunk), time.perf_counter() - start, len(rec["id"]))
    return path


def merge(config: dict) -> dict:
    """summary.json from all annotate chunks, scored against the generator's ground truth."""
    from facedet3d.synth.truth import SyntheticGroundTruth

    paths = Results.of(config)
    rows: dict[str, list] = defaultdict(list)
    rejects = []
    for chunk in chunks(config):
        path = paths.chunk("annotate", chunk)
        if not path.is_file():
            raise UserError(f"annotate chunk {path} missing; run `facedet3d annotate --chunk {chunk}`")
        rejects += read_rejects(paths.chunk_rejects("annotate", chunk))
        rec = read_records(path)
        for key in ("id", "aus", "facenet", "age"):
            rows[key].extend(rec.get(key, []))
    write_rejects(paths.rejects("annotate"), rejects)
    summary = {"aus_backend": config["annotate"]["aus_backend"], "n_ok": len(rows["id"]),
               "n_rejected": len(rejects), "au_mae": None, "au_corr": None, "id_auc": None, "age_spearman": None}
    if config["data"]["source"] == "synthetic" and rows["id"]:
        summary.update(_scores(rows, SyntheticGroundTruth(config["results_dir"])))
    write_json_atomic(paths.summary("annotate"), summary)
    return summary


def _scores(rows: dict, truth) -> dict:
    """Held-out (test split) scores of the annotations against the synthetic ground truth."""
    gts_all = [truth.get(image_id) for image_id in rows["id"]]
    test = [i for i, g in enumerate(gts_all) if g.split == "test"]
    if len(test) < 2:
        return {}
    gts = [gts_all[i] for i in test]
    aus = np.stack([rows["aus"][i] for i in test])
    gt_aus = np.stack([g.aus for g in gts])
    corr = metrics.per_au_corr(aus, gt_aus)
    return {
        "n_scored": len(test),
        "au_mae": round(float(metrics.au_mae(aus, gt_aus)), 4),
        "au_corr": {name: (None if not np.isfinite(c) else round(float(c), 3)) for name, c in zip(AU_NAMES, corr)},
        "id_auc": round(float(metrics.verification_auc(np.stack([rows["facenet"][i] for i in test]),
                                                       [g.identity for g in gts])), 4),
        "age_spearman": round(float(metrics.spearman([rows["age"][i] for i in test], [g.age for g in gts])), 4),
    }


def run(config: dict) -> dict:
    """Every chunk, then the merge (for use without Snakemake)."""
    for chunk in chunks(config):
        run_chunk(config, chunk)
    return merge(config)
