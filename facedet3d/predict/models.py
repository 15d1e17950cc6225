"""The trained models of a finished run, loaded for inference: DetP, RCAN, R and what they need.

``TrainedModels.load(results_dir)`` reads the run's resolved ``config.yaml`` (so the extractor,
annotators and morphable model are those the models were trained with), ``train_detp/final.pt``,
``train_rcan/final.pt``, ``train_renderer/final.pt`` and the training split's (AUs, α_e) table
from the shards. A missing or unreadable file is one UserError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facedet3d.config import load_config
from facedet3d.errors import UserError
from facedet3d.face.synthetic import limit_lid_closure
from facedet3d.paths import Results
from facedet3d.predict.targets import ExpressionTable


@dataclass
class TrainedModels:
    config: dict            # the run's resolved configuration
    results: Results
    device: torch.device
    detp: torch.nn.Module   # its cfg has the map size and the detail scale (mm per network unit)
    rcan: torch.nn.Module
    renderer: torch.nn.Module
    geometry: object        # renderer.geometry.FaceGeometry of the fitted model
    expressions: ExpressionTable

    @classmethod
    def load(cls, results_dir: str | Path = "results", device: str = "auto", config: dict | None = None) -> "TrainedModels":
        """The models of the run in ``results_dir``; ``config`` (default: its resolved config.yaml)."""
        from facedet3d.detp.model import load_detp
        from facedet3d.rcan.model import load_model
        from facedet3d.renderer.geometry import FaceGeometry
        from facedet3d.renderer.model import load_renderer
        from facedet3d.renderer.stage import fitted_model
        from facedet3d.shards.loaders import DetPDataset
        from facedet3d.train.device import resolve_device

        root = Path(results_dir)
        config_path = root / "config.yaml"
        if config is None:
            if not config_path.is_file():
                raise UserError(f"{config_path} not found: --models must name the results folder of a finished run "
                                "(`make demo` writes results/)")
            config = load_config([config_path])
            config["results_dir"] = str(root)
        results = Results(root)
        dev = resolve_device(device)
        needed = {name: results.stage(name) / "final.pt" for name in ("train_detp", "train_rcan", "train_renderer")}
        for name, path in needed.items():
            if not path.is_file():
                raise UserError(f"{path} not found: the run in {root} has not finished `{name}`; "
                                f"run `facedet3d {name.replace('_', '-')} --config {config_path}` or `make demo`")

        model = fitted_model(config)
        ds = DetPDataset(results.shard_index, "train", fields=["aus", "expr"])
        try:
            table = ExpressionTable(ds.read("aus"), ds.read("expr"))
        finally:
            ds.close()
        return cls(config=config, results=results, device=dev, detp=load_detp(needed["train_detp"]).to(dev),
                   rcan=load_model(needed["train_rcan"], dev),
                   renderer=load_renderer(needed["train_renderer"]).to(dev), geometry=FaceGeometry(model, dev),
                   expressions=table)

    @property
    def model(self):
        """The morphable model the run fitted."""
        return self.geometry.model

    def expression_parameters(self, aus: np.ndarray) -> np.ndarray:
        """α̂_e for target AUs (17,): for the synthetic model the AUs themselves (its expression
        coefficients are AU intensities), eyelid closure limited as the generator does; otherwise
        the training table's nearest faces (:class:`ExpressionTable`)."""
        if self.model.name == "synthetic":
            return limit_lid_closure(torch.as_tensor(aus, dtype=torch.float32)[None])[0].numpy()
        return self.expressions(aus)
