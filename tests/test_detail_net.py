"""The detail refinement network: shipped weights, clear errors, and a real (short) training run.

How much the shipped network adds over shape from shading on held-out synthetic renders is
measured in tests/test_extract_builtin.py (and in the demo's extract/summary.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facedet3d.config import load_config, merge
from facedet3d.synth.stage import run_chunk
from facedet3d.errors import UserError
from facedet3d.extract import detail_net_train
from facedet3d.extract.detail_net import GRID, N_INPUTS, WEIGHTS, DetailNet, load_weights, refine_detail
from tests.conftest import REPO


def test_shipped_weights_are_a_plain_dict_with_their_provenance():
    ckpt = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"state_dict", "width", "grid", "meta"} and ckpt["grid"] == GRID
    meta = ckpt["meta"]
    assert meta["n_train"] >= 500 and meta["val_corr"] > meta["val_corr_sfs"]
    assert WEIGHTS.stat().st_size < 5e6
    net = load_weights(WEIGHTS)
    assert not net.training
    assert net(torch.zeros(1, N_INPUTS, 64, 64)).shape == (1, 1, 64, 64)


def test_refinement_keeps_the_texture_grid_and_the_visibility(tmp_path):
    net = load_weights(WEIGHTS)
    rng = np.random.default_rng(0)
    for size in (128, 256):  # other texture sizes go through the network grid and back
        maps = [rng.normal(0, s, (size, size)).astype(np.float32) for s in (0.01, 1.0, 1.0, 0.05)]
        mask = np.zeros((size, size), bool)
        mask[size // 4:3 * size // 4, size // 4:3 * size // 4] = True
        visible = np.zeros_like(mask)
        visible[size // 8:7 * size // 8] = True
        out = refine_detail(net, *maps, mask, maps[0], visible)
        assert out.shape == (size, size) and out.dtype == np.float32
        assert np.all(out[~visible] == 0) and np.isfinite(out).all() and np.abs(out[visible]).max() > 0


def test_missing_or_broken_weights_give_one_clear_message(tmp_path):
    with pytest.raises(UserError, match="not found.*detail_net to false"):
        load_weights(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"something": 1}, bad)
    with pytest.raises(UserError, match="not a detail network checkpoint"):
        load_weights(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match="junk.pt is not a detail network checkpoint"):
        load_weights(junk)


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("detail_net")
    base = load_config([REPO / "config.yaml", REPO / "tests" / "configs" / "tiny.yaml"])
    config = merge(base, {"results_dir": str(tmp), "seed": 11, "synth": {
        "n_identities": 3, "identities_per_chunk": 3, "videos_per_identity": 0, "detector_check": False}})
    run_chunk(config, 0)
    from facedet3d.synth.stage import merge as merge_synth

    merge_synth(config)
    return tmp


def _mean_loss(net: DetailNet, samples: np.ndarray) -> float:
    """The training loss over whole maps (not the noisy running mean of random crops)."""
    losses = []
    with torch.no_grad():
        for sample in samples:
            x, y, w = detail_net_train.sample_tensors(sample)
            pred = net(torch.from_numpy(x)[None])[0, 0].numpy()
            losses.append(float(((pred - y) ** 2 * w).sum() / max(w.sum(), 1.0)))
    return float(np.mean(losses))


def test_collect_and_train_write_loadable_weights_and_lower_the_loss(tiny_synthetic, tmp_path):
    """The same two steps as `make detail-net`, on six 128² renders and 150 steps: the plumbing
    (samples, stats, weights) and that the optimiser lowers the whole-map loss from its initial
    weights. Six tiny renders hold too little to learn wrinkles from; what the network learns is
    measured on the shipped weights (their validation record above, and the gain over shape from
    shading on unseen renders in test_extract_builtin)."""
    samples = tmp_path / "samples.npy"
    n = detail_net_train.collect(tiny_synthetic, samples, workers=1)
    data = np.load(samples)
    assert n == len(data) and n >= 4 and data.shape[1:] == (len(detail_net_train.SAMPLE), GRID, GRID)
    assert np.abs(data[:, detail_net_train.SAMPLE.index("truth")]).max() > 0
    out = tmp_path / "net.pt"
    final = detail_net_train.train(samples, out, steps=150, batch=4, crop=64, width=8, val_fraction=0.2,
                                   log_every=50, seed=0)
    rows = [json.loads(line) for line in Path(str(out) + ".stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [50, 100, 150] and all(np.isfinite(r["loss"]) for r in rows)
    assert np.isfinite(final["val_corr"]) and np.isfinite(final["val_corr_sfs"])
    net = load_weights(out)
    assert isinstance(net, DetailNet) and net.width == 8
    torch.manual_seed(0)  # the initial weights train() started from
    before, after = _mean_loss(DetailNet(8).eval(), data), _mean_loss(net, data)
    print(f"\nwhole-map loss before {before:.4f}, after 150 steps {after:.4f}")
    assert after < before
