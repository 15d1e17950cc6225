"""Detail (displacement) map from the residual shading of an unwrapped image (shape from shading).

Method
------
The coarse fit explains each visible texel's colour as ``albedo · E(n)`` (SH irradiance of the
coarse normal n). Fine geometry the model cannot represent — a displacement ``d`` (mm) along
the normal, as in :func:`facedet3d.render.displace.displace` — tilts the normal by
``δn = (d_x (n × S_y) + d_y (S_x × n)) / |S_x × S_y|`` to first order, where ``S_x, S_y`` are
the posed surface's tangents along the frontal x and y axes (known per texel: the UV square
is the frontal plane, and the fit gives each texel's camera-space position) and ``d_x, d_y``
the displacement's frontal derivatives. Linearising the SH shading,

    ρ = log(image / (albedo · E(n)))  ≈  (∇_n E · δn) / E  =  a_x d_x + a_y d_y,

a *directional derivative* of ``d`` along ``a`` (the light's shading gradient projected into
the tangent plane, per texel). Steps:

1. ρ per texel from the luminance ratio (channels summed) of the image to the coarse model
   rendered with the fitted light and albedo by the project's rasterizer — formed per pixel,
   where both are point samples of the same pixel grid (sharp albedo and shading edges then
   cancel), and unwrapped into UV afterwards — high-passed (structure coarser than
   ``rho_cutoff_mm`` = 8 mm removed: the fitted albedo's and coarse shape's errors live
   there), over a mask of visible skin: eroded visibility, ``wrinkles.skin_mask`` (no eye
   openings / mouth gap), no dark or sharply varying albedo (brows, lashes, lip borders), no
   sharply curved coarse geometry (lid margins, nostrils), normals facing the camera.
2. Wiener-style shrinkage by the local signal strength ``|a|`` (weak light gradient = noise).
3. Deconvolution in the Fourier domain: ``d̂ = ρ̂ · conj(H) / (|H|² + λ|ω|² + μ)`` with
   ``H = i ω·â`` for a constant direction â; the slowly varying direction is handled by solving
   for 8 directions and blending them per texel by its own direction (angle interpolation).
   The result is high-passed at ``cutoff_mm`` (15 mm), masked and resampled (bicubic) to the
   output size; it holds no detail finer than the texture grid (0.78 mm at T = 256).

Limits
------
* Only the component of the relief's gradient along the light's tangent-plane gradient is
  observed: wrinkles running *parallel* to the light direction (as seen on the surface) are
  invisible and come out missing; with a light straight along the normal, nothing is seen.
* Albedo detail the model lacks (moles, stubble, pores' colour, makeup, eyebrow hair outside
  the model's brows) leaks into the map as false relief; the mask only removes the model's own
  sharp albedo features. Misregistration of the fit smears creases and leaks albedo edges.
* First-order shading: cast shadows, specularities and inter-reflections are not modelled;
  depth is underestimated where the image blurs the relief (creases narrower than ~2 pixels).
* The map is relative (high-passed): absolute depth and anything coarser than ``cutoff_mm``
  belong to the coarse model, not to the detail map.
* Everything hinges on registration: a fit off by half a millimetre (~0.6 px at 256²) halves
  the correlation with the true map; coarse-model errors (nose, lip and lid outlines) show up
  as false creases. On the synthetic 256² renders the correlation with the ground truth is
  ~0.2 with the fitted model and ~0.3 with the true one; without the renders' sensor noise
  and 8-bit quantisation the true fit would reach ~0.45, and at 512² renders ~0.4 (README,
  extraction). :mod:`.detail_net` adds a learned prior on top of this module's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facedet3d.extract.quality import masked_highpass
from facedet3d.extract.unwrap import Unwrapped
from facedet3d.face import layout
from facedet3d.face.model import MorphableModel
from facedet3d.render.camera import Camera
from facedet3d.render.rasterize import interpolate, rasterize, sample_texture
from facedet3d.render.shading import A0, A1, A2, C0, C1, C2, sh_irradiance, vertex_normals


def sh_normal_gradient(normals: np.ndarray, sh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SH irradiance E (..., 3 colours) at unit normals (..., 3) and its gradient with respect to
    the normal, (..., 3 colours, 3 xyz), for the light sh (27,) (:mod:`shading` convention)."""
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    k1, k2 = A1 * C1, A2 * C2
    one, zero = np.ones_like(x), np.zeros_like(x)
    basis = np.stack([A0 * C0 * one, -k1 * y, k1 * z, -k1 * x, k2 * x * y, -k2 * y * z,
                      k2 / (2.0 * np.sqrt(3.0)) * (3.0 * z * z - 1.0), -k2 * x * z, k2 / 2.0 * (x * x - y * y)], -1)
    dx = np.stack([zero, zero, zero, -k1 * one, k2 * y, zero, zero, -k2 * z, k2 * x], -1)
    dy = np.stack([zero, -k1 * one, zero, zero, k2 * x, -k2 * z, zero, zero, -k2 * y], -1)
    dz = np.stack([zero, zero, k1 * one, zero, zero, -k2 * y, k2 * np.sqrt(3.0) * z, -k2 * x, zero], -1)
    coeff = np.asarray(sh, np.float64).reshape(3, 9)
    irr = basis @ coeff.T
    grad = np.stack([dx @ coeff.T, dy @ coeff.T, dz @ coeff.T], -1)  # (..., colour, xyz)
    return irr, grad


def log_shading_ratio(image_linear: np.ndarray, model: MorphableModel, camera: Camera, verts_cam: torch.Tensor,
                      sh: np.ndarray, unwrapped: Unwrapped) -> np.ndarray:
    """log(image / coarse-model render) of the luminance, unwrapped into UV: (T, T) float32.

    The coarse model (``verts_cam`` (1, V, 3) camera space, the fitted light ``sh`` (27,) and the
    albedo map ``unwrapped.albedo``) is rendered like :mod:`facedet3d.synth.render` renders
    faces; the ratio is formed per pixel on the face (eroded by a pixel, so the background does
    not bleed in) and unwrapped with normalised sampling. 0 where undefined.
    """
    faces = torch.as_tensor(model.faces)
    h, w = camera.image_size
    frags = rasterize(camera.project(verts_cam), faces, (h, w), perspective_correct=camera.is_perspective)
    normals = F.normalize(interpolate(vertex_normals(verts_cam, faces), faces, frags), dim=-1)
    uv = interpolate(torch.as_tensor(model.uvs), faces, frags)
    albedo_map = torch.as_tensor(unwrapped.albedo).permute(2, 0, 1)[None]
    albedo = sample_texture(albedo_map, uv, frags.mask)[0].permute(1, 2, 0)
    pred = (albedo * sh_irradiance(normals, torch.as_tensor(np.asarray(sh, np.float32))[None])[0]).sum(-1).numpy()
    obs = np.asarray(image_linear, np.float32).sum(-1)
    fg = frags.mask[0].numpy() & (pred > 1e-3) & (obs > 1e-3)
    fg = cv2.erode(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    ratio = np.where(fg, np.log(np.maximum(obs, 1e-6) / np.maximum(pred, 1e-6)), 0.0).astype(np.float32)
    return unwrapped.sample(ratio, fg.astype(np.float32))[..., 0]


@dataclass
class DetailResult:
    """detail: (S, S) float32 mm, 0 outside the mask; detail_t: the same on the texture grid
    (T, T); mask: (T, T) bool texels used; rho: (T, T) float32 the high-passed log shading
    ratio; b_col, b_row: (T, T) float32 its shading direction, ρ ≈ b_col ∂d/∂col + b_row ∂d/∂row
    (d in mm, texel steps); strength: (T, T) float32 |b|; rho_all: (T, T) float32 the log shading
    ratio high-passed over every visible texel (not only those shape from shading trusts)."""

    detail: np.ndarray
    detail_t: np.ndarray
    mask: np.ndarray
    rho: np.ndarray
    b_col: np.ndarray
    b_row: np.ndarray
    strength: np.ndarray
    rho_all: np.ndarray


def detail_mask(unwrapped: Unwrapped, erode_px: int = 2, min_albedo: float = 0.06,
                max_albedo_edge: float = 0.15, min_facing: float = 0.6, max_curvature: float = 0.3) -> np.ndarray:
    """Texels (T, T) bool usable for shape from shading (see the module docstring).

    ``max_albedo_edge``: log-albedo change per mm above which a texel (dilated by ``erode_px``)
    is an albedo edge; ``max_curvature``: normal change per mm above which it is a sharp
    feature of the coarse geometry (lid margins, nostrils, lip borders), where the coarse
    model's small errors would pass for creases.
    """
    from facedet3d.face.wrinkles import skin_mask

    size = unwrapped.mask.shape[0]
    kernel = np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8)
    mask = cv2.erode(unwrapped.mask.astype(np.uint8), kernel) > 0
    mask &= skin_mask(size) > 0.5
    lum = unwrapped.albedo.mean(-1)
    mask &= lum > min_albedo
    # Sharp albedo features: change of log albedo per millimetre, dilated.
    log_a = np.log(np.maximum(lum, 1e-3)).astype(np.float32)
    texel_mm = layout.SPAN / size
    gy, gx = np.gradient(log_a, texel_mm)
    edge = (np.hypot(gx, gy) > max_albedo_edge).astype(np.uint8)
    mask &= cv2.dilate(edge, kernel) == 0
    view = -unwrapped.positions / np.maximum(np.linalg.norm(unwrapped.positions, axis=-1, keepdims=True), 1e-6)
    mask &= (unwrapped.normals * view).sum(-1) > min_facing
    n = unwrapped.normals
    curvature = np.sqrt(sum(np.gradient(n[..., c], texel_mm, axis=a) ** 2 for c in range(3) for a in (0, 1)))
    mask &= cv2.dilate((curvature > max_curvature).astype(np.uint8), kernel) == 0
    return mask


def _shading_direction(unwrapped: Unwrapped, sh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per texel (b_col, b_row) (T, T) with ρ ≈ b_col ∂d/∂col + b_row ∂d/∂row (d in mm, texel steps)."""
    size = unwrapped.mask.shape[0]
    h = layout.SPAN / size
    n = unwrapped.normals.astype(np.float64)
    irr, grad = sh_normal_gradient(n, sh)
    a = unwrapped.albedo.astype(np.float64)
    pred = (a * irr).sum(-1)
    k = (a[..., None] * grad).sum(-2) / np.maximum(pred, 1e-6)[..., None]  # (T, T, 3) d log E / dn
    pos = unwrapped.positions.astype(np.float64)
    sx = np.gradient(pos, axis=1) / h  # ∂P/∂x (columns run along +x)
    sy = -np.gradient(pos, axis=0) / h  # ∂P/∂y (rows run along -y)
    jac = np.linalg.norm(np.cross(sx, sy), axis=-1)
    jac = np.maximum(jac, 1e-6)
    ax = (k * np.cross(n, sy)).sum(-1) / jac
    ay = (k * np.cross(sx, n)).sum(-1) / jac
    # d_x = ∂d/∂col / h, d_y = -∂d/∂row / h
    return ax / h, -ay / h


def _deconvolve(rho: np.ndarray, b_col: np.ndarray, b_row: np.ndarray, lam: float, mu: float,
                n_dirs: int = 8) -> np.ndarray:
    """Solve ρ ≈ b̂ · ∇d for d (T, T), b̂ the direction of (b_col, b_row): Fourier deconvolution
    for n_dirs constant directions, blended per texel by its own direction."""
    size = rho.shape[0]
    pad = size // 4
    theta = np.arctan2(b_row, b_col)
    # Directions θ and θ + π are the same line with opposite sign of the derivative.
    flip = theta < 0
    theta = np.where(flip, theta + np.pi, theta)
    rhs = np.where(flip, -rho, rho)
    big = np.pad(rhs, pad)
    spec = np.fft.rfft2(big)
    wr = 2 * np.pi * np.fft.fftfreq(big.shape[0])[:, None]
    wc = 2 * np.pi * np.fft.rfftfreq(big.shape[1])[None, :]
    w2 = wr * wr + wc * wc
    penalty = lam * w2 + mu
    step = np.pi / n_dirs
    pos = theta / step
    out = np.zeros_like(rho)
    for j in range(n_dirs):
        ang = j * step
        hsym = 1j * (wc * np.cos(ang) + wr * np.sin(ang))
        dj = np.fft.irfft2(spec * np.conj(hsym) / (np.abs(hsym) ** 2 + penalty), s=big.shape)
        dj = dj[pad:pad + size, pad:pad + size]
        # Linear interpolation weight of direction j (periodic with period n_dirs).
        dist = np.abs(((pos - j) + n_dirs / 2) % n_dirs - n_dirs / 2)
        out += np.clip(1.0 - dist, 0.0, None) * dj
    return out


def _highpassed_ratio(log_ratio: np.ndarray, mask: np.ndarray, max_ratio: float, cutoff_mm: float) -> np.ndarray:
    """The log shading ratio (T, T) on ``mask`` (T, T) bool, clipped at ±max_ratio and with
    structure coarser than ``cutoff_mm`` removed; 0 off the mask."""
    ratio = np.clip(np.where(mask, log_ratio, 0.0), -max_ratio, max_ratio).astype(np.float32)
    return masked_highpass(ratio, mask, cutoff_mm)


def recover_detail(unwrapped: Unwrapped, sh: np.ndarray, log_ratio: np.ndarray, out_size: int = 512,
                   cutoff_mm: float = 15.0, rho_cutoff_mm: float = 8.0, shrink: float = 1.0, lam: float = 0.2,
                   mu: float = 1e-4, max_ratio: float = 0.7) -> DetailResult:
    """Detail map (out_size², mm) from an unwrapped image, the fitted SH light (27,) and the
    unwrapped log shading ratio (T, T) of :func:`log_shading_ratio`.

    ``cutoff_mm``: structure coarser than this is removed from the map (it belongs to the coarse
    model); ``rho_cutoff_mm``: the same for the shading ratio, before integration.
    ``shrink``: Wiener constant relative to the median shading strength |a| on the mask.
    ``lam``, ``mu``: Tikhonov weights on |∇d|² and d² of the deconvolution (texel units).
    ``max_ratio``: |log ratio| clip (shadows, specular spots, background leaking in).
    """
    mask = detail_mask(unwrapped) & (log_ratio != 0)
    rho = _highpassed_ratio(log_ratio, mask, max_ratio, rho_cutoff_mm)
    b_col, b_row = _shading_direction(unwrapped, sh)
    mag = np.hypot(b_col, b_row)
    kappa = shrink * float(np.median(mag[mask])) if mask.any() else 1.0
    rho_n = rho * mag / (mag * mag + kappa * kappa)  # ≈ b̂ · ∇d, damped where the signal is weak
    d = _deconvolve(np.where(mask, rho_n, 0.0), b_col, b_row, lam, mu)
    d_t = masked_highpass(d.astype(np.float32), mask, cutoff_mm)
    rho_all = _highpassed_ratio(log_ratio, unwrapped.mask & (log_ratio != 0), max_ratio, rho_cutoff_mm)
    return DetailResult(detail=to_output_size(d_t, mask, out_size), detail_t=d_t, mask=mask,
                        rho=rho.astype(np.float32), b_col=b_col.astype(np.float32), b_row=b_row.astype(np.float32),
                        strength=mag.astype(np.float32), rho_all=rho_all.astype(np.float32))


def to_output_size(detail: np.ndarray, mask: np.ndarray, out_size: int) -> np.ndarray:
    """A detail map on the texture grid (T, T) resampled (bicubic) to (out_size, out_size)
    float32, 0 outside ``mask`` (T, T) bool."""
    if out_size == detail.shape[0]:
        return np.where(mask, detail, 0.0).astype(np.float32)
    m_out = cv2.resize(mask.astype(np.float32), (out_size, out_size), interpolation=cv2.INTER_LINEAR) > 0.5
    return (cv2.resize(detail.astype(np.float32), (out_size, out_size), interpolation=cv2.INTER_CUBIC) * m_out)
