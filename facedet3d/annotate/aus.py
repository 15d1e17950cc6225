"""Action Unit intensities (the 17 OpenFace AUs of ``layout.AU_NAMES``, 0..5) per face.

One interface, several explicitly named backends::

    estimate_aus(backend, record, **options) -> (17,) or (N, 17) float32

``record`` is a mapping of arrays for one face (or N faces, leading axis N).

``builtin`` — from what extraction measured: ``record["expr"]``, the synthetic morphable
model's expression coefficients fitted to the face by extraction (:mod:`facedet3d.face.synthetic`:
one coefficient per AU in AU_NAMES order, 1 unit = 1 AU intensity by construction), clipped
to 0..5. Nothing else.

Why no landmark-geometry term: the fit already explains the same 68 landmarks, jointly with
the person's identity shape and head pose. Re-measuring them (brow height, eye aperture,
lip gap, lip-corner height, mouth width... normalised by the inter-ocular distance) against
the model's *mean* face, with the model's own per-AU Jacobian, was tried and measured on 60
renders of 20 synthetic identities (256², yaw up to 30°): bounded least squares from
geometry alone gave AU MAE 0.71 with ground-truth landmarks and 0.78 with detected ones,
against 0.72 for predicting all zeros — each person's own brow height, mouth width or lip
thickness looks like expression, and the per-AU signal (≈ 0.02 inter-ocular distances per
intensity unit, ≈ 1.3 mm) is at the level of landmark noise. Fusing it with the fit can
therefore only add identity bias, so it is not offered.

Limits of ``builtin``, precisely:
  * it only knows what the fit explains: an AU the fitted model did not move (or moved for
    the wrong reason, e.g. identity shape absorbed as expression) is reported as such;
    AUs with little 68-landmark signal (AU06 cheek raise, AU07 lid tightener, AU09 nose
    wrinkle, AU14 dimpler, AU17 chin raiser, AU23 lip tightener) are weakly constrained by
    a landmark fit and should be trusted least;
  * AU06/AU07/AU45 share the eyelids: the generator scales them down jointly where their
    sum would close the eye past 85 % (``limit_lid_closure``), so even the exact
    coefficients of a render report the *limited* values (tests/test_annotate.py measures
    this: exact everywhere else);
  * real faces fitted with the synthetic model are approximate: its AU displacement fields
    are hand-designed, not learned from FACS-coded data, so intensities on photos are "the
    model's AUs", not calibrated FACS intensities (compare with OpenFace through
    :mod:`facedet3d.annotate.openface` when its CSVs are available).

``synthetic-oracle`` — the generator's ground truth: ``record["aus"]`` of the synthetic
records (``results/synth/chunks/NNN.h5``). Only valid for synthetic data; it must be asked
for by name and every call logs that ground truth is being used.

``openface`` — ``record["openface_csv"]``: an OpenFace ``FeatureExtraction`` CSV of one image
(see :mod:`facedet3d.annotate.openface`); the highest-confidence face is used.
"""

from __future__ import annotations

import logging

import numpy as np

from facedet3d.errors import UserError
from facedet3d.face.layout import AU_MAX, AU_NAMES

log = logging.getLogger(__name__)

BACKENDS = ("builtin", "synthetic-oracle", "openface")
N_AUS = len(AU_NAMES)


def estimate_aus(backend: str, record, **options) -> np.ndarray:
    """AU intensities (..., 17) float32 in AU_NAMES order from ``record`` with ``backend``.

    No backend takes options (they fail loudly rather than being ignored).
    """
    if options:
        raise TypeError(f"AU backend {backend!r} takes no options, got {sorted(options)}")
    if backend == "builtin":
        return builtin_aus(_field(record, "expr", backend))
    if backend == "synthetic-oracle":
        return oracle_aus(_field(record, "aus", backend))
    if backend == "openface":
        from facedet3d.annotate.openface import read_openface_csv

        result = read_openface_csv(_field(record, "openface_csv", backend))
        if len(result.aus) != 1 or result.failures:
            raise UserError(f"{record['openface_csv']}: expected one successfully tracked image, got "
                            f"{len(result.aus)} rows and {len(result.failures)} failures")
        return result.aus[0]
    raise UserError(f"unknown AU backend {backend!r}; choose one of {BACKENDS}")


def oracle_aus(gt_aus: np.ndarray) -> np.ndarray:
    """The synthetic generator's ground-truth AUs (..., 17), clipped to 0..5. Logged on use."""
    aus = _aus_array(gt_aus, "synthetic ground-truth aus")
    log.warning("AU backend 'synthetic-oracle': using the generator's ground-truth AUs (%d faces), not estimates",
                int(np.prod(aus.shape[:-1])))
    return np.clip(aus, 0.0, AU_MAX).astype(np.float32)


def builtin_aus(expr: np.ndarray) -> np.ndarray:
    """AUs (..., 17) float32 from fitted expression coefficients (..., 17): clipped to 0..5."""
    return np.clip(_aus_array(expr, "expr"), 0.0, AU_MAX).astype(np.float32)


def _field(record, key: str, backend: str):
    try:
        return record[key]
    except (KeyError, IndexError, TypeError):
        raise UserError(f"AU backend {backend!r} needs the field {key!r}; the record has "
                        f"{sorted(record.keys()) if hasattr(record, 'keys') else type(record).__name__}") from None


def _aus_array(values, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape[-1:] != (N_AUS,):
        raise UserError(f"{what} must have {N_AUS} values per face (AU_NAMES order), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise UserError(f"{what} contains NaN or inf")
    return a
