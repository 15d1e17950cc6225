"""Stage `synth`: render the embedded synthetic dataset in chunks, then merge.

Outputs under ``<results_dir>/synth/``:
  images/<chunk>/<id>.png        rendered faces
  chunks/<chunk>.h5              ground truth of every image (see ``_FIELDS``)
  manifest.csv                   id, path, identity, split, kind, sequence, frame, expression, age
  contact_sheet.png              image, detail map and shaded detailed geometry of a few people
  summary.json                   counts, detector_rate, images_per_s
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facedet3d.atomic import write_json_atomic
from facedet3d.data.manifest import COLUMNS as MANIFEST_COLUMNS
from facedet3d.data.manifest import SPLITS, write_csv
from facedet3d.data.records import read_records, read_timings, stack_fields, write_records, write_timing
from facedet3d.errors import UserError
from facedet3d.paths import Results
from facedet3d.synth import sampling

log = logging.getLogger(__name__)

def n_chunks(config: dict) -> int:
    s = config["synth"]
    return math.ceil(s["n_identities"] / s["identities_per_chunk"])


def chunks(config: dict) -> list[int]:
    """One chunk (Snakemake job) per ``synth.identities_per_chunk`` identities."""
    return list(range(n_chunks(config)))


def chunk_identities(config: dict, chunk: int) -> range:
    s = config["synth"]
    if not 0 <= chunk < n_chunks(config):
        raise UserError(f"chunk {chunk} does not exist: this config has chunks 0..{n_chunks(config) - 1}")
    per = s["identities_per_chunk"]
    return range(chunk * per, min(s["n_identities"], (chunk + 1) * per))


def run_chunk(config: dict, chunk: int) -> Path:
    """Render every shot of the chunk's identities; write their PNGs and one record file."""
    from facedet3d.data.detect import FaceDetector
    from facedet3d.face.wrinkles import WrinkleBank
    from facedet3d.synth.render import SynthRenderer

    s, seed = config["synth"], config["seed"]
    paths = Results.of(config)
    final = paths.synth_images(chunk)
    name = final.name
    images_tmp = final.with_name(f".{name}.tmp")
    shutil.rmtree(images_tmp, ignore_errors=True)
    images_tmp.mkdir(parents=True)

    splits = sampling.assign_splits(s["n_identities"], s["split"], seed)
    renderer = SynthRenderer(s["mesh_resolution"], s["image_size"], s["texture_size"])
    detector = FaceDetector() if s["detector_check"] else None
    fields: dict[str, list] = defaultdict(list)
    start = time.perf_counter()
    identities = chunk_identities(config, chunk)
    with tqdm(total=len(identities), desc=f"synth chunk {name}", unit="identity") as bar:
        for index in identities:
            rng = sampling.identity_rng(seed, index)
            person = sampling.sample_identity(index, splits[index], seed, renderer.n_shape, renderer.n_albedo,
                                              tuple(s["age_range"]), rng)
            bank = WrinkleBank(person.wrinkles, s["detail_size"])
            texture = renderer.texture(person.albedo)
            shots = sampling.sample_shots(person, s["expressions_per_identity"], s["videos_per_identity"],
                                          s["video_frames"], s["max_yaw_deg"], rng)
            for shot in shots:
                detail = bank.detail_map(shot.aus, person.age)
                result = renderer.render(person, shot, detail, texture)
                rel = f"images/{name}/{shot.id}.png"
                _save_png(images_tmp / f"{shot.id}.png", result.image)
                boxes = detector.detect(result.image) if detector else []
                _append(fields, person, shot, rel, result, detail, texture, len(boxes))
            bar.update(1)
    elapsed = time.perf_counter() - start
    records = stack_fields(fields)
    path = write_records(paths.chunk("synth", chunk), records,
                         attrs={"chunk": chunk, "seed": seed, "n": len(fields["id"])})
    write_timing(paths.chunk_timing("synth", chunk), elapsed, len(fields["id"]))
    shutil.rmtree(final, ignore_errors=True)
    images_tmp.rename(final)
    log.info("chunk %s: %d images in %.1f s", name, len(fields["id"]), elapsed)
    return path


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG", compress_level=1)


def _append(fields, person, shot, rel, result, detail, texture, n_faces) -> None:
    row = {
        "id": shot.id, "path": rel, "identity": person.name, "split": person.split, "kind": shot.kind,
        "sequence": shot.sequence, "frame": shot.frame, "expression": shot.expression,
        "age": np.float32(person.age), "aus": shot.aus, "shape": person.shape, "expr": result.expr,
        "albedo": person.albedo, "pose": shot.pose, "distance": np.float32(shot.distance),
        "offset": shot.offset, "focal": np.float32(result.focal), "sh": result.sh,
        "landmarks": result.landmarks, "detail": detail.astype(np.float16), "texture": texture,
        "n_faces": np.int32(n_faces),
    }
    for key, value in row.items():
        fields[key].append(value)


def _chunk_paths(config: dict) -> list[Path]:
    paths = [Results.of(config).chunk("synth", c) for c in chunks(config)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"synth chunks missing: {', '.join(map(str, missing))}; run `facedet3d synth --chunk N` first")
    return paths


_SMALL = ["id", "path", "identity", "split", "kind", "sequence", "frame", "expression", "age", "n_faces"]


def merge(config: dict) -> dict:
    """Write manifest.csv, the contact sheet and summary.json from finished chunks."""
    paths = Results.of(config)
    chunk_paths = _chunk_paths(config)
    rows: dict[str, list] = defaultdict(list)
    for path in chunk_paths:
        for key, value in read_records(path, _SMALL).items():
            rows[key].extend(value.tolist())
    seconds, _ = read_timings(paths.chunk_timing("synth", c) for c in chunks(config))
    _remove_stale_chunks(paths, chunk_paths)
    # The manifest format ingest writes too; `chunk` is left empty (ingest numbers its own chunks).
    rows["age"] = [f"{a:.2f}" for a in rows["age"]]
    write_csv(paths.synth_manifest, MANIFEST_COLUMNS,
              [{c: rows[c][i] for c in MANIFEST_COLUMNS if c in rows} for i in range(len(rows["id"]))])
    summary = _summary(config, rows, seconds)
    write_json_atomic(paths.summary("synth"), summary)
    return summary


def _remove_stale_chunks(paths: Results, current: list[Path]) -> None:
    """Chunks of an earlier run with more chunks: later stages look images up by id in every chunk."""
    keep = {p.name for p in current}
    for stale in sorted(paths.chunk("synth", 0).parent.glob("*.h5")):
        if stale.name not in keep:
            log.info("removing %s (not a chunk of this config)", stale)
            for suffix in (".h5", ".timing.json"):
                stale.with_suffix(suffix).unlink(missing_ok=True)
            shutil.rmtree(paths.synth_images(stale.stem), ignore_errors=True)


def _summary(config: dict, rows: dict, seconds: float) -> dict:
    s = config["synth"]
    n = len(rows["id"])
    split_ids = defaultdict(set)
    for ident, split in zip(rows["identity"], rows["split"]):
        split_ids[split].add(ident)
    detected = sum(1 for k in rows["n_faces"] if k >= 1)
    return {
        "n_identities": len(set(rows["identity"])),
        "n_images": n,
        "n_stills": sum(1 for k in rows["kind"] if k == "image"),
        "n_video_frames": sum(1 for k in rows["kind"] if k == "video"),
        "n_videos": len({q for q in rows["sequence"] if q}),
        "identities_per_split": {k: len(split_ids.get(k, ())) for k in SPLITS},
        "images_per_split": {k: sum(1 for x in rows["split"] if x == k) for k in SPLITS},
        "detector_rate": detected / n if s["detector_check"] else None,
        "detector": "dlib HOG frontal face detector" if s["detector_check"] else None,
        "n_multiple_faces": sum(1 for k in rows["n_faces"] if k > 1),
        "render_seconds": round(seconds, 2),
        "images_per_s_per_job": round(n / seconds, 3) if seconds else None,
        "image_size": s["image_size"],
        "detail_size": s["detail_size"],
        "texture_size": s["texture_size"],
    }


def figure(config: dict) -> Path:
    """The contact sheet (its own job: its settings rerun nothing else)."""
    from facedet3d.synth.sheet import contact_sheet

    return contact_sheet(config, _chunk_paths(config), Results.of(config).contact_sheet)


def run(config: dict) -> dict:
    """Every chunk, the merge and the contact sheet (for use without Snakemake)."""
    for chunk in chunks(config):
        run_chunk(config, chunk)
    summary = merge(config)
    figure(config)
    return summary
