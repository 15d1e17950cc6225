"""Every path under ``results_dir``, spelled once: the rules (``rules/*.smk``) and the stages use these.

One folder per stage, named like its rule and CLI sub-command (``results/<stage>/``), with the
same file names in each: ``summary.json``, ``rejects.csv``, ``chunks/<chunk>.h5`` (+ ``.rejects.csv``,
``.timing.json``) for chunked stages, ``results/logs/<stage>.log`` and
``results/logs/<stage>/chunk_<chunk>.log``. A chunk is an int (formatted ``000``) or, in a rule,
the wildcard string ``"{chunk}"``.
"""

from __future__ import annotations

from pathlib import Path


def chunk_name(chunk: int | str) -> str:
    """``7`` -> ``"007"``; a string (a Snakemake wildcard such as ``"{chunk}"``) is kept."""
    return chunk if isinstance(chunk, str) else f"{int(chunk):03d}"


class Results:
    """The results layout of one run (``Results(config["results_dir"])``)."""

    def __init__(self, root: str | Path):
        self.root = Path(str(root).rstrip("/") or ".")

    @classmethod
    def of(cls, config: dict) -> "Results":
        return cls(config["results_dir"])

    # -- shared by every stage ------------------------------------------------------------
    @property
    def config(self) -> Path:
        """The resolved configuration of the last run, written by the Snakefile's ``onstart``."""
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        """The image manifest that extraction and annotation read (written by ``ingest``)."""
        return self.root / "data" / "manifest.csv"

    def stage(self, stage: str) -> Path:
        return self.root / stage

    def summary(self, stage: str) -> Path:
        return self.root / stage / "summary.json"

    def rejects(self, stage: str) -> Path:
        return self.root / stage / "rejects.csv"

    def log(self, stage: str, chunk: int | str | None = None) -> Path:
        if chunk is None:
            return self.root / "logs" / f"{stage}.log"
        return self.root / "logs" / stage / f"chunk_{chunk_name(chunk)}.log"

    def benchmark(self, stage: str, chunk: int | str | None = None) -> Path:
        if chunk is None:
            return self.root / "benchmarks" / f"{stage}.tsv"
        return self.root / "benchmarks" / stage / f"{chunk_name(chunk)}.tsv"

    # -- chunked stages (synth, extract, annotate) ------------------------------------------
    def chunk(self, stage: str, chunk: int | str) -> Path:
        """The records (HDF5) one chunk job writes."""
        return self.root / stage / "chunks" / f"{chunk_name(chunk)}.h5"

    def chunk_rejects(self, stage: str, chunk: int | str) -> Path:
        return self.root / stage / "chunks" / f"{chunk_name(chunk)}.rejects.csv"

    def chunk_timing(self, stage: str, chunk: int | str) -> Path:
        return self.root / stage / "chunks" / f"{chunk_name(chunk)}.timing.json"

    # -- stage-specific files -----------------------------------------------------------
    def synth_images(self, chunk: int | str) -> Path:
        return self.root / "synth" / "images" / chunk_name(chunk)

    @property
    def synth_manifest(self) -> Path:
        return self.root / "synth" / "manifest.csv"

    @property
    def contact_sheet(self) -> Path:
        return self.root / "synth" / "contact_sheet.png"

    @property
    def extract_preview(self) -> Path:
        return self.root / "extract" / "preview.png"

    @property
    def shard_index(self) -> Path:
        return self.root / "shards" / "index.json"

    @property
    def detail_net_samples(self) -> Path:
        return self.root / "detail_net" / "samples.npy"

    @property
    def detail_net_weights(self) -> Path:
        return self.root / "detail_net" / "detail_net.pt"
