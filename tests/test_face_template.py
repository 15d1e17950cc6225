"""The analytic face template: size, UVs, mesh sanity, landmarks and anatomy."""

import time

import numpy as np
import pytest

from facedet3d.face import layout as L
from facedet3d.face import template as T


@pytest.fixture(scope="module")
def tpl():
    return T.build_template()


@pytest.fixture(scope="module")
def coarse():
    return T.build_template(64)


def frontal_areas(v, f):
    a, b, c = v[f[:, 0], :2], v[f[:, 1], :2], v[f[:, 2], :2]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def z_at(x, y):
    return float(T.height(np.array(float(x)), np.array(float(y))))


def test_default_template_size_and_speed():
    t0 = time.perf_counter()
    t = T.build_template()
    elapsed = time.perf_counter() - t0
    assert t.num_vertices >= 20_000
    assert 1.9 * t.num_vertices < t.num_faces < 2.0 * t.num_vertices
    assert elapsed < 1.0, f"building the default template took {elapsed:.2f} s"
    assert t.vertices.dtype == np.float32 and t.faces.dtype == np.int64
    assert t.uvs.dtype == np.float32 and t.landmarks.dtype == np.int64
    assert t.vertices.shape == (t.num_vertices, 3) and t.uvs.shape == (t.num_vertices, 2)


def test_resolution_scales_vertex_count():
    counts = {r: T.build_template(r).num_vertices for r in (32, 64, 128)}
    for r, n in counts.items():
        assert abs(n / (0.564 * r * r) - 1.0) < 0.1, (r, n)
    with pytest.raises(ValueError):
        T.build_template(63)


@pytest.mark.parametrize("which", ["tpl", "coarse"])
def test_uvs_inside_square_without_flips(which, request):
    t = request.getfixturevalue(which)
    assert t.uvs.min() >= 0.0 and t.uvs.max() <= 1.0
    np.testing.assert_allclose(t.uvs, L.xy_to_uv(t.vertices[:, :2]), atol=1e-6)
    # All UV triangles have the same orientation (counter-clockwise on the upright image).
    uv = t.uvs.astype(np.float64)
    a, b, c = uv[t.faces[:, 0]], uv[t.faces[:, 1]], uv[t.faces[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (cross < 0).all()  # v runs down the image, so CCW in (x, y) is negative in (u, v)


@pytest.mark.parametrize("which", ["tpl", "coarse"])
def test_mesh_is_clean(which, request):
    t = request.getfixturevalue(which)
    f = t.faces
    # Counter-clockwise seen from +z, no degenerate triangles.
    assert (frontal_areas(t.vertices.astype(np.float64), f) > 0).all()
    # Every edge in at most two faces (manifold), and no duplicate faces.
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert counts.max() <= 2
    assert len(np.unique(np.sort(f, axis=1), axis=0)) == len(f)
    # Every vertex is used and lies inside the face outline.
    assert np.bincount(f.reshape(-1), minlength=t.num_vertices).min() > 0
    assert L.face_mask_xy(t.vertices[:, :2].astype(np.float64)).all()
    assert np.isfinite(t.vertices).all()


def test_vertices_are_left_right_symmetric(coarse):
    v = coarse.vertices.astype(np.float64)
    key = {tuple(np.round(p[:2], 3)): p[2] for p in v}
    mirrored = [key.get((round(-p[0], 3) + 0.0, round(p[1], 3))) for p in v]
    assert all(m is not None for m in mirrored)
    np.testing.assert_allclose(np.array(mirrored), v[:, 2], atol=1e-4)


@pytest.mark.parametrize("which", ["tpl", "coarse"])
def test_landmarks_near_layout(which, request):
    t = request.getfixturevalue(which)
    target = L.landmarks_68_xy()
    got = t.vertices[t.landmarks, :2].astype(np.float64)
    step = L.SPAN / t.resolution
    assert t.landmarks.shape == (68,)
    assert np.linalg.norm(got - target, axis=1).max() <= step  # a grid node, or a border vertex on the outline
    assert L.face_mask_xy(got).all()


def test_anatomy(tpl):
    v = tpl.vertices.astype(np.float64)
    # The nose tip is the most frontal point of the central face.
    central = (np.abs(v[:, 0]) < 60) & (v[:, 1] > -95) & (v[:, 1] < 60)
    top = v[central][v[central, 2].argmax()]
    assert np.hypot(top[0] - L.NOSE_TIP[0], top[1] - L.NOSE_TIP[1]) < 3.0
    tip = z_at(*L.NOSE_TIP)
    for sx in (-1, 1):
        ex, ey = L.EYE_CENTER
        eye = z_at(sx * ex, ey)
        assert abs(eye) < 0.5  # the corneal apex is the z = 0 plane
        assert eye < z_at(sx * ex, L.BROW_Y + 2) - 4.0  # brow ridge in front of the eye
        assert eye < z_at(sx * 40, -20) - 1.0  # cheekbones in front of the eye
        assert eye > z_at(sx * ex, ey + L.EYE_HALF_HEIGHT + 3)  # the eyeball bulges past the upper lid
        assert eye > z_at(sx * ex, ey - L.EYE_HALF_HEIGHT - 3)  # ... and past the lower lid
        assert eye > z_at(sx * (ex + 9), ey) + 1.0  # cornea in front of the sclera
        assert z_at(sx * ex, ey + 10) < z_at(sx * ex, L.BROW_Y + 2)  # upper-lid sulcus under the brow
        cheek = z_at(sx * 35, L.NOSE_TIP[1])
        assert 20.0 <= tip - cheek <= 28.0  # the nose tip stands 20-25 mm in front of the cheeks
        assert z_at(sx * (L.NOSTRIL_X - 2.5), L.NOSE_BASE_Y + 4) > z_at(sx * (L.NOSTRIL_X + 6), L.NOSE_BASE_Y + 4) + 3
        assert z_at(sx * 72, -10) < tip - 50.0  # the head falls back steeply at the outline
    # Midline profile: nasion below glabella, dorsum rising to the tip, subnasal groove.
    assert z_at(0, 5) < z_at(0, 16)
    assert z_at(0, -10) < z_at(0, -25) < tip
    assert z_at(0, L.NOSE_BASE_Y - 1.5) < z_at(0, L.NOSE_BASE_Y + 2)
    assert z_at(0, L.NOSE_BASE_Y - 1.5) < z_at(0, L.UPPER_LIP_TOP_Y - 2)
    # Lips in front of the mouth-line crease between them, chin in front of the labiomental fold.
    line, top, bottom = (float(a) for a in T.mouth_curves(np.array(0.0)))
    crease = z_at(0, line)
    assert z_at(0, line + 3.5) > crease + 1.5
    assert z_at(0, line - 4.5) > crease + 1.5
    assert z_at(0, L.CHIN[1] + 2) > z_at(0, L.LOWER_LIP_BOTTOM_Y - 6) + 1.5
    # Forehead slopes back, under the chin the surface turns away.
    assert z_at(0, 80) < z_at(0, 40) - 8
    assert z_at(0, L.FACE_BOTTOM_Y + 2) < z_at(0, L.CHIN[1]) - 15


def test_height_field_is_smooth_across_the_midline():
    """No crease on the midline: z is even and its x-derivative vanishes at x = 0."""
    y = np.linspace(-95, 85, 181)
    h = 1e-3
    dz = (T.height(np.full_like(y, h), y) - T.height(np.full_like(y, -h), y)) / (2 * h)
    assert np.abs(dz).max() < 1e-3
    curv = (T.height(np.full_like(y, 0.4), y) - T.height(np.zeros_like(y), y)) / 0.4
    assert np.abs(curv).max() < 1.5  # no kink: the slope just off the midline stays moderate


def test_vertex_normals_face_the_camera(coarse):
    n = T.vertex_normals(coarse.vertices, coarse.faces)
    assert (n[:, 2] > 0).all()
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-6)
