"""The builtin extraction backend on held-out synthetic 256² renders and on real photos.

Real components throughout (dlib detector and landmarks, the fitter, the rasterizer). The
figures each test measures are printed (``pytest -s``) and recorded as properties, so the
numbers quoted in the README can be re-measured here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facedet3d.config import load_config, merge
from facedet3d.data.records import read_records
from facedet3d.synth.stage import run_chunk
from facedet3d.errors import UserError
from facedet3d.extract.builtin import BuiltinExtractor, ExtractResult
from facedet3d.extract.detail import log_shading_ratio, recover_detail, sh_normal_gradient
from facedet3d.extract.errors import ExtractError, NoFaceError
from facedet3d.extract.fit import FaceFit, rotation_and_derivatives, solve_light, texel_albedo_basis
from facedet3d.render.color import srgb_decode as srgb_to_linear
from facedet3d.extract.quality import correlation_from_moments, detail_correlation, detail_moments, masked_highpass
from facedet3d.extract.unwrap import unwrap
from facedet3d.face.layout import face_mask_uv
from facedet3d.render.camera import rotation_matrix
from facedet3d.render.shading import sh_from_light, sh_irradiance
from tests.conftest import REPO

T, S = 256, 512  # texture and detail sizes of the extractor under test
DETAIL_NET_GAIN = 0.1  # least gain of the detail network over shape from shading alone (mean corr)


@pytest.fixture(scope="module")
def extractor() -> BuiltinExtractor:
    return BuiltinExtractor(texture_size=T, detail_size=S)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    """Six renders of three identities (seed 7: not the images the method was tuned on),
    256² like the demo, with their ground truth."""
    tmp = tmp_path_factory.mktemp("extract_synth")
    base = load_config([REPO / "config.yaml", REPO / "tests" / "configs" / "tiny.yaml"])
    config = merge(base, {"results_dir": str(tmp), "seed": 7, "synth": {
        "n_identities": 3, "identities_per_chunk": 3, "expressions_per_identity": 2, "videos_per_identity": 0,
        "image_size": 256, "detail_size": 512, "texture_size": 256, "mesh_resolution": 192,
        "detector_check": False}})
    run_chunk(config, 0)
    rec = read_records(Path(tmp) / "synth" / "chunks" / "000.h5")
    rec["image"] = [np.asarray(Image.open(Path(tmp) / "synth" / p).convert("RGB")) for p in rec["path"]]
    return rec


@pytest.fixture(scope="module")
def extracted(extractor, synthetic) -> list[ExtractResult]:
    return [extractor.extract(image) for image in synthetic["image"]]


def _truth_fit(rec: dict, i: int) -> FaceFit:
    size = rec["image"][i].shape[:2]
    return FaceFit(rec["shape"][i], rec["expr"][i], rec["albedo"][i], rec["pose"][i],
                   np.array([rec["offset"][i][0], rec["offset"][i][1], -rec["distance"][i]], np.float32),
                   float(rec["focal"][i]), np.array([size[1] / 2, size[0] / 2], np.float32), size, rec["sh"][i])


# ----------------------------------------------------------------------------- synthetic renders


def test_extraction_returns_complete_results(extracted, extractor):
    for r in extracted:
        assert r.n_faces == 1 and r.box.shape == (4,) and r.landmarks.shape == (68, 2)
        assert r.shape.shape == (extractor.model.num_shape,) and r.expr.shape == (17,)
        assert r.albedo.shape == (extractor.model.num_albedo,) and r.sh.shape == (27,)
        assert r.pose.shape == (3,) and r.translation.shape == (3,) and r.focal == pytest.approx(3 * 256)
        assert np.all((r.expr >= 0) & (r.expr <= 5))
        assert r.texture.shape == (T, T, 3) and r.texture.dtype == np.uint8
        assert r.texture_mask.shape == (T, T) and r.texture_mask.dtype == bool
        assert 0.35 < r.texture_mask.mean() < 0.6  # the face covers ~56 % of the UV square
        assert np.all(r.texture[~r.texture_mask] == 0)
        assert r.detail.shape == (S, S) and r.detail.dtype == np.float32 and np.all(np.isfinite(r.detail))
        assert 0.0005 < r.detail[r.detail != 0].std() < 0.5  # mm; the network is faint where unsure
        assert set(r.timings) == {"detect", "landmarks", "fit", "unwrap", "detail"}


def test_fitted_landmarks_reproject_close_to_the_detections_and_the_truth(extracted, extractor, synthetic,
                                                                         record_property):
    detected = np.mean([r.landmark_error_px for r in extracted])
    truth = np.mean([np.linalg.norm(r.face_fit().landmarks_2d(extractor.model) - synthetic["landmarks"][i],
                                    axis=1)[17:].mean() for i, r in enumerate(extracted)])
    print(f"\nlandmark error (px, 256², jaw excluded): vs dlib {detected:.2f}, vs true landmarks {truth:.2f}")
    record_property("landmark_error_px", detected)
    record_property("landmark_error_vs_truth_px", truth)
    assert detected < 6.0  # dlib's own error on these renders is ~3-5 px
    assert truth < 3.0


def test_fitted_pose_and_expression_follow_the_truth(extracted, synthetic, record_property):
    pose = np.array([r.pose for r in extracted])
    err_deg = np.degrees(np.abs(pose - synthetic["pose"])).mean(0)
    distance = np.array([-r.translation[2] for r in extracted])
    dist_err = np.abs(distance / synthetic["distance"] - 1).mean()
    expr = np.array([r.expr for r in extracted])
    expr_corr = np.corrcoef(expr.ravel(), synthetic["expr"].ravel())[0, 1]
    yaw_corr = np.corrcoef(pose[:, 0], synthetic["pose"][:, 0])[0, 1]
    print(f"\npose error (deg) yaw/pitch/roll {np.round(err_deg, 2)}, yaw corr {yaw_corr:.3f}, "
          f"distance error {dist_err:.1%}, expression corr {expr_corr:.3f}")
    record_property("expr_corr", expr_corr)
    assert np.all(err_deg < (4.0, 4.0, 2.0))
    assert yaw_corr > 0.9
    assert dist_err < 0.06
    assert expr_corr > 0.6


def test_detail_maps_correlate_with_the_ground_truth(extracted, synthetic, record_property):
    truth = [synthetic["detail"][i].astype(np.float32) for i in range(len(extracted))]
    corr = [detail_correlation(r.detail, truth[i], r.texture_mask) for i, r in enumerate(extracted)]
    corr_sfs = [detail_correlation(r.detail_sfs, truth[i], r.texture_mask) for i, r in enumerate(extracted)]
    print(f"\ndetail_corr per image {np.round(corr, 3)}, mean {np.mean(corr):.3f}; "
          f"shape from shading alone {np.round(corr_sfs, 3)}, mean {np.mean(corr_sfs):.3f}")
    record_property("detail_corr", float(np.mean(corr)))
    record_property("detail_corr_sfs", float(np.mean(corr_sfs)))
    # Shape from shading alone stays low (misregistration of ~0.5 px already halves it, and even
    # the true fit only reaches ~0.3, next test); the detail network, trained on other identities
    # of another seed, must add to it on these unseen renders (seed 7).
    assert np.mean(corr_sfs) > 0.1
    assert np.mean(corr) > np.mean(corr_sfs) + DETAIL_NET_GAIN


def test_detail_recovery_given_the_true_fit(extractor, synthetic, record_property):
    """Shape from shading alone (fit = ground truth): the ceiling of the detail step."""
    model = extractor.model
    corr = []
    with torch.no_grad():
        for i, image in enumerate(synthetic["image"]):
            fit, linear = _truth_fit(synthetic, i), srgb_to_linear(image)
            mean, comps = texel_albedo_basis(model, T)
            albedo = (mean + torch.einsum("k,knc->nc", torch.as_tensor(fit.albedo), comps)).clamp(0, 1)
            verts = fit.camera_vertices(model)
            unwrapped = unwrap(linear, model, fit.camera(), verts, fit.sh, albedo, T)
            ratio = log_shading_ratio(linear, model, fit.camera(), verts, fit.sh, unwrapped)
            detail = recover_detail(unwrapped, fit.sh, ratio, S).detail
            corr.append(detail_correlation(detail, synthetic["detail"][i].astype(np.float32), unwrapped.mask))
    print(f"\ndetail_corr with the true fit {np.round(corr, 3)}, mean {np.mean(corr):.3f}")
    record_property("detail_corr_true_fit", float(np.mean(corr)))
    assert np.mean(corr) > 0.25


def test_images_without_a_face_raise_no_face_error(extractor):
    blank = np.full((256, 256, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for image in (blank, noise):
        with pytest.raises(NoFaceError, match="no face"):
            extractor.extract(image)
    assert issubclass(NoFaceError, ExtractError) and issubclass(ExtractError, UserError)
    with pytest.raises(ExtractError):
        extractor.extract(blank[..., 0])


# ----------------------------------------------------------------------------- real photos


def _real_photos() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    from skimage import data as skdata

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    return {"astronaut": skdata.astronaut(), "grace_hopper": hopper}


def test_real_photos_give_a_texture_and_a_detail_map(extractor, record_property):
    from facedet3d.data.grids import image_grid, save_png
    from facedet3d.extract.preview import shaded_geometry
    from facedet3d.render.relief import shade_detail_map
    from tests.conftest import artifact_dir

    rows = []
    for name, image in _real_photos().items():
        r = extractor.extract(image)
        rows.append([image, r.texture, shade_detail_map(r.detail),
                     shaded_geometry(extractor.model, r.shape, r.expr, r.pose, r.translation, r.focal,
                                     r.detail, image.shape[:2])])
        print(f"\n{name}: box {r.box}, landmark error {r.landmark_error_px:.2f} px, "
              f"pose (deg) {np.round(np.degrees(r.pose), 1)}, distance {-r.translation[2]:.0f} mm, "
              f"{sum(r.timings.values()):.2f} s")
        record_property(f"{name}_landmark_error_px", r.landmark_error_px)
        assert r.n_faces >= 1
        assert r.landmark_error_px < 8.0
        assert np.all(np.abs(np.degrees(r.pose)) < 30)
        assert r.texture_mask.mean() > 0.35
        face = r.texture[r.texture_mask].astype(float)
        assert face.std() > 10  # a real picture, not a constant
        assert r.detail.std() > 0.002 and np.all(np.isfinite(r.detail))
    path = save_png(artifact_dir() / "extract_real_photos.png",
                    image_grid(rows, 256, ["input", "texture map", "detail map", "shaded geometry"]))
    assert path.stat().st_size > 50_000


# ----------------------------------------------------------------------------- components


def test_rotation_matches_the_camera_module():
    angles = (0.3, -0.2, 0.1)
    rot, drot = rotation_and_derivatives(angles)
    assert np.allclose(rot, rotation_matrix(*angles).double().numpy(), atol=1e-6)
    for k in range(3):
        step = np.zeros(3)
        step[k] = 1e-6
        plus = rotation_and_derivatives(np.add(angles, step))[0]
        minus = rotation_and_derivatives(np.subtract(angles, step))[0]
        num = (plus - minus) / 2e-6
        assert np.allclose(drot[k], num, atol=1e-6)


def test_sh_normal_gradient_matches_finite_differences():
    sh = sh_from_light((0.4, 0.5, 0.8), 0.7, 0.4, (1.1, 1.0, 0.9))[0].double().numpy()
    n = np.array([[0.2, -0.3, 0.93]])
    irr, grad = sh_normal_gradient(n, sh)
    assert np.allclose(irr, sh_irradiance(torch.as_tensor(n)[None], torch.as_tensor(sh)[None])[0].numpy())
    for k in range(3):
        e = np.zeros(3)
        e[k] = 1e-6
        num = (sh_normal_gradient(n + e, sh)[0] - sh_normal_gradient(n - e, sh)[0]) / 2e-6
        assert np.allclose(grad[0, :, k], num[0], atol=1e-6)


def test_solve_light_recovers_a_directional_light():
    rng = np.random.default_rng(1)
    normals = rng.normal(size=(4000, 3)) * (0.6, 0.6, 1.0)
    normals[:, 2] = np.abs(normals[:, 2]) + 0.2
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    albedo = rng.uniform(0.2, 0.7, (4000, 3))
    truth = sh_from_light((-0.5, 0.3, 0.8), 0.6, 0.45, (1.05, 1.0, 0.95))[0].double().numpy()
    obs = albedo * sh_irradiance(torch.as_tensor(normals)[None], torch.as_tensor(truth)[None])[0].numpy()
    sh = solve_light(obs, albedo, normals, np.ones(4000))
    assert np.abs(sh - truth).max() < 0.02


def test_detail_correlation_is_one_for_the_truth_and_drops_when_shifted():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(512, 512)).astype(np.float32)
    assert detail_correlation(truth, truth) == pytest.approx(1.0)
    assert detail_correlation(3.0 * truth, truth) == pytest.approx(1.0)
    assert detail_correlation(-truth, truth) == pytest.approx(-1.0)
    assert abs(detail_correlation(np.roll(truth, 8, axis=1), truth)) < 0.1
    assert np.isnan(detail_correlation(truth, truth, np.zeros((64, 64), bool)))


def test_pooled_correlation_from_summed_moments_is_the_correlation_of_all_texels():
    rng = np.random.default_rng(1)
    truths = [rng.normal(size=(256, 256)).astype(np.float32) * s for s in (0.1, 1.0)]
    preds = [t + rng.normal(size=t.shape).astype(np.float32) * 0.5 for t in truths]
    moments = [detail_moments(p, t) for p, t in zip(preds, truths)]
    assert correlation_from_moments(moments[0]) == pytest.approx(detail_correlation(preds[0], truths[0]))
    region = face_mask_uv(256, 3.0)
    hp = lambda a: masked_highpass(a, region, 15.0)[region]  # noqa: E731
    pooled = np.corrcoef(np.concatenate([hp(p) for p in preds]), np.concatenate([hp(t) for t in truths]))[0, 1]
    assert correlation_from_moments(np.sum(moments, 0)) == pytest.approx(pooled, abs=1e-6)
    # The deeply wrinkled map dominates the pooled figure, not the per-map mean.
    assert correlation_from_moments(np.sum(moments, 0)) > np.mean([correlation_from_moments(m) for m in moments])


def test_missing_landmark_model_is_a_user_error(monkeypatch):
    import importlib.util

    from facedet3d.extract import landmarks

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="face-recognition-models"):
        landmarks.predictor_path()
