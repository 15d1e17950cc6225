"""Z-buffer triangle rasterizer, attribute interpolation and texture lookup (pure torch).

Screen space is that of :meth:`facedet3d.render.camera.Camera.project`: ``(x, y,
depth)`` with x the pixel column, y the pixel row, pixel ``(i, j)`` sampled at its
centre ``(j + 0.5, i + 0.5)``, smaller depth = closer.

Visibility pass (no autograd): each triangle's integer bounding box of covered
pixel centres is computed and triangles are bucketed by the powers of two
(kx, ky) above its width and height. Per bucket, the barycentrics and the depth
(or 1/depth) are affine in the pixel position, so all kx * ky candidate pixels
of all its triangles are evaluated by one small matrix product. Covered
candidates are z-buffered with ``scatter_reduce("amin")`` on an int64 key that
packs the depth's order-preserving float32 bits above the flat triangle index:
the nearest triangle wins, exact ties go to the lowest index. Work is chunked
(per image and in bounded pieces) to keep temporaries small, which matters a
lot on CPU.

Barycentric pass (autograd): for every covered pixel the barycentrics of the
winning triangle are recomputed from ``screen``, so they and the depth are
differentiable w.r.t. the vertex positions (not across silhouettes / occlusion
boundaries, whose pixels just switch triangles).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# Candidate pixels (x 4 floats) per matrix product; bounds the memory for big triangles.
_CHUNK_CANDIDATES = 1 << 18
# Triangles z-buffered together on CPU (per image).
_TRI_CHUNK = 65536
# Foreground pixels whose barycentrics are recomputed together on CPU.
_PIX_CHUNK = 65536
# Barycentric tolerance of the coverage test, so shared edges leave no pinholes.
_INSIDE_EPS = 1e-6
_TRI_BITS = 31
_TRI_MASK = (1 << _TRI_BITS) - 1
_EMPTY = torch.iinfo(torch.int64).max


class Fragments(NamedTuple):
    """Per-pixel rasterization result for a batch of B images of H x W pixels.

    tri_id: (B, H, W) long, index into ``faces`` (0..F-1) of the visible triangle, -1 = background.
    bary:   (B, H, W, 3) float, barycentrics of the pixel centre in that triangle (0 on background);
            perspective-correct if requested; differentiable w.r.t. ``screen``.
    depth:  (B, H, W) float, interpolated depth (= -z_cam), 0 on background; differentiable.
    mask:   (B, H, W) bool, True where a triangle covers the pixel.
    """

    tri_id: Tensor
    bary: Tensor
    depth: Tensor
    mask: Tensor


def _ceil_log2(n: int) -> int:
    return max(0, (int(n) - 1).bit_length())


@functools.lru_cache(maxsize=128)
def _window(kx: int, ky: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Candidate offsets of a kx x ky window (cached, read-only).

    Returns homogeneous offsets (kk, 3) float (col, row, 1) and flat offsets (kk,) long.
    """
    oy, ox = torch.meshgrid(torch.arange(ky, device=device), torch.arange(kx, device=device), indexing="ij")
    ox, oy = ox.reshape(-1), oy.reshape(-1)
    return torch.stack([ox, oy, torch.ones_like(ox)], 1).float(), oy * width + ox


def _window_coefficients(c: Tensor, x0: Tensor, y0: Tensor, perspective_correct: bool) -> Tensor:
    """Affine coefficients (3 [d/dcol, d/drow, 1], 4 [b0, b1, b2, q], n) over each window.

    ``c`` (xyz, corner, n) screen vertices, (x0, y0) (n,) window origins. Positions are
    taken relative to the centre of the window's first pixel (float32 precision), and
    q is the depth, or 1/depth when perspective_correct (both affine in screen space).
    Barycentric i is the edge function of the opposite edge over the doubled area,
    ``((v_{i+1} - p) x (v_{i+2} - p)) / ((v_1 - v_0) x (v_2 - v_0))``.
    """
    n = c.shape[2]
    xa, xb, xc = c[0] - (x0 + 0.5)
    ya, yb, yc = c[1] - (y0 + 0.5)
    coef = torch.empty(3, 4, n, device=c.device)
    torch.sub(yb, yc, out=coef[0, 0])
    torch.sub(yc, ya, out=coef[0, 1])
    torch.sub(ya, yb, out=coef[0, 2])
    torch.sub(xc, xb, out=coef[1, 0])
    torch.sub(xa, xc, out=coef[1, 1])
    torch.sub(xb, xa, out=coef[1, 2])
    torch.mul(xb, yc, out=coef[2, 0]).sub_(xc * yb)
    torch.mul(xc, ya, out=coef[2, 1]).sub_(xa * yc)
    torch.mul(xa, yb, out=coef[2, 2]).sub_(xb * ya)
    coef[:, :3] *= 1.0 / coef[2, :3].sum(0)  # the three edge functions sum to the doubled area
    q = 1.0 / c[2] if perspective_correct else c[2]
    weighted = coef[:, :3] * q
    torch.add(weighted[:, 0], weighted[:, 1], out=coef[:, 3]).add_(weighted[:, 2])
    return coef


def _depth_key(depth: Tensor, tri: Tensor, positive: bool) -> Tensor:
    """int64 keys ordering by float32 depth, then by flat triangle index.

    The float32 bit pattern, read as an integer, is monotone for positive floats;
    for any sign the negative half is mirrored and the range shifted to >= 0.
    """
    bits = depth.float().view(torch.int32).long()
    if not positive:
        bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + (1 << 31)
    return (bits << _TRI_BITS) | tri


@torch.no_grad()
def _visibility(
    screen: Tensor,
    faces: Tensor,
    image_size: tuple[int, int],
    perspective_correct: bool,
    cull_backfaces: bool,
    znear: float | None,
) -> Tensor:
    """Z-buffer pass: flat (B*H*W,) int64 keys; ``_EMPTY`` on background, else the low
    ``_TRI_BITS`` bits hold the winning flat triangle index b * F + f.

    Triangles are processed per image in chunks of ``_TRI_CHUNK``: the z-buffer
    min is order-independent, and small working sets are much faster on CPU.
    """
    bsz, nv, _ = screen.shape
    nf = faces.shape[0]
    h, w = image_size
    if bsz * nf > _TRI_MASK:
        raise ValueError("too many triangles in the batch for the z-buffer key")
    zbuf = torch.full((bsz * h * w,), _EMPTY, dtype=torch.int64, device=screen.device)
    soa = screen.detach().float().reshape(-1, 3).t().contiguous()  # (xyz, B*V)
    faces_t = faces.t().contiguous()  # (corner, F)
    chunk = _TRI_CHUNK if screen.device.type == "cpu" else max(1, nf)
    for b in range(bsz):
        for f0 in range(0, nf, chunk):
            vidx = faces_t[:, f0 : f0 + chunk] + b * nv
            _zbuffer_chunk(
                zbuf, soa, vidx, b * nf + f0, b * h * w, (h, w), perspective_correct, cull_backfaces, znear
            )
    return zbuf


def _zbuffer_chunk(
    zbuf: Tensor,
    soa: Tensor,
    vidx: Tensor,
    tri_offset: int,
    pix_offset: int,
    image_size: tuple[int, int],
    perspective_correct: bool,
    cull_backfaces: bool,
    znear: float | None,
) -> None:
    """Z-buffer the triangles with corner vertex ids ``vidx`` (3, n) of one image into ``zbuf``.

    ``soa`` (3, B*V) holds the screen vertices; triangle j of the chunk has the flat
    index ``tri_offset + j``; the image's pixels start at ``pix_offset`` in ``zbuf``.
    """
    h, w = image_size
    dev = soa.device
    n_tri = vidx.shape[1]
    # Structure of arrays: (xyz, corner, triangle).
    c = soa.index_select(1, vidx.reshape(-1)).view(3, 3, n_tri)
    x, y, z = c[0], c[1], c[2]
    # Integer bounding boxes of the covered pixel centres, clipped to the image: (4, n)
    # rows = first column, first row, last column, last row.
    limit = torch.tensor([[w - 1.0], [h - 1.0]], device=dev)
    lo = torch.ceil(c[:2].amin(1) - 0.5).clamp_(min=0.0)
    hi = torch.minimum(torch.floor(c[:2].amax(1) - 0.5), limit)
    area = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
    keep = (lo <= hi).all(0) & torch.isfinite(area)
    if perspective_correct or znear is not None:
        keep &= z.amin(0) > (0.0 if znear is None else znear)
    # Front faces (counter-clockwise in camera space seen from +z) have area < 0 in (column, row).
    keep &= (area < 0) if cull_backfaces else (area != 0)
    idx = keep.nonzero().squeeze(1)
    if idx.numel() == 0:
        return

    # Buckets: the powers of two (kx, ky) = (2**lx, 2**ly) above the bounding-box sides
    # (capped at the image size); triangles are sorted by bucket.
    box = torch.cat([lo, hi]).index_select(1, idx)
    lg = torch.ceil(torch.log2(box[2:] - box[:2] + 1.0))
    lg = torch.minimum(lg, torch.tensor([[_ceil_log2(w)], [_ceil_log2(h)]], dtype=lg.dtype, device=dev))
    code = (lg[0] * 32.0 + lg[1]).short()
    counts = torch.bincount(code)
    codes = counts.nonzero().squeeze(1)
    counts = counts.index_select(0, codes).tolist()
    codes = codes.tolist()
    if len(codes) > 1:
        order = torch.argsort(code, stable=True)  # fast on int16
        idx, box = idx.index_select(0, order), box.index_select(1, order)
    # Window origins, clamped so that each kx x ky window lies inside the image (it
    # still contains the clipped bounding box).
    origin, start = [], 0
    for cd, count in zip(codes, counts):
        kx, ky = min(1 << (cd // 32), w), min(1 << (cd % 32), h)
        last = torch.tensor([[w - kx], [h - ky]], dtype=box.dtype, device=dev)
        origin.append(box[:2, start : start + count].clamp(max=last))
        start += count
    x0, y0 = torch.cat(origin, 1) if len(origin) > 1 else origin[0]
    c = c.reshape(9, n_tri).index_select(1, idx).view(3, 3, -1)
    coef = _window_coefficients(c, x0, y0, perspective_correct)  # (3, 4, n)
    base = (y0 * w + x0).long() + pix_offset  # flat pixel of each window origin
    gid = idx + tri_offset
    positive = perspective_correct or (znear is not None and znear >= 0)

    start = 0
    for cd, count in zip(codes, counts):
        kx, ky = min(1 << (cd // 32), w), min(1 << (cd % 32), h)
        local, pix_off = _window(kx, ky, w, dev)
        kk = pix_off.numel()
        step = max(1, _CHUNK_CANDIDATES // kk)
        for s0 in range(start, start + count, step):
            s1 = min(s0 + step, start + count)
            n = s1 - s0
            vals = (local @ coef[:, :, s0:s1].reshape(3, -1)).view(kk, 4, n)
            inside = torch.minimum(torch.minimum(vals[:, 0], vals[:, 1]), vals[:, 2]) >= -_INSIDE_EPS
            oi, ti = inside.nonzero(as_tuple=True)
            qv = vals.view(-1).index_select(0, oi * (4 * n) + ti + 3 * n)
            depth = 1.0 / qv if perspective_correct else qv
            pix = base[s0:s1].index_select(0, ti) + pix_off.index_select(0, oi)
            zbuf.scatter_reduce_(0, pix, _depth_key(depth, gid[s0:s1].index_select(0, ti), positive), reduce="amin")
        start += count


def _barycentrics(
    soa: Tensor, faces_t: Tensor, nv: int, pix: Tensor, tri_flat: Tensor, image_size: tuple[int, int],
    perspective_correct: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Differentiable barycentrics of pixel centres in their winning triangles.

    ``soa`` (3 xyz, B*V) screen vertices, ``faces_t`` (3, F); ``pix`` (N,) flat pixel
    indices b * H * W + row * W + col, ``tri_flat`` (N,) flat triangle indices b * F + f.
    Returns (bary (N, 3), depth (N,), f (N,)).
    """
    h, w = image_size
    nf = faces_t.shape[1]
    if soa.shape[1] == nv:  # a single image: skip the integer divisions
        f, rem = tri_flat, pix
        vid = faces_t.index_select(1, f)  # (3 corners, N)
    else:
        b = pix // (h * w)
        f = tri_flat - b * nf
        rem = pix - b * (h * w)
        vid = faces_t.index_select(1, f) + b * nv
    v = soa.index_select(1, vid.view(-1)).view(3, 3, -1)  # (xyz, corner, N)
    row = rem // w
    px = (rem - row * w).to(soa.dtype) + 0.5
    py = row.to(soa.dtype) + 0.5
    x0, x1, x2 = v[0] - px
    y0, y1, y2 = v[1] - py
    # Edge functions at the pixel centre (twice the signed sub-triangle areas).
    e0, e1, e2 = x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0
    area = e0 + e1 + e2
    if perspective_correct:
        z0, z1, z2 = v[2]
        e0, e1, e2 = e0 / z0, e1 / z1, e2 / z2  # proportional to the perspective-correct weights
        inv = 1.0 / (e0 + e1 + e2)
        return torch.stack([e0 * inv, e1 * inv, e2 * inv], -1), area * inv, f
    inv = 1.0 / area
    b0, b1, b2 = e0 * inv, e1 * inv, e2 * inv
    z0, z1, z2 = v[2]
    return torch.stack([b0, b1, b2], -1), b0 * z0 + b1 * z1 + b2 * z2, f


def rasterize(
    screen: Tensor,
    faces: Tensor,
    image_size: tuple[int, int],
    perspective_correct: bool = False,
    cull_backfaces: bool = False,
    znear: float | None = None,
) -> Fragments:
    """Rasterize triangles given in screen space into per-pixel fragments.

    Args:
        screen: (B, V, 3) projected vertices (column, row, depth), see :meth:`Camera.project`.
        faces: (F, 3) long vertex indices, shared by the batch.
        image_size: (H, W).
        perspective_correct: interpolate with 1/depth (use for perspective cameras);
            triangles with a vertex at depth <= 0 are then dropped.
        cull_backfaces: drop back faces, i.e. triangles that are clockwise in camera
            space seen from the camera (front = counter-clockwise, OpenGL convention).
            Both windings are rasterized by default.
        znear: if given, drop triangles with a vertex at depth <= znear.

    Returns:
        :class:`Fragments`; ``tri_id``/``mask`` are exact, ``bary``/``depth`` carry
        gradients w.r.t. ``screen``. Pixels exactly on a shared edge may go to either
        triangle (coverage is inclusive with a 1e-6 barycentric tolerance).
    """
    if screen.dim() != 3 or screen.shape[-1] != 3:
        raise ValueError(f"screen must be (B, V, 3), got {tuple(screen.shape)}")
    h, w = int(image_size[0]), int(image_size[1])
    faces = faces.to(device=screen.device, dtype=torch.long)
    bsz = screen.shape[0]
    zbuf = _visibility(screen, faces, (h, w), perspective_correct, cull_backfaces, znear)
    mask = zbuf != _EMPTY
    pix = mask.nonzero().squeeze(1)
    tri_flat = zbuf.index_select(0, pix) & _TRI_MASK
    n_pix = bsz * h * w
    bary = screen.new_zeros(n_pix, 3)
    depth = screen.new_zeros(n_pix)
    tri_id = torch.full_like(zbuf, -1)
    soa = screen.reshape(-1, 3).t().contiguous()  # (xyz, B*V), differentiable
    faces_t = faces.t().contiguous()
    chunk = _PIX_CHUNK if screen.device.type == "cpu" else max(1, pix.numel())
    for i in range(0, pix.numel(), chunk):
        p = pix[i : i + chunk]
        b_fg, d_fg, f_fg = _barycentrics(
            soa, faces_t, screen.shape[1], p, tri_flat[i : i + chunk], (h, w), perspective_correct
        )
        bary.index_copy_(0, p, b_fg)
        depth.index_copy_(0, p, d_fg)
        tri_id.index_copy_(0, p, f_fg)
    return Fragments(
        tri_id=tri_id.view(bsz, h, w),
        bary=bary.view(bsz, h, w, 3),
        depth=depth.view(bsz, h, w),
        mask=mask.view(bsz, h, w),
    )


def interpolate(attrs: Tensor, faces: Tensor, frags: Fragments) -> Tensor:
    """Interpolate vertex attributes (B, V, C), (1, V, C) or (V, C) -> (B, H, W, C).

    Uses ``frags.bary`` (so perspective-correct if the rasterization was);
    zero on background; differentiable w.r.t. ``attrs`` and through the barycentrics.
    """
    bsz, h, w = frags.tri_id.shape
    faces = faces.to(device=frags.tri_id.device, dtype=torch.long)
    tri = frags.tri_id.reshape(-1)
    pix = (tri >= 0).nonzero().squeeze(1)
    vid = faces.index_select(0, tri.index_select(0, pix))  # (N, 3)
    if attrs.dim() == 3 and attrs.shape[0] == 1:
        attrs = attrs[0]
    n_ch = attrs.shape[-1]
    if attrs.dim() == 3:
        vid = vid + (pix // (h * w) * attrs.shape[1])[:, None]
    vals = attrs.reshape(-1, n_ch).index_select(0, vid.view(-1)).view(-1, 3, n_ch)  # (N, 3, C)
    bary = frags.bary.reshape(-1, 3).index_select(0, pix).to(vals.dtype)
    out_fg = vals[:, 0] * bary[:, 0:1] + vals[:, 1] * bary[:, 1:2] + vals[:, 2] * bary[:, 2:3]  # (N, C)
    out = out_fg.new_zeros(bsz * h * w, n_ch)
    return out.index_copy_(0, pix, out_fg).view(bsz, h, w, n_ch)


def sample_texture(texture: Tensor, uv: Tensor, mask: Tensor | None = None) -> Tensor:
    """Bilinear lookup of a UV-layout texture (B|1, C, Ht, Wt) at per-pixel uv (B, H, W, 2) -> (B, C, H, W).

    UV convention of :mod:`facedet3d.face.layout` (u = column, v = row of the
    stored map, ``grid = 2 * uv - 1``, ``align_corners=False``, border padding).
    Pixels where ``mask`` (B, H, W) is False are set to 0.
    """
    if texture.shape[0] == 1 and uv.shape[0] > 1:
        texture = texture.expand(uv.shape[0], -1, -1, -1)
    grid = uv.to(texture.dtype) * 2.0 - 1.0
    out = F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if mask is not None:
        out = out * mask[:, None].to(out.dtype)
    return out
