"""Stage train_rcan: the RCAN ×4 network, exact tiled inference (Eq. 20), training (Eq. 19), resume, outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from facedet3d.config import ConfigError, load_config
from facedet3d.errors import UserError
from facedet3d.rcan.model import RCAN, RCANConfig, count_parameters, load_model
from facedet3d.rcan.stage import (
    MemoryPairs,
    hr_std,
    load_split,
    make_batch_fn,
    make_training,
    run,
)
from facedet3d.rcan.tiles import upsample, upsample_twice
from facedet3d.shards.format import sha256_file, write_shard
from facedet3d.shards.loaders import RCANDataset
from facedet3d.shards.stage import downsample
from facedet3d.train.distributed import World
from facedet3d.train.loop import training_loop
from tests.conftest import REPO

TINY = dict(n_groups=1, n_blocks=2, channels=8, reduction=4, attention_window=3)
SETTINGS = dict(device="cpu", devices=1, threads=1, steps=60, batch=8, lr=2e-3, **TINY, tile=16, log_every=20,
                checkpoint_every=30)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread, as the stage runs: on a busy 2-core machine a second OpenMP thread
    makes every small op wait (measured: 200 ms instead of 0.3 ms for a tiny forward pass)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, tail_std: float = 0.1, **sizes) -> RCAN:
    """A small random RCAN whose tail is not zero (so the network, not only bicubic, shapes the output)."""
    torch.manual_seed(seed)
    model = RCAN(RCANConfig(**{**TINY, **sizes}, detail_scale=0.05))
    torch.nn.init.normal_(model.tail.weight, std=tail_std)
    return model.eval()


def wrinkle_patches(n: int, hr: int, seed: int) -> np.ndarray:
    """(n, hr, hr) mm: two sinusoidal wrinkle trains of random orientation, wavelength (9-16 HR
    pixels: above the LR Nyquist limit of 8, where area averaging and bicubic attenuate them)
    and phase under a smooth envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:hr, 0:hr].astype(np.float32)
    out = np.zeros((n, hr, hr), np.float32)
    for i in range(n):
        for _ in range(2):
            angle, wavelength, phase = rng.uniform(0, np.pi), rng.uniform(9.0, 16.0), rng.uniform(0, 2 * np.pi)
            u = np.cos(angle) * xx + np.sin(angle) * yy
            envelope = np.exp(-((yy - rng.uniform(0, hr)) ** 2 + (xx - rng.uniform(0, hr)) ** 2) / (0.5 * hr * hr))
            out[i] += 0.05 * envelope * np.sin(2 * np.pi * u / wavelength + phase)
        out[i] += rng.normal(0, 0.0005, (hr, hr))
    return out


def write_rcan_shards(root: Path, hr: int = 32, counts=(("train", 48), ("test", 16))) -> Path:
    """A shard set like the `shards` stage's RCAN part: rcan-<split>-000.h5 and index.json."""
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    entries = []
    for s, (split, n) in enumerate(counts):
        patches = wrinkle_patches(n, hr, seed=s)
        name = f"rcan-{split}-000.h5"
        write_shard(shards / name, {"hr": patches.astype(np.float16), "lr": downsample(patches).astype(np.float16),
                                    "id": np.array([f"{split}{i}" for i in range(n)], dtype=object),
                                    "y": np.zeros(n, np.int32), "x": np.zeros(n, np.int32)},
                    attrs={"kind": "rcan", "split": split})
        entries.append({"path": name, "sha256": sha256_file(shards / name), "n": n, "kind": "rcan", "split": split})
    index = shards / "index.json"
    index.write_text(json.dumps({"shards": entries}))
    return index


def stage_config(root: Path, **settings) -> dict:
    return {"results_dir": str(root), "seed": 0, "train_rcan": {**SETTINGS, **settings}}


# -- the network --------------------------------------------------------------------------------

def test_output_shapes_on_a_non_square_input():
    model = tiny_model()
    x = torch.randn(2, 1, 12, 7)
    assert model.features(x).shape == (2, 8, 12, 7)
    assert model(x).shape == (2, 1, 48, 28)


def test_paper_config_has_15_6_million_parameters():
    with torch.device("meta"):  # no memory: only the shapes
        model = RCAN(RCANConfig())
    assert (model.config.n_groups, model.config.n_blocks, model.config.channels) == (10, 20, 64)
    # head 640 + 10 × (20 RCABs × 74,436 + conv 36,928) + body conv 36,928 + upsampler 2 × 147,712 + tail 577
    assert count_parameters(model) == 15_590_049
    assert abs(count_parameters(model) / 15.6e6 - 1) < 0.01


def test_untrained_model_is_exactly_bicubic():
    torch.manual_seed(0)
    model = RCAN(RCANConfig(**TINY))
    x = torch.randn(3, 1, 9, 11)
    with torch.no_grad():
        assert torch.equal(model(x), F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False))


def test_even_attention_window_is_refused(tmp_path):
    with pytest.raises(ValueError, match="odd"):
        RCANConfig(attention_window=4)
    overlay = _write(tmp_path, {"train_rcan": {"attention_window": 4}})
    with pytest.raises(ConfigError, match="'train_rcan.attention_window'"):
        load_config([REPO / "config.yaml", overlay])


def _write(folder: Path, data: dict) -> Path:
    path = folder / "overlay.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_receptive_radius_bounds_the_gradient():
    model = tiny_model(attention_window=5)
    x = torch.randn(1, 1, 64, 64, requires_grad=True)
    model(x)[0, 0, 4 * 32 + 1, 4 * 32 + 2].backward()
    rows, cols = torch.nonzero(x.grad[0, 0]).T
    reach = max(32 - rows.min(), rows.max() - 32, 32 - cols.min(), cols.max() - 32)
    assert 0 < reach <= model.receptive_radius == model.body_radius + 2
    assert reach >= model.receptive_radius - 1  # the bound is tight


# -- tiled inference (Eq. 20) --------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(48, 40), (37, 53)])
def test_tiled_equals_untiled(shape):
    model = tiny_model()
    detail = torch.randn(*shape) * 0.05
    with torch.no_grad():
        whole = model(detail[None, None] / 0.05)[0, 0] * 0.05
    tiled = upsample(model, detail, tile=16)
    assert tiled.shape == (4 * shape[0], 4 * shape[1])
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    # The margins matter: without the body's overlap the tiles' seams show.
    assert (upsample(model, detail, tile=16, overlap=0) - whole).abs().max() > 1e-4


def test_upsample_twice_is_16x():
    model = tiny_model()
    out = upsample_twice(model, torch.randn(6, 5) * 0.05, tile=4)
    assert out.shape == (96, 80) and torch.isfinite(out).all()


# -- training (Eq. 19) ---------------------------------------------------------------------------

def _data(n: int = 16, hr: int = 32):
    patches = torch.from_numpy(wrinkle_patches(n, hr, seed=3))[:, None]
    return F.avg_pool2d(patches, 4), patches


def test_one_optimisation_step_lowers_the_l1_loss():
    lr, hr = _data()
    torch.manual_seed(0)
    model = RCAN(RCANConfig(**TINY, detail_scale=float(hr.std())))
    phases, batch_fn, _ = make_training(model, SETTINGS, MemoryPairs(lr, hr), seed=0)
    batch = batch_fn(0)
    before, _ = phases[0].loss(batch, 0)
    phases[0].optimizer.zero_grad()
    before.backward()
    phases[0].optimizer.step()
    with torch.no_grad():
        after, _ = phases[0].loss(batch, 0)
    assert after.item() < before.item()


class _Killed(Exception):
    pass


def _train(run_dir: Path, steps: int, kill_at: int | None = None) -> RCAN:
    lr, hr = _data()
    settings = {**SETTINGS, "steps": steps}
    torch.manual_seed(0)
    model = RCAN(RCANConfig(**TINY, detail_scale=float(hr.std())))
    phases, batch_fn, schedulers = make_training(model, settings, MemoryPairs(lr, hr), seed=0)

    def maybe_killed(step):
        if step == kill_at:
            raise _Killed
        return batch_fn(step)

    training_loop(run_dir, {"rcan": model}, phases, maybe_killed, steps, torch.device("cpu"), {"steps": steps},
                  log_every=1, checkpoint_every=2, desc="rcan test", schedulers=schedulers)
    return model


def test_resume_after_a_kill_gives_the_uninterrupted_weights(tmp_path):
    whole = _train(tmp_path / "whole", 4)
    with pytest.raises(_Killed):  # killed during step 3: checkpoint.pt holds step 2
        _train(tmp_path / "resumed", 4, kill_at=2)
    resumed = _train(tmp_path / "resumed", 4)  # a fresh process: new model, resumes at step 2
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    rows = (tmp_path / "resumed" / "loss.csv").read_text().splitlines()
    assert rows == (tmp_path / "whole" / "loss.csv").read_text().splitlines()[:1] + rows[1:] and len(rows) == 5


def test_truncated_checkpoint_is_a_one_line_user_error(tmp_path):
    write_rcan_shards(tmp_path)
    out = tmp_path / "train_rcan"
    out.mkdir()
    torch.save({"step": 1, "nets": {}}, out / "checkpoint.pt")
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as err:
        run(stage_config(tmp_path, steps=2))
    assert "checkpoint.pt" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "final.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="final.pt"):
        load_model(tmp_path / "final.pt")


def test_a_split_too_large_for_memory_is_a_user_error(tmp_path):
    index = write_rcan_shards(tmp_path)
    assert load_split(index, "train")[1].shape == (48, 1, 32, 32)
    with pytest.raises(UserError, match="GiB in memory"):
        load_split(index, "train", max_gib=1e-6)


def test_training_streams_the_same_batches_and_scale_as_the_split_in_memory(tmp_path):
    index = write_rcan_shards(tmp_path)
    lr, hr = load_split(index, "train")
    streamed = RCANDataset(index, "train")
    assert hr_std(streamed, block=7) == float(hr.std())
    memory, stream = make_batch_fn(MemoryPairs(lr, hr), 6, 0, 0.01), make_batch_fn(streamed, 6, 0, 0.01)
    for step in range(4):
        a, b = memory(step), stream(step)
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    halves = [stream(3, World(r, 2)) for r in (0, 1)]
    assert torch.equal(torch.cat([h["hr"] for h in halves]), memory(3)["hr"])
    streamed.close()


# -- the stage -----------------------------------------------------------------------------------

def test_stage_writes_every_output_and_beats_bicubic(tmp_path):
    write_rcan_shards(tmp_path)
    summary = run(stage_config(tmp_path))
    out = tmp_path / "train_rcan"
    for name in ("checkpoint.pt", "final.pt", "loss.csv", "metrics.json", "summary.json", "samples.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {k: summary[k] for k in metrics}
    for key in ("psnr", "psnr_bicubic", "psnr_nearest", "l1_mm", "l1_mm_bicubic", "l1_mm_nearest"):
        assert math.isfinite(metrics[key]), key
    assert (metrics["n_train"], metrics["n_test"], metrics["steps"]) == (48, 16, 60)
    assert metrics["parameters"] == count_parameters(RCAN(RCANConfig(**TINY)))
    # Measured with seeds 0-3: +4.0 to +4.6 dB over bicubic after these 60 steps (+7 dB after 300).
    assert metrics["psnr"] > metrics["psnr_bicubic"] + 2.0 > metrics["psnr_nearest"] + 2.0
    assert metrics["l1_mm"] < metrics["l1_mm_bicubic"]
    model = load_model(out / "final.pt")
    assert model.config.detail_scale == pytest.approx(metrics["detail_scale_mm"])
    # A rerun resumes at the last step: nothing to train, the same figures.
    again = run(stage_config(tmp_path))
    assert again["psnr"] == metrics["psnr"]
    # Other training settings start over instead of resuming a foreign checkpoint.
    other = run(stage_config(tmp_path, steps=3, lr=1e-4))
    assert other["steps"] == 3 and other["psnr"] != metrics["psnr"]


def test_bench_row_has_the_contract_keys():
    from facedet3d.rcan.bench import time_step

    row = time_step(RCANConfig(**TINY), batch=2, patch=16, device=torch.device("cpu"), repeats=1)
    assert {"batch", "patch", "samples_per_s", "ms_per_step", "parameters"} <= set(row)
    assert row["samples_per_s"] > 0 and row["ms_per_step"] > 0 and (row["batch"], row["patch"]) == (2, 16)


def test_cli_without_shards_is_one_line(run_cmd, tmp_path):
    overlay = _write(tmp_path, {"results_dir": str(tmp_path / "results")})
    proc = run_cmd(["facedet3d", "train-rcan", "--config", "config.yaml", "--config", str(overlay)], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "run `facedet3d shards` first" in proc.stderr
