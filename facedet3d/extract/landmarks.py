"""The 68 iBUG 300-W landmarks on a detected face box: dlib's shape predictor.

Its weights (``shape_predictor_68_face_landmarks.dat``, trained on iBUG 300-W; non-commercial
licence) ship in the ``face-recognition-models`` package. The file is located without importing
that package (its ``__init__`` imports the deprecated ``pkg_resources``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from facedet3d.errors import UserError

PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
_INSTALL = "pip install face-recognition-models==0.3.0 (see pyproject.toml)"


def predictor_path() -> Path:
    """Path of dlib's 68-point predictor inside ``face_recognition_models``; UserError if missing."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the landmark predictor needs the face-recognition-models package: {_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall face-recognition-models: {_INSTALL}")
    return path


class LandmarkDetector:
    """dlib's 68-point shape predictor (ensemble of regression trees, ~2 ms per face).

    Args:
        path: the ``.dat`` model file; None = the one of ``face_recognition_models``.
    """

    def __init__(self, path: str | Path | None = None):
        import dlib

        path = Path(path) if path is not None else predictor_path()
        if not path.is_file():
            raise UserError(f"landmark predictor {path} not found: {_INSTALL}")
        self._predictor = dlib.shape_predictor(str(path))

    def detect(self, image: np.ndarray, box) -> np.ndarray:
        """Landmarks (68, 2) float32 pixel (column, row) for an RGB uint8 image (H, W, 3) and a
        face box with ``left, top, right, bottom`` (e.g. a :class:`~facedet3d.data.detect.FaceBox`).

        dlib reports integer pixel indices; 0.5 is added so they use the project's convention
        (the centre of pixel (row i, column j) is (j + 0.5, i + 0.5)).
        """
        import dlib

        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"landmarks need an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        rect = dlib.rectangle(int(box.left), int(box.top), int(box.right), int(box.bottom))
        shape = self._predictor(np.ascontiguousarray(image), rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return pts + 0.5
