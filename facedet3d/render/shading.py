"""Vertex normals and second-order spherical-harmonics (SH) Lambertian shading.

SH convention (Deep3DFaceRecon, Deng et al. 2019, after Ramamoorthi & Hanrahan 2001)
-----------------------------------------------------------------------------------
``sh`` is (B, 27), read as (B, 3, 9): one row of 9 coefficients per colour R, G, B.
The irradiance of colour c at unit normal n = (x, y, z) (camera or frontal frame:
x right, y up, z towards the viewer) is ``E_c(n) = sum_k sh[c, k] * Y_k(n)``, with
the basis of :func:`sh_basis`, which already includes the Lambertian convolution
factors ``a_l`` and the SH normalisations ``c_l``::

    a0 = pi,  a1 = 2 pi / sqrt(3),  a2 = 2 pi / sqrt(8)
    c0 = 1 / sqrt(4 pi),  c1 = sqrt(3) / sqrt(4 pi),  c2 = 3 sqrt(5) / sqrt(12 pi)
    Y = [a0 c0,  -a1 c1 y,  a1 c1 z,  -a1 c1 x,  a2 c2 x y,  -a2 c2 y z,
         a2 c2 / (2 sqrt 3) (3 z^2 - 1),  -a2 c2 x z,  a2 c2 / 2 (x^2 - y^2)]

These are exactly Deep3DFaceRecon's numbers (their a1, a2 differ from the exact
clamped-cosine factors 2 pi / 3 and pi / 4 of Ramamoorthi & Hanrahan). A constant
light ``sh = [c, 0, ..., 0]`` per colour gives the uniform irradiance
``a0 c0 c = (sqrt(pi) / 2) c ~= 0.886 c``. Unlike Deep3DFaceRecon no 0.8 is added to
the DC terms here: coefficients predicted by their network need ``sh[:, [0, 9, 18]] += 0.8``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

A0, A1, A2 = math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0)
C0 = 1.0 / math.sqrt(4.0 * math.pi)
C1 = math.sqrt(3.0) / math.sqrt(4.0 * math.pi)
C2 = 3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi)
# Exact Lambertian (clamped cosine) convolution factors, used by sh_from_light.
_LAMBERT = (math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0)
_BAND_OF = (0, 1, 1, 1, 2, 2, 2, 2, 2)

# The preview light of default_sh: ambient plus one white directional light from
# the upper right, in front of the face (camera frame, pointing towards the light).
DEFAULT_LIGHT_DIRECTION = (0.35, 0.45, 1.0)
DEFAULT_AMBIENT = 0.45
DEFAULT_INTENSITY = 0.6


def vertex_normals(verts: Tensor, faces: Tensor, eps: float = 1e-12) -> Tensor:
    """Area-weighted unit vertex normals: verts (B, V, 3) or (V, 3) -> same shape.

    Each face contributes ``(v1 - v0) x (v2 - v0)`` (length = twice its area) to its
    three vertices; faces counter-clockwise seen from outside give outward normals.
    Vertices in no face get a zero normal.
    """
    squeeze = verts.dim() == 2
    if squeeze:
        verts = verts[None]
    bsz, nv, _ = verts.shape
    faces = faces.to(device=verts.device, dtype=torch.long)
    v0, v1, v2 = (verts.index_select(1, faces[:, i]) for i in range(3))
    fn = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)  # (B, F, 3), |fn| = 2 * area
    # Accumulate on a flat (B * V, 3) buffer: index_add along dim 0 is much faster on CPU.
    offsets = torch.arange(bsz, device=verts.device)[:, None, None] * nv
    index = (faces.t()[None] + offsets).reshape(-1)  # (B, corner, F)
    source = fn[:, None].expand(bsz, 3, -1, 3).reshape(-1, 3)
    normals = verts.new_zeros(bsz * nv, 3).index_add_(0, index, source).view(bsz, nv, 3)
    normals = F.normalize(normals, dim=-1, eps=eps)
    return normals[0] if squeeze else normals


def _sh_basis_first(normals: Tensor) -> Tensor:
    """The 9 basis values stacked first: (..., 3) -> (9, ...)."""
    x, y, z = normals.unbind(-1)
    k1, k2 = A1 * C1, A2 * C2
    return torch.stack(
        [
            torch.full_like(x, A0 * C0),
            -k1 * y,
            k1 * z,
            -k1 * x,
            k2 * x * y,
            -k2 * y * z,
            k2 / (2.0 * math.sqrt(3.0)) * (3.0 * z * z - 1.0),
            -k2 * x * z,
            k2 / 2.0 * (x * x - y * y),
        ]
    )


def sh_basis(normals: Tensor) -> Tensor:
    """The 9 SH basis values incl. Lambertian factors (see the module docstring): (..., 3) -> (..., 9)."""
    return torch.movedim(_sh_basis_first(normals), 0, -1)


def sh_irradiance(normals: Tensor, sh: Tensor) -> Tensor:
    """RGB irradiance (B, ..., 3) at unit normals (B, ..., 3) under lights sh (B, 27), (1, 27) or (27,)."""
    coeffs = sh.reshape(-1, 3, 9).to(normals.dtype)  # (B, colour, k)
    basis = _sh_basis_first(normals)  # (9, B, ...)
    bsz = max(basis.shape[1], coeffs.shape[0])
    flat = basis.reshape(9, basis.shape[1], -1).transpose(0, 1)  # (B, 9, N)
    out = coeffs @ flat  # (B, 3, N): long output rows are fast
    return out.transpose(1, 2).reshape((bsz,) + normals.shape[1:-1] + (3,))


def lambertian(albedo: Tensor, normals: Tensor, sh: Tensor) -> Tensor:
    """Lambertian colour ``albedo * irradiance``: albedo broadcastable to (B, ..., 3), normals (B, ..., 3)."""
    return albedo * sh_irradiance(normals, sh)


def sh_from_light(
    direction: Sequence[float] | Tensor,
    intensity: float = 1.0,
    ambient: float = 0.0,
    color: Sequence[float] = (1.0, 1.0, 1.0),
) -> Tensor:
    """SH coefficients (B, 27) of ambient + one directional light.

    ``direction`` (3,) or (B, 3) points from the surface towards the light. The
    result gives ``E(n) ~= color * (ambient + intensity * max(0, n . d))`` (the
    order-2 approximation of the clamped cosine, exact factors pi, 2 pi / 3, pi / 4).
    """
    d = F.normalize(torch.as_tensor(direction, dtype=torch.get_default_dtype()).reshape(-1, 3), dim=-1)
    basis = sh_basis(d)  # a_l * Y_k(d)
    ours = torch.tensor([(A0, A1, A2)[b] for b in _BAND_OF], dtype=basis.dtype)
    exact = torch.tensor([_LAMBERT[b] for b in _BAND_OF], dtype=basis.dtype)
    coeff = intensity * basis * exact / ours**2  # (B, 9): E = sum_l exact_l Y_lm(d) Y_lm(n)
    coeff[:, 0] = coeff[:, 0] + ambient / (A0 * C0)
    col = torch.as_tensor(color, dtype=basis.dtype).reshape(1, 3, 1)
    return (col * coeff[:, None, :]).reshape(-1, 27)


def default_sh(batch: int = 1, device=None, dtype=None) -> Tensor:
    """The preview light (B, 27): white ambient 0.45 + directional 0.6 from the upper right front."""
    sh = sh_from_light(DEFAULT_LIGHT_DIRECTION, DEFAULT_INTENSITY, DEFAULT_AMBIENT)
    return sh.to(device=device, dtype=dtype or torch.get_default_dtype()).expand(batch, -1).clone()
