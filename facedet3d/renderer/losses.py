"""The renderer's losses as small pure functions (paper Eq. 26–30). Shapes: B batch, S image side.

Images are sRGB in [0, 1] (B, 3, S, S); masks (B, 1, S, S) in [0, 1]; shadings are SH irradiances
(B, 3, S, S), linear. The adversarial terms (Eq. 32–35) are :mod:`facedet3d.train.adversarial`'s.
"""

from __future__ import annotations

import torch

from facedet3d.render.color import to_linear, to_srgb
from facedet3d.renderer.perceptual import FeatureNet, perceptual_loss
from facedet3d.train.laploss import lap_loss

# Shading below this (linear irradiance) is not divided by in Eq. 28: grazing and unlit pixels.
SHADING_FLOOR = 0.05


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / (mask.sum() * x.shape[1]).clamp(min=1.0)


def photometric(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, pcpt: FeatureNet | None = None,
                pcpt_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 26 / 27 on the face mask: MSE + L1 + LapLoss + ``pcpt_weight`` · PcptL -> (scalar, terms)."""
    pred, target = pred.float() * mask, target.float() * mask
    diff = pred - target
    terms = {"mse": _masked_mean(diff**2, mask), "l1": _masked_mean(diff.abs(), mask),
             "lap": lap_loss(pred, target, levels=4, weight=mask)}
    total = terms["mse"] + terms["l1"] + terms["lap"]
    if pcpt is not None and pcpt_weight > 0:
        terms["pcpt"] = perceptual_loss(pcpt, pred, target)
        total = total + pcpt_weight * terms["pcpt"]
    return total, {k: float(v.detach()) for k, v in terms.items()}


def augmented_image(image: torch.Tensor, shading: torch.Tensor, shading_fake: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """Eq. 28: I*_x = Shading*(I_x) · I_x / Shading(I_x), in linear RGB, returned as sRGB.

    ``shading`` = L_Sph(G_D, l) and ``shading_fake`` = L_Sph(G_D*, l) rasterized in I_x's camera.
    Off the mask, and where Shading(I_x) < ``SHADING_FLOOR``, I*_x = I_x.
    """
    lit = (shading > SHADING_FLOOR) & (mask > 0)
    ratio = torch.where(lit, shading_fake / shading.clamp(min=SHADING_FLOOR), torch.ones_like(shading))
    return to_srgb(to_linear(image) * ratio)


def augmented_wrinkle(pred_fake: torch.Tensor, target_fake: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 29: LapLoss(Î*_x, I*_x) on the face mask. (B, 3, S, S) x2, (B, 1, S, S) -> scalar."""
    return lap_loss(pred_fake.float() * mask, target_fake.float() * mask, levels=4, weight=mask)


def detailed_shading(pred_shading: torch.Tensor, shading_fake: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """Eq. 30: LapLoss(f_θ(Î), Shading*) over the skin only: both are multiplied by the skin mask
    first, so nothing off the skin (eyes, mouth gap, background) reaches the loss. -> scalar."""
    return lap_loss(pred_shading.float() * skin, shading_fake.float() * skin, levels=4, weight=skin)
