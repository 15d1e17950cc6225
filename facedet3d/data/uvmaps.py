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


def area_downsample(maps, size: int, setting: str, source: str):
    """Maps (N, C, M, M) tensor -> (N, C, size, size) float by area averaging; returned as is when
    M == size. ``size`` must divide M: otherwise a UserError names the ``setting`` (config key)
    and the ``source`` of the maps (e.g. "the shards' detp_size")."""
    import torch.nn.functional as F

    from facedet3d.errors import UserError

    side = maps.shape[-1]
    if side == size:
        return maps
    if side % size:
        raise UserError(f"{setting} {size} must divide {source} {side}")
    return F.avg_pool2d(maps.float(), side // size)
