"""The three extraction backends behind one interface: a manifest row in, one record out.

Every backend returns the same fields so a chunk's records stack into one file:
  box (4,) face box px (left, top, right, bottom) · n_faces · image_size (2,) H, W
  landmarks (68, 2) px · landmark_error_px (fitted vs detected, jaw excluded)
  shape (Ks,) · expr (Ke,) · albedo (Ka,) · pose (3,) yaw, pitch, roll rad
  translation (3,) mm and focal px: p_cam = R(pose) (p - FACE_PIVOT) + translation, i.e. the
  camera-space position of camera.FACE_PIVOT (the synthetic renders': (offset_x, offset_y, -distance))
  sh (27,) · texture (T, T, 3) uint8 · texture_mask (T, T) bool · detail (S, S) float16 mm
  detail_corr: correlation with the generator's ground truth (NaN without one) · detail_moments
  (6,): its sums, for a pooled correlation · detail_sfs_corr, detail_sfs_moments: the same for
  shape from shading alone, before the detail network (builtin only) · notes
Values a backend does not know are NaN. A problem with one input raises a UserError
(BadImageError, NoFaceError, FdsFolderError): the stage writes it to rejects.csv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedet3d.data.manifest import resolve_path
from facedet3d.data.uvmaps import resize_map
from facedet3d.errors import UserError

N_SHAPE_NAN = 1  # width of the parameter fields when a backend has no model fit


def _nan(*shape: int) -> np.ndarray:
    return np.full(shape, np.nan, dtype=np.float32)


def fitting_model(config: dict):
    """The morphable model the builtin backend fits (None for backends that fit none)."""
    s = config["extract"]
    if s["backend"] == "fds":
        return None
    if s["model"] == "bfm2017":
        from facedet3d.face.bfm2017 import load_bfm2017

        if not s["bfm_path"]:
            raise UserError("config key 'extract.bfm_path' must name a BFM2017 .h5 file when extract.model is bfm2017")
        return load_bfm2017(s["bfm_path"])
    from facedet3d.face.synthetic import synthetic_model

    return synthetic_model(s["mesh_resolution"] if s["backend"] == "builtin" else config["synth"]["mesh_resolution"])


def builtin_extractor(config: dict):
    """The :class:`~facedet3d.extract.builtin.BuiltinExtractor` the config's ``extract`` section asks for."""
    from facedet3d.extract.builtin import BuiltinExtractor
    from facedet3d.extract.detail_net import WEIGHTS, load_weights

    s = config["extract"]
    net = load_weights(s["detail_net_weights"] or WEIGHTS) if s["detail_net"] else None
    return BuiltinExtractor(fitting_model(config), texture_size=s["texture_size"], detail_size=s["detail_size"],
                            mesh_resolution=s["mesh_resolution"], detail_net=net)


# Maps scored against the generator's ground truth: the extracted detail map and, for the builtin
# backend, shape from shading's alone (before the detail network). Each gives two record fields.
SCORED_MAPS = ("detail", "detail_sfs")
SCORE_FIELDS = tuple(f"{name}_{kind}" for name in SCORED_MAPS for kind in ("corr", "moments"))


def _score_fields(maps: dict, truth: np.ndarray | None, mask: np.ndarray | None = None) -> dict:
    """Record fields ``<name>_corr`` (the map's correlation with the ground truth ``truth``)
    and ``<name>_moments`` (6,) (its sums, for the pooled correlation over a split) for each
    name in SCORED_MAPS (maps: name -> (S, S) mm); NaN without a truth."""
    from facedet3d.extract.quality import correlation_from_moments, detail_moments

    fields = {}
    for name in SCORED_MAPS:
        moments = detail_moments(maps[name], truth, mask) if truth is not None else np.full(6, np.nan)
        corr = correlation_from_moments(moments) if np.isfinite(moments).all() else np.nan
        fields |= {f"{name}_corr": np.float32(corr), f"{name}_moments": moments}
    return fields


class _GroundTruthScorer:
    """Scores extracted detail maps against the synthetic generator's ground truth."""

    def __init__(self, config: dict):
        self.truth = None
        if config["data"]["source"] == "synthetic":
            from facedet3d.synth.truth import SyntheticGroundTruth

            self.truth = SyntheticGroundTruth(config["results_dir"])

    def __call__(self, row: dict, maps: dict, mask: np.ndarray) -> dict:
        """The score fields (:func:`_score_fields`) of one image's maps; the truth is read once."""
        known = self.truth is not None and row["id"] in self.truth
        return _score_fields(maps, self.truth.get(row).detail if known else None, mask)


class BuiltinBackend:
    """Detection, landmarks, model fitting, unwrapping and shape-from-shading details."""

    name = "builtin"

    def __init__(self, config: dict):
        self.max_side = config["ingest"]["max_image_side"]
        self.extractor = builtin_extractor(config)
        self.score = _GroundTruthScorer(config)

    def extract_row(self, row: dict, manifest_dir: Path) -> dict:
        from facedet3d.data.images import load_image

        loaded = load_image(resolve_path(manifest_dir, row), max_side=self.max_side)
        r = self.extractor.extract(loaded.rgb)
        notes = list(loaded.notes) + ([f"{r.n_faces} faces found, kept the largest"] if r.n_faces > 1 else [])
        return {
            "box": np.asarray(r.box, np.float32), "n_faces": np.int32(r.n_faces),
            "image_size": np.asarray(loaded.rgb.shape[:2], np.int32),
            "landmarks": np.asarray(r.landmarks, np.float32), "landmark_error_px": np.float32(r.landmark_error_px),
            "shape": np.asarray(r.shape, np.float32), "expr": np.asarray(r.expr, np.float32),
            "albedo": np.asarray(r.albedo, np.float32), "pose": np.asarray(r.pose, np.float32),
            "translation": np.asarray(r.translation, np.float32), "focal": np.float32(r.focal),
            "sh": np.asarray(r.sh, np.float32), "texture": r.texture, "texture_mask": r.texture_mask,
            "detail": r.detail.astype(np.float16),
            **self.score(row, {"detail": r.detail, "detail_sfs": r.detail_sfs}, r.texture_mask),
            "notes": "; ".join(notes),
        }


class FdsBackend:
    """Import the FDS output folder of each image: ``fds_dir/<image stem>/``."""

    name = "fds"

    def __init__(self, config: dict):
        s = config["extract"]
        if not s["fds_dir"] or not Path(s["fds_dir"]).is_dir():
            raise UserError(f"config key 'extract.fds_dir' must name the folder of FDS outputs, got {s['fds_dir']!r}")
        self.root = Path(s["fds_dir"])
        self.texture_size, self.detail_size = s["texture_size"], s["detail_size"]

    def extract_row(self, row: dict, manifest_dir: Path) -> dict:
        from facedet3d.extract.fds import import_fds_folder

        r = import_fds_folder(self.root / Path(row["path"]).stem, self.detail_size, self.texture_size)
        cam = r.camera
        return {
            "box": _nan(4), "n_faces": np.int32(1), "image_size": np.zeros(2, np.int32),
            "landmarks": _nan(68, 2), "landmark_error_px": np.float32(np.nan),
            "shape": _nan(N_SHAPE_NAN), "expr": _nan(N_SHAPE_NAN), "albedo": _nan(N_SHAPE_NAN),
            "pose": np.asarray(cam.get("pose", _nan(3)), np.float32),
            "translation": np.asarray(cam.get("translation", _nan(3)), np.float32),
            "focal": np.float32(cam.get("focal", np.nan)), "sh": _nan(27),
            "texture": r.texture, "texture_mask": r.texture_mask, "detail": r.detail.astype(np.float16),
            **_score_fields({}, None),
            "notes": "; ".join([f"uv_layout={r.uv_layout}", *r.notes]),
        }


class SyntheticGtBackend:
    """The generator's ground truth, for upper-bound studies only (never a silent default)."""

    name = "synthetic-gt"

    def __init__(self, config: dict):
        from facedet3d.synth.truth import SyntheticGroundTruth

        if config["data"]["source"] != "synthetic":
            raise UserError("extract.backend 'synthetic-gt' needs data.source 'synthetic'")
        self.truth = SyntheticGroundTruth(config["results_dir"])
        s = config["extract"]
        self.texture_size, self.detail_size = s["texture_size"], s["detail_size"]

    def extract_row(self, row: dict, manifest_dir: Path) -> dict:
        gt = self.truth.get(row)
        detail = resize_map(gt.detail.astype(np.float32), self.detail_size)
        texture = resize_map(gt.texture, self.texture_size)
        return {
            "box": _nan(4), "n_faces": np.int32(1), "image_size": np.zeros(2, np.int32),
            "landmarks": np.asarray(gt.landmarks, np.float32), "landmark_error_px": np.float32(0.0),
            "shape": np.asarray(gt.shape, np.float32), "expr": np.asarray(gt.expr, np.float32),
            "albedo": np.asarray(gt.albedo, np.float32), "pose": np.asarray(gt.pose, np.float32),
            "translation": np.array([gt.offset[0], gt.offset[1], -gt.distance], np.float32), "focal": np.float32(gt.focal),
            "sh": np.asarray(gt.sh, np.float32), "texture": texture,
            "texture_mask": np.ones(texture.shape[:2], bool), "detail": detail.astype(np.float16),
            **_score_fields({}, None),
            "detail_corr": np.float32(1.0),  # the truth itself (its moments stay NaN: nothing to pool)
            "notes": "synthetic ground truth",
        }


BACKENDS = {"builtin": BuiltinBackend, "fds": FdsBackend, "synthetic-gt": SyntheticGtBackend}


def make_backend(config: dict):
    return BACKENDS[config["extract"]["backend"]](config)
