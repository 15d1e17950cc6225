"""RCAN ×4 for one-channel detail maps (Zhang et al. 2018, "Image Super-Resolution Using Very Deep
Residual Channel Attention Networks"), read top to bottom.

    hr = RCAN(lr)        lr (B, 1, h, w) -> hr (B, 1, 4h, 4w), both in network units (mm / detail_scale)

Layout (the paper's, sizes in :class:`RCANConfig`; its default 10 groups × 20 blocks × 64 channels
has 15.59 M parameters):
  head     conv 3×3, 1 -> C
  body     n_groups residual groups, each: n_blocks RCABs, conv 3×3, + the group's input;
           then conv 3×3, + the head's output (long skip)
  RCAB     conv 3×3, ReLU, conv 3×3, channel attention, + the block's input
  CA       pool -> conv 1×1 C -> C/reduction, ReLU, conv 1×1 -> C, sigmoid; scales the channels
  upsample two × [conv 3×3 C -> 4C, PixelShuffle(2)]
  tail     conv 3×3, C -> 1

Two deliberate deviations from the paper's network (both in the docs and the stage's summary):
  (a) the network predicts a residual over bicubic ×4 upsampling of its input, and its tail starts
      at zero: an untrained model *is* bicubic interpolation and training can only refine it. With
      the demo's few CPU minutes a from-scratch RCAN does not reach bicubic's quality.
  (b) channel attention pools over a local ``attention_window`` × ``attention_window`` window
      (average, stride 1, borders averaged over the pixels present) instead of the whole image.
      Global pooling makes every output pixel depend on the whole input, so no tiling would be
      exact; local pooling bounds the receptive field (:attr:`RCAN.receptive_radius`) and makes
      tiled inference (:mod:`facedet3d.rcan.tiles`) exactly equal to a whole-map pass.
      ``attention_window: 0`` restores the paper's global pooling (no exact tiling then).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SCALE = 4
# LR pixels on either side that one output pixel of :meth:`RCAN.reconstruct` reads: the upsampler's
# LR conv 1, plus 1 for its 2× conv and the 4× tail (1/2 + 1/4 LR pixel); the bicubic skip reads 2.
RECONSTRUCT_RADIUS = 2


@dataclass
class RCANConfig:
    n_groups: int = 10  # residual groups (paper: 10)
    n_blocks: int = 20  # RCABs per group (paper: 20)
    channels: int = 64  # feature channels (paper: 64)
    reduction: int = 16  # channel-attention reduction (paper: 16)
    attention_window: int = 15  # odd side of the local attention pool, LR pixels; 0 = global (paper)
    detail_scale: float = 1.0  # mm per network unit (the stage sets the training HR patches' std)

    def __post_init__(self):
        if self.attention_window and self.attention_window % 2 == 0:
            raise ValueError(f"attention_window must be odd or 0, not {self.attention_window}")
        if self.channels // self.reduction < 1:
            raise ValueError(f"reduction {self.reduction} leaves no channels of {self.channels}")


def conv3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class ChannelAttention(nn.Module):
    """x (B, C, H, W) -> x scaled per channel (and, with a local window, per pixel) by a gate in (0, 1)."""

    def __init__(self, channels: int, reduction: int, window: int):
        super().__init__()
        self.window = window
        self.squeeze = nn.Conv2d(channels, channels // reduction, 1)
        self.excite = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window:
            pooled = F.avg_pool2d(x, self.window, stride=1, padding=self.window // 2, count_include_pad=False)
        else:
            pooled = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(pooled))))


class RCAB(nn.Module):
    """Residual channel attention block: x + CA(conv(relu(conv(x))))."""

    def __init__(self, channels: int, reduction: int, window: int):
        super().__init__()
        self.conv1, self.conv2 = conv3(channels, channels), conv3(channels, channels)
        self.attention = ChannelAttention(channels, reduction, window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.conv2(F.relu(self.conv1(x))))


class ResidualGroup(nn.Module):
    """n_blocks RCABs and a conv, with a skip over the whole group."""

    def __init__(self, channels: int, n_blocks: int, reduction: int, window: int):
        super().__init__()
        self.blocks = nn.Sequential(*[RCAB(channels, reduction, window) for _ in range(n_blocks)])
        self.conv = conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.blocks(x))


class RCAN(nn.Module):
    """One-channel RCAN ×4 predicting a residual over bicubic upsampling (module docstring)."""

    def __init__(self, config: RCANConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.head = conv3(1, c)
        self.groups = nn.Sequential(*[ResidualGroup(c, config.n_blocks, config.reduction, config.attention_window)
                                      for _ in range(config.n_groups)])
        self.body_conv = conv3(c, c)
        self.upsample = nn.Sequential(conv3(c, 4 * c), nn.PixelShuffle(2), conv3(c, 4 * c), nn.PixelShuffle(2))
        self.tail = conv3(c, 1)
        nn.init.zeros_(self.tail.weight)  # deviation (a): training starts exactly at bicubic
        nn.init.zeros_(self.tail.bias)

    @property
    def body_radius(self) -> int:
        """LR pixels on each side that one feature of :meth:`features` depends on (local attention only):
        the head's conv 1, per RCAB its 2 convs + window // 2, per group its conv 1, the body conv 1."""
        c = self.config
        if not c.attention_window:
            raise ValueError("global channel attention (attention_window 0) has an unbounded receptive field")
        return 1 + c.n_groups * (c.n_blocks * (2 + c.attention_window // 2) + 1) + 1

    @property
    def receptive_radius(self) -> int:
        """LR pixels on each side that one output pixel depends on: the body's, plus
        :data:`RECONSTRUCT_RADIUS` for the upsampler and the bicubic skip."""
        return self.body_radius + RECONSTRUCT_RADIUS

    def features(self, lr: torch.Tensor) -> torch.Tensor:
        """Head and body: (B, 1, h, w) -> (B, C, h, w), with the long skip."""
        assert lr.ndim == 4 and lr.shape[1] == 1, f"RCAN expects (B, 1, h, w), got {tuple(lr.shape)}"
        x = self.head(lr)
        return x + self.body_conv(self.groups(x))

    def reconstruct(self, lr: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Upsampler and tail over the bicubic skip: (B, 1, h, w), (B, C, h, w) -> (B, 1, 4h, 4w)."""
        base = F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
        return base + self.tail(self.upsample(features))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(lr, self.features(lr))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_model(path: str | Path, device: str | torch.device = "cpu") -> RCAN:
    """The trained RCAN of ``final.pt`` (``{"model", "config", "options"}``), in eval mode."""
    from facedet3d.train.checkpoint import load_checkpoint, restore

    state = load_checkpoint(path, "RCAN weights")

    def load() -> RCAN:
        model = RCAN(RCANConfig(**state["config"]))
        model.load_state_dict(state["model"])
        return model

    return restore(path, "RCAN weights", load).to(device).eval()
