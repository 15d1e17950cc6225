"""`facedet3d bench NAME`: speed measurements, one JSON object per line.

Benchmarks are how speed is measured in this project (never timed assertions in
tests): anyone can run them on their machine and compare with the README.
Fixed keys per benchmark are a contract others rely on (tests/test_bench.py checks them):
``rasterize`` rows have image_size, triangles, batch, ms_per_face; ``synth`` images_per_s;
``extract`` s_per_image (and its parts); ``loader`` rows loader, workers, samples_per_s.
"""

from __future__ import annotations

import argparse
import platform
from typing import Callable, Iterator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (per worker)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (synth)")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats, for a smoke run")
    parser.add_argument("--models", default="results", metavar="RESULTS_DIR",
                        help="results folder of a finished run (predict)")
    parser.add_argument("--config", action="append", metavar="FILE",
                        help="config whose sizes the synth/extract benches use; repeat to overlay (default config.yaml)")


def _configs(args: argparse.Namespace) -> list[str]:
    return args.config or ["config.yaml"]


def _machine() -> dict:
    import torch

    return {"machine": platform.machine(), "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__}


def bench_rasterize(args: argparse.Namespace) -> Iterator[dict]:
    """Rasterization time per face: the demo's template mesh (res 192, ~41k triangles) at
    128-512² and batch 1/8, then how time grows with the triangle count at 256²; with
    --device cuda at 256-1024² and batch 1/8/64. Rows also count the torch calls per batch."""
    import torch

    from facedet3d.face.template import build_template
    from facedet3d.render.bench import bench_rasterize as run, subdivide
    from facedet3d.train.device import resolve_device

    def mesh(resolution: int):
        t = build_template(resolution)
        return torch.as_tensor(t.vertices), torch.as_tensor(t.faces)

    device = resolve_device(args.device)  # one clear line when CUDA is asked for and absent
    common = dict(threads=args.threads, device=str(device))
    verts, faces = mesh(192)
    if device.type == "cuda":
        sizes, batches = ((256,), (1, 64)) if args.quick else ((256, 512, 1024), (1, 8, 64))
        yield from run(verts, faces, image_sizes=sizes, batches=batches, repeats=5 if args.quick else 20, **common)
        return
    sizes, batches = ((256,), (1,)) if args.quick else ((128, 256, 512), (1, 8))
    yield from run(verts, faces, image_sizes=sizes, batches=batches, **common)
    if not args.quick:
        for resolution in (64, 128, 256):
            yield from run(*mesh(resolution), image_sizes=(256,), batches=(1,), **common)
        yield from run(*subdivide(*mesh(256)), image_sizes=(256,), batches=(1,), **common)


def bench_synth(args: argparse.Namespace) -> Iterator[dict]:
    """Synthetic images rendered per second (256² images, 1024² detail maps)."""
    from facedet3d.synth.bench import bench_synth as run

    yield from run(workers=args.workers, threads=args.threads, quick=args.quick, config_paths=_configs(args))


def bench_extract(args: argparse.Namespace) -> Iterator[dict]:
    """Builtin extraction time per 256² image on one thread, split over its steps."""
    from facedet3d.extract.bench import bench_extract as run

    yield from run(quick=args.quick, config_paths=_configs(args))


def bench_loader(args: argparse.Namespace) -> Iterator[dict]:
    """Samples/s of the shard loader (0 and 2 workers) vs per-image files vs a raw memory copy, and
    of DetP's training batches (streamed from the shards, and from memory).

    Reads ``<results_dir>/shards/index.json`` of --config when it exists, else builds a
    temporary shard set of the demo's sizes from random data."""
    from facedet3d.config import load_config
    from facedet3d.paths import Results
    from facedet3d.shards.bench import bench_loader as run

    from facedet3d.detp.bench import bench_detp_batches

    config = load_config(_configs(args))
    index = Results.of(config).shard_index
    yield from run(index_path=index if index.is_file() else None, quick=args.quick)
    # What train_detp reads through: its batch_fn, maps streamed from the shards (no DataLoader).
    yield from bench_detp_batches(index if index.is_file() else None, config["train_detp"]["size"],
                                  config["train_detp"]["batch"], quick=args.quick)


def bench_train_detp(args: argparse.Namespace) -> Iterator[dict]:
    """Samples/s of one DetP training step (generator, discriminators, lazy R1) at the demo's and the paper's sizes."""
    from pathlib import Path

    from facedet3d.config import load_config
    from facedet3d.detp.bench import bench_train_detp as run
    from facedet3d.train.device import resolve_device

    settings = {"demo": load_config(_configs(args))["train_detp"]}
    paper = Path("configs/paper.yaml")  # the paper-scale overlay, from the repository root
    if not args.quick and paper.is_file():
        # Batch 2 keeps the CPU row to seconds; samples_per_s is per sample all the same.
        settings["paper"] = {**load_config([*_configs(args), paper])["train_detp"], "batch": 2}
    yield from run(settings, resolve_device(args.device), steps=2 if args.quick else 3)


def bench_train_rcan(args: argparse.Namespace) -> Iterator[dict]:
    """Samples/s of one RCAN training step (forward, L1, backward, Adam) at the demo's and the paper's sizes."""
    from facedet3d.rcan.bench import bench_train_rcan as run

    yield from run(config_paths=_configs(args), device=args.device, quick=args.quick)


def bench_train_renderer(args: argparse.Namespace) -> Iterator[dict]:
    """Samples/s of one renderer training step (R, D_Exp^RGB, lazy R1) and its rasterization share,
    at the demo's and the paper's sizes."""
    from pathlib import Path

    from facedet3d.config import load_config
    from facedet3d.renderer.bench import bench_train_renderer as run
    from facedet3d.renderer.stage import fitted_model
    from facedet3d.train.device import resolve_device

    config = load_config(_configs(args))
    settings = {"demo": config["train_renderer"]}
    paper = Path("configs/paper.yaml")
    if not args.quick and paper.is_file():
        # Batch 2 keeps the CPU row to seconds; samples_per_s is per sample all the same.
        settings["paper"] = {**load_config([*_configs(args), paper])["train_renderer"], "batch": 2}
    yield from run(settings, fitted_model(config), resolve_device(args.device), steps=2 if args.quick else 3)


def bench_predict(args: argparse.Namespace) -> Iterator[dict]:
    """Seconds per photo of `facedet3d predict` on scikit-image's astronaut photo (512²), models
    loaded once: extraction + annotation, DetP + RCAN (one and two passes), R + files."""
    from facedet3d.predict.bench import bench_predict as run

    yield from run(args.models, args.device, repeats=1 if args.quick else 3)


BENCHES: dict[str, Callable[[argparse.Namespace], Iterator[dict]]] = {
    "rasterize": bench_rasterize,
    "synth": bench_synth,
    "extract": bench_extract,
    "loader": bench_loader,
    "train-detp": bench_train_detp,
    "train-rcan": bench_train_rcan,
    "train-renderer": bench_train_renderer,
    "predict": bench_predict,
}


def run(name: str, args: argparse.Namespace) -> Iterator[dict]:
    import torch

    torch.set_num_threads(args.threads)
    for row in BENCHES[name](args):
        yield {"bench": name, **row, **_machine()}
