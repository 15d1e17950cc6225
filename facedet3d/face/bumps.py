"""Smooth analytic primitives the face template and the synthetic model are built from."""

from __future__ import annotations

import numpy as np


def gauss(u):
    """Unnormalised Gaussian exp(-u²/2)."""
    return np.exp(-0.5 * u * u)


def gauss2(x, y, cx, cy, sx, sy):
    """2D axis-aligned Gaussian bump of height 1 centred at (cx, cy)."""
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def gauss_pair(x, y, cx, cy, sx, sy):
    """A mirrored pair of Gaussian bumps at (±cx, cy): even in x and smooth across the midline."""
    return gauss2(x, y, cx, cy, sx, sy) + gauss2(x, y, -cx, cy, sx, sy)


def sigmoid(u):
    """Logistic 1 / (1 + exp(-u)), written with tanh for stability."""
    return 0.5 * (1.0 + np.tanh(0.5 * u))


def smoothstep(e0, e1, u):
    """0 below e0, 1 above e1, a C¹ cubic in between."""
    t = np.clip((u - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
