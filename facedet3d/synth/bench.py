"""`facedet3d bench synth`: images per second of the real `synth` stage.

Runs the stage itself (rendering, PNG and ground-truth writing, the detector check)
on a temporary results folder, one process per chunk as Snakemake would, with the
shipped config.yaml at 256² images and 1024² detail maps.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from facedet3d.config import load_config, merge

REPO_CONFIG = "config.yaml"


def _chunk(args: tuple[dict, int, int]) -> None:
    config, chunk, threads = args
    import torch

    from facedet3d.synth.stage import run_chunk

    torch.set_num_threads(threads)
    run_chunk(config, chunk)


def bench_synth(workers: int = 2, threads: int = 1, quick: bool = False,
                config_paths: Sequence[str | Path] = (REPO_CONFIG,)) -> Iterator[dict]:
    per_chunk = 1 if quick else 6
    with tempfile.TemporaryDirectory() as tmp:
        config = merge(load_config(config_paths), {
            "results_dir": tmp,
            "synth": {"n_identities": max(3, workers * per_chunk), "identities_per_chunk": per_chunk,
                      "image_size": 256, "detail_size": 1024},
        })
        chunks = list(range(max(1, config["synth"]["n_identities"] // per_chunk)))
        start = time.perf_counter()
        with mp.get_context("spawn").Pool(workers) as pool:
            pool.map(_chunk, [(config, c, threads) for c in chunks], chunksize=1)
        elapsed = time.perf_counter() - start
        n_images = len(list(Path(tmp, "synth", "images").rglob("*.png")))
    yield {
        "images_per_s": round(n_images / elapsed, 3),
        "images": n_images,
        "seconds": round(elapsed, 2),
        "workers": workers,
        "threads_per_worker": threads,
        "image_size": 256,
        "detail_size": 1024,
        "note": "includes process start-up, model build, PNG + HDF5 writing and the dlib detector check",
    }
