"""DetP, RCAN and R applied to a prepared photo: D̃(I_y) for a target expression, ×16 by RCAN
(Eq. 20), and R's rendering of it (Eq. 3) with the shaded detailed geometry beside it."""

from __future__ import annotations

import math

import numpy as np
import torch

from facedet3d.data.uvmaps import area_downsample
from facedet3d.predict.models import TrainedModels
from facedet3d.predict.subject import Subject


@torch.no_grad()
def predict_detail(models: TrainedModels, subject: Subject, aus: np.ndarray, expr: np.ndarray) -> torch.Tensor:
    """D̃(I_y) (S, S) mm at DetP's size for target AUs y and α̂_e (Eq. 2)."""
    from facedet3d.train.device import autocast

    dev, v = models.device, subject.vectors
    cfg = models.detp.cfg
    d = area_downsample(torch.from_numpy(subject.detail)[None, None], cfg.size, "train_detp.size",
                        "the shards' detp_size")
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32)).reshape(1, -1).to(dev)  # noqa: E731
    with autocast(dev):
        out = models.detp((d / cfg.detail_scale).to(dev), v["aus"].to(dev), t(aus), t(expr), v["shape"].to(dev),
                          v["facenet"].to(dev), v["age"].to(dev))["detail"]
    return out.float().cpu()[0, 0] * cfg.detail_scale


def upsample(models: TrainedModels, detail: torch.Tensor, passes: int = 2) -> torch.Tensor:
    """RCAN ×4 applied ``passes`` times (Eq. 20 applies it twice): (S, S) mm -> (4^passes S)² mm, tile by tile."""
    from facedet3d.rcan.tiles import upsample_passes

    return upsample_passes(models.rcan, detail, passes, tile=models.config["train_rcan"]["tile"])


def predict_target(models: TrainedModels, subject: Subject, aus: np.ndarray,
                   passes: int = 1) -> tuple[np.ndarray, torch.Tensor]:
    """α̂_e for target AUs y, and D̃(I_y) (mm) after ``passes`` RCAN passes."""
    expr = models.expression_parameters(aus)
    return expr, upsample(models, predict_detail(models, subject, aus, expr), passes)


def texture_input(models: TrainedModels, subject: Subject) -> torch.Tensor:
    """T(I_x) and its mask as R reads them: (1, 4, T, T) in [0, 1] at the renderer's texture_size."""
    from facedet3d.data.uvmaps import resize_map

    size = models.renderer.cfg.texture_size
    rgb = resize_map(subject.texture, size).astype(np.float32) / 255.0
    mask = resize_map(subject.texture_mask.astype(np.float32), size)
    return torch.from_numpy(np.concatenate([rgb, mask[..., None]], -1)).permute(2, 0, 1)[None]


@torch.no_grad()
def render(models: TrainedModels, subject: Subject, detail: torch.Tensor, aus: np.ndarray, expr: np.ndarray,
           yaw_deg: float | None = None, sh: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """R's rendering (Eq. 3) of the subject with detail map ``detail`` (H, W) mm, target AUs and α̂_e,
    in the photo's view turned to ``yaw_deg`` (None: the photo's own yaw) and light ``sh`` (1, 27)
    (None: the photo's). Returns "image" (S, S, 3) and "shaded" (S, S, 3) floats in [0, 1] (the
    detailed geometry as grey clay on white) and "mask" (S, S)."""
    from facedet3d.renderer.evaluate import render as render_batch
    from facedet3d.renderer.geometry import View

    v = subject.vectors
    view = View(models.renderer.cfg.size, v["pose"], v["translation"], v["focal"], v["principal"],
                v["sh"] if sh is None else sh.reshape(1, -1).float())
    if yaw_deg is not None:
        view = view.with_yaw(math.radians(yaw_deg))
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32)).reshape(1, -1)  # noqa: E731
    out = render_batch(models.renderer, models.geometry, texture_input(models, subject), v["shape"], v["albedo"],
                       t(expr), detail.reshape(1, 1, *detail.shape[-2:]).float(), t(aus), view)
    det = out["detailed"]
    shaded = det.clay()[0]
    hwc = lambda x: x.clamp(0, 1).permute(1, 2, 0).numpy()  # noqa: E731
    return {"image": hwc(out["image"][0]), "shaded": hwc(shaded), "mask": det.mask[0, 0].numpy()}
