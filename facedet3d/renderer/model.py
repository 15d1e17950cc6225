"""R, the rendering network (paper §3.3, Eq. 21–24, Fig. 3), and f_θ of the Detailed Shading Loss.

    NTM  = NTex_φ(T(I_x))                                          (Eq. 21)
    Î^LR = g_θ(Sample(NTM, UV(G_P, c)), γ·L_Sph(G_P, l), y, γ, l)  (Eq. 22)
    Î^D  = g_ω(Sample(NTM, UV(G_D, c)), γ·L_Sph(G_D, l), y, γ, l)  (Eq. 23; the paper prints g_θ there, a typo)
    Î    = Î^LR + Î^D                                              (Eq. 24)

Choices the paper leaves open (sizes in :class:`RendererConfig`):
  * NTex_φ: a U-Net over the texture map T(I_x) and its visibility mask (4 channels) to an
    F-channel neural texture map at ``texture_size``²;
  * each Tex2Im branch sees the NTM sampled with its geometry's UV map, that geometry's shaded
    albedo (sRGB) and the face mask; the vectors (y / 5, γ, l) enter through one linear layer as a
    per-channel bias at the U-Net's bottleneck;
  * "low-res" is literal: g_θ sees its inputs average-pooled by ``lr_factor`` and its output is
    upsampled bilinearly, so it cannot draw anything finer than ``lr_factor`` pixels. Fine
    structure, the wrinkles included, is g_ω's to draw, and g_ω alone sees G_D;
  * Î (and Î^LR) are multiplied by the face mask: R renders the face, not the background.
Images are sRGB in [0, 1], (B, 3, S, S).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from facedet3d.face.layout import AU_MAX
from facedet3d.render.color import to_srgb
from facedet3d.renderer.geometry import Raster

N_AUS = 17
N_SH = 27


@dataclass
class RendererConfig:
    size: int = 128          # rendered image side (pixels of the face crop)
    texture_size: int = 128  # side of T(I_x) and of the neural texture map
    features: int = 8        # F, channels of the neural texture map
    width: int = 16          # channels of the U-Nets' first stage
    max_width: int = 64      # channel cap of their deeper stages
    depth: int = 3           # stride-2 stages of each U-Net
    lr_factor: int = 4       # g_θ works at size / lr_factor
    n_albedo: int = 18       # γ length


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.LeakyReLU(0.2))


class UNet(nn.Module):
    """(B, c_in, S, S) [+ cond (B, n_cond)] -> (B, c_out, S, S); S divisible by 2^depth."""

    def __init__(self, c_in: int, c_out: int, width: int, depth: int, max_width: int, n_cond: int = 0):
        super().__init__()
        chans = [min(width * 2**i, max_width) for i in range(depth + 1)]
        self.stem = _conv(c_in, chans[0])
        self.down = nn.ModuleList(nn.Sequential(_conv(a, b, 2), _conv(b, b)) for a, b in zip(chans, chans[1:]))
        self.cond = nn.Linear(n_cond, chans[-1]) if n_cond else None
        self.up = nn.ModuleList(_conv(b + a, a) for a, b in zip(chans, chans[1:]))
        self.head = nn.Conv2d(chans[0], c_out, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        h = skips.pop()
        if self.cond is not None:
            h = h + self.cond(cond)[:, :, None, None]
        for up in reversed(self.up):
            skip = skips.pop()
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return self.head(h)


def condition(aus: torch.Tensor, albedo: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """The vector inputs of Tex2Im (Eq. 22–23): (y / AU_MAX, γ, l) -> (B, 17 + Ka + 27)."""
    return torch.cat([aus / AU_MAX, albedo, sh], 1)


class Renderer(nn.Module):
    """R = NTex_φ + Tex2Im (g_θ, g_ω)."""

    def __init__(self, cfg: RendererConfig):
        super().__init__()
        self.cfg = cfg
        n_cond = N_AUS + cfg.n_albedo + N_SH
        branch_in = cfg.features + 3 + 1
        self.ntex = UNet(4, cfg.features, cfg.width, cfg.depth, cfg.max_width)
        self.g_theta = UNet(branch_in, 3, cfg.width, max(1, cfg.depth - 1), cfg.max_width, n_cond)
        self.g_omega = UNet(branch_in, 3, cfg.width, cfg.depth, cfg.max_width, n_cond)
        # The detail branch starts silent (Î = Î^LR): it adds to the image, as a residual branch.
        nn.init.zeros_(self.g_omega.head.weight)
        nn.init.zeros_(self.g_omega.head.bias)

    def neural_texture(self, texture: torch.Tensor) -> torch.Tensor:
        """Eq. 21: T(I_x) with its mask (B, 4, T, T) -> NTM (B, F, T, T)."""
        return self.ntex(texture)

    @staticmethod
    def branch_input(ntm: torch.Tensor, raster: Raster) -> torch.Tensor:
        """[Sample(NTM, UV), shaded albedo (sRGB), mask] (B, F + 4, S, S) of one geometry."""
        grid = raster.uv.to(ntm.dtype) * 2.0 - 1.0
        sampled = F.grid_sample(ntm, grid, mode="bilinear", padding_mode="border", align_corners=False)
        mask = raster.mask.to(ntm.dtype)
        return torch.cat([sampled * mask, to_srgb(raster.shaded_albedo).to(ntm.dtype) * mask, mask], 1)

    def low_res(self, ntm: torch.Tensor, proxy: Raster, cond: torch.Tensor) -> torch.Tensor:
        """Eq. 22: Î^LR (B, 3, S, S) from G_P, drawn at S / lr_factor and upsampled."""
        x = self.branch_input(ntm, proxy)
        k = self.cfg.lr_factor
        out = self.g_theta(F.avg_pool2d(x, k) if k > 1 else x, cond)
        if k > 1:
            out = F.interpolate(out, scale_factor=k, mode="bilinear", align_corners=False)
        return out * proxy.mask

    def details(self, ntm: torch.Tensor, detailed: Raster, cond: torch.Tensor) -> torch.Tensor:
        """Eq. 23: Î^D (B, 3, S, S) from G_D."""
        return self.g_omega(self.branch_input(ntm, detailed), cond) * detailed.mask

    def forward(self, ntm: torch.Tensor, proxy: Raster, detailed: Raster, cond: torch.Tensor,
                low: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Eq. 24: {"image": Î, "lr": Î^LR, "detail": Î^D}; ``low`` reuses an Î^LR of the same G_P and cond."""
        lr = self.low_res(ntm, proxy, cond) if low is None else low
        det = self.details(ntm, detailed, cond)
        return {"image": lr + det, "lr": lr, "detail": det}


class ShadingNet(nn.Module):
    """f_θ of the Detailed Shading Loss (Eq. 30): two conv layers, image (B, 3, S, S) -> shading (B, 3, S, S)."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, 3, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def load_renderer(path, what: str = "renderer weights") -> Renderer:
    """R of a renderer stage's ``final.pt`` ({"nets": {"renderer", ...}, "config", "options"}), in eval
    mode on the CPU; a missing, truncated or unfitting file is one UserError naming it."""
    from facedet3d.train.checkpoint import load_checkpoint, restore

    state = load_checkpoint(path, what)

    def load() -> Renderer:
        net = Renderer(RendererConfig(**state["config"]))
        net.load_state_dict(state["nets"]["renderer"])
        return net

    return restore(path, what, load).eval()
