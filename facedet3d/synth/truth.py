"""Backend `synthetic-gt`: the generator's own ground truth in place of an extraction.

For upper-bound studies only (how well could the later stages do with perfect extraction):
it must be named explicitly and it only works for images the synthetic generator made.
:class:`SyntheticGroundTruth` indexes ``<results_dir>/synth/chunks/*.h5`` once (id → chunk
file, row) and reads the requested rows lazily with h5py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from facedet3d.errors import UserError
from facedet3d.paths import Results

# Fields returned for every image (the generator writes all of them, see data.synth_stage).
FIELDS = ("detail", "texture", "shape", "expr", "albedo", "pose", "sh", "landmarks", "aus",
          "distance", "offset", "focal", "age")


@dataclass(frozen=True)
class GroundTruth:
    """One synthetic image's ground truth; maps are in the project's UV layout (``layout``)."""

    id: str
    detail: np.ndarray  # (S, S) float32, mm
    texture: np.ndarray  # (T, T, 3) uint8 albedo texture
    shape: np.ndarray  # (Ks,) shape coefficients
    expr: np.ndarray  # (Ke,) expression coefficients
    albedo: np.ndarray  # (Ka,) albedo coefficients
    pose: np.ndarray  # (3,) yaw, pitch, roll (radians)
    sh: np.ndarray  # spherical-harmonics lighting
    landmarks: np.ndarray  # (68, 2) image landmarks
    aus: np.ndarray  # (17,) AU intensities
    distance: float
    offset: np.ndarray
    focal: float
    age: float
    identity: str = ""
    split: str = ""
    uv_layout: str = "facedet3d"


class SyntheticGroundTruth:
    """Ground truth of synthetic images by manifest row (or id).

    Args:
        results_dir: the pipeline's results folder; its ``synth/chunks/*.h5`` are indexed.
    """

    def __init__(self, results_dir: str | Path):
        self.chunks_dir = Results(results_dir).chunk("synth", 0).parent
        paths = sorted(self.chunks_dir.glob("*.h5"))
        if not paths:
            raise UserError(f"the synthetic-gt backend needs the generator's ground truth, but {self.chunks_dir} "
                            "holds no chunk files; run `facedet3d synth` (data.source: synthetic) first")
        self._index: dict[str, tuple[Path, int]] = {}
        for path in paths:
            with h5py.File(path, "r") as f:
                if "id" not in f:
                    raise UserError(f"{path} is not a synthetic ground-truth chunk (no 'id' field)")
                missing = [k for k in FIELDS if k not in f]
                if missing:
                    raise UserError(f"{path} lacks field(s) {', '.join(missing)}; re-run `facedet3d synth`")
                for row, image_id in enumerate(f["id"].asstr()[()]):
                    self._index[str(image_id)] = (path, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._index

    def locate(self, row: dict | str) -> tuple[Path, int]:
        """(chunk file, row) of a manifest row or id; UserError when it is not a synthetic image."""
        image_id = row if isinstance(row, str) else row.get("id", "")
        if image_id not in self._index:
            where = "" if isinstance(row, str) else f" ({row.get('path', '')})"
            raise UserError(f"manifest row '{image_id}'{where} is not a synthetic image: the synthetic-gt backend "
                            "only works on images made by the generator (data.source: synthetic)")
        return self._index[image_id]

    def get(self, row: dict | str) -> GroundTruth:
        """The ground truth of one manifest row (a dict with an ``id``) or id."""
        path, index = self.locate(row)
        with h5py.File(path, "r") as f:
            values = {k: f[k][index] for k in FIELDS}
            image_id = f["id"].asstr()[index]
            identity, split = (f[k].asstr()[index] if k in f else "" for k in ("identity", "split"))
        return GroundTruth(
            id=str(image_id),
            detail=np.asarray(values["detail"], dtype=np.float32),
            texture=np.asarray(values["texture"], dtype=np.uint8),
            shape=np.asarray(values["shape"]), expr=np.asarray(values["expr"]),
            albedo=np.asarray(values["albedo"]), pose=np.asarray(values["pose"]), sh=np.asarray(values["sh"]),
            landmarks=np.asarray(values["landmarks"]), aus=np.asarray(values["aus"]),
            distance=float(values["distance"]), offset=np.asarray(values["offset"]),
            focal=float(values["focal"]), age=float(values["age"]), identity=str(identity), split=str(split),
        )
