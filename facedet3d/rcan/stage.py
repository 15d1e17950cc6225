"""Stage `train_rcan`: fit a one-channel RCAN ×4 on the shards' detail patch pairs (paper §3.2, Eq. 19).

    L_SR = L1(RCAN(D_256^P), D_1024^P)                                             (Eq. 19)

The demo's pairs are 128² HR patches of the 512² extracted detail maps and their 32² ×4
area-average downsamples (``shards.rcan_patch``); the paper's are 1024² patches of 4096² maps.
The train split is streamed: every step draws its ``batch`` patches (and a horizontal flip
each) from ``np.random.default_rng([seed, 0xC4A, step])`` and reads them from the shards, so
memory does not grow with the data and a resumed run is the same as an uninterrupted one; the
held-out test split is read into memory to be measured. Adam with cosine learning-rate decay to 0
over ``steps``; the network is :class:`facedet3d.rcan.model.RCAN` (its docstring lists the two
deviations from the paper: a residual over bicubic with a zero-initialised tail, and windowed
channel attention for exact tiling).

Writes ``<results_dir>/train_rcan/``:
  checkpoint.pt   training state (the loop's; resumed after a kill, discarded when the options
                  that shape training change: model sizes, steps, batch, lr, seed, data)
  loss.csv        mean L1 (network units and mm) per ``log_every`` steps
  final.pt        {"model": state_dict, "config": RCANConfig as a dict, "options": ...}
  metrics.json    on the held-out test patches: psnr / psnr_bicubic / psnr_nearest (dB) and
                  l1_mm / l1_mm_bicubic / l1_mm_nearest; PSNR uses one fixed peak for all three,
                  the test HR patches' range (max - min, mm), and the MSE over all test pixels
  summary.json    the same figures with counts, steps, seconds, device, parameters
  samples.png     test patches as rows: LR (nearest-enlarged) | bicubic | RCAN | HR, shaded as
                  reliefs (one exaggeration per row, from the HR patch's slopes)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from facedet3d.atomic import write_json_atomic
from facedet3d.data.grids import image_grid, save_png
from facedet3d.errors import UserError
from facedet3d.paths import Results
from facedet3d.rcan.model import SCALE, RCAN, RCANConfig, count_parameters, load_model
from facedet3d.render.relief import shade_detail_map
from facedet3d.shards.format import split_digest
from facedet3d.shards.loaders import RCANDataset
from facedet3d.train.checkpoint import save_checkpoint
from facedet3d.train.device import autocast, resolve_device
from facedet3d.train.distributed import SINGLE, World, join, leave, rank_rows
from facedet3d.train.loop import Phase, training_loop

log = logging.getLogger(__name__)

STAGE = "train_rcan"
_STREAM = 0xC4A  # separates the batch draws from other users of the seed
_MODEL_KEYS = ("n_groups", "n_blocks", "channels", "reduction", "attention_window")
_TRAINING_KEYS = ("steps", "batch", "lr") + _MODEL_KEYS  # a change restarts training
N_SAMPLES = 4
MAX_GIB = 16.0  # largest split held in memory


def load_split(index_path: str | Path, split: str, max_gib: float = MAX_GIB) -> tuple[torch.Tensor, torch.Tensor]:
    """All RCAN pairs of one split in memory: lr (N, 1, p/4, p/4), hr (N, 1, p, p) float32 mm.

    The demo's splits are a few hundred MB at most; a split larger than ``max_gib`` (paper-sized
    data: 1024² patches of tens of thousands of images) stops with a clear message instead of
    being killed for memory: streaming batches from the shards is not implemented.
    """
    data = RCANDataset(index_path, split)
    try:
        with h5py.File(data.paths[0], "r") as f:
            pixels = int(np.prod(f["hr"].shape[1:]))
        gib = len(data) * 4 * (1 + 1 / SCALE**2) * pixels / 2**30
        if gib > max_gib:
            raise UserError(f"the RCAN {split} split of {index_path} needs {gib:.1f} GiB in memory (limit {max_gib}); "
                            "use fewer shards.rcan_patches_per_image or a smaller shards.rcan_patch")
        lr = torch.from_numpy(data.read("lr").astype(np.float32))[:, None]
        hr = torch.from_numpy(data.read("hr").astype(np.float32))[:, None]
    finally:
        data.close()
    assert hr.shape[-1] == SCALE * lr.shape[-1] and hr.shape[-2] == SCALE * lr.shape[-2], (lr.shape, hr.shape)
    return lr, hr


def model_config(settings: dict, detail_scale: float) -> RCANConfig:
    try:
        return RCANConfig(**{k: int(settings[k]) for k in _MODEL_KEYS}, detail_scale=float(detail_scale))
    except ValueError as err:
        raise UserError(f"config section {STAGE}: {err}") from None


class MemoryPairs:
    """Pairs held in memory with a streamed split's interface: ``len()``, ``batch(indices) -> (lr, hr)``."""

    def __init__(self, lr: torch.Tensor, hr: torch.Tensor):
        self.lr, self.hr = lr, hr

    def __len__(self) -> int:
        return len(self.lr)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return self.lr[idx], self.hr[idx]


def hr_std(pairs: RCANDataset, block: int = 256) -> float:
    """The std (mm) of every HR texel of a streamed split, read in blocks of rows and summed in
    float64: the network unit (``detail_scale``), as ``hr.std()`` of the split in memory gives it."""
    total = squares = 0.0
    count = 0
    for start in range(0, len(pairs), block):
        rows = pairs.read_rows("hr", np.arange(start, min(start + block, len(pairs)))).astype(np.float64)
        total, squares, count = total + rows.sum(), squares + np.square(rows).sum(), count + rows.size
    if count < 2:
        return math.nan
    mean = total / count
    return float(np.float32(math.sqrt(max((squares - count * mean * mean) / (count - 1), 0.0))))


def make_batch_fn(pairs: RCANDataset | MemoryPairs, batch: int, seed: int, detail_scale: float):
    """``batch_fn(step, world)`` for the loop: ``batch`` random pairs of ``pairs``, each flipped
    left-right with p = 1/2, in network units; a pure function of (seed, step). With a ``world``,
    this process's rows of that batch; only those pairs are read."""

    def batch_fn(step: int, world: World = SINGLE) -> dict:
        rng = np.random.default_rng([int(seed), _STREAM, int(step)])
        rows = rank_rows(batch, world)
        idx = rng.integers(0, len(pairs), batch)[rows]
        flip = torch.from_numpy(rng.random(batch)[rows] < 0.5)[:, None, None, None]
        x, y = pairs.batch(idx)
        x = torch.where(flip, x.flip(-1), x)
        y = torch.where(flip, y.flip(-1), y)
        return {"lr": x / detail_scale, "hr": y / detail_scale}

    return batch_fn


def make_training(model: RCAN, settings: dict, pairs: RCANDataset | MemoryPairs, seed: int):
    """The loop's pieces for one RCAN: (phases, batch_fn, schedulers). One phase: Adam on the L1 of Eq. 19."""
    scale = model.config.detail_scale
    optimizer = torch.optim.Adam(model.parameters(), lr=float(settings["lr"]))
    schedulers = {"lr": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(settings["steps"]))}

    def l1_loss(batch: dict, step: int):
        pred = model(batch["lr"])
        assert pred.shape == batch["hr"].shape, (pred.shape, batch["hr"].shape)
        loss = (pred.float() - batch["hr"]).abs().mean()  # Eq. 19
        return loss, {"l1": loss.item(), "l1_mm": loss.item() * scale}

    phases = [Phase("rcan", optimizer, l1_loss)]
    return phases, make_batch_fn(pairs, int(settings["batch"]), seed, scale), schedulers


@torch.no_grad()
def predict(model: RCAN, lr_mm: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """RCAN ×4 of whole patches (N, 1, h, w) mm -> (N, 1, 4h, 4w) mm on the CPU (no tiling: patches are small)."""
    device = next(model.parameters()).device
    model.eval()
    scale = model.config.detail_scale
    outs = []
    for i in range(0, len(lr_mm), batch):
        with autocast(device):
            outs.append(model(lr_mm[i:i + batch].to(device) / scale).float().cpu() * scale)
    return torch.cat(outs)


def bicubic(lr_mm: torch.Tensor) -> torch.Tensor:
    return F.interpolate(lr_mm, scale_factor=SCALE, mode="bicubic", align_corners=False)


def nearest(lr_mm: torch.Tensor) -> torch.Tensor:
    return F.interpolate(lr_mm, scale_factor=SCALE, mode="nearest")


def psnr(pred: torch.Tensor, target: torch.Tensor, peak: float) -> float:
    """10 log10(peak² / MSE), the MSE over every pixel of every patch (dB)."""
    mse = float(((pred.double() - target.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def held_out_metrics(model: RCAN, lr: torch.Tensor, hr: torch.Tensor) -> tuple[dict, dict]:
    """PSNR and L1 (mm) of RCAN, bicubic and nearest on held-out pairs, one fixed peak for all
    three (the HR patches' range); also returns the three predictions for the samples."""
    preds = {"rcan": predict(model, lr), "bicubic": bicubic(lr), "nearest": nearest(lr)}
    peak = float(hr.max() - hr.min())
    if peak <= 0:
        raise UserError("the test split's RCAN patches are all flat: no PSNR can be measured")
    metrics = {"psnr_peak_mm": peak}
    for name, pred in preds.items():
        suffix = "" if name == "rcan" else f"_{name}"
        metrics[f"psnr{suffix}"] = psnr(pred, hr, peak)
        metrics[f"l1_mm{suffix}"] = float((pred - hr).abs().mean())
    return metrics, preds


def draw_samples(path: Path, lr: torch.Tensor, hr: torch.Tensor, preds: dict, n: int = N_SAMPLES) -> Path:
    """samples.png: rows of test patches, LR (nearest) | bicubic | RCAN | HR, shaded as reliefs."""
    rows = []
    for i in np.linspace(0, len(hr) - 1, min(n, len(hr))).round().astype(int):
        target = hr[i, 0].numpy()
        maps = [preds["nearest"][i, 0].numpy(), preds["bicubic"][i, 0].numpy(), preds["rcan"][i, 0].numpy(), target]
        # One exaggeration per row: the HR patch's slopes (mm per texel over a 200 mm window) to ~0.3.
        slope = np.std(np.gradient(target, 200.0 / target.shape[1]))
        exaggerate = 0.3 / slope if slope > 0 else 1.0
        rows.append([shade_detail_map(m, exaggerate) for m in maps])
    cell = max(128, hr.shape[-1])
    return save_png(path, image_grid(rows, cell, col_labels=["LR (nearest)", "bicubic", "RCAN", "HR"]))


def run(config: dict) -> dict:
    """Train RCAN on the train split's patch pairs, measure it on the test split; returns the summary.

    Data-parallel (``devices`` > 1, started by torchrun): every process trains; rank 0 alone then
    writes final.pt and measures; the others return an empty dict."""
    s = config[STAGE]
    seed = int(config["seed"])
    results = Results.of(config)
    out = results.stage(STAGE)
    started = time.perf_counter()
    torch.set_num_threads(int(s["threads"]))
    world, device = join(resolve_device(s["device"]), s["devices"])
    index = results.shard_index
    train = RCANDataset(index, "train")  # streamed: each step reads its pairs
    test_lr, test_hr = load_split(index, "test")
    detail_scale = hr_std(train)
    patch = train.read_rows("hr", [0]).shape[-2:]
    if not detail_scale > 0:
        raise UserError(f"the RCAN train patches of {index} are all flat; nothing to learn")
    cfg = model_config(s, detail_scale)
    options = {"seed": seed, **{k: s[k] for k in _TRAINING_KEYS}, "model": asdict(cfg),
               "data": split_digest(index, "rcan", "train"), "n_train": len(train)}
    log.info("%s: %d train / %d test pairs (%s HR), detail_scale %.4g mm, device %s", STAGE, len(train),
             len(test_lr), "x".join(map(str, patch)), detail_scale, device)

    torch.manual_seed(seed)
    model = RCAN(cfg).to(device)
    phases, batch_fn, schedulers = make_training(model, s, train, seed)
    train_started = time.perf_counter()
    row = training_loop(out, {"rcan": model}, phases, batch_fn, int(s["steps"]), device, options,
                        log_every=int(s["log_every"]), checkpoint_every=int(s["checkpoint_every"]),
                        desc=STAGE, schedulers=schedulers, world=world)
    train_seconds = time.perf_counter() - train_started
    train.close()
    leave(world)
    if not world.main:
        return {}
    save_checkpoint(out / "final.pt", {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                                       "config": asdict(cfg), "options": {**options, "tile": int(s["tile"])}})

    model = load_model(out / "final.pt", device)  # what later stages load, checked here
    metrics, preds = held_out_metrics(model, test_lr, test_hr)
    draw_samples(out / "samples.png", test_lr, test_hr, preds)
    metrics.update({
        "n_train": len(train), "n_test": len(test_lr), "steps": int(s["steps"]), "batch": int(s["batch"]),
        "patch_hr": int(patch[-1]), "device": str(device), "parameters": count_parameters(model),
        "receptive_radius_lr": model.receptive_radius if cfg.attention_window else None,
        "detail_scale_mm": detail_scale, "final_train_l1_mm": row.get("rcan/l1_mm"),
        "seconds_train": round(train_seconds, 2), "seconds": round(time.perf_counter() - started, 2),
    })
    write_json_atomic(out / "metrics.json", metrics)
    summary = {**metrics, "model": asdict(cfg),
               "deviations": ["residual over bicubic x4 with a zero-initialised tail (starts at bicubic)"]}
    if cfg.attention_window:
        summary["deviations"].append(f"channel attention pooled over a local {cfg.attention_window}x"
                                     f"{cfg.attention_window} window (exact tiling) instead of the whole image")
    write_json_atomic(results.summary(STAGE), summary)
    log.info("%s: test PSNR %.2f dB (bicubic %.2f, nearest %.2f), L1 %.4g mm (bicubic %.4g), %.0f s", STAGE,
             metrics["psnr"], metrics["psnr_bicubic"], metrics["psnr_nearest"], metrics["l1_mm"],
             metrics["l1_mm_bicubic"], metrics["seconds"])
    return summary
