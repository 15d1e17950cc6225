"""The synthetic morphable model: evaluation, identity shapes, AU expressions, albedo."""

import time

import numpy as np
import pytest
import torch

from facedet3d.face import layout as L
from facedet3d.face import template as T
from facedet3d.face.model import MorphableModel
from facedet3d.face.synthetic import (
    ALBEDO_NAMES,
    AU_REGIONS,
    albedo_texture,
    au_region_mask,
    limit_lid_closure,
    synthetic_model,
)


@pytest.fixture(scope="module")
def model() -> MorphableModel:
    return synthetic_model(128)


def mirror_index(P):
    """Index of each vertex's mirror image across x = 0 (the template's vertices are symmetric)."""
    key = {(round(float(p[0]), 3), round(float(p[1]), 3)): i for i, p in enumerate(P)}
    return np.array([key[(round(-float(p[0]), 3) + 0.0, round(float(p[1]), 3))] for p in P])


def frontal_areas(v, f):
    a, b, c = v[f[:, 0], :2], v[f[:, 1], :2], v[f[:, 2], :2]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def expr(model, **aus):
    e = torch.zeros(1, model.num_expr, dtype=torch.float64)
    for k, val in aus.items():
        e[0, L.AU_INDEX[k]] = val
    return e


def disp(model, name, intensity=L.AU_MAX):
    """Displacement (V, 3) in mm of one AU at the given intensity, float64 numpy."""
    return intensity * model.expr_basis[L.AU_INDEX[name]].astype(np.float64)


def test_sizes_and_metadata(model):
    assert model.name == "synthetic"
    assert 30 <= model.num_shape <= 50
    assert model.num_expr == 17 and model.expr_names == list(L.AU_NAMES)
    assert model.num_albedo == len(ALBEDO_NAMES)
    np.testing.assert_array_equal(model.expr_std, np.ones(17, np.float32))
    V = model.num_vertices
    assert model.mean.shape == (V, 3) and model.uvs.shape == (V, 2) and model.landmarks.shape == (68,)
    assert model.shape_basis.shape == (model.num_shape, V, 3)
    assert model.albedo_basis.shape == (model.num_albedo, V, 3)
    assert (model.albedo_mean >= 0).all() and (model.albedo_mean <= 1).all()
    # Shape and albedo bases are unit-norm (BFM convention).
    np.testing.assert_allclose(np.linalg.norm(model.shape_basis.reshape(model.num_shape, -1), axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(model.albedo_basis.reshape(model.num_albedo, -1), axis=1), 1.0, atol=1e-4)


def test_default_model_builds_quickly():
    t0 = time.perf_counter()
    m = synthetic_model()
    assert m.num_vertices >= 20_000
    assert time.perf_counter() - t0 < 5.0


def test_evaluation_shapes_dtype_and_gradients(model):
    B = 3
    shape = torch.randn(B, model.num_shape, dtype=torch.float64, requires_grad=True)
    ex = (torch.rand(B, model.num_expr, dtype=torch.float64) * 3).requires_grad_(True)
    alb = torch.randn(B, model.num_albedo, dtype=torch.float64, requires_grad=True)
    v = model.vertices(shape, ex)
    a = model.albedo(alb)
    lm = model.landmarks_3d(v)
    assert v.shape == (B, model.num_vertices, 3) and v.dtype == torch.float64
    assert a.shape == (B, model.num_vertices, 3) and a.dtype == torch.float64
    assert lm.shape == (B, 68, 3)
    assert (a >= 0).all() and (a <= 1).all()
    (v.square().mean() + a.mean() + lm.sum()).backward()
    for g in (shape.grad, ex.grad, alb.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    # Linear in the coefficients: the gradient of a vertex w.r.t. a coefficient is std * basis.
    s = torch.zeros(1, model.num_shape, requires_grad=True)
    model.vertices(s, None)[0, 123, 2].backward()
    np.testing.assert_allclose(s.grad[0].numpy(), model.shape_std * model.shape_basis[:, 123, 2], rtol=1e-5, atol=1e-6)


def test_zero_coefficients_give_the_mean(model):
    v = model.vertices(torch.zeros(2, model.num_shape), torch.zeros(2, model.num_expr))
    np.testing.assert_allclose(v[1].numpy(), model.mean, atol=1e-5)
    a = model.albedo(torch.zeros(1, model.num_albedo))
    np.testing.assert_allclose(a[0].numpy(), model.albedo_mean, atol=1e-6)
    with pytest.raises(ValueError):
        model.vertices(torch.zeros(2, model.num_shape + 1))


def test_expression_coefficient_is_au_intensity(model):
    e = expr(model, AU12=2.0)
    v = model.vertices(None, e)[0].numpy()
    np.testing.assert_allclose(v - model.mean, disp(model, "AU12", 2.0), atol=1e-4)


def test_identity_extremes_stay_faces(model):
    P = model.mean.astype(np.float64)
    f = model.faces
    for k in range(model.num_shape):
        for c in (-3.0, 3.0):
            d = c * model.shape_std[k] * model.shape_basis[k].astype(np.float64)
            assert np.abs(d).max() < 25.0, (k, c)
            assert (frontal_areas(P + d, f) > 0).all(), (k, c)
    rng = np.random.default_rng(0)
    for _ in range(10):
        coef = torch.as_tensor(rng.standard_normal((1, model.num_shape)) * 1.5)
        v = model.vertices(coef, None)[0].numpy().astype(np.float64)
        assert (frontal_areas(v, f) > 0).all()
        lm = v[model.landmarks]
        assert lm[45, 0] > lm[42, 0] > lm[39, 0] > lm[36, 0]  # eye corners keep their order
        assert lm[30, 2] > lm[36, 2] + 10  # the nose still sticks out


# Where each AU's displacement should be centred (frontal mm, |x| for bilateral AUs), from
# FACS anatomy — independent of the model's own region table.
AU_EXPECTED = {
    "AU01": ((0, 30), (12, 45)),
    "AU02": ((28, 60), (12, 40)),
    "AU04": ((5, 35), (5, 22)),
    "AU05": ((20, 44), (0, 16)),
    "AU06": ((22, 52), (-30, 2)),
    "AU07": ((20, 44), (-8, 8)),
    "AU09": ((0, 18), (-50, -20)),
    "AU10": ((0, 25), (-62, -45)),
    "AU12": ((15, 40), (-70, -40)),
    "AU14": ((18, 36), (-70, -55)),
    "AU15": ((15, 38), (-75, -55)),
    "AU17": ((0, 20), (-95, -65)),
    "AU20": ((15, 40), (-72, -55)),
    "AU23": ((0, 22), (-70, -54)),
    "AU25": ((0, 22), (-75, -55)),
    "AU26": ((0, 40), (-100, -60)),
    "AU45": ((20, 44), (-8, 10)),
}


@pytest.mark.parametrize("name", L.AU_NAMES)
def test_au_moves_only_its_region_and_stays_valid(model, name):
    P = model.mean.astype(np.float64)
    d = disp(model, name)
    mag = np.linalg.norm(d, axis=1)
    inside = au_region_mask(name, P[:, :2])
    # Confined: exactly nothing moves outside the AU's region.
    assert mag[~inside].max(initial=0.0) < 1e-4
    # A visible but plausible motion at intensity 5.
    assert 1.5 <= mag.max() <= 16.0, mag.max()
    # Centred where FACS puts it.
    w = mag**2 / (mag**2).sum()
    cx, cy = (w * np.abs(P[:, 0])).sum(), (w * P[:, 1]).sum()
    (x0, x1), (y0, y1) = AU_EXPECTED[name]
    assert x0 <= cx <= x1 and y0 <= cy <= y1, (cx, cy)
    # Still a valid face: no triangle folds over (the surface stays a height field, so nothing
    # crosses through the head), and nothing moves behind the head.
    v = P + d
    assert (frontal_areas(v, model.faces) > 0).all()
    assert v[:, 2].min() >= P[:, 2].min() - 1.0
    # Every AU acts on both sides alike: the displacement field is mirror-symmetric.
    mirror = mirror_index(P)
    np.testing.assert_allclose(d[mirror] * [-1, 1, 1], d, atol=1e-3)


def test_au_regions_are_inside_the_face():
    for name, ellipses in AU_REGIONS.items():
        for cx, cy, rx, ry in ellipses:
            assert L.face_mask_xy(np.array([cx, cy]), margin=-10.0), name


def _mean_in(P, d, sel):
    assert sel.sum() > 0
    return d[sel].mean(0)


def test_au_directions(model):
    P = model.mean.astype(np.float64)
    x, y = P[:, 0], P[:, 1]
    ax = np.abs(x)
    ex, ey = L.EYE_CENTER
    up, lo, _ = T.eye_lid_curves(x)
    line, top, bottom = T.mouth_curves(x)
    inner_brow = (ax > 12) & (ax < 22) & (y > 13) & (y < 21)
    outer_brow = (ax > 40) & (ax < 50) & (y > 13) & (y < 21)
    step = L.SPAN / 128
    upper_margin = (np.abs(ax - ex) < 3) & (y >= up) & (y < up + step)  # lid skin at the margin
    lower_margin = (np.abs(ax - ex) < 3) & (y <= lo) & (y > lo - step)
    corners = (np.abs(ax - L.MOUTH_HALF_WIDTH) < 3) & (np.abs(y - L.MOUTH_CENTER[1]) < 3)
    upper_lip = (ax < 8) & (y > line + 2) & (y < top - 1)
    lower_lip = (ax < 8) & (y < line - 2) & (y > bottom + 1)
    D = {n: disp(model, n) for n in L.AU_NAMES}

    assert _mean_in(P, D["AU01"], inner_brow)[1] > 2.0
    assert _mean_in(P, D["AU01"], inner_brow)[1] > 2 * _mean_in(P, D["AU01"], outer_brow)[1]
    assert _mean_in(P, D["AU02"], outer_brow)[1] > 2.0
    assert _mean_in(P, D["AU02"], outer_brow)[1] > 2 * _mean_in(P, D["AU02"], inner_brow)[1]
    brow4 = D["AU04"][inner_brow]
    assert brow4[:, 1].mean() < -1.5 and (np.sign(x[inner_brow]) * brow4[:, 0]).mean() < -1.0
    assert _mean_in(P, D["AU05"], upper_margin)[1] > 2.0
    opening = (up - lo)[upper_margin].mean()
    assert _mean_in(P, D["AU45"], upper_margin)[1] < -0.7 * opening  # the lid comes down over the eye
    assert _mean_in(P, D["AU07"], upper_margin)[1] - _mean_in(P, D["AU07"], lower_margin)[1] < -0.3 * opening
    assert _mean_in(P, D["AU06"], lower_margin)[1] > 1.5  # lower lids pushed up
    cheek = (np.abs(ax - 37) < 6) & (np.abs(y + 22) < 5)
    assert _mean_in(P, D["AU06"], cheek)[1] > 2.0 and _mean_in(P, D["AU06"], cheek)[2] > 0.5
    nose = (ax < 6) & (np.abs(y - L.NOSE_TIP[1]) < 4)
    assert _mean_in(P, D["AU09"], nose)[1] > 2.5
    assert _mean_in(P, D["AU10"], upper_lip)[1] > 2.0 and abs(_mean_in(P, D["AU10"], lower_lip)[1]) < 0.5
    c12 = D["AU12"][corners]
    assert c12[:, 1].mean() > 2.5 and c12[:, 2].mean() < -1.0 and (np.sign(x[corners]) * c12[:, 0]).mean() > 0.5
    c14 = D["AU14"][corners]
    assert (np.sign(x[corners]) * c14[:, 0]).mean() < -0.3 and c14[:, 2].mean() < -0.8
    assert D["AU15"][corners][:, 1].mean() < -2.0
    chin = (ax < 8) & (np.abs(y - (L.CHIN[1] + 4)) < 4)
    assert _mean_in(P, D["AU17"], chin)[1] > 1.5
    assert (np.sign(x[corners]) * D["AU20"][corners][:, 0]).mean() > 1.5
    assert _mean_in(P, D["AU23"], (ax < 8) & (np.abs(y - top + 1.5) < 1))[1] < -0.7
    assert _mean_in(P, D["AU23"], (ax < 8) & (np.abs(y - bottom - 1.5) < 1))[1] > 0.7
    gap = _mean_in(P, D["AU25"], upper_lip)[1] - _mean_in(P, D["AU25"], lower_lip)[1]
    assert gap > 4.0  # the lips part
    assert _mean_in(P, D["AU26"], chin)[1] < -8.0  # the jaw drops
    assert _mean_in(P, D["AU26"], lower_lip)[1] < -8.0 and abs(_mean_in(P, D["AU26"], upper_lip)[1]) < 0.5


def test_lid_closure_limit_keeps_combinations_valid(model):
    e = expr(model, AU06=5.0, AU07=5.0, AU45=5.0, AU12=5.0, AU04=5.0, AU09=5.0)
    lim = limit_lid_closure(e)
    assert lim[0, L.AU_INDEX["AU45"]] < 5.0 and lim[0, L.AU_INDEX["AU12"]] == 5.0
    v = model.vertices(None, lim)[0].numpy().astype(np.float64)
    assert (frontal_areas(v, model.faces) > 0).all()
    small = expr(model, AU06=1.0, AU45=1.0)
    torch.testing.assert_close(limit_lid_closure(small), small)
    full = torch.full((1, 17), 5.0, dtype=torch.float64)
    v = model.vertices(None, limit_lid_closure(full))[0].numpy().astype(np.float64)
    assert (frontal_areas(v, model.faces) > 0).all()


def test_albedo_texture_matches_vertex_albedo(model):
    coef = torch.randn(2, model.num_albedo, dtype=torch.float64)
    tex = albedo_texture(model, coef, 512)
    assert tex.shape == (2, 3, 512, 512) and tex.dtype == torch.float64
    assert (tex >= 0).all() and (tex <= 1).all()
    uv = torch.as_tensor(model.uvs, dtype=torch.float64)
    grid = (2 * uv - 1).view(1, 1, -1, 2).expand(2, -1, -1, -1)
    sampled = torch.nn.functional.grid_sample(tex, grid, mode="bilinear", align_corners=False)[:, :, 0].transpose(1, 2)
    per_vertex = model.albedo(coef)
    err = (sampled - per_vertex).abs()
    assert err.mean() < 0.004 and torch.quantile(err.flatten(), 0.99) < 0.05
    # Differentiable in the coefficients; None means the synthetic albedo itself.
    c = torch.zeros(1, model.num_albedo, requires_grad=True)
    albedo_texture(None, c, 32).mean().backward()
    assert c.grad is not None and c.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        albedo_texture(model, torch.zeros(1, 3), 16)


def test_albedo_anatomy(model):
    tex = albedo_texture(model, torch.zeros(1, model.num_albedo), 400)[0].permute(1, 2, 0).numpy()

    def at(x, y):
        u, v = L.xy_to_uv(np.array([x, y], dtype=float))
        return tex[int(v * 400), int(u * 400)]

    ex, ey = L.EYE_CENTER
    skin = at(0, 45)
    assert at(ex, ey).sum() < 0.1  # pupil
    assert at(-ex, ey).sum() < 0.1
    sclera = at(ex + 9, ey)
    assert sclera.min() > 0.6 and sclera.sum() > skin.sum()  # white of the eye
    iris = at(ex + 4, ey - 1)
    assert iris.sum() < 0.4 * sclera.sum()
    brow = at(30, L.BROW_Y + 4)
    assert brow.sum() < 0.3 * skin.sum()
    lip = at(0, L.MOUTH_CENTER[1] + 4)
    assert lip[0] / lip[1] > 1.3 * skin[0] / skin[1]  # lips are redder than skin
    assert at(6.5, L.NOSE_BASE_Y + 2.6).sum() < 0.5 * skin.sum()  # nostrils darker
    line = float(T.mouth_curves(np.array(0.0))[0])
    assert at(0, line).sum() < 0.5 * lip.sum()  # the mouth line is dark


def test_skin_tone_component_darkens_skin(model):
    k = ALBEDO_NAMES.index("skin_tone")
    c = torch.zeros(2, model.num_albedo)
    c[0, k], c[1, k] = -2.0, 2.0
    a = model.albedo(c)
    forehead = (np.abs(model.mean[:, 0]) < 10) & (np.abs(model.mean[:, 1] - 45) < 5)
    assert (a[0, forehead].mean() > a[1, forehead].mean() + 0.2)


def test_albedo_texture_rejects_other_models(model):
    other = MorphableModel(
        mean=model.mean, shape_basis=model.shape_basis[:1], shape_std=model.shape_std[:1],
        expr_basis=model.expr_basis[:1], expr_std=model.expr_std[:1], albedo_mean=model.albedo_mean,
        albedo_basis=model.albedo_basis, albedo_std=model.albedo_std, faces=model.faces, uvs=model.uvs,
        name="bfm2017",
    )
    with pytest.raises(TypeError):
        albedo_texture(other, torch.zeros(1, model.num_albedo), 16)
