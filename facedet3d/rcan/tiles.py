"""Tiled RCAN inference: ×4 (:func:`upsample`) and twice, 256² -> 4096² (:func:`upsample_twice`, Eq. 20).

Two tiled passes over ``tile`` × ``tile`` LR tiles, each tile run with a margin of its
neighbours' pixels (fewer at the map's border) of which only the tile's own part is kept:

1. :meth:`RCAN.features` (head and body, at LR resolution) with a margin of ``overlap`` LR
   pixels, by default the body's receptive radius; the stitched features (C, H, W) are kept on
   the CPU;
2. :meth:`RCAN.reconstruct` (upsampler, tail, bicubic skip: the ×4 activations) with a margin
   of :data:`RECONSTRUCT_RADIUS` (2) LR pixels.

With the default margins every kept pixel sees exactly the input of a whole-map pass, so the
result equals the untiled network up to float rounding. Memory: the LR features (C·H·W floats,
268 MB for the paper's 64 channels at 1024²) plus one tile's activations, (tile + 2·overlap)² at
LR and (4·tile + 16)² at ×4 — never the whole map's ×4 activations. A deep network's body
radius can exceed the map (the paper's 10×20 blocks: 1812 LR pixels), and then step 1 runs the
whole LR map at once; a smaller ``overlap`` trades exactness for less work.
"""

from __future__ import annotations

import torch

from facedet3d.rcan.model import RCAN, RECONSTRUCT_RADIUS, SCALE
from facedet3d.train.device import autocast


def _tiles(h: int, w: int, tile: int, margin: int):
    """((own y0, y1, x0, x1), (input y0, y1, x0, x1)) of every tile, row by row."""
    for y0 in range(0, h, tile):
        y1 = min(y0 + tile, h)
        for x0 in range(0, w, tile):
            x1 = min(x0 + tile, w)
            yield (y0, y1, x0, x1), (max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin))


@torch.no_grad()
def upsample(model: RCAN, detail_mm: torch.Tensor, tile: int = 128, overlap: int | None = None) -> torch.Tensor:
    """RCAN ×4 of a detail map (H, W) in mm -> (4H, 4W) float32 mm on the CPU, tile by tile.

    Runs on the model's device (bf16 autocast on CUDA); ``overlap`` (the body's margin, LR pixels)
    defaults to ``model.body_radius``: exact stitching.
    """
    assert detail_mm.ndim == 2, f"upsample expects one map (H, W), got {tuple(detail_mm.shape)}"
    if tile < 1:
        raise ValueError(f"tile must be positive, not {tile}")
    overlap = model.body_radius if overlap is None else int(overlap)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = detail_mm.detach().float().cpu() / model.config.detail_scale
    h, w = x.shape
    try:
        features = torch.empty(model.config.channels, h, w, dtype=torch.float32)
        for (y0, y1, x0, x1), (ya, yb, xa, xb) in _tiles(h, w, tile, overlap):
            with autocast(device):
                f = model.features(x[ya:yb, xa:xb][None, None].to(device))[0].float().cpu()
            features[:, y0:y1, x0:x1] = f[:, y0 - ya:y1 - ya, x0 - xa:x1 - xa]
        out = torch.empty(SCALE * h, SCALE * w, dtype=torch.float32)
        for (y0, y1, x0, x1), (ya, yb, xa, xb) in _tiles(h, w, tile, RECONSTRUCT_RADIUS):
            lr = x[ya:yb, xa:xb][None, None].to(device)
            with autocast(device):
                up = model.reconstruct(lr, features[:, ya:yb, xa:xb][None].to(device))[0, 0].float().cpu()
            oy, ox = SCALE * (y0 - ya), SCALE * (x0 - xa)
            out[SCALE * y0:SCALE * y1, SCALE * x0:SCALE * x1] = up[oy:oy + SCALE * (y1 - y0), ox:ox + SCALE * (x1 - x0)]
    finally:
        model.train(was_training)
    return out * model.config.detail_scale


def upsample_passes(model: RCAN, detail_mm: torch.Tensor, passes: int, tile: int = 128,
                    overlap: int | None = None) -> torch.Tensor:
    """RCAN applied ``passes`` times: (H, W) mm -> (4^passes H, 4^passes W) mm."""
    for _ in range(passes):
        detail_mm = upsample(model, detail_mm, tile, overlap)
    return detail_mm


def upsample_twice(model: RCAN, detail_mm: torch.Tensor, tile: int = 128, overlap: int | None = None) -> torch.Tensor:
    """Eq. 20, D̃^HR = RCAN(RCAN(D̃)): (H, W) mm -> (16H, 16W) mm, e.g. DetP's 256² -> 4096²."""
    return upsample_passes(model, detail_mm, 2, tile, overlap)
