"""The adversarial pieces every GAN of the paper shares: a discriminator with regression heads and
its losses (non-saturating, R1, squared head error). DetP's three discriminators (Eq. 6, 12, 15)
work on detail maps, the renderer's D_Exp^RGB (Eq. 31) on images. Shapes: B batch, C channels, S side."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Discriminator(nn.Module):
    """A conv discriminator with a realism head and named regression heads.

    (B, C, S, S) -> {"real": (B,), head: (B, n)}: stride-2 4×4 convs (LeakyReLU 0.2) from ``width``
    channels, doubling up to ``max_width``, down to 8², then a 128-unit layer shared by the heads.
    """

    def __init__(self, size: int, heads: dict[str, int], width: int = 16, max_width: int = 64, channels: int = 1):
        super().__init__()
        layers, c, s = [], channels, size
        while s > 8:
            c_out = min(max(width, c * 2), max_width) if layers else width
            layers += [nn.Conv2d(c, c_out, 4, 2, 1), nn.LeakyReLU(0.2)]
            c, s = c_out, s // 2
        self.trunk = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * s * s, 128), nn.LeakyReLU(0.2))
        self.real = nn.Linear(128, 1)
        self.heads = nn.ModuleDict({k: nn.Linear(128, n) for k, n in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {"real": self.real(h)[:, 0], **{k: head(h) for k, head in self.heads.items()}}


def d_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator side (Eq. 7, 32): −log σ(D(real)) − log(1 − σ(D(fake))). (B,), (B,) -> scalar."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side (Eq. 9, 14, 17, 34): −log σ(D(fake)). (B,) -> scalar."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Eq. 7, 32, last term): E ||∇_x D(x)||² on real inputs. (B,), (B, C, S, S) with requires_grad -> scalar."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def head_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error of a regression head, summed over features (Eq. 8, 10–13, 15–16, 33, 35). (B, n) x2 -> scalar."""
    return (pred.float() - target.float()).pow(2).sum(1).mean()
