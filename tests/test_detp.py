"""DetP: network shapes and masks, each loss on a hand-made case, a real optimisation step, resume
equality, the held-out metrics on hand-made maps, and a bad checkpoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facedet3d.detp import losses
from facedet3d.detp.data import Split, load_split, make_batch_fn, region_and_scale
from facedet3d.detp.metrics import expression_mean, face_region, pair_metrics, pearson
from facedet3d.detp.model import DetP, DetPConfig
from facedet3d.train import adversarial
from facedet3d.train.adversarial import Discriminator
from facedet3d.detp.stage import build, evaluate, make_phases
from facedet3d.errors import UserError
from facedet3d.train.checkpoint import load_checkpoint, save_checkpoint
from facedet3d.train.distributed import World
from facedet3d.train.laploss import lap_loss
from facedet3d.train.loop import run_step, training_loop

S = 32
CFG = DetPConfig(size=S, width=8, max_width=16, depth=2, vec_features=4, refine_blocks=1, n_expr=17, n_shape=5)
OPTIONS = {"weights": {"regress": 1.0, "adv": 0.05, "au": 0.05, "expr": 0.05, "id": 0.01, "age": 0.01,
                       "cycle": 0.2, "heads": 1.0},
           "lr": 2e-3, "lr_d": 2e-3, "r1_gamma": 1.0, "r1_every": 2, "grad_clip": 10.0}


def _inputs(b: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"detail": torch.randn(b, 1, S, S, generator=g), "src_aus": torch.rand(b, 17, generator=g) * 5,
            "tgt_aus": torch.rand(b, 17, generator=g) * 5, "tgt_expr": torch.rand(b, 17, generator=g),
            "shape": torch.randn(b, 5, generator=g), "facenet": torch.randn(b, 512, generator=g),
            "age": torch.rand(b, 82, generator=g)}


def _split(n_people: int = 4, per_person: int = 4, seed: int = 0) -> Split:
    """People whose maps are an identity pattern plus an expression-driven wrinkle (known structure)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S] / S
    maps, aus, identity, truth = [], [], [], []
    for p in range(n_people):
        base = 0.02 * np.sin(2 * np.pi * (xx * (p + 1) + yy))
        for e in range(per_person):
            a = np.zeros(17, np.float32)
            a[0] = e * 1.5
            true = base + 0.05 * a[0] * np.sin(2 * np.pi * 6 * yy) * (yy < 0.4)
            truth.append(true)
            maps.append(0.5 * true + 0.002 * rng.standard_normal((S, S)))
            aus.append(a)
            identity.append(f"p{p}")
    n = len(maps)
    t = lambda x: torch.tensor(np.asarray(x, np.float32))  # noqa: E731
    return Split(detail=t(maps)[:, None], truth=t(truth)[:, None], aus=t(aus), expr=t(aus),
                 shape=torch.zeros(n, 5), facenet=torch.nn.functional.normalize(torch.randn(n, 512), dim=1),
                 age=torch.full((n, 82), 1 / 82), identity=np.array(identity), ids=np.array([f"i{i}" for i in range(n)]),
                 kind=np.array(["image"] * n), sequence=np.array([""] * n), frame=np.full(n, -1))


def test_detp_outputs_shapes_masks_and_eq4_at_init():
    net = DetP(CFG)
    x = _inputs()
    out = net(**x)
    for key in ("detail", "coarse", "fine", "mask_c", "mask_f"):
        assert out[key].shape == (3, 1, S, S)
    for key in ("mask_c", "mask_f"):
        assert 0 < out[key].min() and out[key].max() < 1
    torch.testing.assert_close(out["detail"], out["coarse"] + out["fine"])
    # Zero-initialised heads and AU atlas: hallucinations 0, masks sigmoid(mask_bias):
    # D^C = (1 - m) D(I_x) (Eq. 4), D^F = 0.
    m = torch.sigmoid(torch.tensor(CFG.mask_bias))
    torch.testing.assert_close(out["coarse"], (1 - m) * x["detail"])
    assert out["fine"].abs().max() == 0
    with pytest.raises(AssertionError):
        net(**{**x, "detail": torch.zeros(3, 1, S // 2, S // 2)})


def test_discriminator_heads():
    d = Discriminator(S, {"aus": 17, "expr": 17})
    out = d(torch.randn(2, 1, S, S))
    assert out["real"].shape == (2,) and out["aus"].shape == (2, 17) and out["expr"].shape == (2, 17)


def test_losses_on_hand_made_cases():
    zero = torch.zeros(4)
    assert math.isclose(adversarial.d_nonsaturating(zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(adversarial.g_nonsaturating(zero).item(), math.log(2), rel_tol=1e-6)
    assert adversarial.g_nonsaturating(torch.full((4,), 20.0)).item() < 1e-8  # a convinced D: no loss
    # R1 of a linear critic D(x) = <w, x> is ||w||^2 for every sample.
    w = torch.randn(1, 1, 4, 4)
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    assert math.isclose(adversarial.r1_penalty((x * w).flatten(1).sum(1), x).item(), w.pow(2).sum().item(), rel_tol=1e-5)
    assert adversarial.head_l2(torch.ones(2, 3), torch.zeros(2, 3)).item() == 3.0
    a = torch.randn(2, 1, 32, 32)
    assert lap_loss(a, a).item() == 0.0
    # A constant offset lives only in the low-pass residual (level 4: weight 4^-4).
    assert math.isclose(lap_loss(a + 0.5, a, levels=4).item(), 0.5 * 4.0 ** -4, rel_tol=1e-4)
    assert losses.regression(a, a).item() == 0.0
    assert losses.cycle(a + 1.0, a).item() == pytest.approx(1.0)


def test_one_real_optimisation_step_lowers_the_generator_loss():
    torch.manual_seed(0)
    train = _split()
    scale = float(train.detail.std())
    cfg = DetPConfig(**{**CFG.__dict__, "detail_scale": scale})
    nets = build(cfg)
    phases = make_phases(nets, OPTIONS)
    batch = make_batch_fn(train, 8, seed=0, scale=scale)(0)
    g_phase = phases[0]
    before, _ = g_phase.loss(batch, 0)
    for _ in range(5):
        run_step([g_phase], batch, 0, torch.device("cpu"))
    after, _ = g_phase.loss(batch, 0)
    assert after.item() < before.item()


def _train(run_dir, steps: int, train: Split) -> dict:
    torch.manual_seed(1)
    scale = float(train.detail.std())
    nets = build(DetPConfig(**{**CFG.__dict__, "detail_scale": scale}))
    training_loop(run_dir, nets, make_phases(nets, OPTIONS), make_batch_fn(train, 4, seed=3, scale=scale), steps,
                  torch.device("cpu"), {"test": True}, log_every=1, checkpoint_every=1, desc="test")
    return {k: v.state_dict() for k, v in nets.items()}


def test_resume_2_plus_2_steps_equals_4_steps(tmp_path):
    train = _split()
    whole = _train(tmp_path / "a", 4, train)
    _train(tmp_path / "b", 2, train)
    resumed = _train(tmp_path / "b", 4, train)  # picks up checkpoint.pt at step 2
    for net in whole:
        for key in whole[net]:
            torch.testing.assert_close(resumed[net][key], whole[net][key], rtol=0, atol=0)
    rows = (tmp_path / "b" / "loss.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3", "4"]


def test_a_truncated_checkpoint_is_one_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"step": 3, "w": torch.ones(1000)})
    assert load_checkpoint(path)["step"] == 3
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(UserError, match="truncated or not a facedet3d checkpoint"):
        load_checkpoint(path)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_metrics_on_hand_made_maps():
    mask = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    a = torch.randn(3, 1, 8, 8)
    assert torch.allclose(pearson(a, a, mask), torch.ones(3))
    assert torch.allclose(pearson(a, -2 * a, mask), -torch.ones(3))
    assert torch.equal(pearson(torch.zeros_like(a), a, mask), torch.zeros(3))  # undefined counts as 0
    src, tgt = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    copy = pair_metrics(src, src, src, tgt, mask)
    assert np.all(copy["delta_corr"] == 0)
    perfect = pair_metrics(tgt, src, src, tgt, mask)
    assert np.allclose(perfect["corr"], 1) and np.allclose(perfect["delta_corr"], 1) and np.all(perfect["l1"] == 0)
    train_aus = torch.tensor([[0.0] * 17, [5.0] * 17, [4.0] * 17])
    train_maps = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 1.0, 3.0)])
    mean = expression_mean(train_aus, train_maps, torch.full((1, 17), 4.6), k=2)
    assert torch.allclose(mean, torch.full((1, 1, 2, 2), 2.0))
    assert face_region(torch.tensor([[[[0.0, 1.0]]], [[[0.0, 0.0]]]])).tolist() == [[[[False, True]]]]


def test_evaluate_reports_detp_next_to_every_baseline():
    train, test = _split(seed=0), _split(n_people=2, seed=1)
    scale = float(train.detail.std())
    nets = build(DetPConfig(**{**CFG.__dict__, "detail_scale": scale}))
    out = evaluate(nets, train, test, face_region(train.detail), scale, torch.device("cpu"), k=2)
    assert out["n_pairs"] == 2 * 4 * 3 and out["n_identities"] == 2
    for ref in ("vs_extracted", "vs_truth"):
        assert set(out[ref]) == {"detp", "copy", "zero", "expression_mean"}
        assert out[ref]["copy"]["delta_corr"] == 0.0
        assert all(np.isfinite(v) for m in out[ref].values() for v in m.values())
    assert set(out["au_consistency"]) == {"detp", "copy", "real_target"}


def _same_batches(a_fn, b_fn, steps=range(5), world_b=None) -> None:
    for step in steps:
        a, b = a_fn(step), b_fn(step) if world_b is None else b_fn(step, world_b)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (step, k)


def _streamed_vs_memory(index, size: int, batch: int) -> None:
    """The streamed split gives DetP's in-memory tensors: region, scale, batches, maps, truth."""
    memory, streamed = load_split(index, "train", size), load_split(index, "train", size, stream=True)
    assert isinstance(memory.detail, torch.Tensor) and not isinstance(streamed.detail, torch.Tensor)
    region, scale = region_and_scale(memory.detail)
    assert region.equal(face_region(memory.detail))
    assert scale == float(memory.detail[region.expand_as(memory.detail)].std())  # the former formula
    s_region, s_scale = region_and_scale(streamed.detail)
    assert s_region.equal(region) and s_scale == scale
    _same_batches(make_batch_fn(memory, batch, seed=2, scale=scale), make_batch_fn(streamed, batch, seed=2, scale=scale))
    every = np.arange(len(memory))
    assert torch.equal(streamed.detail[every], memory.detail) and torch.equal(streamed.truth[every], memory.truth)
    assert torch.equal(streamed.detail[int(every[-1])], memory.detail[-1])
    nearest = torch.tensor([[3, 1, 3], [0, 0, 2]])  # repeats, any order, 2-D (expression_mean's gather)
    assert torch.equal(streamed.detail[nearest], memory.detail[nearest])
    for k in ("aus", "expr", "shape", "facenet", "age"):
        assert torch.equal(getattr(streamed, k), getattr(memory, k))


def test_streamed_split_batches_equal_the_in_memory_ones(tmp_path):
    """Generated shards (5 of 12 rows, 64² maps, DetP at 32²: area-downsampled per batch)."""
    from facedet3d.shards.bench import fake_shards

    _streamed_vs_memory(fake_shards(tmp_path, 60, size=64, shard_size=12, full=True), size=32, batch=8)


def test_streamed_split_on_the_tiny_run_shards(tiny_run):
    """The tiny DAG's real shards (extracted and true maps, the face region of the UV layout)."""
    _, results = tiny_run
    _streamed_vs_memory(results / "shards" / "index.json", size=32, batch=4)


def test_batch_fn_ranks_split_the_global_batch(tmp_path):
    """batch_fn(step, World(r, 2)) are the rows of the single-process batch, for a split in memory
    and a streamed one; a batch that does not split evenly is a clear error."""
    from facedet3d.shards.bench import fake_shards

    streamed = load_split(fake_shards(tmp_path, 40, size=32, shard_size=16, full=True), "train", 32, stream=True)
    for train in (_split(), streamed):
        batch_fn = make_batch_fn(train, 8, seed=1, scale=0.1)
        for step in range(3):
            whole = batch_fn(step)
            _same_batches(lambda s: whole, batch_fn, steps=[step], world_b=World(0, 1))
            parts = [batch_fn(step, World(r, 2)) for r in range(2)]
            for k, v in whole.items():
                assert len(parts[0][k]) == 4 and torch.equal(torch.cat([parts[0][k], parts[1][k]]), v), (step, k)
        with pytest.raises(UserError, match="does not split evenly"):
            batch_fn(0, World(0, 3))


def test_detp_batch_bench_rows():
    from facedet3d.detp.bench import bench_detp_batches

    rows = list(bench_detp_batches(None, 64, 4, quick=True))
    assert [r["loader"] for r in rows] == ["detp_batch_fn", "detp_batch_fn_memory"]
    assert all(r["samples_per_s"] > 0 and r["workers"] == 0 for r in rows) and rows[0]["vs_memory"] > 0
