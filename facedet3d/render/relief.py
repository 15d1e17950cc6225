"""Look at a UV detail (displacement) map: shade it as a relief lit from the top left."""

from __future__ import annotations

import numpy as np

from facedet3d.face import layout


def shade_detail_map(detail: np.ndarray, exaggerate: float = 4.0) -> np.ndarray:
    """Relief shading (H, W) float in [0, 1] of a detail map (H, W) in mm over the UV square.

    The map is treated as a height field over the layout's 200 mm window, its
    slopes multiplied by ``exaggerate`` so sub-millimetre wrinkles show, and lit
    by a directional light from the top left; flat areas come out mid-grey.
    """
    detail = np.asarray(detail, dtype=np.float32)
    texel_mm = layout.SPAN / detail.shape[1]
    gy, gx = np.gradient(detail * exaggerate, texel_mm)
    # Normal of z = d(x, y) with rows running downwards (v): n ∝ (-dz/dx, +dz/drow, 1).
    nx, ny, nz = -gx, gy, np.ones_like(gx)
    norm = np.sqrt(nx**2 + ny**2 + nz**2)
    light = np.array([-0.5, 0.5, 0.7071], dtype=np.float32)  # from the top left, towards the viewer
    shade = (nx * light[0] + ny * light[1] + nz * light[2]) / norm
    return np.clip(0.5 + 0.9 * (shade - light[2]), 0.0, 1.0)
