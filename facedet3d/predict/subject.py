"""A photo made ready for DetP and R: extraction (Eq. 1), annotation, and the renderer's face crop.

The same steps the pipeline's extract and annotate stages take per image, for one photo at a
time: the run's builtin extractor (texture map, detail map, fitted model, light), the builtin AUs
(the fitted expression), the FaceNet embedding and the age features, then the square crop and
crop camera R renders in (:mod:`facedet3d.renderer.data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facedet3d.data.images import load_image
from facedet3d.data.uvmaps import resize_map
from facedet3d.predict.models import TrainedModels


@dataclass
class Subject:
    """One photo's inputs. Vectors are float32 (1, n) tensors; maps numpy."""

    path: Path
    photo: np.ndarray        # (H, W, 3) uint8, the whole photo
    crop: np.ndarray         # (S, S, 3) uint8, R's face crop
    box: tuple               # (x0, y0, side) px of the crop in the photo
    texture: np.ndarray      # (T, T, 3) uint8 texture map T(I_x), UV layout
    texture_mask: np.ndarray  # (T, T) bool, texels seen in the photo
    detail: np.ndarray       # (M, M) float32 mm, extracted D(I_x) at the shards' detp_size
    vectors: dict            # shape, expr, albedo, pose, translation, sh, aus, facenet, age, focal, principal


def prepare(models: TrainedModels, path: str | Path, extractor=None, annotators=None) -> Subject:
    """Extract and annotate one photo (UserError: unreadable, no face...). ``extractor`` and
    ``annotators`` (FaceNet embedder, age estimator) may be passed in to reuse them across photos."""
    from facedet3d.annotate.aus import estimate_aus
    from facedet3d.renderer.data import crop_box, crop_camera, cut

    config = models.config
    extractor = extractor or make_extractor(models)
    embedder, age_net = annotators or make_annotators(models)
    path = Path(path)
    photo = load_image(path).rgb
    res = extractor.extract(photo)
    aus = estimate_aus("builtin", {"expr": res.expr})
    age = age_net.estimate(photo, res.landmarks)
    facenet = embedder.embed(photo, res.landmarks)
    size = models.renderer.cfg.size
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32)).reshape(1, -1)  # noqa: E731
    box = crop_box(models.geometry, t(res.shape)[0], t(res.expr)[0], t(res.pose)[0], t(res.translation)[0],
                   float(res.focal), photo.shape[:2])
    focal, principal = crop_camera(float(res.focal), photo.shape[:2], box, size)
    vectors = {"shape": t(res.shape), "expr": t(res.expr), "albedo": t(res.albedo), "pose": t(res.pose),
               "translation": t(res.translation), "sh": t(res.sh), "aus": t(aus), "facenet": t(facenet),
               "age": t(np.concatenate([age["distribution"], [age["expected"] / 100.0]])),
               "focal": torch.tensor([focal], dtype=torch.float32), "principal": t(principal)}
    detp_size = config["shards"]["detp_size"]
    return Subject(path=path, photo=photo, crop=cut(photo, box, size), box=box, texture=res.texture,
                   texture_mask=res.texture_mask, detail=resize_map(np.asarray(res.detail, np.float32), detp_size),
                   vectors=vectors)


def make_extractor(models: TrainedModels):
    """The extractor of the run's config (the builtin backend: a photo has no FDS folder)."""
    from facedet3d.extract.backends import builtin_extractor

    if models.config["extract"]["backend"] != "builtin":
        config = {**models.config, "extract": {**models.config["extract"], "backend": "builtin"}}
        return builtin_extractor(config)
    return builtin_extractor(models.config)


def make_annotators(models: TrainedModels):
    """(FaceNet embedder, age estimator) of the run's annotate settings."""
    from facedet3d.annotate.age import AgeEstimator
    from facedet3d.annotate.identity import FaceNetEmbedder

    return FaceNetEmbedder.from_config(models.config), AgeEstimator.from_config(models.config)
