"""Resampling of square UV maps (texture, detail, mask) between resolutions."""

from __future__ import annotations

import cv2
import numpy as np


def resize_map(a: np.ndarray, size: int) -> np.ndarray:
    """A square map (S, S[, C]) at size²: area average when shrinking, bilinear when enlarging."""
    if a.shape[0] == size:
        return a
    interp = cv2.INTER_AREA if a.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(a, (size, size), interpolation=interp)
