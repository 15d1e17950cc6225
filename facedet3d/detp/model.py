"""DetP, the detail prediction network (paper §3.2, Eq. 2, 4, 5), read top to bottom.

    D̃(I_y) = DetP(D(I_x), x, y, α̂_e, Age(I_x), FaceID(I_x))                       (Eq. 2)

Inputs (one feature extractor each, concatenated along channels at the bottleneck):
  detail   (B, 1, S, S)  D(I_x), in network units (mm / ``DetPConfig.detail_scale``)
  src_aus  (B, 17)       x, the source AUs          tgt_aus (B, 17)  y, the target AUs
  tgt_expr (B, E)        α̂_e, target expression parameters
  shape    (B, K)        α_s (the paper's Fig. 2 input; Eq. 2 omits it)
  facenet  (B, 512)      FaceID(I_x)                age (B, 82)      81-bin age distribution + expected age / 100

Choices the paper leaves open (documented here, all sizes in :class:`DetPConfig`):
  * encoder: a U-Net encoder of ``depth`` stride-2 stages from ``width`` channels, doubling up to
    ``max_width``; its skips carry D(I_x)'s own wrinkles to the decoder at every scale;
  * vector inputs: one 2-layer MLP per input to ``vec_features`` channels, broadcast over the
    bottleneck (S / 2^depth)²;
  * AdaIN: every decoder stage normalises its features (instance norm) and re-styles them with a
    scale and bias predicted from y (the target AUs) — the only place y enters besides its MLP;
  * position: the maps live in UV space, where a texel's place *is* its facial region; the stem
    sees (u, v) coordinate channels beside D(I_x) (CoordConv), so the decoder can put a wrinkle
    where an AU raises it;
  * coarse output (Eq. 4): hallucination H_C and mask M_C = sigmoid(·) at full size,
    D^C = M_C ⊙ H_C + (1 − M_C) ⊙ D(I_x); the mask logit starts at ``mask_bias`` (0: an even blend;
    −2, mostly "keep D(I_x)", learned more slowly in the demo's few hundred steps).
    H_C is the decoder's output plus a learned **AU atlas** read at y: one UV map per AU, weighted
    by the target intensities (Σ_k y_k A_k) — the expression-dependent mean the decoder refines
    per person. (Without it, a few hundred CPU steps learned no better than an expression-mean
    baseline; ``atlas_gain`` scales its learning rate.)
  * refinement (Eq. 5): ``refine_blocks`` full-resolution residual conv blocks on [D^C, D(I_x)]
    give H_F and M_F. Taken literally, D̃ = D^C + D^F with D^F = M_F ⊙ H_F + (1 − M_F) ⊙ D(I_x)
    counts D(I_x) twice where both masks are closed; we keep the (1 − M_F) ⊙ D(I_x) term in D^C
    only, so D^F = M_F ⊙ H_F is the fine-scale correction and D̃ = D^C + D^F.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

N_AUS = 17
N_AGE = 82  # 81-bin distribution + expected age / 100


@dataclass
class DetPConfig:
    size: int = 128           # detail-map side DetP works at (the shards' 256² are area-downsampled to it)
    width: int = 16           # channels of the first encoder stage
    max_width: int = 64       # channel cap of deeper stages
    depth: int = 4            # stride-2 encoder stages (bottleneck at size / 2^depth)
    vec_features: int = 16    # channels each vector input contributes at the bottleneck
    refine_blocks: int = 2    # residual blocks of the refinement module
    n_expr: int = 17          # α_e length (the synthetic model: one coefficient per AU)
    n_shape: int = 40         # α_s length
    atlas_gain: float = 30.0  # the AU atlas is stored divided by this (a larger effective learning rate)
    mask_bias: float = 0.0    # initial mask logit of both stages (0: half hallucination, half D(I_x))
    detail_scale: float = 0.05  # mm per network unit (set from the training maps' std by the stage)

    def widths(self) -> list[int]:
        return [min(self.width * 2 ** i, self.max_width) for i in range(self.depth + 1)]


def _mlp(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, 64), nn.LeakyReLU(0.2), nn.Linear(64, n_out))


class AdaIN(nn.Module):
    """Instance norm re-styled by the target AUs: (B, C, H, W), (B, 17) -> (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.style = nn.Linear(N_AUS, 2 * channels)
        nn.init.zeros_(self.style.weight)
        nn.init.zeros_(self.style.bias)

    def forward(self, x: torch.Tensor, aus: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(aus)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1.0 + gamma) + beta


class _Down(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1), nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.conv(x)


class _Up(nn.Module):
    """Upsample ×2, concatenate the encoder skip, conv, AdaIN on y, conv."""

    def __init__(self, c_in: int, c_skip: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in + c_skip, c_out, 3, 1, 1)
        self.adain = AdaIN(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)

    def forward(self, x, skip, aus):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = F.leaky_relu(self.conv1(torch.cat([x, skip], 1)), 0.2)
        return F.leaky_relu(self.conv2(self.adain(x, aus)), 0.2)


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x):
        return x + self.body(x)


class DetP(nn.Module):
    """The detail prediction network. ``forward`` returns a dict:
    ``detail`` (B, 1, S, S) D̃(I_y); ``coarse`` D^C; ``fine`` D^F; ``mask_c``, ``mask_f`` (B, 1, S, S)."""

    def __init__(self, cfg: DetPConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.widths()
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 1, 1), nn.LeakyReLU(0.2))
        axis = torch.linspace(-1.0, 1.0, cfg.size)
        self.register_buffer("coords", torch.stack(torch.meshgrid(axis, axis, indexing="ij"))[None], persistent=False)
        self.atlas = nn.Parameter(torch.zeros(N_AUS, cfg.size, cfg.size))
        self.down = nn.ModuleList(_Down(w[i], w[i + 1]) for i in range(cfg.depth))
        v = cfg.vec_features
        self.vectors = nn.ModuleDict({
            "src_aus": _mlp(N_AUS, v), "tgt_aus": _mlp(N_AUS, v), "tgt_expr": _mlp(cfg.n_expr, v),
            "shape": _mlp(cfg.n_shape, v), "facenet": _mlp(512, v), "age": _mlp(N_AGE, v),
        })
        self.bottleneck = nn.Conv2d(w[-1] + v * len(self.vectors), w[-1], 3, 1, 1)
        self.bottleneck_adain = AdaIN(w[-1])
        self.up = nn.ModuleList(_Up(w[i + 1], w[i], w[i]) for i in reversed(range(cfg.depth)))
        self.coarse = nn.Conv2d(w[0], 2, 3, 1, 1)  # hallucination, mask logit
        c = w[0]
        self.refine = nn.Sequential(nn.Conv2d(2, c, 3, 1, 1), nn.LeakyReLU(0.2),
                                    *[_ResBlock(c) for _ in range(cfg.refine_blocks)], nn.Conv2d(c, 2, 3, 1, 1))
        for head in (self.coarse, self.refine[-1]):
            nn.init.zeros_(head.weight)
            with torch.no_grad():
                head.bias.copy_(torch.tensor([0.0, cfg.mask_bias]))

    def forward(self, detail: torch.Tensor, src_aus: torch.Tensor, tgt_aus: torch.Tensor, tgt_expr: torch.Tensor,
                shape: torch.Tensor, facenet: torch.Tensor, age: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, s, _ = detail.shape
        assert detail.shape == (b, 1, self.cfg.size, self.cfg.size), detail.shape
        skips, h = [], self.stem(torch.cat([detail, self.coords.expand(b, -1, -1, -1)], 1))
        for down in self.down:
            skips.append(h)
            h = down(h)
        inputs = {"src_aus": src_aus, "tgt_aus": tgt_aus, "tgt_expr": tgt_expr, "shape": shape,
                  "facenet": facenet, "age": age}
        feats = [h] + [mlp(inputs[k])[:, :, None, None].expand(-1, -1, *h.shape[-2:])
                       for k, mlp in self.vectors.items()]
        h = F.leaky_relu(self.bottleneck_adain(self.bottleneck(torch.cat(feats, 1)), tgt_aus), 0.2)
        for up, skip in zip(self.up, reversed(skips)):
            h = up(h, skip, tgt_aus)
        hal_c, logit_c = self.coarse(h).chunk(2, dim=1)
        atlas = torch.einsum("bk,khw->bhw", tgt_aus / 5.0, self.atlas * self.cfg.atlas_gain)[:, None]
        hal_c = hal_c + atlas.to(hal_c.dtype)
        mask_c = torch.sigmoid(logit_c)
        coarse = mask_c * hal_c + (1.0 - mask_c) * detail                       # Eq. 4
        hal_f, logit_f = self.refine(torch.cat([coarse, detail], 1)).chunk(2, dim=1)
        mask_f = torch.sigmoid(logit_f)
        fine = mask_f * hal_f                                                   # Eq. 5 (see module doc)
        return {"detail": coarse + fine, "coarse": coarse, "fine": fine, "mask_c": mask_c, "mask_f": mask_f}


def load_detp(path) -> DetP:
    """DetP of ``train_detp/final.pt`` in eval mode on the CPU (its ``cfg`` holds the size and the
    detail scale); a missing, truncated or unfitting file is one UserError naming it."""
    from facedet3d.train.checkpoint import load_checkpoint, restore

    state = load_checkpoint(path, "DetP weights")

    def load() -> DetP:
        net = DetP(DetPConfig(**state["config"]))
        net.load_state_dict(state["nets"]["detp"])
        return net

    return restore(path, "DetP weights", load).eval()
