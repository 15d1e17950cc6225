"""How well an extracted detail map matches the ground truth: correlation at fine scales."""

from __future__ import annotations

import cv2
import numpy as np

from facedet3d.face import layout

# Gaussian sigma (mm) per millimetre of the high-pass cut-off wavelength: a Gaussian low-pass of
# sigma passes half the amplitude at the wavelength pi·sigma·sqrt(2 / ln 2) ≈ 5.34 sigma.
_SIGMA_PER_CUTOFF = 1.0 / 5.34


def resample(detail: np.ndarray, size: int) -> np.ndarray:
    """A UV map (S, S) resampled to (size, size) float32: area averaging down, bilinear up."""
    detail = np.asarray(detail, dtype=np.float32)
    if detail.shape[0] == size:
        return detail
    interp = cv2.INTER_AREA if detail.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(detail, (size, size), interpolation=interp)


def masked_highpass(values: np.ndarray, mask: np.ndarray, cutoff_mm: float) -> np.ndarray:
    """Remove structure coarser than ``cutoff_mm`` from a UV map (S, S) over a mask (S, S).

    The low-pass is a normalised Gaussian convolution (only texels inside the mask count), so
    the mask's border adds no edge. Returns (S, S) float32, 0 outside the mask.
    """
    m = mask.astype(np.float32)
    sigma = cutoff_mm * _SIGMA_PER_CUTOFF * values.shape[0] / layout.SPAN  # texels

    def blur(a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(a, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)

    low = blur(values.astype(np.float32) * m) / np.maximum(blur(m), 1e-6)
    return (values.astype(np.float32) - low) * m


def detail_correlation(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, size: int = 256,
                       cutoff_mm: float = 15.0, margin_mm: float = 3.0) -> float:
    """Pearson correlation of an extracted detail map (S, S) with the ground truth (S', S').

    Both maps (mm, UV layout) are resampled to ``size``² (area averaging: at the default 256
    texels = 0.78 mm, the resolution of a 256² render of the 200 mm UV window), high-passed
    the same way (structure coarser than ``cutoff_mm`` removed), and compared over the face
    region (``layout.face_mask_uv``, shrunk by ``margin_mm``) ∩ ``mask`` (any size, e.g. the
    extraction's visibility mask; None = everywhere). Returns NaN when fewer than 100 texels
    remain or either map is constant there.
    """
    p = resample(pred, size)
    g = resample(gt, size)
    region = layout.face_mask_uv(size, margin_mm)
    if mask is not None:
        m = resample(np.asarray(mask, np.float32), size) > 0.99
        region &= m
    if region.sum() < 100:
        return float("nan")
    p = masked_highpass(p, region, cutoff_mm)[region]
    g = masked_highpass(g, region, cutoff_mm)[region]
    p, g = p - p.mean(), g - g.mean()
    denom = float(np.sqrt((p * p).sum() * (g * g).sum()))
    return float((p * g).sum() / denom) if denom > 0 else float("nan")
