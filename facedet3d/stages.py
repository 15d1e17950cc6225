"""The one table of stages: CLI sub-command, module, chunking, and the config keys each job reads.

Every stage module has the same entry points (its ``stage.py``):

* ``run(config) -> dict`` — the whole stage without Snakemake (every chunk, then the merge);
  returns the stage summary that it also writes to ``results/<stage>/summary.json``;
* chunked stages also ``chunks(config) -> list[int]``, ``run_chunk(config, chunk) -> Path``
  (one Snakemake job per chunk) and ``merge(config) -> dict`` (the summary job);
* a stage with ``figure_reads`` also ``figure(config) -> Path``: a picture drawn in a job of its
  own, so that a setting of the picture alone reruns nothing but the picture.

``reads`` / ``merge_reads`` / ``figure_reads`` name the config keys whose values change a job's
outputs; the rules pass exactly these as ``params`` (Snakemake's rerun trigger), so a job reruns
when one of them changes and not otherwise. A key is ``"section"`` (all of it), ``"section.key"``,
or ``"!section.key"`` to leave one out of a section named before it. The merge of a chunked stage
reruns anyway when a chunk does; its ``merge_reads`` are the keys only the merge reads.
This module imports nothing heavy: the Snakefile and ``facedet3d --help`` read it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Stage:
    name: str  # rule name, config section and results folder; the CLI writes "_" as "-"
    module: str
    help: str
    chunked: bool
    reads: tuple[str, ...] | Callable[[dict], tuple[str, ...]] = ()
    merge_reads: tuple[str, ...] = ()
    figure_reads: tuple[str, ...] | None = None

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")


# The renderer rasterizes the model extract fitted and measures FaceNet distances as annotate does.
_RENDERER_READS = ("seed", "train_renderer", "extract.backend", "extract.model", "extract.bfm_path",
                   "extract.mesh_resolution", "synth.mesh_resolution", "annotate")


def _ingest_reads(config: dict) -> tuple[str, ...]:
    # The synthetic source copies the generator's manifest (identities, splits): only chunking matters.
    if config["data"]["source"] == "synthetic":
        return ("data.source", "ingest.chunk_size")
    return ("seed", "data", "ingest", "!ingest.max_image_side")


STAGES = {s.command: s for s in (
    Stage("synth", "facedet3d.synth.stage", "render the embedded synthetic face dataset with ground truth",
          chunked=True, reads=("seed", "synth", "!synth.contact_sheet_rows"), figure_reads=("synth.contact_sheet_rows",)),
    Stage("ingest", "facedet3d.ingest.stage",
          "build results/data/manifest.csv from the synthetic set or image/video folders",
          chunked=False, reads=_ingest_reads),
    Stage("extract", "facedet3d.extract.stage", "texture map, detail map and model parameters per image (paper Eq. 1)",
          chunked=True, reads=("data.source", "extract", "ingest.max_image_side", "synth.mesh_resolution")),
    Stage("annotate", "facedet3d.annotate.stage", "AU intensities, FaceNet identity embedding, age features per image",
          chunked=True, reads=("data.source", "annotate")),
    Stage("shards", "facedet3d.shards.stage", "DetP and RCAN training data in checksummed HDF5 shards",
          chunked=False, reads=("seed", "data.source", "shards")),
    Stage("train_rcan", "facedet3d.rcan.stage", "train the RCAN x4 detail super-resolution network (paper Eq. 19)",
          chunked=False, reads=("seed", "train_rcan")),
    Stage("train_detp", "facedet3d.detp.stage",
          "train DetP with D_Exp, D_Face, D_Age; held-out metrics against baselines (paper Sec. 3.2)",
          chunked=False, reads=("seed", "train_detp")),
    Stage("train_renderer", "facedet3d.renderer.stage",
          "train the rendering network R with the AugW and DSL losses (paper Sec. 3.3)",
          chunked=False, reads=_RENDERER_READS),
    Stage("train_renderer_ablation", "facedet3d.renderer.ablation",
          "train R without AugW and DSL and compare it with the full R (paper Fig. 8)",
          chunked=False, reads=_RENDERER_READS + ("train_renderer_ablation",)),
    Stage("evaluate", "facedet3d.evaluate.stage",
          "the paper's Fig. 4-8 for held-out people and real photos, and one report of every figure",
          chunked=False, reads=_RENDERER_READS + ("data.source", "synth", "!synth.contact_sheet_rows",
                                                  "!synth.detector_check", "!synth.identities_per_chunk",
                                                  "shards.detp_size", "train_rcan.tile", "evaluate")),
    Stage("detail_net", "facedet3d.extract.detail_net_train",
          "train the extractor's detail network on a synthetic set's ground truth (make detail-net)",
          chunked=False, reads=("seed", "detail_net")),
)}


def _select(config: dict, keys: tuple[str, ...]) -> dict:
    out: dict = {}
    for key in keys:
        drop = key.startswith("!")
        parts = key.lstrip("!").split(".")
        if drop:
            node = out
            for p in parts[:-1]:
                node = node.get(p, {})
            node.pop(parts[-1], None)
            continue
        value, node = config, out
        for p in parts:
            value = value[p]
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = copy.deepcopy(value)
    return out


def job_settings(name: str, config: dict, part: str = "run") -> dict:
    """The config values one job of stage ``name`` reads: ``part`` is "run" (the stage, or one of
    its chunks), "merge" or "figure"."""
    stage = STAGES[name.replace("_", "-")]
    keys = {"run": stage.reads, "merge": stage.merge_reads, "figure": stage.figure_reads}[part]
    return _select(config, keys(config) if callable(keys) else keys)
