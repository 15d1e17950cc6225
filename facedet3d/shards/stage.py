"""Stage `shards`: training shards for DetP (maps at detp_size²) and RCAN (×4 patch pairs, Eq. 19).

Joins every extract record (``extract/chunks/*.h5``) with its annotation
(``annotate/chunks/*.h5``) by id; rows without an annotation are skipped and counted.
Writes under ``<results_dir>/shards/``:
  detp-<split>-NNN.h5   at most shards.shard_size samples each, sorted by id: detail
                        (detp_size², float16 mm), texture (texture_size², uint8),
                        texture_mask, aus, expr, shape, albedo, pose, translation, focal, sh,
                        facenet, age_dist, age, identity, sequence, frame (int, -1 for
                        images), kind, id; with synthetic data also gt_detail and gt_aus.
  rcan-<split>-NNN.h5   the same images (same grouping): rcan_patches_per_image random HR
                        patches (rcan_patch², float16) of the full-resolution extracted detail
                        map and their ×4 area-average downsample (lr), with id, y, x; the
                        seed is an attribute. Positions come from
                        np.random.default_rng([seed, 0x5CA1, crc32(id)]): independent of sharding.
  index.json            shards (path, sha256, n, kind, split), config, code_version, fields
  summary.json          counts per split/kind, n_skipped_unannotated, float16 error, bytes
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

from facedet3d.atomic import write_json_atomic
from facedet3d.data.manifest import manifest_chunks
from facedet3d.data.uvmaps import resize_map
from facedet3d.errors import UserError
from facedet3d.paths import Results
from facedet3d.shards.format import code_version, sha256_file, write_shard

log = logging.getLogger(__name__)

RCAN_SCALE = 4
_RCAN_STREAM = 0x5CA1
# Copied per row from the extract records / the annotation (when present in the source).
_EXTRACT_VECTORS = ("expr", "shape", "albedo", "pose", "translation", "focal", "sh")
_ANNOTATE_VECTORS = ("aus", "facenet", "age_dist", "age")
_STRINGS = ("id", "identity", "sequence", "kind", "split")


def _chunk_paths(results: Results, stage: str) -> list[Path]:
    """The chunk records of the manifest's chunks (never a file left over from an earlier run)."""
    paths = [results.chunk(stage, c) for c in manifest_chunks(results.manifest)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{stage} chunks missing: {', '.join(map(str, missing))}; run `facedet3d {stage}` first")
    return paths


def _strings(ds) -> np.ndarray:
    return ds.asstr()[()]


def _frame(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _row(f: h5py.File, name: str, i: int):
    ds = f[name]
    return ds.asstr()[i] if h5py.check_string_dtype(ds.dtype) else ds[i]


def rcan_positions(seed: int, image_id: str, size: int, patch: int, count: int) -> np.ndarray:
    """(count, 2) int32 top-left (y, x) of the RCAN patches of one image; depends on seed and id only."""
    rng = np.random.default_rng([int(seed), _RCAN_STREAM, zlib.crc32(image_id.encode("utf-8"))])
    return rng.integers(0, size - patch + 1, size=(count, 2)).astype(np.int32)


def downsample(hr: np.ndarray, scale: int = RCAN_SCALE) -> np.ndarray:
    """Area average over scale×scale blocks of (..., H, W) float maps, in float32."""
    h, w = hr.shape[-2:]
    x = np.asarray(hr, np.float32).reshape(*hr.shape[:-2], h // scale, scale, w // scale, scale)
    return x.mean(axis=(-3, -1))


class _Error:
    """Running max abs and sum of squares of float16 rounding, in mm."""

    def __init__(self):
        self.max, self.sq, self.n = 0.0, 0.0, 0

    def add(self, exact: np.ndarray, stored: np.ndarray) -> None:
        d = stored.astype(np.float64) - exact.astype(np.float64)
        self.max = max(self.max, float(np.abs(d).max(initial=0.0)))
        self.sq += float((d * d).sum())
        self.n += d.size

    def result(self) -> dict:
        return {"max_abs_mm": self.max, "rms_mm": float(np.sqrt(self.sq / self.n)) if self.n else None}


def run(config: dict) -> dict:
    """Write all shards, index.json and summary.json; returns the summary."""
    cfg = config["shards"]
    seed = int(config["seed"])
    results = Results.of(config)
    out = results.stage("shards")
    ext_paths = _chunk_paths(results, "extract")
    ann_paths = _chunk_paths(results, "annotate")

    ann_files = [h5py.File(p, "r") for p in ann_paths]
    ext_files = [h5py.File(p, "r") for p in ext_paths]
    try:
        annotated: dict[str, tuple[int, int]] = {}
        for c, f in enumerate(ann_files):
            for r, image_id in enumerate(_strings(f["id"])):
                annotated[str(image_id)] = (c, r)
        by_split: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
        skipped, seen = [], set()
        for c, f in enumerate(ext_files):
            if "id" not in f or len(f["id"]) == 0:
                continue
            for r, (image_id, split) in enumerate(zip(_strings(f["id"]), _strings(f["split"]))):
                image_id = str(image_id)
                if image_id in seen:
                    raise UserError(f"id {image_id!r} appears twice in the extract chunks ({ext_paths[c]})")
                seen.add(image_id)
                if image_id not in annotated:
                    skipped.append(image_id)
                    continue
                by_split[str(split)].append((image_id, c, r))
        truth = None
        if (config.get("data") or {}).get("source") == "synthetic":
            from facedet3d.synth.truth import SyntheticGroundTruth

            truth = SyntheticGroundTruth(results.root)
        entries, summary = _write_all(cfg, seed, out, by_split, ext_files, ann_files, annotated, truth)
    finally:
        for f in ext_files + ann_files:
            f.close()

    summary["n_skipped_unannotated"] = len(skipped)
    summary["skipped_unannotated_ids"] = sorted(skipped)[:50]
    if skipped:
        log.warning("shards: %d extracted images have no annotation and were skipped", len(skipped))
    fields = _fields_doc(cfg, truth is not None)
    index = {"shards": entries, "config": {**cfg, "seed": seed}, "code_version": code_version(), "fields": fields}
    write_json_atomic(results.shard_index, index)
    # Shards of an earlier run that the new index no longer lists (fewer samples, other sizes).
    listed = {e["path"] for e in entries}
    for stale in sorted(out.glob("detp-*.h5")) + sorted(out.glob("rcan-*.h5")):
        if stale.name not in listed:
            stale.unlink()
    write_json_atomic(results.summary("shards"), summary)
    return summary


def _write_all(cfg, seed, out, by_split, ext_files, ann_files, annotated, truth):
    entries = []
    counts: dict = {"detp": {}, "rcan": {}}
    sizes = {"detp": 0, "rcan": 0}
    err_detail, err_gt, err_patch = _Error(), _Error(), _Error()
    for split in sorted(by_split):
        items = sorted(by_split[split])
        n_shards = (len(items) + cfg["shard_size"] - 1) // cfg["shard_size"]
        for s in range(n_shards):
            group = items[s * cfg["shard_size"]:(s + 1) * cfg["shard_size"]]
            detp = _detp_fields(cfg, group, ext_files, ann_files, annotated, truth, err_detail, err_gt)
            name = f"detp-{split}-{s:03d}.h5"
            write_shard(out / name, detp, attrs={"kind": "detp", "split": split,
                                                 "detp_size": cfg["detp_size"], "texture_size": cfg["texture_size"]},
                        compression=cfg["compression"])
            entries.append(_entry(out, name, "detp", split, len(group)))
            sizes["detp"] += entries[-1]["bytes"]
            counts["detp"][split] = counts["detp"].get(split, 0) + len(group)
            if cfg["rcan_patches_per_image"] == 0:
                continue
            rcan = _rcan_fields(cfg, seed, group, ext_files, err_patch)
            name = f"rcan-{split}-{s:03d}.h5"
            write_shard(out / name, rcan, attrs={"kind": "rcan", "split": split, "seed": seed,
                                                 "scale": RCAN_SCALE, "rcan_patch": cfg["rcan_patch"],
                                                 "position_rng": "default_rng([seed, 0x5CA1, crc32(id)])"},
                        compression=cfg["compression"])
            entries.append(_entry(out, name, "rcan", split, len(rcan["id"])))
            sizes["rcan"] += entries[-1]["bytes"]
            counts["rcan"][split] = counts["rcan"].get(split, 0) + len(rcan["id"])
    summary = {
        "counts": counts,
        "n_samples": sum(counts["detp"].values()),
        "n_rcan_patches": sum(counts["rcan"].values()),
        "n_shards": {"detp": sum(e["kind"] == "detp" for e in entries),
                     "rcan": sum(e["kind"] == "rcan" for e in entries)},
        "bytes": sizes,
        # float16 storage error vs the float32 values it rounds (mm), per stored map kind.
        "float16_error": {"detail": err_detail.result(), "gt_detail": err_gt.result() if truth else None,
                          "rcan_patches": err_patch.result()},
    }
    return entries, summary


def _entry(out: Path, name: str, kind: str, split: str, n: int) -> dict:
    path = out / name
    return {"path": name, "sha256": sha256_file(path), "n": n, "kind": kind, "split": split,
            "bytes": path.stat().st_size}


def _detp_fields(cfg, group, ext_files, ann_files, annotated, truth, err_detail, err_gt) -> dict:
    rows: dict[str, list] = defaultdict(list)
    d, t = cfg["detp_size"], cfg["texture_size"]
    for image_id, c, r in group:
        f = ext_files[c]
        for key in _STRINGS:
            rows[key].append(str(_row(f, key, r)) if key in f else "")
        rows["frame"].append(_frame(_row(f, "frame", r)) if "frame" in f else -1)
        detail = resize_map(np.asarray(f["detail"][r], np.float32), d)
        stored = detail.astype(np.float16)
        err_detail.add(detail, stored)
        rows["detail"].append(stored)
        rows["texture"].append(np.asarray(resize_map(np.asarray(f["texture"][r], np.uint8), t), np.uint8))
        if "texture_mask" in f:
            mask = np.asarray(f["texture_mask"][r], np.uint8)
            rows["texture_mask"].append(resize_map(mask * 255, t) >= 128)
        for key in _EXTRACT_VECTORS:
            if key in f:
                rows[key].append(np.asarray(f[key][r], np.float32))
        ac, ar = annotated[image_id]
        for key in _ANNOTATE_VECTORS:
            if key in ann_files[ac]:
                rows[key].append(np.asarray(ann_files[ac][key][ar], np.float32))
        if truth is not None:
            gt = truth.get(image_id)
            gt_detail = resize_map(gt.detail, d)
            gt_stored = gt_detail.astype(np.float16)
            err_gt.add(gt_detail, gt_stored)
            rows["gt_detail"].append(gt_stored)
            rows["gt_aus"].append(np.asarray(gt.aus, np.float32))
    return {k: np.stack(v) if isinstance(v[0], np.ndarray) else np.asarray(v) for k, v in rows.items()}


def _rcan_fields(cfg, seed, group, ext_files, err_patch) -> dict:
    p, k = cfg["rcan_patch"], cfg["rcan_patches_per_image"]
    hrs, lrs, ids, pos = [], [], [], []
    for image_id, c, r in group:
        full = np.asarray(ext_files[c]["detail"][r], np.float32)
        size = full.shape[0]
        if size < p:
            raise UserError(f"shards.rcan_patch ({p}) exceeds the extracted detail map size ({size}) of {image_id}; "
                            "lower shards.rcan_patch or raise extract.detail_size")
        yx = rcan_positions(seed, image_id, size, p, k)
        for y, x in yx:
            hr = full[y:y + p, x:x + p]
            lr = downsample(hr)
            lr16 = lr.astype(np.float16)
            err_patch.add(lr, lr16)
            hrs.append(hr.astype(np.float16))  # exact: the extracted map is float16 already when read from records
            lrs.append(lr16)
            ids.append(image_id)
            pos.append((y, x))
    pos_a = np.asarray(pos, np.int32).reshape(-1, 2)
    return {"hr": np.stack(hrs), "lr": np.stack(lrs), "id": np.asarray(ids, dtype=object),
            "y": pos_a[:, 0], "x": pos_a[:, 1]}


def _fields_doc(cfg: dict, synthetic: bool) -> dict:
    d, t, p = cfg["detp_size"], cfg["texture_size"], cfg["rcan_patch"]
    detp = {
        "detail": f"({d},{d}) float16 mm, extracted detail map area-resized to detp_size",
        "texture": f"({t},{t},3) uint8 texture map",
        "texture_mask": f"({t},{t}) bool valid texels (when the extract records have one)",
        "aus": "(17,) float32 annotated AU intensities", "expr": "(17,) float32 expression (AU) coefficients",
        "shape": "float32 shape coefficients", "albedo": "float32 albedo coefficients",
        "pose": "(3,) float32 yaw, pitch, roll (rad)", "translation": "(3,) float32", "focal": "float32",
        "sh": "(27,) float32 SH lighting", "facenet": "(512,) float32 identity embedding",
        "age_dist": "(81,) float32", "age": "float32 years",
        "id": "str", "identity": "str", "split": "str", "kind": "str image|video", "sequence": "str ('' for images)",
        "frame": "int64 frame number (-1 for images)",
    }
    if synthetic:
        detp["gt_detail"] = f"({d},{d}) float16 mm, generator ground-truth detail resized to detp_size"
        detp["gt_aus"] = "(17,) float32 ground-truth AU intensities"
    rcan = {"hr": f"({p},{p}) float16 mm patch of the full-resolution extracted detail map",
            "lr": f"({p // RCAN_SCALE},{p // RCAN_SCALE}) float16 mm, hr area-averaged ×{RCAN_SCALE}",
            "id": "str source image", "y": "int32 patch top", "x": "int32 patch left"}
    return {"detp": detp, "rcan": rcan}
