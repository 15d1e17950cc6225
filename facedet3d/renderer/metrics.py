"""The renderer's figures on held-out people: image quality on the face, detail fidelity, bootstrap intervals.

  psnr, ssim      of a rendering against the photo, over the face mask only (SSIM: scikit-image's
                  map, 7-px windows, averaged over the mask);
  detail_fidelity corr(high-pass luminance of the rendering, high-pass luminance of the details'
                  shading L_Sph(G_D*, l) − L_Sph(G_P, l)) over the skin: do the geometry's details show
                  in the image (the paper's Fig. 8 as a number). The proxy's own shading is taken out
                  of the reference: its edges (nose, lids, lips) would otherwise dominate the high-pass,
                  and a rendering that ignores the details entirely scored 0.70 against it;
  detail_response corr(luminance change of the rendering, luminance change of the shading) when the
                  detail map goes from zero to D*: what R does with the details and nothing else;
  detail_strength the slope of that change on the shading's: how much of the details' contrast
                  shows (the model render, γ · shading in sRGB, sets the scale an exact renderer reaches).
Images are sRGB float (B, 3, S, S) in [0, 1]; masks (B, 1, S, S).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

_LUMA = (0.2126, 0.7152, 0.0722)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 1, S, S), Rec. 709 weights."""
    w = torch.tensor(_LUMA, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def high_pass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x − Gaussian blur(x, sigma px), reflect padding. (B, C, S, S) -> same."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    blur = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    blur = F.conv2d(F.pad(blur, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x - blur


def _centred(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor):
    """Per image of (B, 1, S, S) maps: the values of a and b over mask > 0.5, centred (float64)."""
    for ai, bi, mi in zip(a, b, mask):
        sel = mi[0] > 0.5
        x, y = ai[0][sel].double(), bi[0][sel].double()
        yield x - x.mean(), y - y.mean()


def masked_corr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per-image Pearson correlation of (B, 1, S, S) maps over mask > 0.5 -> (B,) (NaN when flat)."""
    out = []
    for x, y in _centred(a, b, mask):
        den = float(torch.sqrt((x * x).sum() * (y * y).sum()))
        out.append(float((x * y).sum()) / den if den > 0 else math.nan)
    return np.array(out)


def detail_fidelity(render: torch.Tensor, shading: torch.Tensor, shading_flat: torch.Tensor, skin: torch.Tensor,
                    sigma: float) -> np.ndarray:
    """(B,) corr of the high-passed luminance of a rendering and of the details' shading (shading of
    G_D* minus that of G_P), over the skin."""
    detail = luminance(shading) - luminance(shading_flat)
    return masked_corr(high_pass(luminance(render), sigma), high_pass(detail, sigma), skin)


def detail_response(render: torch.Tensor, render_flat: torch.Tensor, shading: torch.Tensor,
                    shading_flat: torch.Tensor, skin: torch.Tensor) -> np.ndarray:
    """(B,) corr of the luminance changes (with details − without) of the rendering and of the shading."""
    return masked_corr(luminance(render) - luminance(render_flat), luminance(shading) - luminance(shading_flat), skin)


def detail_strength(render: torch.Tensor, render_flat: torch.Tensor, shading: torch.Tensor,
                    shading_flat: torch.Tensor, skin: torch.Tensor) -> np.ndarray:
    """(B,) least-squares slope of the rendering's luminance change on the shading's luminance change
    (with details − without) over the skin: how much of the details' contrast the image shows."""
    change, shading_change = luminance(render) - luminance(render_flat), luminance(shading) - luminance(shading_flat)
    out = []
    for y, x in _centred(change, shading_change, skin):
        den = float((x * x).sum())
        out.append(float((x * y).sum()) / den if den > 0 else math.nan)
    return np.array(out)


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """(B,) PSNR in dB over the mask (peak 1)."""
    m = (mask > 0.5).to(pred.dtype)
    mse = (((pred - target) ** 2) * m).flatten(1).sum(1) / (m.flatten(1).sum(1) * pred.shape[1]).clamp(min=1)
    return (10.0 * torch.log10(1.0 / mse.clamp(min=1e-12))).double().numpy()


def ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """(B,) mean of scikit-image's SSIM map over the mask (7-px windows, data range 1)."""
    out = []
    for p, t, m in zip(pred, target, mask):
        _, smap = structural_similarity(t.permute(1, 2, 0).double().numpy(), p.permute(1, 2, 0).double().numpy(),
                                        data_range=1.0, channel_axis=-1, full=True, win_size=7)
        sel = m[0].numpy() > 0.5
        out.append(float(smap.mean(-1)[sel].mean()) if sel.any() else math.nan)
    return np.array(out)


def bootstrap(values: np.ndarray, n: int, seed: int = 0) -> dict:
    """Mean and 95 % bootstrap interval over the items of ``values`` (NaNs dropped), 4 decimals."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": None, "ci95": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n, len(v)))].mean(1) if n else np.array([v.mean()])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(v.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)], "n": int(len(v))}
