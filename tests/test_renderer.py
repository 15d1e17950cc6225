"""The rendering network R: shapes, each loss on a hand-made case (AugW's I* is I_x when the fake map
is the real one; DSL only over the skin), the perceptual networks, a real optimisation step, resume
equality, the held-out metrics on hand-made images, and a streamed training split (the tiny run's)
giving the batches of the split in memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facedet3d.errors import UserError
from facedet3d.face.synthetic import synthetic_model
from facedet3d.renderer import losses
from facedet3d.renderer import metrics as M
from facedet3d.renderer.ablation import compare
from facedet3d.renderer.bench import synthetic_faces
from facedet3d.renderer.data import Faces, make_batch_fn
from facedet3d.renderer.geometry import FaceGeometry, View
from facedet3d.renderer.model import Renderer, RendererConfig, condition
from facedet3d.renderer.perceptual import feature_net, perceptual_loss, vgg16_features
from facedet3d.renderer.stage import build, make_phases
from facedet3d.train.distributed import World
from facedet3d.train.loop import run_step, training_loop

S = 32
CFG = RendererConfig(size=S, texture_size=16, features=4, width=4, max_width=8, depth=2, lr_factor=4, n_albedo=18)
SETTINGS = {"size": S, "augw": True, "dsl": True, "augw_gain": 1.0, "lr": 2e-3, "lr_d": 1e-3, "r1_gamma": 1.0, "r1_every": 2,
            "grad_clip": 10.0,
            "weights": {"photo": 1.0, "photo_lr": 1.0, "pcpt": 0.0, "augw": 1.0, "dsl": 1.0, "adv": 0.01, "au": 0.01,
                        "heads": 1.0}}


@pytest.fixture(scope="module")
def geometry() -> FaceGeometry:
    return FaceGeometry(synthetic_model(24))


def _faces(geometry: FaceGeometry, people: int = 3, per_person: int = 2, seed: int = 0) -> Faces:
    """People of the synthetic model, photographed as the model's own Lambertian render."""
    return synthetic_faces(geometry, S, 16, people, per_person, seed)


def _batch(geometry, faces, step=0) -> dict:
    return make_batch_fn(faces, 4, seed=0)(step)


def _rasters(geometry, b, detail_key="detail"):
    view = View(S, b["pose"], b["translation"], b["focal"], b["principal"], b["sh"])
    proxy = geometry.raster(geometry.vertices(b["shape"], b["expr"]), view, b["albedo"])
    detailed = geometry.raster(geometry.vertices(b["shape"], b["expr"], b[detail_key]), view, b["albedo"])
    return proxy, detailed


def test_renderer_shapes_and_the_sum_of_its_branches(geometry):
    faces = _faces(geometry)
    b = _batch(geometry, faces)
    proxy, detailed = _rasters(geometry, b)
    r = Renderer(CFG)
    ntm = r.neural_texture(b["texture"])
    assert ntm.shape == (4, CFG.features, 16, 16)
    out = r(ntm, proxy, detailed, condition(b["aus"], b["albedo"], b["sh"]))
    for key in ("image", "lr", "detail"):
        assert out[key].shape == (4, 3, S, S)
    torch.testing.assert_close(out["image"], out["lr"] + out["detail"])  # Eq. 24
    off = (torch.maximum(proxy.mask, detailed.mask) == 0).expand(-1, 3, -1, -1)
    assert off.any() and (out["image"][off] == 0).all()  # R renders the face only
    # g_θ draws at S / lr_factor: its image is a bilinear upsampling, smooth between its samples.
    assert proxy.mask.sum() > 0.3 * proxy.mask.numel()


def test_a_zero_detail_map_gives_the_proxy_geometry(geometry):
    b = _batch(geometry, _faces(geometry))
    b["zero"] = torch.zeros_like(b["detail"])
    proxy, flat = _rasters(geometry, b, "zero")
    for a, c in zip(proxy, flat):
        torch.testing.assert_close(a, c)
    _, detailed = _rasters(geometry, b)
    assert (detailed.shading - proxy.shading).abs().max() > 0.01  # the wrinkles shade


def test_augmented_image_is_the_input_when_the_fake_map_is_the_real_one(geometry):
    b = _batch(geometry, _faces(geometry))
    proxy, detailed = _rasters(geometry, b)
    same = losses.augmented_image(b["image"], detailed.shading, detailed.shading, proxy.mask)
    torch.testing.assert_close(same, b["image"], atol=2e-6, rtol=0)
    _, fake = _rasters(geometry, b, "fake_detail")
    star = losses.augmented_image(b["image"], detailed.shading, fake.shading, proxy.mask)
    off = (proxy.mask == 0).expand(-1, 3, -1, -1)
    assert (star - b["image"]).abs()[~off].max() > 0.02  # fake wrinkles on the face...
    torch.testing.assert_close(star[off], b["image"][off], atol=2e-6, rtol=0)  # ...and nothing off it
    assert losses.augmented_wrinkle(star, star, proxy.mask).item() == 0.0


def test_detailed_shading_loss_sees_only_the_skin():
    g = torch.Generator().manual_seed(0)
    skin = torch.zeros(2, 1, S, S)
    skin[:, :, 8:24, 8:24] = 1.0
    pred, target = torch.rand(2, 3, S, S, generator=g), torch.rand(2, 3, S, S, generator=g)
    base = losses.detailed_shading(pred, target, skin)
    outside = pred.clone()
    outside[:, :, :4] = 5.0  # rows off the skin
    assert losses.detailed_shading(outside, target, skin).item() == base.item()
    inside = pred.clone()
    inside[:, :, 12:16, 12:16] += 1.0
    assert losses.detailed_shading(inside, target, skin).item() > base.item()
    assert losses.detailed_shading(target, target, skin).item() == 0.0


def test_photometric_loss_on_the_face_mask_only():
    mask = torch.zeros(1, 1, S, S)
    mask[..., 4:28, 4:28] = 1.0
    a = torch.rand(1, 3, S, S)
    total, terms = losses.photometric(a, a, mask)
    assert total.item() == 0.0 and set(terms) == {"mse", "l1", "lap"}
    b = a.clone()
    b[..., :2, :] = 0.0  # off the mask
    assert losses.photometric(b, a, mask)[0].item() == 0.0
    _, terms = losses.photometric(a + 0.1, a, mask)
    assert math.isclose(terms["l1"], 0.1, rel_tol=1e-4) and math.isclose(terms["mse"], 0.01, rel_tol=1e-3)


def test_perceptual_loss_with_the_shipped_facenet():
    net = feature_net("facenet")
    assert not any(p.requires_grad for p in net.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=g)
    assert perceptual_loss(net, x, x).item() == 0.0
    pred = torch.nn.functional.avg_pool2d(x, 3, 1, 1).requires_grad_(True)
    loss = perceptual_loss(net, pred, x)
    loss.backward()
    assert loss.item() > 0 and pred.grad.abs().sum() > 0
    net.train()
    assert not net.training  # frozen, batch norms included


def test_vgg16_needs_a_weights_file_and_loads_torchvision_keys(tmp_path):
    with pytest.raises(UserError, match="vgg16 state_dict file"):
        feature_net("vgg16", None)
    with pytest.raises(UserError, match="unknown perceptual network"):
        feature_net("alexnet")
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(UserError, match="not a torchvision vgg16"):
        vgg16_features(wrong)
    # A file of torchvision's layout (features.N.weight / bias), classifier keys ignored.
    layers, c, state = [0, 2, 5, 7, 10, 12, 14], 3, {}
    for idx, ch in zip(layers, (64, 64, 128, 128, 256, 256, 256)):
        state[f"features.{idx}.weight"] = torch.randn(ch, c, 3, 3) * 0.01
        state[f"features.{idx}.bias"] = torch.zeros(ch)
        c = ch
    state["classifier.0.weight"] = torch.zeros(4096, 25088)
    good = tmp_path / "vgg16.pth"
    torch.save(state, good)
    net = vgg16_features(good)
    feats = net(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256]


def test_one_real_optimisation_step_lowers_the_photometric_loss(geometry):
    torch.manual_seed(0)
    faces = _faces(geometry)
    nets = build(CFG)
    g_phase = make_phases(nets, SETTINGS, geometry, None)[0]
    batch = _batch(geometry, faces)
    _, before = g_phase.loss(batch, 0)
    for _ in range(8):
        run_step([g_phase], batch, 0, torch.device("cpu"))
    _, after = g_phase.loss(batch, 0)
    assert {"photo", "photo_lr", "augw", "dsl", "adv", "au"} <= set(after)
    assert after["photo"] < before["photo"] and after["augw"] < before["augw"]


def test_the_ablation_switches_drop_augw_and_dsl(geometry):
    nets = build(CFG)
    g_phase = make_phases(nets, {**SETTINGS, "augw": False, "dsl": False}, geometry, None)[0]
    _, terms = g_phase.loss(_batch(geometry, _faces(geometry)), 0)
    assert "augw" not in terms and "dsl" not in terms and "photo" in terms


def _train(run_dir, steps: int, geometry, faces) -> dict:
    torch.manual_seed(1)
    nets = build(CFG)
    training_loop(run_dir, nets, make_phases(nets, SETTINGS, geometry, None), make_batch_fn(faces, 4, seed=3), steps,
                  torch.device("cpu"), {"test": True}, log_every=1, checkpoint_every=1, desc="test")
    return {k: v.state_dict() for k, v in nets.items()}


def test_resume_2_plus_2_steps_equals_4_steps(tmp_path, geometry):
    faces = _faces(geometry)
    whole = _train(tmp_path / "a", 4, geometry, faces)
    _train(tmp_path / "b", 2, geometry, faces)
    resumed = _train(tmp_path / "b", 4, geometry, faces)  # picks up checkpoint.pt at step 2
    for net in whole:
        for key in whole[net]:
            torch.testing.assert_close(resumed[net][key], whole[net][key], rtol=0, atol=0)


def test_metrics_on_hand_made_images():
    mask = torch.ones(2, 1, 16, 16)
    a = torch.full((2, 3, 16, 16), 0.5)
    np.testing.assert_allclose(M.psnr(a + 0.1, a, mask), [20.0, 20.0], rtol=1e-5)
    np.testing.assert_allclose(M.ssim(a, a, mask), [1.0, 1.0])
    half = mask.clone()
    half[..., :8] = 0
    b = a.clone()
    b[..., :8] = 0.0  # wrong only off the mask
    assert np.all(M.psnr(b, a, half) > 100)
    g = torch.Generator().manual_seed(0)
    flat = torch.full((2, 3, 16, 16), 0.6)
    wrinkles = flat + 0.1 * torch.randn(2, 1, 16, 16, generator=g).expand(-1, 3, -1, -1)
    render = 0.4 * wrinkles  # a rendering that shows exactly the details' shading
    np.testing.assert_allclose(M.detail_fidelity(render, wrinkles, flat, mask, 2.0), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(M.detail_response(render, 0.4 * flat, wrinkles, flat, mask), [1.0, 1.0], rtol=1e-6)
    assert np.all(np.isnan(M.detail_response(render, render, wrinkles, flat, mask)))  # no change: undefined
    np.testing.assert_allclose(M.detail_strength(render, 0.4 * flat, wrinkles, flat, mask), [0.4, 0.4], rtol=1e-6)
    np.testing.assert_allclose(M.detail_strength(render, render, wrinkles, flat, mask), [0.0, 0.0], atol=1e-12)
    ci = M.bootstrap(np.array([0.1, 0.2, 0.3, np.nan]), 500)
    assert ci["n"] == 3 and ci["ci95"][0] <= ci["mean"] == 0.2 <= ci["ci95"][1]


def test_the_comparison_says_when_intervals_are_apart():
    fig = lambda m, lo, hi: {"mean": m, "ci95": [lo, hi], "n": 10}  # noqa: E731
    metrics = lambda m: {"methods": {  # noqa: E731
        "rerender": {"renderer": {"psnr": fig(20, 19, 21)}}, "new_expression": {"renderer": {"psnr": fig(18, 17, 19)}},
        "detail_fidelity": {"yaw_+0": {"renderer": fig(m, m - 0.05, m + 0.05)}},
        "detail_response": {"yaw_+0": {"renderer": fig(m, m - 0.05, m + 0.05)}}}}
    rows = compare(metrics(0.6), metrics(0.2))
    assert rows["detail_fidelity / yaw_+0"]["intervals_apart"] and rows["detail_fidelity / yaw_+0"]["difference"] == 0.4
    assert not rows["rerender / psnr"]["intervals_apart"]


@pytest.fixture(scope="module")
def tiny_train(tiny_run):
    """The tiny run's training split at its train_renderer sizes: (in memory, streamed)."""
    from facedet3d.config import load_config, merge, validate
    from facedet3d.paths import Results
    from facedet3d.renderer.data import load_faces
    from facedet3d.renderer.stage import fitted_model, settings
    from tests.conftest import REPO

    _, results = tiny_run
    config = validate(merge(load_config([REPO / "config.yaml", REPO / "tests" / "configs" / "tiny.yaml"]),
                            {"results_dir": str(results)}))
    s, paths = settings(config), Results.of(config)
    geometry = FaceGeometry(fitted_model(config))
    return tuple(load_faces(paths, "train", geometry, s["size"], s["texture_size"], stream=stream)
                 for stream in (False, True))


def test_a_streamed_training_split_gives_the_batches_of_the_split_in_memory(tiny_train):
    """The crops, textures and maps of a streamed split (cut and read per batch) are the tensors the
    split in memory has, for any integer index; the batches are identical, step by step, and the
    ranks' rows of a streamed batch are the rows of the single-process batch."""
    from facedet3d.detp.data import ShardMaps
    from facedet3d.renderer.data import PhotoCrops, ShardTextures

    memory, streamed = tiny_train
    n = len(memory)
    assert n == len(streamed) >= 4
    assert isinstance(streamed.image, PhotoCrops) and isinstance(streamed.texture, ShardTextures)
    assert isinstance(streamed.detail, ShardMaps)
    for key in ("image", "texture", "detail"):
        assert tuple(getattr(streamed, key).shape) == tuple(getattr(memory, key).shape), key
    for key in ("shape", "expr", "albedo", "pose", "translation", "focal", "principal", "sh", "aus"):
        assert torch.equal(getattr(streamed, key), getattr(memory, key)), key  # the crop camera too
    for key in ("identity", "ids", "kind"):
        assert np.array_equal(getattr(streamed, key), getattr(memory, key)), key
    order = np.random.default_rng(0).permutation(n)
    for index in (0, n - 1, -1, order, order[:4].reshape(2, 2), np.array([1, 1, 0, 1]), torch.tensor([[2], [0]]),
                  np.zeros(0, np.int64)):
        for key in ("image", "texture", "detail"):
            a, b = getattr(streamed, key)[index], getattr(memory, key)[index]
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (key, index)
    with pytest.raises(IndexError):
        streamed.image[np.array([n])]
    with pytest.raises(TypeError):
        streamed.texture[np.array([0.5])]
    mem_fn, stream_fn = make_batch_fn(memory, 4, seed=7), make_batch_fn(streamed, 4, seed=7)
    for step in range(3):
        a, b = mem_fn(step), stream_fn(step)
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (step, key)
        halves = [stream_fn(step, World(rank, 2)) for rank in range(2)]
        whole = stream_fn(step, World(0, 1))
        for key in whole:
            assert torch.equal(torch.cat([h[key] for h in halves]), whole[key]), (step, key)
            assert torch.equal(whole[key], a[key]), (step, key)
