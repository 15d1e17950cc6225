"""``facedet3d bench train-detp``: samples/s of one DetP training step (all phases) on random data;
:func:`bench_detp_batches`: samples/s of DetP's batch function reading its maps from the shards."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from facedet3d.detp.data import Split, load_split, make_batch_fn
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


def bench_detp_batches(index_path: str | Path | None, size: int, batch: int, steps: int = 40, repeats: int = 3,
                       quick: bool = False) -> Iterator[dict]:
    """Rows like ``bench loader``'s for DetP's ``batch_fn`` over the train split of ``index_path``:
    ``detp_batch_fn`` streams the maps from the shards (what ``train_detp`` does, in its own process:
    no DataLoader, workers 0), ``detp_batch_fn_memory`` the same split held in memory (the former
    default). samples_per_s counts the batch's sources; each also reads its partner's map
    (``maps_per_s``). Without an index, a temporary 512-sample set of random DetP shards at 256²."""
    from facedet3d.shards.bench import fake_shards

    steps, repeats = (10, 1) if quick else (int(steps), int(repeats))
    with tempfile.TemporaryDirectory() as tmp:
        if index_path is None:
            index_path = fake_shards(Path(tmp), 128 if quick else 512, full=True)
        rates = {}
        for name, stream in (("detp_batch_fn", True), ("detp_batch_fn_memory", False)):
            train = load_split(index_path, "train", size, stream=stream)
            batch_fn = make_batch_fn(train, batch, seed=0, scale=1.0)
            batch_fn(0)
            best = float("inf")
            for r in range(repeats):
                start = time.perf_counter()
                for step in range(1 + r * steps, 1 + (r + 1) * steps):
                    batch_fn(step)
                best = min(best, time.perf_counter() - start)
            rates[name] = batch * steps / best
            n = len(train)
            del train, batch_fn
        for name, rate in rates.items():
            row = {"loader": name, "workers": 0, "order": "shuffled", "samples_per_s": round(rate, 1),
                   "maps_per_s": round(2 * rate, 1), "n": n, "batch": batch, "size": size, "repeats": repeats}
            if name == "detp_batch_fn":
                row["vs_memory"] = round(rate / rates["detp_batch_fn_memory"], 3)
            yield row
