"""Target expressions: a name or AU intensities in, the 17 AUs y and the expression parameters α̂_e out."""

from __future__ import annotations

import numpy as np

from facedet3d.errors import UserError
from facedet3d.face.expressions import EXPRESSION_NAMES, expression_aus
from facedet3d.face.layout import AU_INDEX, AU_MAX, AU_NAMES

# Apex intensity of a named expression (the synthetic set's prototypes peak at 2.5-4.5).
NAMED_INTENSITY = 3.5


def parse_expression(text: str) -> np.ndarray:
    """``happy`` (a prototype name) or ``"AU12=2.5,AU6=1.8"`` -> AU intensities (17,) float32.

    AU names may drop the leading zero (AU6 = AU06); intensities are 0..5. Anything else is a
    UserError naming what is wrong and what is accepted.
    """
    name = text.strip().lower()
    if name in EXPRESSION_NAMES:
        return expression_aus(name, NAMED_INTENSITY)
    if "=" not in text:
        raise UserError(f"unknown expression {text!r}: give one of {', '.join(EXPRESSION_NAMES)} "
                        f"or AU intensities such as \"AU12=2.5,AU06=1.8\"")
    aus = np.zeros(len(AU_NAMES), np.float32)
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().upper()
        if key.startswith("AU") and key[2:].isdigit():
            key = f"AU{int(key[2:]):02d}"
        if not sep or key not in AU_INDEX:
            raise UserError(f"unknown action unit {part.strip()!r} in {text!r}; known: {', '.join(AU_NAMES)}")
        try:
            v = float(value)
        except ValueError:
            raise UserError(f"AU intensity {value.strip()!r} of {key} is not a number") from None
        if not 0.0 <= v <= AU_MAX:
            raise UserError(f"AU intensity {v} of {key} is outside 0..{AU_MAX:g}")
        aus[AU_INDEX[key]] = v
    return aus


class ExpressionTable:
    """α̂_e for target AUs: the mean fitted α_e of the ``k`` training images nearest in AUs.

    The morphable model's expression parameters are not AUs in general (BFM's are PCA
    coefficients), so a target given as AUs borrows the parameters of training faces showing
    those AUs — what DetP's training does with its random targets (y, α̂_e).
    """

    def __init__(self, aus: np.ndarray, expr: np.ndarray, k: int = 8):
        self.aus, self.expr, self.k = np.asarray(aus, np.float32), np.asarray(expr, np.float32), int(k)

    def __call__(self, target: np.ndarray) -> np.ndarray:
        d = np.abs(self.aus - np.asarray(target, np.float32)[None]).sum(1)
        nearest = np.argsort(d, kind="stable")[: self.k]
        return self.expr[nearest].mean(0)
