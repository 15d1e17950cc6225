"""The faces the evaluation shows: held-out synthetic people (with the generator's truth) and real photos.

A :class:`Case` is one prepared photo (:func:`facedet3d.predict.subject.prepare`) with its
predictions cached per target expression; :meth:`Case.truth` re-photographs a synthetic person
in a target expression or pose (:mod:`facedet3d.synth.retake`), cut to the same crop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facedet3d.data.manifest import read_manifest, resolve_path
from facedet3d.face.expressions import EMOTIONS, expression_aus
from facedet3d.predict.apply import predict_target, render
from facedet3d.predict.models import TrainedModels
from facedet3d.predict.subject import Subject
from facedet3d.predict.targets import NAMED_INTENSITY

EXPRESSIONS = tuple(sorted(EMOTIONS))  # anger, disgust, fear, happy, sad, surprise: Fig. 4's order


@dataclass
class Case:
    name: str                 # shown in the grids: the image id or the photo's file name
    subject: Subject
    models: TrainedModels
    image_id: str | None = None  # synthetic shot id (truth available), None for a real photo
    retaker: object = None
    _targets: dict = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return self.image_id is not None and self.retaker is not None

    def target(self, expression: str) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """(AUs y, α̂_e, D̃(I_y) after one RCAN pass, mm) of a named expression, cached."""
        if expression not in self._targets:
            self._targets[expression] = self.predict(expression_aus(expression, NAMED_INTENSITY))
        return self._targets[expression]

    def predict(self, aus: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """(AUs y, α̂_e, D̃(I_y) after one RCAN pass, mm) of target AUs (not cached)."""
        expr, detail = predict_target(self.models, self.subject, aus, passes=1)
        return aus, expr, detail

    def own(self) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """(x, α_e, D(I_x)): the photo's own expression and extracted map (the reconstruction)."""
        v = self.subject.vectors
        return v["aus"][0].numpy(), v["expr"][0].numpy(), torch.from_numpy(self.subject.detail)

    def render(self, target: tuple, zero_detail: bool = False, yaw_deg=None, sh=None, renderer=None) -> dict:
        aus, expr, detail = target
        if zero_detail:
            detail = torch.zeros_like(detail)
        models = self.models if renderer is None else _with_renderer(self.models, renderer)
        return render(models, self.subject, detail, aus, expr, yaw_deg, sh)

    def truth(self, aus: np.ndarray | None, yaw_deg: float | None = None) -> np.ndarray | None:
        """The generator's photo of this person with AUs ``aus`` (and yaw), cut like the input; None for real photos."""
        if not self.synthetic:
            return None
        from facedet3d.renderer.data import cut

        yaw = None if yaw_deg is None else float(np.radians(yaw_deg))
        image = self.retaker.retake(self.image_id, aus, yaw)
        return cut(image, self.subject.box, self.subject.crop.shape[0]).astype(np.float32) / 255.0


def _with_renderer(models: TrainedModels, renderer) -> TrainedModels:
    from dataclasses import replace

    return replace(models, renderer=renderer)


def held_out_ids(models: TrainedModels, people: int) -> list[tuple[str, Path]]:
    """(id, photo path) of ``people`` test identities: each one's still with the fewest AUs (the most
    neutral input, as Fig. 4's), in identity order."""
    rows = [r for r in read_manifest(models.results.manifest) if r.get("split") == "test" and r.get("kind") == "image"]
    by_person: dict[str, list[dict]] = {}
    for r in rows:
        by_person.setdefault(r["identity"], []).append(r)
    shards = _shard_aus(models)
    chosen = []
    for identity in sorted(by_person)[:people]:
        cand = [r for r in by_person[identity] if r["id"] in shards] or by_person[identity]
        best = min(cand, key=lambda r: float(shards.get(r["id"], np.zeros(1)).sum()))
        chosen.append((best["id"], resolve_path(models.results.manifest.parent, best)))
    return chosen


def _shard_aus(models: TrainedModels) -> dict[str, np.ndarray]:
    from facedet3d.shards.loaders import DetPDataset

    ds = DetPDataset(models.results.shard_index, "test", fields=["id", "aus"])
    try:
        return dict(zip(ds.read("id"), ds.read("aus")))
    finally:
        ds.close()
