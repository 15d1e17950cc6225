"""One-call shaded preview of meshes: pose, project, rasterize, SH-Lambertian shading."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from facedet3d.render.camera import DEFAULT_DISTANCE, FACE_PIVOT, Camera, place_face
from facedet3d.render.rasterize import interpolate, rasterize
from facedet3d.render.shading import default_sh, lambertian, vertex_normals

# Albedo of the grey clay material of the preview renders.
GREY_ALBEDO = 0.78


class Shaded(NamedTuple):
    """image: (B, 3, H, W) in [0, 1]; mask: (B, 1, H, W) float, 1 where the mesh covers the pixel."""

    image: Tensor
    mask: Tensor


def render_shaded(
    verts: Tensor,
    faces: Tensor,
    camera: Camera,
    pose=(0.0, 0.0, 0.0),
    distance: float | Tensor = DEFAULT_DISTANCE,
    sh: Tensor | None = None,
    albedo: Tensor | float | None = None,
    background: Tensor | float = 0.0,
    pivot=FACE_PIVOT,
    cull_backfaces: bool = False,
    translation=None,
) -> Shaded:
    """Render meshes in the frontal frame (mm) with SH-Lambertian shading.

    Args:
        verts: (B, V, 3) or (V, 3) frontal-frame vertices in mm; faces (F, 3).
        camera: e.g. ``face_camera((256, 256))``.
        pose: (yaw, pitch, roll) radians, a 3-sequence, (3,) or (B, 3) tensor;
            with ``distance`` (mm) and ``pivot`` as in :func:`place_face`.
        sh: (B, 27) / (1, 27) SH lights in camera space (see :mod:`shading`);
            None = :func:`default_sh`.
        albedo: per-vertex colours (B, V, 3) or (V, 3) in [0, 1], a grey level, or
            None for the grey clay material (``GREY_ALBEDO``).
        background: a grey level, an RGB triple or an image broadcastable to (B, 3, H, W).
        cull_backfaces: drop clockwise (back-facing) triangles.
        translation: extra camera-space shift (3,) or (B, 3) in mm, as in :func:`place_face`.

    Normals are computed after posing, i.e. in camera space, and interpolated
    (perspective-correct for a perspective camera). Differentiable w.r.t. verts,
    sh and albedo (not at silhouettes).
    """
    verts_cam = place_face(verts, pose, distance, pivot, translation)
    bsz = verts_cam.shape[0]
    screen = camera.project(verts_cam)
    h, w = camera.image_size
    frags = rasterize(screen, faces, (h, w), perspective_correct=camera.is_perspective,
                      cull_backfaces=cull_backfaces)
    normals = F.normalize(interpolate(vertex_normals(verts_cam, faces), faces, frags), dim=-1)
    if sh is None:
        sh = default_sh(1, device=verts_cam.device, dtype=verts_cam.dtype)
    if albedo is None:
        albedo = GREY_ALBEDO
    if isinstance(albedo, Tensor) and albedo.dim() >= 2:
        albedo = interpolate(albedo.to(verts_cam.dtype), faces, frags)  # (B, H, W, 3)
    color = lambertian(torch.as_tensor(albedo, dtype=verts_cam.dtype, device=verts_cam.device),
                       normals, sh.to(verts_cam))
    color = color.clamp(0.0, 1.0).permute(0, 3, 1, 2)  # (B, 3, H, W)
    mask = frags.mask[:, None].to(color.dtype)
    bg = torch.as_tensor(background, dtype=color.dtype, device=color.device)
    if bg.dim() == 1:
        bg = bg.view(1, -1, 1, 1)
    image = color * mask + bg * (1.0 - mask)
    return Shaded(image.expand(bsz, 3, h, w), mask)
