"""``facedet3d bench train-detp``: samples/s of one DetP training step (all phases) on random data."""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import torch

from facedet3d.detp.data import Split, make_batch_fn
from facedet3d.detp.model import DetPConfig
from facedet3d.detp.stage import build, make_phases
from facedet3d.train.loop import run_step


def _random_split(n: int, size: int, n_people: int = 8) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(detail=torch.randn(n, 1, size, size, generator=g) * 0.05, truth=None,
                 aus=torch.rand(n, 17, generator=g) * 5, expr=torch.rand(n, 17, generator=g),
                 shape=torch.randn(n, 40, generator=g), facenet=torch.randn(n, 512, generator=g),
                 age=torch.rand(n, 82, generator=g), identity=np.array([f"p{i % n_people}" for i in range(n)]),
                 ids=np.array([f"i{i}" for i in range(n)]), kind=np.array(["image"] * n),
                 sequence=np.array([""] * n), frame=np.full(n, -1))


def bench_train_detp(settings: dict[str, dict], device: torch.device, steps: int = 5) -> Iterator[dict]:
    """One row per named ``train_detp`` section: a full step (G phase, D phase, R1 every r1_every)
    timed after a warm-up."""
    for name, s in settings.items():
        size = s["size"]
        train = _random_split(64, size)
        cfg = DetPConfig(size=size, width=s["width"], max_width=s["max_width"], depth=s["depth"],
                         vec_features=s["vec_features"], refine_blocks=s["refine_blocks"], n_shape=40)
        nets = {k: v.to(device) for k, v in build(cfg).items()}
        phases = make_phases(nets, s)
        batch_fn = make_batch_fn(train, s["batch"], seed=0, scale=0.05)

        def step(i: int) -> None:
            run_step(phases, {k: v.to(device) for k, v in batch_fn(i).items()}, i, device)

        step(0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(1, steps + 1):
            step(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
        yield {"config": name, "size": size, "batch": s["batch"], "ms_per_step": round(seconds * 1000, 1),
               "samples_per_s": round(s["batch"] / seconds, 2), "device": str(device),
               "parameters": {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()}}
