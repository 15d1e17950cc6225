"""Texture unwrapping: the image's colours and per-texel geometry of a fitted face in UV space.

The model's UV layout is fixed per vertex, so the mesh is rasterized in UV space once per
(model, size) — screen coordinates ``(u·T, v·T, 1)`` — giving each covered texel its triangle
and barycentrics (:class:`UVRaster`). Any per-vertex attribute (posed positions, normals,
basis vectors) then reaches the texels by a fixed linear interpolation. To unwrap an image,
the texels' posed 3D positions are projected with the fitted camera and the image is sampled
there (bilinear ``grid_sample``). A texel counts as visible when it lies inside the image,
faces the camera, and passes the z-buffer test against the fitted mesh rasterized in the
image (within ``depth_tolerance`` mm).

Maps are stored as images: row = v, column = u (``layout``'s convention, face upright).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facedet3d.face.layout import SPAN
from facedet3d.face.model import MorphableModel
from facedet3d.render.camera import Camera
from facedet3d.render.color import srgb_encode
from facedet3d.render.rasterize import rasterize
from facedet3d.render.shading import sh_irradiance, vertex_normals


@dataclass(frozen=True, eq=False)
class UVRaster:
    """The model's mesh rasterized in its UV square at ``size``² texels.

    index: (N,) long flat texel indices (row · size + column) of the N covered texels.
    vid:   (N, 3) long vertex ids of each texel's triangle.
    bary:  (N, 3) float32 barycentrics of the texel centre.
    mask:  (size, size) bool numpy, True on covered texels.
    """

    size: int
    index: torch.Tensor
    vid: torch.Tensor
    bary: torch.Tensor
    mask: np.ndarray

    def interpolate(self, attrs: torch.Tensor) -> torch.Tensor:
        """Per-vertex attributes (V, C) or (K, V, C) -> per-texel values (N, C) or (K, N, C)."""
        corners = attrs[..., self.vid, :]  # (..., N, 3, C)
        return (corners * self.bary[:, :, None].to(attrs.dtype)).sum(-2)

    def to_map(self, values: np.ndarray | torch.Tensor, fill: float = 0.0) -> np.ndarray:
        """Per-texel values (N, ...) -> a (size, size, ...) numpy map, ``fill`` on uncovered texels."""
        values = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        out = np.full((self.size * self.size,) + values.shape[1:], fill, dtype=values.dtype)
        out[self.index.numpy()] = values
        return out.reshape((self.size, self.size) + values.shape[1:])


@functools.lru_cache(maxsize=8)
def uv_raster(model: MorphableModel, size: int) -> UVRaster:
    """Rasterize ``model``'s mesh in its UV square at ``size``² texels (cached per model and size)."""
    uvs = torch.as_tensor(model.uvs, dtype=torch.float32)
    faces = torch.as_tensor(model.faces)
    screen = torch.cat([uvs * size, torch.ones(uvs.shape[0], 1)], 1)[None]
    frags = rasterize(screen, faces, (size, size))
    tri = frags.tri_id.reshape(-1)
    index = (tri >= 0).nonzero().squeeze(1)
    return UVRaster(
        size=int(size),
        index=index,
        vid=faces.index_select(0, tri.index_select(0, index)),
        bary=frags.bary.reshape(-1, 3).index_select(0, index).detach().float(),
        mask=frags.mask[0].numpy(),
    )


def project_points(camera: Camera, points: torch.Tensor) -> torch.Tensor:
    """Camera-space points (N, 3) -> pixel (column, row) (N, 2)."""
    return camera.project(points[None])[0, :, :2]


def sample_image(image: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """Bilinear values of an image (C, H, W) at pixel (column, row) positions (N, 2) -> (N, C).

    Pixel centres are at half-integers (see :mod:`facedet3d.render.camera`); border padding.
    """
    h, w = image.shape[-2:]
    grid = torch.stack([2.0 * pixels[:, 0] / w - 1.0, 2.0 * pixels[:, 1] / h - 1.0], -1)
    out = F.grid_sample(image[None].to(pixels.dtype), grid[None, None], mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out[0, :, 0].t()


def depth_visibility(camera: Camera, verts_cam: torch.Tensor, faces: torch.Tensor, points: torch.Tensor,
                     normals: torch.Tensor, depth_tolerance: float = 4.0, min_facing: float = 0.1) -> torch.Tensor:
    """Visibility (N,) bool of surface points (N, 3) with unit normals (N, 3), camera space, mm.

    Visible = inside the image, facing the camera (cosine between the normal and the direction
    to the camera above ``min_facing``) and not farther than ``depth_tolerance`` mm behind the
    z-buffer of the mesh ``verts_cam`` (1, V, 3) rasterized in the image (nearest pixel).
    """
    h, w = camera.image_size
    screen = camera.project(verts_cam)
    frags = rasterize(screen, faces, (h, w), perspective_correct=camera.is_perspective)
    px = project_points(camera, points)
    col, row = px[:, 0].floor().long(), px[:, 1].floor().long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1))
    zbuf = frags.depth[0].reshape(-1).index_select(0, flat)
    covered = frags.mask[0].reshape(-1).index_select(0, flat)
    depth = -points[:, 2]
    facing = (normals * F.normalize(-points, dim=-1)).sum(-1)
    return inside & covered & (depth <= zbuf + depth_tolerance) & (facing > min_facing)


@dataclass
class Unwrapped:
    """An image unwrapped into the UV square (T = size); all maps are numpy, row = v.

    texture:    (T, T, 3) uint8 sRGB image colours (0 where not visible).
    linear:     (T, T, 3) float32 linear-RGB image colours (0 where not visible).
    mask:       (T, T) bool, texel covered by the mesh and visible in the image.
    positions:  (T, T, 3) float32 camera-space positions of the fitted coarse mesh (mm).
    normals:    (T, T, 3) float32 camera-space unit normals of the fitted coarse mesh.
    irradiance: (T, T, 3) float32 SH irradiance of those normals under the fitted light.
    albedo:     (T, T, 3) float32 the fitted model's linear albedo.
    pixel_mm:   image pixels per millimetre on the face, (T, T) float32 (texel footprint).
    pixels:     (T, T, 2) float32 pixel (column, row) each texel projects to.
    """

    texture: np.ndarray
    linear: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    normals: np.ndarray
    irradiance: np.ndarray
    albedo: np.ndarray
    pixel_mm: np.ndarray
    pixels: np.ndarray

    def sample(self, image: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Unwrap another image-space map (H, W, C) float into (T, T, C) float32, 0 off the mask.

        With ``weights`` (H, W) (e.g. a foreground mask) the sampling is normalised by the
        sampled weights, so pixels of weight 0 do not bleed in. Prefiltered like the texture.
        """
        size = self.mask.shape[0]
        footprint = float(np.median(self.pixel_mm[self.mask])) * SPAN / size if self.mask.any() else 1.0
        img = np.ascontiguousarray(image, dtype=np.float32)
        if img.ndim == 2:
            img = img[..., None]
        if weights is not None:
            img = np.concatenate([img * weights[..., None], weights[..., None].astype(np.float32)], -1)
        img = prefilter(img, footprint)
        img = img if img.ndim == 3 else img[..., None]
        px = torch.as_tensor(self.pixels.reshape(-1, 2))
        out = sample_image(torch.as_tensor(img).permute(2, 0, 1), px).numpy().reshape(size, size, -1)
        if weights is not None:
            out = out[..., :-1] / np.maximum(out[..., -1:], 1e-6)
        return np.where(self.mask[..., None], out, 0.0).astype(np.float32)


def prefilter(image: np.ndarray, pixels_per_texel: float) -> np.ndarray:
    """Blur a float image (H, W, C) so that sampling it once per texel does not alias.

    ``pixels_per_texel`` is the typical texel footprint in pixels; below 1.5 nothing is done.
    """
    if pixels_per_texel <= 1.5:
        return image
    sigma = 0.45 * pixels_per_texel
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)


def unwrap(image_linear: np.ndarray, model: MorphableModel, camera: Camera, verts_cam: torch.Tensor,
           sh: np.ndarray, albedo_texels: torch.Tensor, size: int, depth_tolerance: float = 4.0) -> Unwrapped:
    """Unwrap a linear-RGB image (H, W, 3) float32 into the UV square at ``size``².

    ``verts_cam`` (1, V, 3): the fitted mesh in camera space (mm); ``sh`` (27,) the fitted light;
    ``albedo_texels`` (N, 3): the fitted albedo at the covered texels of ``uv_raster(model, size)``.
    """
    raster = uv_raster(model, size)
    faces = torch.as_tensor(model.faces)
    verts_cam = verts_cam.detach().float()
    normals_v = vertex_normals(verts_cam, faces)[0]
    points = raster.interpolate(verts_cam[0])
    normals = F.normalize(raster.interpolate(normals_v), dim=-1)
    visible = depth_visibility(camera, verts_cam, faces, points, normals, depth_tolerance)
    # Texel footprint in pixels: f · (texel mm) / depth.
    texel_mm = SPAN / size
    pixel_mm = float(camera.focal) / (-points[:, 2]).clamp(min=1.0)
    footprint = float(torch.median(pixel_mm[visible])) * texel_mm if bool(visible.any()) else 1.0
    img = torch.as_tensor(prefilter(np.ascontiguousarray(image_linear, dtype=np.float32), footprint))
    pixels = project_points(camera, points)
    colours = sample_image(img.permute(2, 0, 1), pixels).clamp(0.0, 1.0)
    colours = colours * visible[:, None]
    sh_t = torch.as_tensor(np.asarray(sh, np.float32))[None]
    irradiance = sh_irradiance(normals[None], sh_t)[0]
    linear = raster.to_map(colours.float())
    mask = raster.to_map(visible, fill=False)
    texture = np.where(mask[..., None], srgb_encode(linear), 0).astype(np.uint8)
    return Unwrapped(
        texture=texture,
        linear=linear,
        mask=mask,
        positions=raster.to_map(points.float()),
        normals=raster.to_map(normals.float()),
        irradiance=raster.to_map(irradiance.float()),
        albedo=raster.to_map(albedo_texels.detach().float()),
        pixel_mm=raster.to_map(pixel_mm.float()),
        pixels=raster.to_map(pixels.float(), fill=-1.0),
    )
