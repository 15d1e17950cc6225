"""DetP's losses as small pure functions (paper Eq. 7–18). Shapes: B batch, S map side.

The adversarial ones (non-saturating, R1, head errors) are shared with the renderer: :mod:`facedet3d.train.adversarial`."""

from __future__ import annotations

import torch

from facedet3d.train.laploss import lap_loss


def regression(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 18: LapLoss between D̃(I_y) and D(I_y) on video / same-person pairs. (B, 1, S, S) x2 -> scalar."""
    return lap_loss(pred.float(), target.float(), levels=4, weight=mask)


def cycle(back: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Cycle consistency: DetP(D̃(I_y), y → x) against D(I_x), L1. (B, 1, S, S) x2 -> scalar."""
    return (back.float() - source.float()).abs().mean()
