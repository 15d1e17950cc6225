"""The renderer's classical half: the proxy and detailed geometry rasterized in a camera (Eq. 22–23, 28).

    G_P = {0 · D, α_s, α_e}: the fitted morphable model, no details;
    G_D = {D, α_s, α_e}:     the same mesh displaced along its normals by a detail map D (mm).

Each is posed and rasterized in camera c (a crop camera of the photo, :class:`View`) to a
:class:`Raster`: the per-pixel UV map with which R samples its neural texture, the face mask, the
SH irradiance of the interpolated normals (L_Sph(G, l), the "shading" of Eq. 28), the model's
albedo γ and the skin mask (eyes, mouth gap and face border excluded) read from the UV layout.
Rasterization needs no gradient (R learns nothing about the geometry) and runs under no_grad.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from facedet3d.face.model import MorphableModel
from facedet3d.face.wrinkles import skin_mask
from facedet3d.render.camera import Camera, place_face
from facedet3d.render.color import to_srgb
from facedet3d.render.displace import displace
from facedet3d.render.rasterize import interpolate, rasterize, sample_texture
from facedet3d.render.shading import sh_irradiance, vertex_normals

SKIN_MASK_SIZE = 256
# Albedo of the grey clay the detailed geometry is shown in, under the photo's own light.
CLAY = 0.5


@dataclass
class View:
    """Camera and light of a batch of B renderings of ``size``² pixels.

    pose (B, 3) yaw, pitch, roll (rad); translation (B, 3) camera-space position of the face pivot
    (mm, as the extract records); focal (B,) px and principal (B, 2) (column, row) px of the crop
    camera; sh (B, 27) SH light in camera space.
    """

    size: int
    pose: Tensor
    translation: Tensor
    focal: Tensor
    principal: Tensor
    sh: Tensor

    def camera(self) -> Camera:
        return Camera.perspective((self.size, self.size), self.focal, self.principal)

    def with_yaw(self, yaw: float) -> "View":
        """The same view with every head turned to ``yaw`` radians (light fixed to the camera)."""
        pose = self.pose.clone()
        pose[:, 0] = yaw
        return View(self.size, pose, self.translation, self.focal, self.principal, self.sh)


class Raster(NamedTuple):
    """One geometry rasterized: uv (B, H, W, 2); mask, skin (B, 1, H, W) in [0, 1]; shading (the SH
    irradiance, B, 3, H, W) and albedo (B, 3, H, W), both linear; 0 off the face."""

    uv: Tensor
    mask: Tensor
    shading: Tensor
    albedo: Tensor
    skin: Tensor

    @property
    def shaded_albedo(self) -> Tensor:
        """γ · L_Sph(G, l): the classical (Lambertian) rendering, linear RGB (B, 3, H, W)."""
        return self.albedo * self.shading

    def clay(self) -> Tensor:
        """The geometry as grey clay (albedo ``CLAY``) under its light, white off the face: sRGB (B, 3, H, W)."""
        return to_srgb(CLAY * self.shading) + (1 - self.mask)


class FaceGeometry:
    """Builds G_P / G_D of a morphable model and rasterizes them (CPU or CUDA, float32)."""

    def __init__(self, model: MorphableModel, device: torch.device | str = "cpu"):
        self.model = model
        self.device = torch.device(device)
        self.faces = torch.as_tensor(model.faces, device=self.device)
        self.uvs = torch.as_tensor(model.uvs, device=self.device)
        skin = torch.from_numpy(skin_mask(SKIN_MASK_SIZE))[None, None]
        self.skin_map = skin.to(self.device)

    def vertices(self, shape: Tensor, expr: Tensor, detail: Tensor | None = None) -> Tensor:
        """Frontal-frame vertices (B, V, 3) mm of G_P (``detail`` None) or G_D (detail (B, 1, S, S) mm)."""
        verts = self.model.vertices(shape.to(self.device), expr.to(self.device))
        return verts if detail is None else self.displaced(verts, detail)

    def displaced(self, verts: Tensor, detail: Tensor) -> Tensor:
        """G_D from G_P's vertices (B, V, 3): moved along their normals by ``detail`` (B, 1, S, S) mm."""
        return displace(verts, self.faces, self.uvs, detail.to(self.device, torch.float32))

    @torch.no_grad()
    def raster(self, verts: Tensor, view: View, albedo_coef: Tensor) -> Raster:
        """Rasterize frontal vertices (B, V, 3) in ``view``; ``albedo_coef`` (B, Ka) γ. Always float32
        (outside any autocast region: the z-buffer's depth keys need it)."""
        with torch.autocast(verts.device.type, enabled=False):
            return self._raster(verts.float(), view, albedo_coef.float())

    def _raster(self, verts: Tensor, view: View, albedo_coef: Tensor) -> Raster:
        verts_cam = place_face(verts, view.pose.to(verts), 0.0, translation=view.translation.to(verts))
        camera = Camera.perspective((view.size, view.size), view.focal.to(verts), view.principal.to(verts))
        frags = rasterize(camera.project(verts_cam), self.faces, (view.size, view.size), perspective_correct=True)
        normals = F.normalize(interpolate(vertex_normals(verts_cam, self.faces), self.faces, frags), dim=-1)
        mask = frags.mask[:, None].to(verts.dtype)
        shading = sh_irradiance(normals, view.sh.to(verts)).permute(0, 3, 1, 2) * mask
        albedo = interpolate(self.model.albedo(albedo_coef.to(verts)), self.faces, frags).permute(0, 3, 1, 2)
        uv = interpolate(self.uvs, self.faces, frags)
        skin = sample_texture(self.skin_map.expand(len(verts), -1, -1, -1), uv, frags.mask)
        return Raster(uv, mask, shading, albedo.clamp(0.0, 1.0) * mask, skin * mask)
