"""A learned prior on top of shape from shading: the detail refinement network.

Shape from shading (:mod:`.detail`) observes one directional derivative of the relief per
texel, through sensor noise and 8-bit quantisation, so on its own it recovers only part of
the wrinkles (README, extraction). FDS, which this backend stands in for, completes its
detail maps with a network trained on scans; here a small U-Net trained on the synthetic
generator's ground truth plays that part. It sees only what shape from shading sees —

  ρ          the high-passed log shading ratio (×10),
  b_col, b_row  its shading direction, ρ ≈ b · ∇d (normalised by the median |b|),
  sfs        the shape-from-shading estimate (mm ×10),
  mask       texels shape from shading used,
  ρ_all, visible  the log shading ratio on every visible texel (brows, lid and lip margins,
             nostrils included, where shape from shading does not trust it) and that mask,
  u, v       the texel's UV position (wrinkle families have anatomical places and orientations),

and predicts the detail map (mm, high-passed at 15 mm) on the texture grid. The network works
at ``GRID`` texels (0.78 mm each): other texture sizes are resampled to it and back.
Weights ship in the package (``weights/detail_net.pt``, a plain dict, ~1 MB), trained by
:mod:`facedet3d.extract.detail_net_train` on identities of a synthetic set with another seed than the
demo's, so no demo identity — train or test — was seen in training.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facedet3d.atomic import atomic_path
from facedet3d.errors import UserError
from facedet3d.extract.quality import resample

GRID = 256
N_INPUTS = 9
RHO_SCALE = 10.0
DETAIL_SCALE = 10.0  # network units per mm
WEIGHTS = Path(__file__).parent / "weights" / "detail_net.pt"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GELU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.GELU())


class DetailNet(nn.Module):
    """U-Net (B, N_INPUTS, H, W) -> (B, 1, H, W), H and W multiples of 8; ``width`` channels at
    full resolution, doubling at each of three downsamplings."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = [width, 2 * width, 4 * width, 4 * width]
        self.enc = nn.ModuleList([_block(N_INPUTS, w[0]), _block(w[0], w[1]), _block(w[1], w[2]), _block(w[2], w[3])])
        self.up = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(3)])
        self.dec = nn.ModuleList([_block(2 * w[i], w[i]) for i in range(3)])
        self.head = nn.Conv2d(w[0], 1, 1)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == N_INPUTS and x.shape[2] % 8 == 0 and x.shape[3] % 8 == 0, x.shape
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else nn.functional.avg_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(3)):
            x = self.dec[i](torch.cat([self.up[i](x), skips[i]], 1))
        return self.head(x)


def net_inputs(rho: np.ndarray, b_col: np.ndarray, b_row: np.ndarray, sfs: np.ndarray, mask: np.ndarray,
               rho_all: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """The network's input (N_INPUTS, T, T) float32 from shape from shading's maps (T, T)
    (see :class:`facedet3d.extract.detail.DetailResult`) and the visibility mask (T, T) bool;
    0 off the masks except u, v."""
    m = mask.astype(np.float32)
    vis = visible.astype(np.float32)
    mag = np.hypot(b_col, b_row)
    kappa = float(np.median(mag[mask])) if mask.any() else 1.0
    kappa = kappa if kappa > 0 else 1.0
    size = rho.shape[0]
    v, u = np.meshgrid(np.linspace(-1.0, 1.0, size, dtype=np.float32), np.linspace(-1.0, 1.0, size, dtype=np.float32),
                       indexing="ij")
    return np.stack([np.clip(rho * RHO_SCALE, -3, 3) * m, np.clip(b_col / kappa, -4, 4) * m,
                     np.clip(b_row / kappa, -4, 4) * m, np.clip(sfs * DETAIL_SCALE, -5, 5) * m, m,
                     np.clip(rho_all * RHO_SCALE, -3, 3) * vis, vis, u, v]).astype(np.float32)


def save_weights(net: DetailNet, path: Path, meta: dict) -> None:
    """Write the network as one plain dict (state_dict, width, meta) atomically."""
    with atomic_path(path) as tmp:
        torch.save({"state_dict": net.state_dict(), "width": net.width, "grid": GRID, "meta": meta}, tmp)


@functools.lru_cache(maxsize=4)
def load_weights(path: str | Path = WEIGHTS) -> DetailNet:
    """The trained network (eval mode) from a checkpoint written by :func:`save_weights`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"detail network weights not found at {path}; set extract.detail_net to false, or rebuild "
                        "them with `make detail-net` (README, extraction)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        net = DetailNet(int(ckpt["width"]))
        net.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"{path} is not a detail network checkpoint ({err}); rebuild it with `make detail-net`") from err
    return net.eval()


def refine_detail(net: DetailNet, rho: np.ndarray, b_col: np.ndarray, b_row: np.ndarray, sfs: np.ndarray,
                  mask: np.ndarray, rho_all: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """The refined detail map (T, T) float32 mm, 0 outside ``visible`` (T, T) bool (the
    unwrapping's visibility mask); inputs as for :func:`net_inputs`, any T (resampled to GRID)."""
    size = rho.shape[0]
    grid = lambda a: resample(a, GRID)  # noqa: E731
    x = net_inputs(grid(rho), grid(b_col), grid(b_row), grid(sfs), grid(mask) > 0.5, grid(rho_all),
                   grid(visible) > 0.5)
    with torch.no_grad():
        y = net(torch.from_numpy(x)[None])[0, 0].numpy() / DETAIL_SCALE
    return np.where(visible, resample(y, size), 0.0).astype(np.float32)
