"""`facedet3d STAGE --config FILE [...]`: the entry point every Snakemake rule calls.

Each stage works without Snakemake. Stage code lives in its own package and is
imported only when its subcommand runs, so `facedet3d --help` stays fast.
A user mistake (bad config, missing input) prints one clear line and exits 2;
it never shows a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from facedet3d.config import TRAINING_STAGES, ConfigError, load_config, training_settings
from facedet3d.errors import UserError
from facedet3d.stages import STAGES


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", action="append", required=True, metavar="FILE",
        help="config YAML; repeat to overlay files (later ones win)",
    )


def _run_stage(args: argparse.Namespace) -> None:
    """Run one stage from the table: one chunk, only the merge, or everything."""
    import importlib

    stage = STAGES[args.stage]
    module = importlib.import_module(stage.module)
    config = load_config(args.config)
    if getattr(args, "chunk", None) is not None:
        module.run_chunk(config, args.chunk)
    elif getattr(args, "merge", False):
        module.merge(config)
    elif getattr(args, "figure", False):
        module.figure(config)
    elif stage.name in TRAINING_STAGES and _launch(stage.command, args.config,
                                                   training_settings(config, stage.name)["devices"]):
        return  # the stage ran as several processes under torchrun
    else:
        module.run(config)


def _launch(command: str, config_files: list[str], devices: int) -> bool:
    """A training stage with ``devices`` > 1, not yet under torchrun: run it as that many processes
    (data-parallel, :mod:`facedet3d.train.distributed`); True when it did."""
    from facedet3d.train.distributed import launch, needs_launch

    if not needs_launch(devices):
        return False
    launch(command, config_files, devices)
    return True


def _bench(args: argparse.Namespace) -> None:
    from facedet3d import bench

    for row in bench.run(args.name, args):
        print(json.dumps(row), flush=True)


def _predict(args: argparse.Namespace) -> int:
    from facedet3d.predict.command import run

    return run(args.photos, args.expression, args.out, args.models, args.yaw, args.device, args.rcan_passes)


def _verify(args: argparse.Namespace) -> int:
    from facedet3d.verify import main

    return main(args.results)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facedet3d", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for command, stage in STAGES.items():
        p = sub.add_parser(command, help=stage.help)
        _add_config(p)
        if stage.chunked:
            group = p.add_mutually_exclusive_group()
            group.add_argument("--chunk", type=int, help="run only this chunk (0-based); one Snakemake job")
            group.add_argument("--merge", action="store_true", help="only merge finished chunks into the summary")
            if stage.figure_reads is not None:
                group.add_argument("--figure", action="store_true", help="only draw the stage's picture")
        p.set_defaults(func=_run_stage)

    p = sub.add_parser("predict", help="a detailed 3D face and R's renderings of photos in a target expression")
    p.add_argument("photos", nargs="+", metavar="PHOTO", help="face photos (jpg, png...)")
    p.add_argument("--expression", required=True,
                   help='a prototype (anger, disgust, fear, happy, sad, surprise, neutral) or AUs, e.g. "AU12=2.5,AU06=1.8"')
    p.add_argument("--yaw", type=float, default=None, help="head yaw in degrees (default: the photo's own)")
    p.add_argument("--models", default="results", metavar="RESULTS_DIR", help="results folder of a finished run")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (one sub-folder per photo)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--rcan-passes", type=int, default=1, choices=[0, 1, 2],
                   help="RCAN x4 passes on DetP's map (Eq. 20 makes 2: slower on a CPU)")
    p.set_defaults(func=_predict)

    p = sub.add_parser("verify", help="re-hash the shards and check each stage's counts; exit 2 on findings")
    p.add_argument("results", nargs="?", default="results", metavar="RESULTS", help="results folder (default results)")
    p.set_defaults(func=_verify)

    from facedet3d.bench import BENCHES, add_arguments

    p = sub.add_parser("bench", help="measure speed; prints one JSON object per line")
    p.add_argument("name", choices=sorted(BENCHES))
    add_arguments(p)
    p.set_defaults(func=_bench)
    return parser


def pin_blas_threads() -> None:
    """One OpenBLAS thread per process unless the user chose otherwise (OPENBLAS_NUM_THREADS).

    Snakemake runs one job per core; numpy's OpenBLAS threads on cores already busy spin and
    make the small solves of extraction ~100x slower (1.5 s instead of 0.01 s measured on 2
    cores). Must run before numpy is imported; torch's own threads are not affected.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    pin_blas_threads()
    args = build_parser().parse_args(argv)
    # Stage progress goes to stderr, which each Snakemake rule sends to results/logs/<stage>.log.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        status = args.func(args)
    except (ConfigError, UserError) as err:
        print(f"facedet3d {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
