"""How well an extracted detail map matches the ground truth: correlation at fine scales."""

from __future__ import annotations

import cv2
import numpy as np

from facedet3d.data.uvmaps import resize_map
from facedet3d.face import layout

# Gaussian sigma (mm) per millimetre of the high-pass cut-off wavelength: a Gaussian low-pass of
# sigma passes half the amplitude at the wavelength pi·sigma·sqrt(2 / ln 2) ≈ 5.34 sigma.
_SIGMA_PER_CUTOFF = 1.0 / 5.34


def resample(detail: np.ndarray, size: int) -> np.ndarray:
    """A UV map (S, S) resampled to (size, size) float32: area averaging down, bilinear up."""
    return resize_map(np.asarray(detail, dtype=np.float32), size)


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


def detail_moments(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, size: int = 256,
                   cutoff_mm: float = 15.0, margin_mm: float = 3.0) -> np.ndarray:
    """Sums (n, Σp, Σg, Σp², Σg², Σpg) (6,) float64 of an extracted detail map (S, S) and the
    ground truth (S', S'), prepared as in :func:`detail_correlation`; zeros when fewer than
    100 texels remain. Summed over images they give the pooled correlation
    (:func:`correlation_from_moments`)."""
    p = resample(pred, size)
    g = resample(gt, size)
    region = layout.face_mask_uv(size, margin_mm)
    if mask is not None:
        m = resample(np.asarray(mask, np.float32), size) > 0.99
        region &= m
    if region.sum() < 100:
        return np.zeros(6)
    p = masked_highpass(p, region, cutoff_mm)[region].astype(np.float64)
    g = masked_highpass(g, region, cutoff_mm)[region].astype(np.float64)
    return np.array([p.size, p.sum(), g.sum(), (p * p).sum(), (g * g).sum(), (p * g).sum()])


def correlation_from_moments(moments: np.ndarray) -> float:
    """Pearson correlation from the sums of :func:`detail_moments` (6,); NaN when undefined."""
    n, sp, sg, spp, sgg, spg = (float(v) for v in moments)
    if n < 2:
        return float("nan")
    cov, vp, vg = spg - sp * sg / n, spp - sp * sp / n, sgg - sg * sg / n
    return cov / np.sqrt(vp * vg) if vp > 0 and vg > 0 else float("nan")


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
    return float(correlation_from_moments(detail_moments(pred, gt, mask, size, cutoff_mm, margin_mm)))
