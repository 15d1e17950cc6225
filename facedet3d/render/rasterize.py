"""Z-buffer triangle rasterizer, attribute interpolation and texture lookup (pure torch).

Screen space is that of :meth:`facedet3d.render.camera.Camera.project`: ``(x, y,
depth)`` with x the pixel column, y the pixel row, pixel ``(i, j)`` sampled at its
centre ``(j + 0.5, i + 0.5)``, smaller depth = closer.

Visibility pass (no autograd): the batch is one flat list of B * F triangles.
Each triangle's integer bounding box of covered pixel centres is computed and
the triangle gets a window of kx x ky pixels, the powers of two above the box's
width and height. The barycentrics and the depth (or 1/depth) are affine in the
pixel position, so all window pixels of all triangles are evaluated as a few
tensors, each value by a fixed sequence of IEEE operations (CPU and CUDA agree
bit for bit). Covered candidates are z-buffered with ``scatter_reduce("amin")``
on an int64 key that packs the depth's order-preserving float32 bits above the
flat triangle index: the nearest triangle wins, exact ties go to the lowest
index. Two code paths give the same keys: on a GPU the whole batch goes in one
pass and the windows of all shapes as one flat list, so the number of torch
calls (kernel launches) is the same for any batch, mesh or image size, with one
host synchronisation (the candidate count); on the CPU, where launches are
cheap and small working sets fast, passes of whole images group the windows by
shape (see :func:`chunking_as` to run either path anywhere).

Barycentric pass (autograd): for every covered pixel the barycentrics of the
winning triangle are recomputed from ``screen``, so they and the depth are
differentiable w.r.t. the vertex positions (not across silhouettes / occlusion
boundaries, whose pixels just switch triangles).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# Barycentric tolerance of the coverage test, so shared edges leave no pinholes.
_INSIDE_EPS = 1e-6
_TRI_BITS = 31
_TRI_MASK = (1 << _TRI_BITS) - 1
_EMPTY = torch.iinfo(torch.int64).max
# Window classes: code = lgx * _CODE + lgy (log2 sides < _CODE).
_CODE = 32
# Window pixels from which the CPU path keys only the covered ones (fewer above).
_COMPACT_FROM = 8


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


@functools.lru_cache(maxsize=64)
def _image_constants(w: int, h: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(2, 1) int32 (cached, read-only, so no host-to-device copy per call): the image
    size (w, h) and the largest window log2 sides (ceil(log2(w)), ceil(log2(h)))."""
    return (torch.tensor([[w], [h]], dtype=torch.int32, device=device),
            torch.tensor([[_ceil_log2(w)], [_ceil_log2(h)]], dtype=torch.int32, device=device))


@functools.lru_cache(maxsize=256)
def _window(kx: int, ky: int, width: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Offsets of the pixels of a kx x ky window, row by row (cached, read-only).

    Returns the column (kk,) and row (kk,) offsets as float32, the row offsets as
    float64 and the flat pixel offsets (kk,) long.
    """
    oy, ox = torch.meshgrid(torch.arange(ky, device=device), torch.arange(kx, device=device), indexing="ij")
    ox, oy = ox.reshape(-1), oy.reshape(-1)
    return ox.float(), oy.float(), oy.double(), oy * width + ox


def _window_coefficients(c: Tensor, x0: Tensor, y0: Tensor, perspective_correct: bool) -> Tensor:
    """Affine coefficients (3 [d/dcol, d/drow, 1], 4 [b0, b1, b2, q], n) over each window.

    ``c`` (xyz, corner, n) screen vertices, (x0, y0) (n,) window origins. Positions are
    taken relative to the centre of the window's first pixel (float32 precision), and
    q is the depth, or 1/depth when perspective_correct (both affine in screen space).
    Barycentric i is the edge function of the opposite edge over the doubled area,
    ``((v_{i+1} - p) x (v_{i+2} - p)) / ((v_1 - v_0) x (v_2 - v_0))``. Every sum is
    written out in a fixed order (no reductions), so CPU and CUDA round alike.
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
    e = coef[2]
    coef[:, :3] *= 1.0 / ((e[0] + e[1]) + e[2])  # the three edge functions sum to the doubled area
    q = 1.0 / c[2] if perspective_correct else c[2]
    weighted = coef[:, :3] * q
    torch.add(weighted[:, 0], weighted[:, 1], out=coef[:, 3]).add_(weighted[:, 2])
    return coef


def _depth_key(depth: Tensor, tri: Tensor, positive: bool) -> Tensor:
    """int64 keys ordering by float32 depth, then by flat triangle index.

    The float32 bit pattern, read as an integer, is monotone for positive floats;
    for any sign the negative half is mirrored and the range shifted to >= 0.
    """
    bits = depth.float().view(torch.int32)
    if positive:
        bits = bits.long()
    else:  # negative: flip all but the sign bit (on int32, the cheaper width)
        bits = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long().add_(1 << 31)
    return bits.bitwise_left_shift_(_TRI_BITS).bitwise_or_(tri)


class _Limits(NamedTuple):
    triangles: int  # flat triangles z-buffered together
    candidates: int  # window pixels evaluated together (~100-250 bytes of temporaries each)
    pixels: int  # foreground pixels whose barycentrics are computed together
    few_calls: bool  # a constant number of torch calls (windows as one flat list, no special cases)


# The CPU wants small working sets and cheap arithmetic (passes of whole images, windows
# grouped by shape); a GPU wants few kernel launches: the whole batch in one pass and
# the windows of all shapes as one flat list, so the number of torch calls is the same
# for any batch and any mesh (more passes only beyond ``candidates``).
_CPU_LIMITS = _Limits(triangles=65536, candidates=1 << 18, pixels=65536, few_calls=False)
_GPU_LIMITS = _Limits(triangles=_TRI_MASK, candidates=1 << 25, pixels=_TRI_MASK, few_calls=True)
_limits_override: _Limits | None = None


def _chunk_limits(device: torch.device) -> _Limits:
    if _limits_override is not None:
        return _limits_override
    return _CPU_LIMITS if device.type == "cpu" else _GPU_LIMITS


@contextlib.contextmanager
def chunking_as(device_type: str):
    """Use the chunk sizes of ``device_type`` ("cpu" or "cuda") whatever the tensors' device.

    With "cuda" a call on CPU tensors runs the same torch operations as on a GPU, so
    counting them there gives the GPU's kernel launches (see :mod:`facedet3d.render.bench`).
    """
    global _limits_override
    previous = _limits_override
    _limits_override = _CPU_LIMITS if device_type == "cpu" else _GPU_LIMITS
    try:
        yield
    finally:
        _limits_override = previous


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

    The batch is one flat list of B * F triangles, so the number of torch calls does not
    grow with B: on a GPU one pass takes the whole batch (see :func:`_zbuffer_triangles`);
    on the CPU passes of whole images up to ``_CPU_LIMITS.triangles`` keep the working
    set small, which is much faster there.
    """
    bsz, nv, _ = screen.shape
    nf = faces.shape[0]
    h, w = image_size
    if bsz * nf > _TRI_MASK:
        raise ValueError("too many triangles in the batch for the z-buffer key")
    zbuf = torch.full((bsz * h * w,), _EMPTY, dtype=torch.int64, device=screen.device)
    if bsz * nf == 0 or h * w == 0:
        return zbuf
    soa = screen.detach().float().reshape(-1, 3).t().contiguous()  # (xyz, B*V)
    faces_t = faces.t().contiguous()  # (corner, F)
    limit = _chunk_limits(screen.device).triangles
    per = max(1, limit // nf)  # whole images per pass
    for b0 in range(0, bsz, per):
        for f0 in range(0, nf, limit):  # one pass per image unless a mesh alone is above the limit
            _zbuffer_triangles(
                zbuf, soa, faces_t, nv, (b0, min(b0 + per, bsz)), (f0, min(f0 + limit, nf)), (h, w),
                perspective_correct, cull_backfaces, znear,
            )
    return zbuf


def _zbuffer_triangles(
    zbuf: Tensor,
    soa: Tensor,
    faces_t: Tensor,
    nv: int,
    images: tuple[int, int],
    face_range: tuple[int, int],
    image_size: tuple[int, int],
    perspective_correct: bool,
    cull_backfaces: bool,
    znear: float | None,
) -> None:
    """Z-buffer faces f0 .. f1-1 of images b0 .. b1-1 into ``zbuf``.

    ``soa`` (3, B*V) holds the screen vertices, ``faces_t`` (3, F) the corner ids.
    Each triangle gets a window of kx x ky pixels, the powers of two above the sides of
    its bounding box (capped at the image, moved inside it). On the CPU triangles are
    grouped by window shape and each group's windows are evaluated as one (kx*ky, 4, n)
    tensor (:func:`_zbuffer_windows`); with ``few_calls`` all windows form one flat list
    (:func:`_zbuffer_flat`). Both give the same keys, bit for bit.
    """
    h, w = image_size
    dev = soa.device
    nf = faces_t.shape[1]
    (b0, b1), (f0, f1) = images, face_range
    image = torch.arange(b0, b1, device=dev)[:, None]
    n_tri = (b1 - b0) * (f1 - f0)
    vidx = faces_t[:, None, f0:f1] + image * nv  # (corner, image, face)
    # Structure of arrays: (xyz, corner, triangle).
    c = soa.index_select(1, vidx.reshape(-1)).view(3, 3, n_tri)
    x, y, z = c[0], c[1], c[2]
    # Integer bounding boxes of the covered pixel centres, clipped to the image: rows =
    # (column, row); lo = first, hi = last.
    size, cap = _image_constants(w, h, dev)
    lo = torch.ceil(c[:2].amin(1) - 0.5).clamp_(min=0.0)
    hi = torch.minimum(torch.floor(c[:2].amax(1) - 0.5), size - 1.0)
    area = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
    keep = (lo[0] <= hi[0]) & (lo[1] <= hi[1]) & torch.isfinite(area)
    if perspective_correct or znear is not None:
        keep &= z.amin(0) > (0.0 if znear is None else znear)
    # Front faces (counter-clockwise in camera space seen from +z) have area < 0 in (column, row).
    keep &= (area < 0) if cull_backfaces else (area != 0)

    positive = perspective_correct or (znear is not None and znear >= 0)
    limits = _chunk_limits(dev)
    if limits.few_calls:
        lg, k, origin, base = _windows(lo, hi - lo, keep, size, cap, w)
        base.view(b1 - b0, f1 - f0).add_(image * (h * w))
        coef = _window_coefficients(c, origin[0], origin[1], perspective_correct)  # (3, 4, n)
        tri = (image * nf + torch.arange(f0, f1, device=dev)).view(-1)  # flat triangle index b * F + f
        _zbuffer_flat(zbuf, coef, keep, lg, k, base, tri, w, limits.candidates, perspective_correct, positive)
        return
    # CPU: the kept triangles only (few, when the mesh is much finer than the pixels),
    # grouped by window shape. A pass holds whole images or part of one, so the flat
    # triangle indices b * F + f of its triangles are consecutive.
    kept = keep.nonzero().squeeze(1)
    lo = lo.index_select(1, kept)
    lg, k, origin, base = _windows(lo, hi.index_select(1, kept) - lo, None, size, cap, w)
    base += (kept // (f1 - f0) + b0) * (h * w) if b1 - b0 > 1 else b0 * h * w
    code = (lg[0] * _CODE + lg[1]).short()
    order = torch.argsort(code, stable=True)  # fast on int16
    counts = torch.bincount(code, minlength=_CODE * _CODE).tolist()  # the host sync
    order_kept = kept.index_select(0, order)
    c = c.view(9, n_tri).index_select(1, order_kept).view(3, 3, -1)
    origin = origin.index_select(1, order)
    coef = _window_coefficients(c, origin[0], origin[1], perspective_correct)  # (3, 4, n)
    base = base.index_select(0, order)
    tri = order_kept + (b0 * nf + f0)
    first = 0
    for cd, count in enumerate(counts):
        if not count:
            continue
        kx, ky = min(1 << (cd // _CODE), w), min(1 << (cd % _CODE), h)
        offsets = _window(kx, ky, w, dev)
        step = max(1, limits.candidates // (kx * ky))
        for s0 in range(first, first + count, step):
            s1 = min(s0 + step, first + count)
            _zbuffer_windows(
                zbuf, coef[:, :, s0:s1], base[s0:s1], tri[s0:s1], kx, offsets, perspective_correct, positive
            )
        first += count


def _windows(
    lo: Tensor, span: Tensor, keep: Tensor | None, size: Tensor, cap: Tensor, width: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The windows of triangles with clipped boxes ``lo`` .. ``lo + span`` (2, n).

    lg = ceil(log2(side)) = the bit length of side - 1 (from the float exponent, exact),
    capped at the image (``cap``); k = min(2**lg, image side); the origin is moved so
    that the window lies in the image (it still contains the box). Triangles not in
    ``keep`` (if given) get 1 x 1 windows. Returns lg, k (2, n) int32, origin (2, n)
    float and base (n,) long, the pixel row * width + column of each origin.
    """
    if keep is not None:
        span = torch.where(keep, span, 0.0)  # side - 1, integers >= 0
    lg = torch.minimum((span.view(torch.int32) >> 23).sub_(126).clamp_(min=0), cap)  # 0 for span 0
    k = torch.minimum(torch.ones_like(lg) << lg, size)
    origin = torch.minimum(lo, size - k)
    base = (origin[1] * width + origin[0]).long()
    return lg, k, origin, base


def _zbuffer_flat(
    zbuf: Tensor, coef: Tensor, keep: Tensor, lg: Tensor, k: Tensor, base: Tensor, tri: Tensor, width: int,
    budget: int, perspective_correct: bool, positive: bool,
) -> None:
    """Z-buffer the windows of all n triangles as one flat list of candidate pixels.

    ``coef`` (3, 4, n) window coefficients, ``keep`` (n,) bool, ``lg`` (2, n) with
    2**lg >= k, ``k`` (2, n) the window sides kx, ky, ``base`` (n,)
    flat pixel of each window origin, ``tri`` (n,) flat triangle indices. A window is
    walked in rows of 2**lgx (columns >= kx masked), so no division is needed; the values
    and keys are exactly those of :func:`_zbuffer_windows`. One host synchronisation
    reads the number of candidates (a second one only beyond ``budget`` of them).
    """
    n_tri = keep.shape[0]
    dev = zbuf.device
    lg, k = lg.long(), k.long()
    count = torch.where(keep, k[1] << lg[0], 0)
    end = count.cumsum(0)
    start = end - count
    rec = torch.stack([start, lg[0], k[0], base, tri], 1)  # (n, 5) gathered per candidate
    coef = coef.view(12, n_tri).t().contiguous()  # (n, 12) likewise
    total = int(end[-1])
    passes = [(0, n_tri, 0, total)]
    if total > budget:  # triangles whose first candidate lies in [i, i + 1) * budget go together
        cut = torch.searchsorted(start, torch.arange(budget, total, budget, device=dev))
        at = torch.where(cut < n_tri, start.index_select(0, cut.clamp(max=n_tri - 1)), total)
        t_cut, c_cut = torch.stack([cut, at]).tolist()
        bounds = list(zip([0, *t_cut, n_tri], [0, *c_cut, total]))
        passes = [(t0, t1, c0, c1) for (t0, c0), (t1, c1) in itertools.pairwise(bounds) if c1 > c0]
    for t0, t1, c0, c1 in passes:
        which = torch.repeat_interleave(count[t0:t1], output_size=c1 - c0) + t0  # (N,) triangle of each candidate
        r = rec.index_select(0, which)
        local = torch.arange(c0, c1, device=dev) - r[:, 0]
        oy = local >> r[:, 1]
        ox = local - (oy << r[:, 1])
        valid = ox < r[:, 2]
        ox *= valid
        g = coef.index_select(0, which)  # (N, 12): c0 (4), c1 (4), c2 (4)
        # As in _zbuffer_windows; the float64 step is exact for every row here (for rows
        # with an exact float32 product it rounds to the same float32).
        vals = ox.float()[:, None] * g[:, 0:4]
        vals = torch.addcmul(vals.double(), g[:, 4:8].double(), oy.double()[:, None]).float().add_(g[:, 8:12])
        inside = torch.minimum(torch.minimum(vals[:, 0], vals[:, 1]), vals[:, 2]) >= -_INSIDE_EPS
        depth = vals[:, 3].reciprocal() if perspective_correct else vals[:, 3].contiguous()
        key = _depth_key(depth, r[:, 4], positive).masked_fill_((inside & valid).logical_not_(), _EMPTY)
        zbuf.scatter_reduce_(0, r[:, 3] + oy * width + ox, key, reduce="amin")


def _zbuffer_windows(
    zbuf: Tensor, coef: Tensor, base: Tensor, tri: Tensor, kx: int, offsets: tuple[Tensor, Tensor, Tensor, Tensor],
    perspective_correct: bool, positive: bool,
) -> None:
    """Z-buffer all kx x ky window pixels of n triangles into ``zbuf``.

    ``coef`` (3, 4, n) window coefficients (:func:`_window_coefficients`), ``base`` (n,)
    flat pixel of each window origin, ``tri`` (n,) flat triangle indices, ``offsets``
    from :func:`_window`.
    """
    ox, oy, oy64, pix_off = offsets
    # b0, b1, b2 and q at every window pixel: ox * c0 + oy * c1 + c2, rounded as
    # fl(fl(fma(oy, c1, fl(ox * c0))) + c2), i.e. like a fused-multiply-add matrix product
    # (MKL's K = 3 kernel, which earlier versions ran per window shape). In rows
    # oy = 0, 1, 2 the product oy * c1 is exact in float32, so fused or not is the same;
    # further rows take the fused step in float64 (the product is exact there; the sum is
    # rounded to float64, then float32, which differs from one rounding only if the float64
    # sum falls exactly on a float32 midpoint). Every step is one IEEE operation in its own
    # torch call, so CPU and CUDA agree bit for bit.
    vals = coef[0] * ox[:, None, None]  # (kk, 4, n)
    exact = min(oy.shape[0], 3 * kx)
    vals[:exact].addcmul_(coef[1], oy[:exact, None, None])
    if exact < oy.shape[0]:
        vals[exact:] = torch.addcmul(vals[exact:].double(), coef[1].double(), oy64[exact:, None, None])
    vals += coef[2]
    inside = torch.minimum(torch.minimum(vals[:, 0], vals[:, 1]), vals[:, 2]) >= -_INSIDE_EPS  # (kk, n)
    if oy.shape[0] >= _COMPACT_FROM:  # big windows, mostly outside their triangle: keys of the covered only
        oi, ti = inside.nonzero(as_tuple=True)
        n = vals.shape[2]
        q = vals.view(-1).index_select(0, oi * (4 * n) + ti + 3 * n)
        key = _depth_key(q.reciprocal_() if perspective_correct else q, tri.index_select(0, ti), positive)
        zbuf.scatter_reduce_(0, base.index_select(0, ti) + pix_off.index_select(0, oi), key, reduce="amin")
        return
    depth = vals[:, 3].reciprocal_() if perspective_correct else vals[:, 3]
    key = _depth_key(depth, tri, positive).masked_fill_(inside.logical_not_(), _EMPTY)
    zbuf.scatter_reduce_(0, (base + pix_off[:, None]).view(-1), key.view(-1), reduce="amin")


def _barycentrics(
    soa: Tensor, faces_t: Tensor, nv: int, pix: Tensor, tri_flat: Tensor, image_size: tuple[int, int],
    perspective_correct: bool, image: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Differentiable barycentrics of pixel centres in their winning triangles.

    ``soa`` (3 xyz, B*V) screen vertices, ``faces_t`` (3, F); ``pix`` (N,) flat pixel
    indices b * H * W + row * W + col, ``tri_flat`` (N,) flat triangle indices b * F + f;
    ``image`` (N,) the b of each pixel if known. Returns (bary (N, 3), depth (N,), f (N,)).
    """
    h, w = image_size
    nf = faces_t.shape[1]
    if image is None and soa.shape[1] == nv:  # a single image: skip the integer divisions
        f, rem = tri_flat, pix
        vid = faces_t.index_select(1, f)  # (3 corners, N)
    else:
        b = pix // (h * w) if image is None else image
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
    limits = _chunk_limits(screen.device)
    if limits.few_calls:  # the covered pixels with their image: the same calls for any batch
        image, rem = mask.view(bsz, h * w).nonzero().t()
        pix = image * (h * w) + rem
    else:  # on the CPU the image index is worked out per chunk (small temporaries)
        image, pix = None, mask.nonzero().squeeze(1)
    tri_flat = zbuf.index_select(0, pix) & _TRI_MASK
    n_pix = bsz * h * w
    bary = screen.new_zeros(n_pix, 3)
    depth = screen.new_zeros(n_pix)
    tri_id = torch.full_like(zbuf, -1)
    soa = screen.reshape(-1, 3).t().contiguous()  # (xyz, B*V), differentiable
    faces_t = faces.t().contiguous()
    chunk = limits.pixels
    for i in range(0, pix.numel(), chunk):
        p = pix[i : i + chunk]
        b_fg, d_fg, f_fg = _barycentrics(
            soa, faces_t, screen.shape[1], p, tri_flat[i : i + chunk], (h, w), perspective_correct,
            None if image is None else image[i : i + chunk],
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
