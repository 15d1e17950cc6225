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

from facedet3d.config import ConfigError, load_config
from facedet3d.errors import UserError


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", action="append", required=True, metavar="FILE",
        help="config YAML; repeat to overlay files (later ones win)",
    )


def _add_chunk_options(parser: argparse.ArgumentParser, chunk_help: str, merge_what: str) -> None:
    _add_config(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--chunk", type=int, help=f"{chunk_help} (0-based)")
    group.add_argument("--merge", action="store_true", help=f"only merge finished chunks: {merge_what}")


def _synth(args: argparse.Namespace) -> None:
    from facedet3d.data import synth_stage

    _chunked(synth_stage, args)


def _ingest(args: argparse.Namespace) -> None:
    from facedet3d.data.ingest import ingest

    ingest(load_config(args.config))


def _chunked(stage, args: argparse.Namespace) -> None:
    """Run a chunked stage module: one chunk, only the merge, or everything."""
    config = load_config(args.config)
    if args.chunk is not None:
        stage.run_chunk(config, args.chunk)
    elif args.merge:
        stage.merge(config)
    else:
        stage.run_all(config)


def _extract(args: argparse.Namespace) -> None:
    from facedet3d.extract import stage

    _chunked(stage, args)


def _annotate(args: argparse.Namespace) -> None:
    from facedet3d.annotate import stage

    _chunked(stage, args)


def _shards(args: argparse.Namespace) -> None:
    from facedet3d.data.shard_stage import run

    run(load_config(args.config))


def _bench(args: argparse.Namespace) -> None:
    from facedet3d import bench

    for row in bench.run(args.name, args):
        print(json.dumps(row), flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facedet3d", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")

    p = sub.add_parser("synth", help="render the embedded synthetic face dataset with ground truth")
    _add_chunk_options(p, "render only this chunk of identities", "manifest, contact sheet, summary")
    p.set_defaults(func=_synth)

    p = sub.add_parser("ingest", help="build results/data/manifest.csv from the synthetic set or image/video folders")
    _add_config(p)
    p.set_defaults(func=_ingest)

    p = sub.add_parser("extract", help="texture map, detail map and model parameters per image (paper Eq. 1)")
    _add_chunk_options(p, "extract only this manifest chunk", "rejects, summary, preview")
    p.set_defaults(func=_extract)

    p = sub.add_parser("annotate", help="AU intensities, FaceNet identity embedding, age features per image")
    _add_chunk_options(p, "annotate only this manifest chunk", "rejects, summary")
    p.set_defaults(func=_annotate)

    p = sub.add_parser("shards", help="DetP and RCAN training data in checksummed HDF5 shards")
    _add_config(p)
    p.set_defaults(func=_shards)

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
        args.func(args)
    except (ConfigError, UserError) as err:
        print(f"facedet3d {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
