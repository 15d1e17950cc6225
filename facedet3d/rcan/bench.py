"""`facedet3d bench train-rcan`: samples/s of one RCAN training step (forward, L1, backward, Adam).

Two rows: the configured (demo) network and patch size, and the paper's RCAN (10 groups x 20
blocks x 64 channels) on the same HR patch size at batch 16 (batch 2 with --quick; one timed
step: ~50 s on one CPU thread). Each after one warm-up step. Random patches: speed does not
depend on the data.
"""

from __future__ import annotations

import time
from typing import Iterator

import torch

from facedet3d.rcan.model import RCAN, RCANConfig, SCALE, count_parameters
from facedet3d.train.device import autocast


def time_step(cfg: RCANConfig, batch: int, patch: int, device: torch.device, repeats: int) -> dict:
    """Mean seconds of a training step after one warm-up step."""
    torch.manual_seed(0)
    model = RCAN(cfg).to(device)
    torch.nn.init.normal_(model.tail.weight, std=0.01)  # a trained tail: every layer gets gradients
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    lr = torch.randn(batch, 1, patch // SCALE, patch // SCALE, device=device)
    hr = torch.randn(batch, 1, patch, patch, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(device):
            loss = (model(lr).float() - hr).abs().mean()
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / repeats
    return {"batch": batch, "patch": patch, "samples_per_s": batch / seconds, "ms_per_step": 1000 * seconds,
            "parameters": count_parameters(model), "receptive_radius_lr": model.receptive_radius}


def bench_train_rcan(config_paths: list[str], device: str = "cpu", quick: bool = False) -> Iterator[dict]:
    from facedet3d.config import load_config

    config = load_config(config_paths)
    s, patch = config["train_rcan"], int(config["shards"]["rcan_patch"])
    dev = torch.device(device)
    demo = RCANConfig(**{k: int(s[k]) for k in ("n_groups", "n_blocks", "channels", "reduction", "attention_window")})
    paper = RCANConfig(attention_window=demo.attention_window or 15)
    rows = (("demo", demo, int(s["batch"]), 2 if quick else 5), ("paper", paper, 2 if quick else 16, 1))
    for name, cfg, batch, repeats in rows:
        sizes = {k: getattr(cfg, k) for k in ("n_groups", "n_blocks", "channels")}
        yield {"config": name, **sizes, **time_step(cfg, batch, patch, dev, repeats), "device": str(dev),
               "threads": torch.get_num_threads()}
