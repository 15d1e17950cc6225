"""sRGB <-> linear RGB, the one pair of conversions (gamma 2.2, as the synthetic renders use)."""

from __future__ import annotations

import numpy as np

# (x / 255) ** 2.2 for every 8-bit value, in float32.
_DECODE = ((np.arange(256, dtype=np.float32) / 255.0) ** 2.2).astype(np.float32)


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """Linear RGB in [0, 1] -> sRGB uint8."""
    return (np.clip(linear, 0.0, 1.0) ** (1.0 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def srgb_decode(image: np.ndarray) -> np.ndarray:
    """sRGB uint8 -> linear RGB float32 in [0, 1] (a lookup table)."""
    return _DECODE[np.asarray(image, np.uint8)]
