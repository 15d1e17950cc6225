"""Per-vertex lookup of UV maps and displacement of a mesh along its normals."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from facedet3d.render.shading import vertex_normals


def sample_uv_map(uv_map: Tensor, uvs: Tensor) -> Tensor:
    """Bilinear values of a UV-layout map (B, C, H, W) at vertex UVs (V, 2) or (B, V, 2) -> (B, V, C).

    UV convention of :mod:`facedet3d.face.layout`: u = column, v = row of the
    stored map, ``grid = 2 * uv - 1``, ``align_corners=False``; border padding.
    """
    if uvs.dim() == 2:
        uvs = uvs[None]
    bsz = max(uv_map.shape[0], uvs.shape[0])
    uv_map = uv_map.expand(bsz, -1, -1, -1)
    grid = (uvs.to(uv_map.dtype) * 2.0 - 1.0).expand(bsz, -1, -1)[:, None]  # (B, 1, V, 2)
    out = F.grid_sample(uv_map, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2)  # (B, V, C)


def displace(verts: Tensor, faces: Tensor, uvs: Tensor, detail: Tensor) -> Tensor:
    """Move vertices (B, V, 3) along their area-weighted unit normals by a detail map.

    ``detail`` (B, 1, H, W) (or (1, 1, H, W)) holds signed offsets in the mesh's
    units (mm), sampled bilinearly at the vertex ``uvs`` (V, 2) or (B, V, 2).
    Positive values move along the normal (outwards for outward-oriented faces).
    Returns (B, V, 3); recompute its normals with :func:`vertex_normals`.
    Differentiable w.r.t. ``verts`` and ``detail``.
    """
    normals = vertex_normals(verts, faces)
    offset = sample_uv_map(detail, uvs)  # (B, V, 1)
    return verts + normals * offset
