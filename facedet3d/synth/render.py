"""Render one synthetic shot: detailed geometry, albedo texture, SH light, pose, background.

The image formation the whole project assumes (and extraction inverts):
vertices of the synthetic model are displaced along their normals by the detail
map, posed, projected by a pinhole camera, rasterized; per pixel the albedo
texture (sampled at the interpolated UV) times the SH irradiance of the
interpolated normal gives linear RGB, composited over the background, then
sRGB-encoded with a little sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facedet3d.face.synthetic import albedo_texture, limit_lid_closure, synthetic_model
from facedet3d.render.color import srgb_decode, srgb_encode
from facedet3d.render.camera import face_camera, place_face
from facedet3d.render.displace import displace
from facedet3d.render.rasterize import interpolate, rasterize, sample_texture
from facedet3d.render.shaded import render_shaded
from facedet3d.render.shading import sh_from_light, sh_irradiance, vertex_normals

NOISE_SIGMA = 1.5 / 255.0


@dataclass
class Rendered:
    image: np.ndarray  # (H, W, 3) uint8 sRGB
    mask: np.ndarray  # (H, W) bool, face pixels
    landmarks: np.ndarray  # (68, 2) float32 pixel (column, row) of the 68 landmarks
    sh: np.ndarray  # (27,) float32 SH light in camera space (shading.py convention)
    focal: float  # pixels
    expr: np.ndarray  # (17,) float32 expression coefficients the geometry used


class SynthRenderer:
    """Renders shots of the synthetic model at one image size (CPU, float32)."""

    def __init__(self, mesh_resolution: int, image_size: int, texture_size: int):
        self.model = synthetic_model(mesh_resolution)
        self.faces = torch.as_tensor(self.model.faces)
        self.uvs = torch.as_tensor(self.model.uvs)
        self.camera = face_camera(image_size)
        self.image_size = image_size
        self.texture_size = texture_size

    @property
    def n_shape(self) -> int:
        return self.model.num_shape

    @property
    def n_albedo(self) -> int:
        return self.model.num_albedo

    def texture(self, albedo: np.ndarray) -> np.ndarray:
        """The identity's albedo texture map (T, T, 3) uint8, sRGB-encoded, in the UV layout."""
        coef = torch.as_tensor(albedo, dtype=torch.float32)[None]
        tex = albedo_texture(self.model, coef, self.texture_size)[0]  # (3, T, T) linear
        return srgb_encode(tex.permute(1, 2, 0).numpy())

    @staticmethod
    def expression(aus: np.ndarray) -> np.ndarray:
        """Expression coefficients (17,) for AU intensities: the AUs, with the jointly
        lid-closing ones (AU06/07/45) scaled down where they would fold the eyelids."""
        return limit_lid_closure(torch.as_tensor(aus, dtype=torch.float32)[None])[0].numpy()

    def geometry(self, shape: np.ndarray, expr: np.ndarray, detail: np.ndarray) -> torch.Tensor:
        """Detailed vertices (1, V, 3) in the frontal frame, mm, for expression coefficients (17,)."""
        verts = self.model.vertices(torch.as_tensor(shape, dtype=torch.float32)[None],
                                    torch.as_tensor(expr, dtype=torch.float32)[None])
        detail_t = torch.as_tensor(np.asarray(detail, dtype=np.float32))[None, None]
        return displace(verts, self.faces, self.uvs, detail_t)

    def render(self, person, shot, detail: np.ndarray, texture: np.ndarray) -> Rendered:
        """Render a shot of a person (see :mod:`synth_sampling`) with its detail map (S, S) mm."""
        size = self.image_size
        expr = self.expression(shot.aus)
        verts = self.geometry(person.shape, expr, detail)
        translation = torch.tensor([shot.offset[0], shot.offset[1], 0.0])
        verts_cam = place_face(verts, torch.as_tensor(shot.pose), shot.distance, translation=translation)
        screen = self.camera.project(verts_cam)
        frags = rasterize(screen, self.faces, (size, size), perspective_correct=True)
        normals = F.normalize(interpolate(vertex_normals(verts_cam, self.faces), self.faces, frags), dim=-1)
        uv = interpolate(self.uvs, self.faces, frags)
        tex = torch.as_tensor(srgb_decode(texture)).permute(2, 0, 1)[None]
        albedo = sample_texture(tex, uv, frags.mask).permute(0, 2, 3, 1)  # (1, H, W, 3)
        ambient, intensity, dx, dy, dz, warmth = (float(v) for v in shot.light[:6])
        color = (1.0 + 0.08 * warmth, 1.0, 1.0 - 0.08 * warmth)
        sh = sh_from_light([dx, dy, dz], intensity, ambient, color).to(torch.float32)
        face = (albedo * sh_irradiance(normals, sh))[0].numpy()
        mask = frags.mask[0].numpy()
        rows = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
        top, bottom = shot.background
        background = top[None, None] * (1 - rows) + bottom[None, None] * rows
        linear = np.where(mask[..., None], face, background)
        rng = np.random.default_rng(list(shot.id.encode()))  # noise fixed by the shot's id
        linear = linear + rng.normal(0.0, NOISE_SIGMA, linear.shape).astype(np.float32)
        landmarks = screen[0, torch.as_tensor(self.model.landmarks), :2].numpy()
        return Rendered(srgb_encode(linear), mask, landmarks.astype(np.float32), sh[0].numpy(),
                        float(self.camera.focal), expr)

    def render_shaded(self, shape, expr, pose, distance: float, offset, detail: np.ndarray) -> np.ndarray:
        """The detailed geometry as grey clay under the preview light, (H, W, 3) uint8."""
        verts = self.geometry(shape, expr, detail)
        translation = torch.tensor([float(offset[0]), float(offset[1]), 0.0])
        shaded = render_shaded(verts, self.faces, self.camera, torch.as_tensor(np.asarray(pose)), distance,
                               background=1.0, translation=translation)
        return srgb_encode(shaded.image[0].permute(1, 2, 0).numpy())
