"""The Laplacian pyramid loss (LapLoss), shared by DetP's regression (Eq. 18) and the renderer."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _blur_down(x: torch.Tensor) -> torch.Tensor:
    """5-tap binomial blur, then stride 2 (reflect padding). (B, C, H, W) -> (B, C, H/2, W/2)."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16.0
    kernel = (k[:, None] * k[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, stride=2, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels (finest first) and the low-pass residual: ``levels + 1`` tensors."""
    bands = []
    for _ in range(levels):
        low = _blur_down(x)
        up = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(x - up)
        x = low
    return bands + [x]


def lap_loss(pred: torch.Tensor, target: torch.Tensor, levels: int = 4,
             weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over pyramid levels j of 4^-j · mean |L_j(pred) − L_j(target)| (Bojanowski et al. 2018, the paper's [4]).

    Args:
        pred, target: (B, C, H, W), H and W divisible by 2^levels.
        weight: optional (B, 1, H, W) mask; levels use it area-downsampled.
    Returns:
        a scalar tensor.
    """
    assert pred.shape == target.shape and pred.dim() == 4, (pred.shape, target.shape)
    total = pred.new_zeros(())
    w = weight
    for j, (a, b) in enumerate(zip(laplacian_pyramid(pred, levels), laplacian_pyramid(target, levels))):
        diff = (a - b).abs()
        if w is not None:
            wj = w if w.shape[-2:] == diff.shape[-2:] else F.adaptive_avg_pool2d(w, diff.shape[-2:])
            diff = (diff * wj).sum() / (wj.sum() * diff.shape[1]).clamp(min=1.0)
        else:
            diff = diff.mean()
        total = total + diff * 4.0 ** (-j)
    return total
