"""Cameras, rasterizer, interpolation and texture lookup against analytic cases."""

import math

import pytest
import torch

from facedet3d.render.bench import (
    bench_rasterize,
    count_torch_ops,
    relief_mesh,
    subdivide,
    subdivide_to,
    uv_sphere,
)
from facedet3d.render.camera import Camera, face_camera, place_face, rotation_matrix
from facedet3d.render.rasterize import interpolate, rasterize, sample_texture


def pixel_centres(h, w, dtype=torch.float64):
    """(H, W) column and row coordinates of the pixel centres."""
    rows, cols = torch.meshgrid(torch.arange(h, dtype=dtype) + 0.5, torch.arange(w, dtype=dtype) + 0.5, indexing="ij")
    return cols, rows


def square(corners):
    """Two triangles over 4 corners (4, 3) given in order around the square."""
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return torch.as_tensor(corners, dtype=torch.float64), faces


# ---------------------------------------------------------------- camera


def test_rotation_conventions():
    nose, top = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0])
    assert (rotation_matrix(0.3, 0.0, 0.0) @ nose)[0] > 0.2  # yaw > 0: nose to +x (image right)
    assert (rotation_matrix(0.0, 0.3, 0.0) @ nose)[1] < -0.2  # pitch > 0: nose down
    assert (rotation_matrix(0.0, 0.0, 0.3) @ top)[0] < -0.2  # roll > 0: top to -x
    r = rotation_matrix(torch.tensor([0.1, 0.2]), torch.tensor([0.3, -0.1]), torch.tensor([-0.2, 0.5]))
    assert r.shape == (2, 3, 3)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6, rtol=0)
    assert torch.allclose(torch.linalg.det(r), torch.ones(2))


def test_projection_axes_and_placement():
    cam = Camera.perspective((100, 120), 500.0)
    p = torch.tensor([[[0.0, 0.0, -500.0], [10.0, 0.0, -500.0], [0.0, 10.0, -500.0], [0.0, 0.0, -250.0]]])
    s = cam.project(p)[0]
    torch.testing.assert_close(s[0], torch.tensor([60.0, 50.0, 500.0]))
    torch.testing.assert_close(s[1], torch.tensor([70.0, 50.0, 500.0]))  # x right -> column +
    torch.testing.assert_close(s[2], torch.tensor([60.0, 40.0, 500.0]))  # y up -> row -
    ortho = Camera.orthographic((100, 120), 2.0, principal=(10.0, 20.0))
    torch.testing.assert_close(ortho.project(p)[0, 1], torch.tensor([30.0, 20.0, 500.0]))
    # place_face: the pivot lands on the optical axis at the distance; yaw turns the face right.
    pivot = torch.tensor([[0.0, -5.0, 0.0], [0.0, -5.0, 50.0]])
    cam_pts = place_face(pivot, (0.4, 0.0, 0.0), distance=600.0)
    torch.testing.assert_close(cam_pts[0, 0], torch.tensor([0.0, 0.0, -600.0]))
    assert cam_pts[0, 1, 0] > 10.0  # the nose side moved to +x
    batch = place_face(pivot, torch.tensor([[0.0, 0.0, 0.0], [0.4, 0.0, 0.0]]), distance=torch.tensor([500.0, 600.0]))
    assert batch.shape == (2, 2, 3)
    torch.testing.assert_close(batch[1], cam_pts[0])
    assert face_camera(256).focal == pytest.approx(256 * 600 / 200)


# ---------------------------------------------------------------- planes


def test_orthographic_tilted_square_coverage_depth_bary():
    h, w, s = 32, 40, 2.0
    cam = Camera.orthographic((h, w), s)
    x0, x1, y0, y1 = -5.3, 6.1, -4.2, 3.7

    def zf(x, y):
        return -100.0 - 0.1 * x - 0.2 * y

    corners = [(x, y, zf(x, y)) for x, y in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]]
    verts, faces = square(corners)
    frags = rasterize(cam.project(verts[None]), faces, (h, w))
    cols, rows = pixel_centres(h, w)
    x, y = (cols - w / 2) / s, (h / 2 - rows) / s
    expected = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    assert torch.equal(frags.mask[0], expected)
    assert torch.equal(frags.tri_id[0] >= 0, expected)
    torch.testing.assert_close(frags.depth[0][expected], -zf(x, y)[expected], atol=1e-9, rtol=0)
    assert (frags.depth[0][~expected] == 0).all() and (frags.bary[0][~expected] == 0).all()
    # Analytic barycentrics of each covered pixel centre in its triangle.
    xy1 = torch.stack([x, y, torch.ones_like(x)], -1)[expected]  # (N, 3)
    tri = faces[frags.tri_id[0][expected]]  # (N, 3)
    m = torch.cat([verts[tri][..., :2], torch.ones(tri.shape[0], 3, 1, dtype=torch.float64)], -1).transpose(1, 2)
    lam = torch.linalg.solve(m, xy1)
    torch.testing.assert_close(frags.bary[0][expected], lam, atol=1e-9, rtol=0)
    assert (lam > -1e-12).all()
    # Linear attributes are reproduced exactly: interpolated positions are the 3D points.
    pts = interpolate(verts, faces, frags)[0][expected]
    torch.testing.assert_close(pts, torch.stack([x, y, zf(x, y)], -1)[expected], atol=1e-9, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_perspective_tilted_square(dtype):
    h, w, f = 48, 64, 80.0
    cam = Camera.perspective((h, w), f)
    centre = torch.tensor([3.0, -2.0, -60.0], dtype=torch.float64)
    e1 = torch.tensor([math.cos(0.5), 0.0, math.sin(0.5)], dtype=torch.float64)  # tilted in depth
    e2 = torch.tensor([0.0, math.cos(0.3), math.sin(0.3)], dtype=torch.float64)
    e2 = e2 - (e2 @ e1) * e1
    e2 = e2 / e2.norm()  # orthonormal in-plane axes
    half = 17.3
    corners = [centre + a * half * e1 + b * half * e2 for a, b in [(-1, -1), (1, -1), (1, 1), (-1, 1)]]
    verts, faces = square(torch.stack(corners))
    screen = cam.project(verts[None].to(dtype))
    frags = rasterize(screen, faces, (h, w), perspective_correct=True)
    # Ray through each pixel centre, intersected with the plane.
    cols, rows = pixel_centres(h, w)
    d = torch.stack([(cols - w / 2) / f, -(rows - h / 2) / f, -torch.ones_like(cols)], -1)
    normal = torch.linalg.cross(e1, e2)
    t = (centre @ normal) / (d @ normal)
    hit = t[..., None] * d
    a, b = (hit - centre) @ e1 / half, (hit - centre) @ e2 / half
    inside = (a.abs() <= 1) & (b.abs() <= 1)
    margin = torch.minimum(1 - a.abs(), 1 - b.abs()).abs() > 1e-4
    assert torch.equal(frags.mask[0][margin], inside[margin])
    assert inside.sum() > 300
    tol = dict(atol=1e-3, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-9, rtol=0)
    torch.testing.assert_close(frags.depth[0][inside].double(), t[inside], **tol)
    pts = interpolate(verts.to(dtype), faces, frags)[0][inside].double()
    torch.testing.assert_close(pts, hit[inside], **tol)
    # Without perspective correction screen-linear interpolation misses the true point.
    affine = rasterize(screen, faces, (h, w), perspective_correct=False)
    err = (interpolate(verts.to(dtype), faces, affine)[0][inside].double() - hit[inside]).norm(dim=-1)
    assert err.max() > 0.05


# ---------------------------------------------------------------- spheres


def test_orthographic_sphere_area_and_depth():
    r, s, size = 10.0, 2.0, 64
    verts, faces = uv_sphere(r, 48, 96, center=(0.0, 0.0, -100.0), dtype=torch.float64)
    frags = rasterize(Camera.orthographic((size, size), s).project(verts[None]), faces, (size, size))
    area = frags.mask.sum().item()
    assert area == pytest.approx(math.pi * (r * s) ** 2, rel=0.02)
    cols, rows = pixel_centres(size, size)
    rho = torch.hypot(cols - size / 2, rows - size / 2) / s
    core = rho < 0.85 * r
    assert frags.mask[0][core].all() and not frags.mask[0][rho > 1.02 * r].any()
    expected = 100.0 - torch.sqrt(r * r - rho[core] ** 2)
    torch.testing.assert_close(frags.depth[0][core], expected, atol=0.05, rtol=0)


def test_perspective_sphere_silhouette_and_depth():
    r, d, f, size = 10.0, 100.0, 300.0, 64
    verts, faces = uv_sphere(r, 48, 96, center=(0.0, 0.0, -d), dtype=torch.float64)
    frags = rasterize(Camera.perspective((size, size), f).project(verts[None]), faces, (size, size), True)
    radius_px = f * r / math.sqrt(d * d - r * r)  # the silhouette is a circle
    assert frags.mask.sum().item() == pytest.approx(math.pi * radius_px**2, rel=0.02)
    cols, rows = pixel_centres(size, size)
    ray = torch.stack([(cols - size / 2) / f, -(rows - size / 2) / f, -torch.ones_like(cols)], -1)
    # |t ray - c|^2 = r^2 with c = (0, 0, -d): nearest root.
    aa, bb, cc = (ray * ray).sum(-1), 2 * d * ray[..., 2], d * d - r * r
    core = torch.hypot(cols - size / 2, rows - size / 2) < 0.85 * radius_px
    t = (-bb - torch.sqrt(bb * bb - 4 * aa * cc)) / (2 * aa)
    torch.testing.assert_close(frags.depth[0][core], t[core], atol=0.05, rtol=0)


# ---------------------------------------------------------------- visibility


@pytest.mark.parametrize("near_first", [True, False])
def test_nearest_triangle_wins(near_first):
    h = w = 24
    cam = Camera.orthographic((h, w), 1.0)
    far = [(-10.0, -10.0, -50.0), (8.0, -10.0, -50.0), (-10.0, 8.0, -50.0)]  # counter-clockwise
    near = [(-6.0, -6.0, -40.0), (-6.0, 9.0, -40.0), (9.0, -6.0, -40.0)]  # clockwise
    verts = torch.tensor((near + far) if near_first else (far + near), dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(cam.project(verts[None]), faces, (h, w))
    near_id = 0 if near_first else 1
    cols, rows = pixel_centres(h, w)
    x, y = cols - w / 2, h / 2 - rows
    in_near = (x >= -6) & (y >= -6) & (x + y <= 3)
    in_far = (x >= -10) & (y >= -10) & (x + y <= -2)
    assert torch.equal(frags.tri_id[0] == near_id, in_near)
    assert torch.equal(frags.mask[0], in_near | in_far)
    assert torch.allclose(frags.depth[0][in_near], torch.tensor(40.0, dtype=torch.float64))
    # Back-face culling drops the clockwise (near) triangle.
    culled = rasterize(cam.project(verts[None]), faces, (h, w), cull_backfaces=True)
    assert torch.equal(culled.mask[0], in_far)
    assert (culled.tri_id[0][in_far] == 1 - near_id).all()


def test_large_triangles_fill_non_square_image():
    h, w = 150, 300  # not powers of two; the windows are capped at the image size
    cam = Camera.orthographic((h, w), 1.0)
    corners = [(-200.0, -100.0, -10.0), (200.0, -100.0, -10.0), (200.0, 100.0, -10.0), (-200.0, 100.0, -10.0)]
    verts, faces = square(corners)
    frags = rasterize(cam.project(verts[None].float()), faces, (h, w))
    assert frags.mask.all()
    assert torch.allclose(frags.bary.sum(-1), torch.ones(1, h, w))
    # A partly off-screen triangle crossing the right and bottom borders.
    tri = torch.tensor([[[100.0, -20.0, -5.0], [400.0, -20.0, -5.0], [100.0, -300.0, -5.0]]])
    frags = rasterize(cam.project(tri), torch.tensor([[0, 1, 2]]), (h, w))
    cols, rows = pixel_centres(h, w)
    x, y = cols - w / 2, h / 2 - rows
    expected = (x >= 100) & (y <= -20) & ((x - 100) / 300 + (-20 - y) / 280 <= 1)
    assert torch.equal(frags.mask[0], expected)


def random_soup(bsz, h, w, n, seed=0):
    """Random triangles (B, 3n, 3) of 1 .. 60 px with depths in [10, 15], faces (n, 3)."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.rand(bsz, n, 1, 2, generator=gen) * torch.tensor([w, h])
    size = torch.exp(torch.rand(bsz, n, 1, 1, generator=gen) * math.log(60.0))
    xy = centre + (torch.rand(bsz, n, 3, 2, generator=gen) - 0.5) * size
    z = 10 + 5 * torch.rand(bsz, n, 3, 1, generator=gen)
    return torch.cat([xy, z], -1).reshape(bsz, 3 * n, 3).double(), torch.arange(3 * n).reshape(n, 3)


def test_chunking_and_code_paths_do_not_change_the_result(monkeypatch):
    import facedet3d.render.rasterize as rast

    screen, faces = random_soup(3, 40, 56, 80, seed=3)
    screen[1, :30, :2] *= 4.0  # big windows, some capped at the image, partly off-screen
    full = rasterize(screen, faces, (40, 56), perspective_correct=True)
    keys = rast._visibility(screen, faces, (40, 56), True, False, None)
    # The CPU path in small pieces, the GPU path (one flat list of windows) whole and in pieces.
    for limits in (rast._CPU_LIMITS._replace(triangles=7, candidates=64, pixels=100), rast._GPU_LIMITS,
                   rast._GPU_LIMITS._replace(candidates=97)):
        monkeypatch.setattr(rast, "_CPU_LIMITS", limits)
        assert torch.equal(rast._visibility(screen, faces, (40, 56), True, False, None), keys)
        small = rasterize(screen, faces, (40, 56), perspective_correct=True)
        for a, b in zip(full, small):
            assert torch.equal(a, b)


def _batch_scene(h, w):
    """5 images of one mesh (a face relief + a degenerate and a big triangle) in different
    poses, sizes and places: partly off-screen, overlapping, and one empty image."""
    verts, faces, _ = relief_mesh(24, dtype=torch.float64)
    nv = verts.shape[0]
    extra = torch.tensor([[0.0, 0.0, 30.0], [10.0, 10.0, 30.0], [20.0, 20.0, 30.0],  # collinear
                          [-150.0, 120.0, 35.0], [160.0, 100.0, 35.0], [0.0, -170.0, 35.0]], dtype=torch.float64)
    verts = torch.cat([verts, extra])
    faces = torch.cat([faces, torch.tensor([[nv, nv + 1, nv + 2], [nv + 3, nv + 4, nv + 5]])])
    screens = []
    for b, (yaw, scale, cx, cy) in enumerate([(0.0, 0.25, 0.5, 0.5), (0.5, 0.3, 0.2, 0.6), (-0.4, 0.4, 0.9, 0.1),
                                              (0.2, 0.2, 0.5, 0.5), (0.1, 0.6, 0.3, 0.4)]):
        r = rotation_matrix(yaw, 0.1 * b, -0.05 * b).double()
        p = verts @ r.T
        x = w * cx + scale * p[:, 0]
        y = h * cy - scale * p[:, 1]
        if b == 3:
            x = x - 10 * w  # all of it off-screen: an empty image
        screens.append(torch.stack([x, y, 300.0 - p[:, 2]], -1))
    return torch.stack(screens), faces


@pytest.mark.parametrize("perspective", [True, False])
def test_batch_equals_per_image_reference(perspective):
    h, w = 48, 64
    screen, faces = _batch_scene(h, w)
    nf = faces.shape[0]
    ref = [rasterize(screen[b : b + 1], faces, (h, w), perspective_correct=perspective) for b in range(len(screen))]
    ref = [torch.cat(parts) for parts in zip(*ref)]
    assert not ref[3][3].any() and ref[3].float().mean() > 0.2  # the empty image; enough coverage elsewhere
    assert (ref[0] == nf - 1).any() and not (ref[0] == nf - 2).any()  # the big triangle shows, the degenerate one not
    assert ref[3][:, :, 0].any() and ref[3][:, :, -1].any()  # cut by the image borders
    import facedet3d.render.rasterize as rast

    for device_type in ("cpu", "cuda"):  # the CPU's and the GPU's code paths, both on CPU tensors
        with rast.chunking_as(device_type):
            frags = rasterize(screen, faces, (h, w), perspective_correct=perspective)
        for a, b in zip(frags, ref):
            assert torch.equal(a, b)


def test_torch_calls_do_not_grow_with_the_batch():
    """The GPU code path makes the same torch calls (~ kernel launches) for 1 image or 8 in any poses."""
    import facedet3d.render.rasterize as rast

    h, w = 48, 64
    screen, faces = _batch_scene(h, w)
    screen = screen.float()
    eight = torch.cat([screen, screen[:3] * torch.tensor([1.1, 0.9, 1.0])])

    def calls(s):
        with rast.chunking_as("cuda"):
            rasterize(s, faces, (h, w), perspective_correct=True)  # fills the caches
            return count_torch_ops(lambda: rasterize(s, faces, (h, w), perspective_correct=True))

    one = calls(screen[:1])
    assert calls(eight) == one == calls(screen[1:2])
    assert one < 250


@pytest.mark.parametrize("perspective", [True, False])
def test_matches_brute_force_on_random_soup(perspective):
    bsz, h, w, n = 2, 40, 56, 60
    screen, faces = random_soup(bsz, h, w, n)
    frags = rasterize(screen, faces, (h, w), perspective_correct=perspective)
    # Reference: every pixel against every triangle.
    cols, rows = pixel_centres(h, w)
    p = torch.stack([cols, rows], -1).reshape(1, -1, 1, 2)
    v = screen.reshape(bsz, 1, n, 3, 3)
    e = []
    for i in range(3):
        a, b = v[..., (i + 1) % 3, :2], v[..., (i + 2) % 3, :2]
        e.append((a[..., 0] - p[..., 0]) * (b[..., 1] - p[..., 1]) - (b[..., 0] - p[..., 0]) * (a[..., 1] - p[..., 1]))
    e = torch.stack(e, -1)  # (B, P, n, 3)
    bary = e / e.sum(-1, keepdim=True)
    inside = (bary >= 0).all(-1)
    depth = 1.0 / (bary / v[..., 2]).sum(-1) if perspective else (bary * v[..., 2]).sum(-1)
    depth = torch.where(inside, depth, torch.inf)
    best, best_id = depth.min(-1)
    ref_mask = torch.isfinite(best).reshape(bsz, h, w)
    # Ignore pixels within 1e-5 of an edge, or where two depths nearly tie (float32 visibility pass).
    near_edge = ((bary.abs().amin(-1) < 1e-5) & (bary.amin(-1) > -1e-5)).any(-1).reshape(bsz, h, w)
    second = depth.topk(2, -1, largest=False).values[..., 1].reshape(bsz, h, w)
    tie = (second - best.reshape(bsz, h, w)).abs() < 1e-4
    ok = ~near_edge & ~tie
    assert ok.float().mean() > 0.9 and ref_mask.float().mean() > 0.3
    assert torch.equal(frags.mask[ok], ref_mask[ok])
    vis = ok & ref_mask
    assert torch.equal(frags.tri_id[vis], best_id.reshape(bsz, h, w)[vis])
    torch.testing.assert_close(frags.depth[vis], best.reshape(bsz, h, w)[vis])


def test_empty_and_behind_camera():
    verts = torch.tensor([[[-1.0, -1.0, 5.0], [1.0, -1.0, 5.0], [0.0, 1.0, 5.0]]])  # behind the camera
    cam = Camera.perspective((8, 8), 10.0)
    frags = rasterize(cam.project(verts), torch.tensor([[0, 1, 2]]), (8, 8), perspective_correct=True)
    assert not frags.mask.any() and (frags.tri_id == -1).all()
    assert frags.bary.shape == (1, 8, 8, 3) and frags.depth.shape == (1, 8, 8)


# ---------------------------------------------------------------- gradients


def _small_scene():
    screen = torch.tensor(
        [[[1.3, 1.1, 4.0], [7.2, 2.2, 5.0], [2.1, 6.7, 6.0], [7.6, 7.4, 3.0]]], dtype=torch.float64
    )
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    return screen, faces


@pytest.mark.parametrize("perspective", [False, True])
def test_gradients_match_finite_differences(perspective):
    screen, faces = _small_scene()
    attrs = torch.randn(1, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    frags = rasterize(screen, faces, (9, 9), perspective_correct=perspective)
    assert frags.mask.sum() > 20

    def through_screen(s):
        fr = rasterize(s, faces, (9, 9), perspective_correct=perspective)
        return interpolate(attrs, faces, fr), fr.depth

    def through_attrs(a):
        return interpolate(a, faces, frags)

    assert torch.autograd.gradcheck(through_screen, (screen.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(through_attrs, (attrs.clone().requires_grad_(),))


def test_interpolate_shapes_and_batch_broadcast():
    screen, faces = _small_scene()
    screen = screen.expand(3, -1, -1)
    frags = rasterize(screen, faces, (9, 9))
    attrs = torch.arange(4, dtype=torch.float64)[:, None]
    out_shared = interpolate(attrs, faces, frags)
    out_batch = interpolate(attrs[None].expand(3, -1, -1), faces, frags)
    assert out_shared.shape == (3, 9, 9, 1)
    torch.testing.assert_close(out_shared, out_batch)
    assert (out_shared[~frags.mask] == 0).all()


# ---------------------------------------------------------------- textures


def test_sample_texture_uv_convention():
    # A 4 x 4 texture whose value encodes (row, column); sampling at texel centres returns it.
    tex = (torch.arange(4.0)[:, None] * 10 + torch.arange(4.0)[None, :])[None, None]
    u = (torch.tensor([0, 3, 1]) + 0.5) / 4
    v = (torch.tensor([2, 0, 3]) + 0.5) / 4
    uv = torch.stack([u, v], -1).view(1, 1, 3, 2)
    out = sample_texture(tex, uv)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([20.0 + 0, 0.0 + 3, 30.0 + 1]))
    mask = torch.tensor([[[True, False, True]]])
    assert sample_texture(tex, uv, mask)[0, 0, 0, 1] == 0


# ---------------------------------------------------------------- bench helpers


def test_subdivide_and_bench_rows():
    verts, faces = uv_sphere(1.0, 6, 8)
    v2, f2 = subdivide(verts, faces)
    n_edges = faces.shape[0] * 3 // 2
    assert f2.shape[0] == 4 * faces.shape[0] and v2.shape[0] == verts.shape[0] + n_edges
    v3, f3 = subdivide_to(verts, faces, 1000)
    assert f3.shape[0] >= 1000
    rv, rf, ruv = relief_mesh(30)
    assert rf.max() < rv.shape[0] and ruv.min() >= 0 and ruv.max() <= 1
    rows = list(bench_rasterize(rv, rf, image_sizes=(32,), batches=(1, 2), repeats=1, triangle_counts=(4000,)))
    assert len(rows) == 4
    for row in rows:
        assert {"image_size", "triangles", "batch", "ms_per_face", "device", "threads"} <= row.keys()
        assert row["ms_per_face"] > 0 and row["covered"] > 0.2
    assert rows[-1]["triangles"] >= 4000
