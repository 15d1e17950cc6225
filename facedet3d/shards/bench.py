"""`bench loader`: DetP samples per second from shards vs per-image files vs a raw memory copy.

Reads the same samples (detail map + texture map) three ways through a torch DataLoader
(batch 16, sequential order):
  shards  DetPDataset over the HDF5 shards (num_workers 0 and 2)
  files   one .npy (detail) + one .png (texture) per sample, written to a temp folder first
          (num_workers 0 and 2)
  memcpy  a copy of the same arrays already in memory (the upper bound)
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

from facedet3d.shards.loaders import DetPDataset

FIELDS = ("detail", "texture")
BATCH = 16


class _FileDataset(Dataset):
    def __init__(self, folder: Path, n: int):
        self.folder, self.n = folder, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        detail = np.load(self.folder / f"{i:06d}.npy")
        texture = cv2.cvtColor(cv2.imread(str(self.folder / f"{i:06d}.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        return {"detail": torch.from_numpy(detail), "texture": torch.from_numpy(texture)}


def _fake_shards(folder: Path, n: int, seed: int = 0) -> Path:
    """A one-split shard set of n random samples at the demo's sizes; returns its index.json."""
    from facedet3d.atomic import write_json_atomic
    from facedet3d.shards.format import sha256_file, write_shard

    rng = np.random.default_rng(seed)
    entries, size = [], 256
    for s, start in enumerate(range(0, n, 256)):
        m = min(256, n - start)
        fields = {
            "detail": (rng.standard_normal((m, size, size), np.float32) * 0.05).astype(np.float16),
            "texture": rng.integers(0, 256, (m, size, size, 3), dtype=np.uint8),
            "aus": rng.random((m, 17), np.float32),
            "id": np.array([f"x{start + i:06d}" for i in range(m)], dtype=object),
        }
        name = f"detp-train-{s:03d}.h5"
        write_shard(folder / name, fields)
        entries.append({"path": name, "sha256": sha256_file(folder / name), "n": m, "kind": "detp", "split": "train"})
    return write_json_atomic(folder / "index.json", {"shards": entries, "config": {}, "code_version": None, "fields": {}})


def _rate(loader, n: int) -> float:
    start = time.perf_counter()
    seen = 0
    for batch in loader:
        seen += len(batch["detail"])
    assert seen == n, (seen, n)
    return n / (time.perf_counter() - start)


def bench_loader(index_path: str | Path | None = None, n: int = 512, quick: bool = False,
                 split: str = "train") -> Iterator[dict]:
    """Rows {loader, workers, samples_per_s, n, batch}; n samples (128 if quick) of the given split."""
    n = 128 if quick else int(n)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if index_path is None:
            index_path = _fake_shards(tmp / "shards", n)
        dataset = DetPDataset(index_path, split, fields=FIELDS)
        n = min(n, len(dataset))
        subset = torch.utils.data.Subset(dataset, range(n))
        # The same samples as per-image files, and in memory.
        files = tmp / "files"
        files.mkdir()
        arrays = []
        for i in range(n):
            sample = dataset[i]
            detail, texture = sample["detail"].numpy(), sample["texture"].numpy()
            np.save(files / f"{i:06d}.npy", detail)
            cv2.imwrite(str(files / f"{i:06d}.png"), cv2.cvtColor(texture, cv2.COLOR_RGB2BGR))
            arrays.append((detail, texture))
        dataset.close()
        common = {"n": n, "batch": BATCH}
        for workers in (0, 2):
            loader = DataLoader(subset, batch_size=BATCH, num_workers=workers, persistent_workers=False)
            yield {"loader": "shards", "workers": workers, "samples_per_s": round(_rate(loader, n), 1), **common}
        for workers in (0, 2):
            loader = DataLoader(_FileDataset(files, n), batch_size=BATCH, num_workers=workers)
            yield {"loader": "files", "workers": workers, "samples_per_s": round(_rate(loader, n), 1), **common}
        start = time.perf_counter()
        for detail, texture in arrays:
            detail.copy(), texture.copy()
        yield {"loader": "memcpy", "workers": 0, "samples_per_s": round(n / (time.perf_counter() - start), 1), **common}
