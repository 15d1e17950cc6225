"""DetP's losses as small pure functions (paper Eq. 7–18). Shapes: B batch, S map side."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facedet3d.train.laploss import lap_loss


def d_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator side of Eq. 7: −log σ(D(real)) − log(1 − σ(D(fake))). (B,), (B,) -> scalar."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side (Eq. 9, 14, 17): −log σ(D(fake)). (B,) -> scalar."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_maps: torch.Tensor) -> torch.Tensor:
    """R1 (Eq. 7, last term): E ||∇_x D(x)||² on real maps. (B,), (B, 1, S, S) with requires_grad -> scalar."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_maps, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def head_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error of a regression head, summed over features (Eq. 8, 10–13, 15–16). (B, n), (B, n) -> scalar."""
    return (pred.float() - target.float()).pow(2).sum(1).mean()


def regression(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 18: LapLoss between D̃(I_y) and D(I_y) on video / same-person pairs. (B, 1, S, S) x2 -> scalar."""
    return lap_loss(pred.float(), target.float(), levels=4, weight=mask)


def cycle(back: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Cycle consistency: DetP(D̃(I_y), y → x) against D(I_x), L1. (B, 1, S, S) x2 -> scalar."""
    return (back.float() - source.float()).abs().mean()
