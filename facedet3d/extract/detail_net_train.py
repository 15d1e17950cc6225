"""Train the detail refinement network (:mod:`.detail_net`) on a synthetic set's ground truth.

Two steps, run by ``make detail-net`` (rule ``detail_net``, ``facedet3d detail-net``) on a synthetic
set made with ``configs/detail_net.yaml`` (its own seed: none of the demo's identities):

1. :func:`collect` runs the builtin extractor (no network) on every image of the set and keeps
   shape from shading's maps and the ground-truth detail map, resampled to the network grid,
   in one ``.npy`` array (N, 8, GRID, GRID) float16;
2. :func:`train` fits the network on random crops (loss: mean squared error of the high-passed
   detail map, mm ×10, over the visible face) and writes the weights as a plain dict.
"""

from __future__ import annotations

import json
import logging
import os
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from facedet3d.extract.detail_net import DETAIL_SCALE, GRID, DetailNet, net_inputs, save_weights
from facedet3d.extract.quality import masked_highpass, resample
from facedet3d.errors import UserError
from facedet3d.face import layout

log = logging.getLogger(__name__)

# Channels of a collected sample: shape from shading's maps, then the visibility mask and truth.
SAMPLE = ("rho", "b_col", "b_row", "sfs", "mask", "rho_all", "visible", "truth")
CUTOFF_MM = 15.0


def _collect_rows(args) -> list[np.ndarray]:
    results_dir, rows = args
    from facedet3d.data.images import load_image
    from facedet3d.data.manifest import resolve_path
    from facedet3d.extract.builtin import BuiltinExtractor
    from facedet3d.extract.errors import ExtractError
    from facedet3d.synth.truth import SyntheticGroundTruth

    torch.set_num_threads(1)
    manifest_dir = Path(results_dir) / "synth"
    truth = SyntheticGroundTruth(results_dir)
    extractor = BuiltinExtractor(texture_size=GRID, detail_size=GRID, detail_net=None)
    out = []
    for row in rows:
        try:
            r = extractor.extract(load_image(resolve_path(manifest_dir, row)).rgb)
        except ExtractError:  # no face: nothing to learn from
            continue
        s = r.shading
        maps = [s.rho, s.b_col, s.b_row, s.detail_t, s.mask, s.rho_all, r.texture_mask,
                resample(truth.get(row).detail, GRID)]
        out.append(np.stack([np.asarray(m, np.float32) for m in maps]).astype(np.float16))
    return out


def collect(results_dir: Path, out: Path, workers: int = 2) -> int:
    """Collect training samples from every image of a synthetic results folder; returns N."""
    import csv

    with (Path(results_dir) / "synth" / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    jobs = [(str(results_dir), rows[i::8 * workers]) for i in range(8 * workers)]
    samples = []
    # One BLAS thread per worker process: oversubscribed OpenBLAS threads spin and run ~10x slower.
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"
    with get_context("spawn").Pool(workers) as pool:
        for part in tqdm(pool.imap(_collect_rows, jobs), total=len(jobs), desc="collect", unit="part"):
            samples += part
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.save(out, np.stack(samples))
    log.info("collected %d of %d images into %s", len(samples), len(rows), out)
    return len(samples)


def sample_tensors(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input (N_INPUTS, G, G), target (G, G) in network units, loss weight (G, G)) of a sample:
    1 on the visible face, 0 elsewhere. (Weighting maps by 1 / their variance, so that faint maps
    count as much as deeply wrinkled ones, was tried: validation correlation 0.20 against 0.27.)"""
    s = sample.astype(np.float32)
    rho, b_col, b_row, sfs, mask, rho_all, visible, truth = s
    region = layout.face_mask_uv(GRID, 0.0) & (visible > 0.5)
    target = masked_highpass(truth, region, CUTOFF_MM) * DETAIL_SCALE
    return net_inputs(rho, b_col, b_row, sfs, mask > 0.5, rho_all, visible > 0.5), target, region.astype(np.float32)


def correlation(pred: np.ndarray, target: np.ndarray, weight: np.ndarray) -> float:
    m = weight > 0
    p, t = pred[m] - pred[m].mean(), target[m] - target[m].mean()
    return float((p * t).sum() / max(np.sqrt((p * p).sum() * (t * t).sum()), 1e-12))


def train(data: Path, out: Path, steps: int = 2400, batch: int = 8, crop: int = 96, lr: float = 2e-3,
          width: int = 16, val_fraction: float = 0.05, seed: int = 0, log_every: int = 100) -> dict:
    """Fit the network on collected samples; write the weights and ``<out>.stats.jsonl``.

    Phases: split off ``val_fraction`` of the samples; then ``steps`` Adam steps on random
    ``crop``² crops (cosine learning-rate decay); every ``log_every`` steps a maintenance step
    logs the mean training loss and, at the end, the validation correlation of whole maps.
    Returns the final stats (train loss, val correlation of the network and of plain SFS).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    samples = np.load(data, mmap_mode="r")
    order = rng.permutation(len(samples))
    n_val = max(1, int(round(val_fraction * len(samples))))
    val_idx, train_idx = order[:n_val], order[n_val:]
    prepared = [sample_tensors(samples[i]) for i in tqdm(train_idx, desc="prepare", unit="map")]
    net = DetailNet(width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    stats_path = Path(str(out) + ".stats.jsonl")
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    stats_file = stats_path.open("w")
    running, start = [], time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc="train detail net", unit="step", mininterval=5.0):
        xs, ys, ws = [], [], []
        for i in rng.integers(0, len(prepared), batch):
            x, y, w = prepared[i]
            r0, c0 = rng.integers(0, GRID - crop + 1, 2)
            xs.append(x[:, r0:r0 + crop, c0:c0 + crop])
            ys.append(y[r0:r0 + crop, c0:c0 + crop])
            ws.append(w[r0:r0 + crop, c0:c0 + crop])
        x, y, w = (torch.from_numpy(np.stack(a)) for a in (xs, ys, ws))
        pred = net(x)[:, 0]
        loss = ((pred - y) ** 2 * w).sum() / w.sum().clamp(min=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        if step % log_every == 0 or step == steps:  # maintenance: status line and stats.jsonl
            row = {"step": step, "loss": float(np.mean(running)), "lr": sched.get_last_lr()[0],
                   "seconds": round(time.perf_counter() - start, 1)}
            running = []
            if step == steps:
                row |= validate(net, samples, val_idx)
            stats_file.write(json.dumps(row) + "\n")
            stats_file.flush()
            log.info("%s", row)
    stats_file.close()
    meta = {"n_train": int(len(train_idx)), "n_val": int(n_val), "steps": steps, "batch": batch, "crop": crop,
            "lr": lr, "seed": seed, "data": str(data), **row}
    save_weights(net.eval(), out, meta)
    return row


def validate(net: DetailNet, samples: np.ndarray, index: np.ndarray) -> dict:
    """Mean correlation with the truth over whole validation maps: network vs plain SFS."""
    net.eval()
    c_net, c_sfs = [], []
    with torch.no_grad():
        for i in index:
            x, y, w = sample_tensors(samples[i])
            pred = net(torch.from_numpy(x)[None])[0, 0].numpy()
            c_net.append(correlation(pred, y, w))
            c_sfs.append(correlation(x[3], y, w))
    net.train()
    return {"val_corr": float(np.mean(c_net)), "val_corr_sfs": float(np.mean(c_sfs))}


def run(config: dict) -> dict:
    """Stage `detail_net` (``make detail-net``): collect samples from this run's synthetic set, train,
    write ``results/detail_net/`` (samples.npy, detail_net.pt + .stats.jsonl, summary.json).

    Run it with ``configs/detail_net.yaml`` (its own seed and results folder: none of the demo's
    identities is trained on); point ``extract.detail_net_weights`` at the weights to use them.
    """
    from facedet3d.atomic import write_json_atomic
    from facedet3d.paths import Results

    paths = Results.of(config)
    s = config["detail_net"]
    if not paths.synth_manifest.is_file():
        raise UserError(f"{paths.synth_manifest} missing: the detail network trains on a synthetic set; "
                        "run `facedet3d synth` with the same config first")
    n = collect(paths.root, paths.detail_net_samples, s["workers"])
    torch.set_num_threads(s["threads"])
    row = train(paths.detail_net_samples, paths.detail_net_weights, steps=s["steps"])
    summary = {"n_samples": n, "weights": str(paths.detail_net_weights), **row}
    write_json_atomic(paths.summary("detail_net"), summary)
    return summary
