"""`bench loader`: DetP samples per second from shards vs per-image files vs a raw memory copy.

Reads the same samples (detail map + texture map) several ways, in batches of 16, in two orders:
``sequential`` (the split's order) and ``shuffled`` (a seeded random order over all n samples:
what training does):
  shards          :func:`~.loaders.batch_loader` over the HDF5 shards: a batch sampler hands the
                  DataLoader (or each worker) a batch's indices, read with one
                  ``DetPDataset.batch`` call (rows sorted per shard, each read into the batch tensor)
  shards_collate  a plain ``DataLoader(DetPDataset, batch_size=16)`` (per-sample dicts, collated)
  files           one .npy (detail) + one .png (texture) per sample, written to a temp folder first
  memcpy          a copy of each sample's arrays already in memory (the upper bound; the destination
                  stays in the CPU cache, so it runs above DRAM bandwidth)
  memcpy_batch    the batch's rows gathered from arrays already in memory into batch arrays (what a
                  split held in memory costs per batch: DetP's in-memory batches did this)
The loaders run with num_workers 0 and 2 (after a warm-up pass with persistent workers: worker
start-up, a one-off cost of a training run, is not timed); each figure is the best of ``repeats``
passes. Rows carry ``vs_files`` (samples/s over the files loader's, same workers and order) and
``vs_memcpy`` (over memcpy's, same order); ``vs_memcpy_batch`` likewise.
Without an index_path a temporary shard set of random data at the demo's sizes (256² float16
detail, 256² uint8 texture) is built first, so the bench runs anywhere.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from facedet3d.shards.loaders import DetPDataset, batch_loader

FIELDS = ("detail", "texture")
BATCH = 16
ORDERS = ("sequential", "shuffled")


class _FileDataset(Dataset):
    def __init__(self, folder: Path, n: int):
        self.folder, self.n = folder, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        detail = np.load(self.folder / f"{i:06d}.npy")
        texture = cv2.cvtColor(cv2.imread(str(self.folder / f"{i:06d}.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return {"detail": torch.from_numpy(detail), "texture": torch.from_numpy(texture)}


def fake_shards(folder: Path, n: int, size: int = 256, shard_size: int = 256, seed: int = 0, full: bool = False,
                compression: str = "none") -> Path:
    """A one-split (train) DetP shard set of n random samples (detail size² float16 mm, texture
    size² uint8, aus, id), ``shard_size`` per shard; ``full``: every field DetP's training reads
    too (gt_detail, expr, shape, facenet, age_dist, age, identity (4 images a person), kind,
    sequence, frame), no texture. Returns its index.json."""
    from facedet3d.atomic import write_json_atomic
    from facedet3d.shards.format import sha256_file, write_shard

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for s, start in enumerate(range(0, n, shard_size)):
        m = min(shard_size, n - start)
        fields = {
            "detail": (rng.standard_normal((m, size, size), np.float32) * 0.05).astype(np.float16),
            "aus": rng.random((m, 17), np.float32) * 5,
            "id": np.array([f"x{start + i:06d}" for i in range(m)], dtype=object),
        }
        if full:
            fields |= {
                "gt_detail": (rng.standard_normal((m, size, size), np.float32) * 0.1).astype(np.float16),
                "expr": rng.random((m, 17), np.float32), "shape": rng.standard_normal((m, 45), np.float32),
                "facenet": rng.standard_normal((m, 512), np.float32), "age_dist": rng.random((m, 81), np.float32),
                "age": rng.random(m, np.float32) * 80, "frame": np.full(m, -1, np.int64),
                "identity": np.array([f"p{(start + i) // 4:05d}" for i in range(m)], dtype=object),
                "kind": np.array(["image"] * m, dtype=object), "sequence": np.array([""] * m, dtype=object),
            }
        else:
            fields["texture"] = rng.integers(0, 256, (m, size, size, 3), dtype=np.uint8)
        name = f"detp-train-{s:03d}.h5"
        write_shard(folder / name, fields, compression=compression)
        entries.append({"path": name, "sha256": sha256_file(folder / name), "n": m, "kind": "detp", "split": "train"})
    return write_json_atomic(folder / "index.json", {"shards": entries, "config": {}, "code_version": None, "fields": {}})


def _rate(make_pass, n: int, repeats: int) -> float:
    """Samples/s of the best of ``repeats`` timed calls of ``make_pass()`` (each returns the samples seen)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        seen = make_pass()
        best = min(best, time.perf_counter() - start)
        assert seen == n, (seen, n)
    return n / best


def _loader_rate(loader, n: int, repeats: int, workers: int) -> float:
    def one_pass() -> int:
        seen = 0
        for batch in loader:
            seen += len(batch["detail"])
        return seen

    if workers:
        one_pass()  # warm-up: start the persistent workers
    return _rate(one_pass, n, repeats)


def _batches(order: np.ndarray) -> list[np.ndarray]:
    return [order[i:i + BATCH] for i in range(0, len(order), BATCH)]


def bench_loader(index_path: str | Path | None = None, n: int = 512, quick: bool = False,
                 split: str = "train", repeats: int = 3) -> Iterator[dict]:
    """Rows {loader, workers, order, samples_per_s, n, batch, vs_files, vs_memcpy, vs_memcpy_batch};
    n samples (128 if quick) of the given split."""
    n = 128 if quick else int(n)
    repeats = 1 if quick else int(repeats)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if index_path is None:
            index_path = fake_shards(tmp / "shards", n)
        dataset = DetPDataset(index_path, split, fields=FIELDS)
        n = min(n, len(dataset))
        subset = torch.utils.data.Subset(dataset, range(n))
        # The same samples as per-image files, and in memory.
        files = tmp / "files"
        files.mkdir()
        memory = {k: dataset.read_rows(k, np.arange(n)) for k in FIELDS}
        for i in range(n):
            np.save(files / f"{i:06d}.npy", memory["detail"][i])
            cv2.imwrite(str(files / f"{i:06d}.png"), cv2.cvtColor(memory["texture"][i], cv2.COLOR_RGB2BGR))
        dataset.close()
        samples = [tuple(memory[k][i] for k in FIELDS) for i in range(n)]
        orders = {"sequential": np.arange(n), "shuffled": np.random.default_rng(0).permutation(n)}
        rows = []

        def add(loader: str, workers: int, order: str, rate: float) -> None:
            rows.append({"loader": loader, "workers": workers, "order": order, "samples_per_s": round(rate, 1),
                         "n": n, "batch": BATCH, "repeats": repeats})

        for order, perm in orders.items():
            sampler = perm.tolist()
            for workers in (0, 2):
                persistent = {"num_workers": workers, "persistent_workers": workers > 0}
                loaders = {
                    "shards": batch_loader(dataset, BATCH, sampler=sampler, **persistent),
                    "shards_collate": DataLoader(subset, batch_size=BATCH, sampler=sampler, **persistent),
                    "files": DataLoader(_FileDataset(files, n), batch_size=BATCH, sampler=sampler, **persistent),
                }
                for name, loader in loaders.items():
                    add(name, workers, order, _loader_rate(loader, n, repeats, workers))
                    del loader
                del loaders
                dataset.close()

            def copy_samples() -> int:
                for i in perm:
                    for a in samples[i]:
                        a.copy()
                return n

            def gather_batches() -> int:
                for idx in _batches(perm):
                    for k in FIELDS:
                        memory[k][idx]
                return n

            add("memcpy", 0, order, _rate(copy_samples, n, max(repeats, 3)))
            add("memcpy_batch", 0, order, _rate(gather_batches, n, max(repeats, 3)))
        yield from with_ratios(rows)


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row with vs_files / vs_memcpy / vs_memcpy_batch: its samples/s over the files loader's
    (same workers and order) and the memory copies' (same order)."""
    rate = {(r["loader"], r["workers"], r["order"]): r["samples_per_s"] for r in rows}
    out = []
    for r in rows:
        ratios = {}
        files = rate.get(("files", r["workers"], r["order"]))
        if files and r["loader"] != "files":
            ratios["vs_files"] = round(r["samples_per_s"] / files, 2)
        for ref in ("memcpy", "memcpy_batch"):
            base = rate.get((ref, 0, r["order"]))
            if base and r["loader"] != ref:
                ratios[f"vs_{ref}"] = round(r["samples_per_s"] / base, 3)
        out.append({**r, **ratios})
    return out
