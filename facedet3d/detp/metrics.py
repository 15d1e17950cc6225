"""DetP measured on held-out people: correlation, L1 and delta correlation against baselines.

For every ordered pair (x, y) of one held-out person in two different expressions:
  corr        Pearson correlation of D̃(I_y) with D(I_y) over the face region;
  l1          mean |D̃(I_y) − D(I_y)| in mm over the face region;
  delta_corr  correlation of D̃(I_y) − D(I_x) with D(I_y) − D(I_x): does the prediction move the
              map where the expression moves it? (Scale-free, so faint extracted maps do not decide it.)
              The predicted change is always taken from the extracted D(I_x) DetP was given; the
              reference change from the reference maps of both images;
each against the extracted D(I_y) and, for synthetic data, the generator's true D(I_y) (at DetP's size).
Baselines: ``copy`` (D̃ = D(I_x)), ``zero`` (D̃ = 0) and ``expression_mean`` (the mean training
map of the k training images whose AUs are nearest to y). A correlation that is undefined (a
constant map: zero's corr, copy's delta_corr) counts as 0.
"""

from __future__ import annotations

import numpy as np
import torch

METRICS = ("corr", "l1", "delta_corr")


def pearson(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample correlation over ``mask``: (N, 1, S, S) x2, (1, 1, S, S) bool -> (N,); 0 where undefined."""
    m = mask.expand_as(a)
    n = m.flatten(1).sum(1).clamp(min=1)
    a = torch.where(m, a, 0.0)
    b = torch.where(m, b, 0.0)
    a = torch.where(m, a - (a.flatten(1).sum(1) / n)[:, None, None, None], 0.0)
    b = torch.where(m, b - (b.flatten(1).sum(1) / n)[:, None, None, None], 0.0)
    den = (a.pow(2).flatten(1).sum(1) * b.pow(2).flatten(1).sum(1)).sqrt()
    num = (a * b).flatten(1).sum(1)
    return torch.where(den > 1e-20, num / den.clamp(min=1e-20), torch.zeros_like(num))


def masked_l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) x2, (1, 1, S, S) bool -> (N,) mean |a − b| over the mask."""
    m = mask.expand_as(a).float()
    return ((a - b).abs() * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)


def pair_metrics(pred: torch.Tensor, given: torch.Tensor, ref_source: torch.Tensor, ref_target: torch.Tensor,
                 mask: torch.Tensor) -> dict:
    """{corr, l1, delta_corr} per pair (numpy arrays), all (N, 1, S, S) mm: ``pred`` D̃(I_y) made from
    ``given`` (the extracted D(I_x)); ``ref_source``, ``ref_target`` the reference D(I_x), D(I_y)."""
    return {"corr": pearson(pred, ref_target, mask).numpy(), "l1": masked_l1(pred, ref_target, mask).numpy(),
            "delta_corr": pearson(pred - given, ref_target - ref_source, mask).numpy()}


def face_region(train_maps: torch.Tensor) -> torch.Tensor:
    """Texels any training map touches (the UV face region of whichever layout the maps use): (1, 1, S, S) bool."""
    return (train_maps.abs().amax(0, keepdim=True) > 0)


def expression_mean(train_aus: torch.Tensor, train_maps: torch.Tensor, target_aus: torch.Tensor,
                    k: int = 8) -> torch.Tensor:
    """The mean training map of the k training images whose AUs are nearest (L2) to each target.
    (N_train, 17), (N_train, 1, S, S), (N, 17) -> (N, 1, S, S)."""
    dist = torch.cdist(target_aus.float(), train_aus.float())
    nearest = dist.topk(min(k, len(train_aus)), largest=False).indices
    return train_maps[nearest].mean(1)


def summarise(per_pair: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """{method: {metric: mean over pairs}}, to 6 significant digits (l1 is in mm: ~1e-3)."""
    return {method: {k: float(f"{float(np.mean(v)):.6g}") for k, v in m.items()} for method, m in per_pair.items()}
