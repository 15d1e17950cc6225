"""sRGB <-> linear RGB, the one pair of conversions (gamma 2.2, as the synthetic renders use)."""

from __future__ import annotations

import numpy as np

GAMMA = 2.2
# (x / 255) ** 2.2 for every 8-bit value, in float32.
_DECODE = ((np.arange(256, dtype=np.float32) / 255.0) ** GAMMA).astype(np.float32)


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Linear RGB in [0, 1] -> sRGB uint8."""
    return (np.clip(linear, 0.0, 1.0) ** (1.0 / GAMMA) * 255.0 + 0.5).astype(np.uint8)


def srgb_decode(image: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> linear RGB float32 in [0, 1] (a lookup table)."""
    return _DECODE[np.asarray(image, np.uint8)]


def to_linear(srgb):
    """sRGB floats in [0, 1] (numpy array or torch tensor) -> linear RGB, the same gamma."""
    return srgb.clip(0.0, 1.0) ** GAMMA


def to_srgb(linear):
    """Linear RGB floats (numpy array or torch tensor) -> sRGB floats in [0, 1]."""
    return linear.clip(0.0, 1.0) ** (1.0 / GAMMA)
