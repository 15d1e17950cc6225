"""The project's synthetic morphable model, built on the analytic face template.

* identity shape basis: named anatomical variations (width, height, depth, jaw, chin, nose,
  brows, cheekbones, eyes, lips, forehead, ...) plus smooth random RBF-bump components from a
  fixed internal seed — all smooth 3D displacement fields of the template position;
* expression basis: one component per OpenFace Action Unit (``layout.AU_NAMES`` order), each a
  displacement field in millimetres per unit intensity confined to the AU's anatomical region
  (``AU_REGIONS``; exactly zero outside), ``expr_std = 1`` so a coefficient is the AU
  intensity (0..5). Lid and lip motions are monotone remappings along the face, so even at
  intensity 5 the surface stays a height field over the frontal plane (nothing folds through);
* albedo: analytic functions of the frontal (x, y) position, evaluated per vertex for the
  model and as a UV texture of any size by :func:`albedo_texture` — both agree by construction.

Shape and albedo bases are stored unit-norm with ``std`` = the norm of a one-standard-deviation
displacement (BFM2017's convention), expression bases as mm per unit intensity.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from facedet3d.face.bumps import gauss as _g, gauss2 as _g2, gauss_pair as _pair  # noqa: F401
from facedet3d.face.bumps import sigmoid as _sig, smoothstep as _smoothstep  # noqa: F401

from . import layout as L
from . import template as T
from .model import MorphableModel

AU_FULL = L.AU_MAX  # expression fields are designed at full intensity and divided by this

# ----------------------------------------------------------------------------- small helpers








def _odd_pair(x, y, cx, cy, sx, sy):
    """Gaussian at (+cx, cy) minus its mirror — odd in x (for sideways, mirrored motions)."""
    return _g2(x, y, cx, cy, sx, sy) - _g2(x, y, -cx, cy, sx, sy)






def _stack(dx=0.0, dy=0.0, dz=0.0, like=None):
    dx, dy, dz = np.broadcast_arrays(np.asarray(dx, float), np.asarray(dy, float), np.asarray(dz, float))
    if like is not None and dx.shape != like.shape:
        dx, dy, dz = (np.broadcast_to(a, like.shape) for a in (dx, dy, dz))
    return np.stack([dx, dy, dz], -1)


# ----------------------------------------------------------------------------- identity shape

SHAPE_NAMED = (
    "face_width", "face_height", "face_depth", "head_roundness", "jaw_width", "jaw_depth",
    "chin_length", "chin_protrusion", "chin_width", "nose_length", "nose_width", "nose_projection",
    "nose_bridge", "nose_tip_rotation", "nostril_flare", "brow_ridge", "brow_height",
    "cheekbones", "cheek_fullness", "eye_spacing", "eye_size", "eye_depth", "eye_tilt",
    "lip_fullness", "mouth_width", "mouth_height", "upper_lip_length", "forehead_slope",
    "forehead_height", "temples", "midface_length", "nasolabial_depth", "asymmetry",
)
NUM_RANDOM_SHAPE = 12
SHAPE_SEED = 20170412


def _shape_named_fields(P: np.ndarray) -> dict[str, np.ndarray]:
    """Named identity displacements (V, 3) in mm for one standard deviation."""
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    ax = np.abs(x)
    t = T.height_terms(x, y)
    f: dict[str, np.ndarray] = {}
    cy = L.FACE_CENTER_Y
    f["face_width"] = _stack(0.035 * x, 0, 0)
    f["face_height"] = _stack(0, 0.03 * (y - cy), 0)
    f["face_depth"] = _stack(0, 0, 0.06 * (z + 15.0))
    f["head_roundness"] = _stack(0, 0, 0.12 * t["head"])
    jaw = _smoothstep(-15.0, -60.0, y)
    f["jaw_width"] = _stack(0.055 * x * jaw, 0, 0)
    f["jaw_depth"] = _stack(0, 0, 2.5 * jaw * (ax / T.head_half_width(y)) ** 2)
    f["chin_length"] = _stack(0, -2.5 * _smoothstep(-64.0, -92.0, y), 0)
    f["chin_protrusion"] = _stack(0, -0.5 * _g2(x, y, 0, -90, 15, 9), 2.5 * _g2(x, y, 0, -88, 15, 10))
    f["chin_width"] = _stack(0.08 * x * _g2(x, y, 0, -88, 22, 12), 0, 0)
    f["nose_length"] = _stack(0, -2.0 * _g2(x, y, 0, -38, 12, 9), 0)
    f["nose_width"] = _stack(0.1 * x * _g2(x, y, 0, -41, 17, 8), 0, 0)
    nose = t["nose_dorsum"] + t["nose_tip"]
    f["nose_projection"] = _stack(0, 0, 0.14 * nose)
    f["nose_bridge"] = _stack(0, 0, 1.8 * _g2(x, y, 0, -8, 6, 11) * _g(x / 9.0))
    f["nose_tip_rotation"] = _stack(0, 1.5 * _g2(x, y, 0, -38, 8, 5), -0.5 * _g2(x, y, 0, -40, 8, 4))
    f["nostril_flare"] = _stack(0.9 * _odd_pair(x, y, 14, -42, 4.5, 4.5), 0, 0.6 * _pair(x, y, 14, -42, 4.5, 4.5))
    f["brow_ridge"] = _stack(0, 0, 0.3 * t["brow"])
    f["brow_height"] = _stack(0, 1.5 * _pair(x, y, 30, 17, 16, 6), 0)
    f["cheekbones"] = _stack(1.3 * _odd_pair(x, y, 45, -18, 14, 12), 0, 2.2 * _pair(x, y, 42, -20, 14, 11))
    f["cheek_fullness"] = _stack(0.8 * _odd_pair(x, y, 38, -45, 14, 14), 0, 2.0 * _pair(x, y, 34, -45, 14, 14))
    ex, ey = L.EYE_CENTER
    f["eye_spacing"] = _stack(1.4 * _odd_pair(x, y, ex, ey, 11, 9), 0, 0)
    eye_l, eye_r = _g2(x, y, ex, ey, 11, 9), _g2(x, y, -ex, ey, 11, 9)
    from_eye_x = (x - ex) * eye_l + (x + ex) * eye_r  # x relative to the nearer eye, weighted
    f["eye_size"] = _stack(0.07 * from_eye_x, 0.07 * (y - ey) * (eye_l + eye_r), 0)
    f["eye_depth"] = _stack(0, 0, -1.8 * _pair(x, y, ex, ey + 1.0, 12, 10))
    f["eye_tilt"] = _stack(0, 0.05 * ((x - ex) * eye_l - (x + ex) * eye_r), 0)  # outer corners up
    f["lip_fullness"] = _stack(0, 0, 0.3 * (t["upper_lip"] + t["lower_lip"]))
    mouth = _g2(x, y, 0, L.MOUTH_CENTER[1], 22, 10)
    f["mouth_width"] = _stack(0.08 * x * mouth, 0, 0)
    f["mouth_height"] = _stack(0, 1.8 * _g2(x, y, 0, L.MOUTH_CENTER[1], 30, 16), 0)
    f["upper_lip_length"] = _stack(0, -1.5 * _smoothstep(-46.0, -58.0, y) * _g(x / 30.0) * _smoothstep(-95.0, -62.0, y), 0)
    f["forehead_slope"] = _stack(0, 0, -3.0 * np.clip((y - 20.0) / 68.0, 0.0, None) ** 2)
    f["forehead_height"] = _stack(0, 3.0 * _smoothstep(20.0, 90.0, y), 0)
    f["temples"] = _stack(0, 0, -1.8 * _pair(x, y, 62, 22, 9, 14))
    f["midface_length"] = _stack(0, -2.0 * _smoothstep(5.0, -40.0, y), 0)
    f["nasolabial_depth"] = _stack(0, 0, 0.8 * t["nasolabial"])
    f["asymmetry"] = _stack(0.5 * _g2(x, y, 0, -40, 30, 40), 0.8 * _odd_pair(x, y, ex, ey, 14, 10), 0.8 * _odd_pair(x, y, 40, -30, 20, 20))
    return f


def _shape_random_fields(P: np.ndarray, num: int, seed: int) -> list[np.ndarray]:
    """Smooth random RBF-bump components: a few Gaussian bumps each (half of them mirrored),
    mostly pushing along z, scaled to a 1.5 mm peak per standard deviation."""
    rng = np.random.default_rng(seed)
    x, y = P[:, 0], P[:, 1]
    out = []
    for k in range(num):
        d = np.zeros_like(P)
        for _ in range(int(rng.integers(3, 6))):
            while True:  # a centre inside the face
                c = np.array([rng.uniform(-65, 65), rng.uniform(-92, 80)])
                if L.face_mask_xy(c, margin=8.0):
                    break
            s = rng.uniform(9.0, 22.0)
            direction = np.array([0.25 * rng.standard_normal(), 0.25 * rng.standard_normal(), rng.standard_normal()])
            if k % 2 == 0:  # symmetric pair
                w_plus = _g2(x, y, c[0], c[1], s, s)
                w_minus = _g2(x, y, -c[0], c[1], s, s)
                d += np.outer(w_plus, direction) + np.outer(w_minus, direction * np.array([-1.0, 1.0, 1.0]))
            else:
                d += np.outer(_g2(x, y, c[0], c[1], s, s), direction)
        d *= 1.5 / np.abs(d).max()
        out.append(d)
    return out


# ----------------------------------------------------------------------------- expressions

# Each AU's region: a union of frontal ellipses (cx, cy, rx, ry) in mm on the neutral template;
# bilateral AUs list both sides. Displacements are exactly zero outside.
def _bilateral(cx, cy, rx, ry):
    return [(-cx, cy, rx, ry), (cx, cy, rx, ry)]


_EX, _EY = L.EYE_CENTER
AU_REGIONS: dict[str, list[tuple[float, float, float, float]]] = {
    "AU01": [(0.0, 28.0, 42.0, 30.0)],  # inner brows and the central forehead
    "AU02": _bilateral(42.0, 27.0, 26.0, 30.0),  # outer brows and the lateral forehead
    "AU04": [(0.0, 14.0, 46.0, 18.0)],  # brows, glabella
    "AU05": _bilateral(_EX, 7.0, 21.0, 19.0),  # upper lids
    "AU06": _bilateral(37.0, -16.0, 30.0, 26.0) + _bilateral(_EX, 0.0, 22.0, 19.0),  # cheeks, lids, crow's feet
    "AU07": _bilateral(_EX, 0.0, 21.0, 20.0),  # lids
    "AU09": [(0.0, -25.0, 34.0, 45.0)],  # nose, glabella, upper lip
    "AU10": [(0.0, -54.0, 40.0, 21.0)],  # upper lip, nasolabial region
    "AU12": _bilateral(28.0, -55.0, 26.0, 30.0),  # lip corners and cheeks
    "AU14": _bilateral(27.0, -62.0, 17.0, 18.0),  # lip corners
    "AU15": _bilateral(26.0, -66.0, 24.0, 24.0),  # lip corners and below
    "AU17": [(0.0, -80.0, 38.0, 26.0)],  # chin, lower lip
    "AU20": _bilateral(26.0, -63.0, 26.0, 24.0),  # lip corners, lateral
    "AU23": [(0.0, -62.0, 36.0, 17.0)],  # lips
    "AU25": [(0.0, -66.0, 38.0, 24.0)],  # lips
    "AU26": [(0.0, -80.0, 74.0, 44.0), (-58.0, -50.0, 26.0, 42.0), (58.0, -50.0, 26.0, 42.0)],  # mandible
    "AU45": _bilateral(_EX, 3.0, 21.0, 23.0),  # lids
}


def au_region_rho(name: str, xy: np.ndarray) -> np.ndarray:
    """Normalised elliptic radius (min over the AU's ellipses): < 1 inside the region."""
    xy = np.asarray(xy, dtype=np.float64)
    rho = np.full(xy.shape[:-1], np.inf)
    for cx, cy, rx, ry in AU_REGIONS[name]:
        rho = np.minimum(rho, np.hypot((xy[..., 0] - cx) / rx, (xy[..., 1] - cy) / ry))
    return rho


def au_region_mask(name: str, xy: np.ndarray) -> np.ndarray:
    """True where frontal points lie inside the AU's region."""
    return au_region_rho(name, xy) < 1.0


def _region_window(name: str, xy: np.ndarray) -> np.ndarray:
    """1 in the region's core, smoothly 0 at and beyond its boundary."""
    return 1.0 - _smoothstep(0.7, 1.0, au_region_rho(name, xy))


def _softmax2(a, b, k=0.4):
    m = np.maximum(a, b)
    return m + k * np.log(np.exp((a - m) / k) + np.exp((b - m) / k))


def _eye_surface_z(x, y, inside):
    """z a vertex gets at frontal (x, y): on the eyeball if it belongs to the exposed eyeball
    (``inside`` = 1), else skin, lying on the eyeball with a lid's thickness where it slides
    over the eye opening."""
    ball = T.eyeball_height(x, y)
    skin = _softmax2(T.height(x, y), ball + T.LID_THICKNESS)
    return inside * ball + (1.0 - inside) * skin


def _strip_profile(tt, ends, compression, width=0.22):
    """Monotone map [0, 1] → [0, 1] placing the stretch/compression of the eyeball strip near
    the moving lid margins (weights ``ends`` = (lower, upper)) so the iris keeps its shape.
    Its slope stays below 0.75 / compression (compression = the largest fraction of the
    opening that closes), so the remapped strip never folds."""
    if ends is None:  # linear: closing AUs add up exactly (see limit_lid_closure)
        return tt
    grid = np.linspace(0.0, 1.0, 257)
    e = ends[0] * np.exp(-((grid / width) ** 2)) + ends[1] * np.exp(-(((1.0 - grid) / width) ** 2))
    e = e / np.trapezoid(e, grid)
    beta = 0.95
    if compression > 0:
        beta = min(beta, max(0.0, (0.75 / compression - 1.0) / (e.max() - 1.0)))
    density = (1.0 - beta) + beta * e
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))])
    return np.interp(tt, grid, cdf / cdf[-1])


def _lid_motion(P, up_shift, lo_shift, d_up=6.0, d_lo=6.0, ends=None, width=0.22):
    """Full-intensity displacement for vertical eyelid motion (both eyes).

    ``up_shift``/``lo_shift`` (V,): vertical shift (mm, + up) of the upper/lower lid margin in
    each vertex's column; they must vanish at the canthi and keep ``h + up - lo > 0`` (h the
    opening's height). The exposed eyeball strip is remapped monotonically between the moved
    margins, the skin above/below follows with a Gaussian falloff — a monotone map of y per
    column, so the surface cannot fold. z follows the eyeball (eyeball vertices) or the skin /
    the lid resting on the eyeball (skin vertices)."""
    x, y = P[:, 0], P[:, 1]
    up, lo, s = T.eye_lid_curves(x)
    cols = np.abs(s) < 1.0
    h = np.maximum(up - lo, 1e-6)
    compression = float(np.max(np.where(cols & (up - lo > 0.5), (lo_shift - up_shift) / h, 0.0)))
    tt = _strip_profile(np.clip((y - lo) / h, 0.0, 1.0), ends, compression, width)
    dy_strip = lo_shift + (up_shift - lo_shift) * tt
    dy_above = up_shift * _g(np.maximum(y - up, 0.0) / d_up)
    dy_below = lo_shift * _g(np.maximum(lo - y, 0.0) / d_lo)
    dy = np.where(y >= up, dy_above, np.where(y <= lo, dy_below, dy_strip))
    dy = np.where(cols, dy, 0.0)
    dz = np.zeros_like(dy)
    moving = np.abs(dy) > 1e-9  # z is only re-evaluated where something moves
    xm, ym = x[moving], y[moving]
    inside = _sig(-(T.eye_opening_sdf(xm, ym) + 0.15) / 0.22)
    dz[moving] = _eye_surface_z(xm, ym + dy[moving], inside) - _eye_surface_z(xm, ym, inside)
    return _stack(0.0, dy, dz)


def _slide(P, d_xy, follow):
    """Move vertices in the frontal plane by ``d_xy`` (V, 2); z follows the template surface
    by the fraction ``follow`` (skin sliding over bone) and otherwise translates rigidly."""
    x, y = P[:, 0], P[:, 1]
    dz = np.zeros_like(x)
    m = np.abs(d_xy).max(axis=1) > 1e-6  # Gaussian tails below a nanometre do not move
    dz[m] = follow * (T.height(x[m] + d_xy[m, 0], y[m] + d_xy[m, 1]) - T.height(x[m], y[m]))
    return _stack(d_xy[:, 0], d_xy[:, 1], dz)


# Lid-closing AUs: (upper lid down, lower lid up) as fractions of the eye opening at AU = 5.
LID_CLOSURE = {"AU06": (0.1, 0.3), "AU07": (0.2, 0.3), "AU45": (0.80, 0.17)}


def limit_lid_closure(expr: torch.Tensor, max_closure: float = 0.85) -> torch.Tensor:
    """Scale the lid-closing AUs (AU06, AU07, AU45) of expression coefficients (B, 17) down
    jointly where their summed closure would exceed ``max_closure`` of the eye opening.

    The model is linear, so e.g. AU06 = AU07 = AU45 = 5 together would push the lids past each
    other; each AU alone is always valid. Differentiable; returns a new tensor."""
    idx = [L.AU_INDEX[k] for k in LID_CLOSURE]
    per_unit = torch.tensor([sum(v) / AU_FULL for v in LID_CLOSURE.values()], dtype=expr.dtype, device=expr.device)
    closure = (expr[:, idx].clamp(min=0.0) * per_unit).sum(1, keepdim=True)
    scale = (max_closure / closure.clamp(min=1e-9)).clamp(max=1.0)
    out = expr.clone()
    out[:, idx] = expr[:, idx] * scale
    return out


def _mouth_split(x, y):
    """Weight of the upper lip side of the mouth line: a sharp step between the corners."""
    line, _, _ = T.mouth_curves(x)
    return _sig((y - line) / 0.3)


def _mouth_window(x, extra=3.0, power=1.2):
    return np.clip(1.0 - (x / (L.MOUTH_HALF_WIDTH + extra)) ** 2, 0.0, None) ** power


def _expression_fields(P: np.ndarray) -> dict[str, np.ndarray]:
    """Full-intensity (AU = 5) displacements (V, 3) in mm, before the region window."""
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    ax = np.abs(x)
    up, lo, s = T.eye_lid_curves(x)
    h = np.maximum(up - lo, 0.0)
    qs = np.clip(1.0 - s * s, 0.0, None)
    line, top, bottom = T.mouth_curves(x)
    split = _mouth_split(x, y)
    mw = _mouth_window(x)
    f: dict[str, np.ndarray] = {}
    zeros = np.zeros_like(x)

    # AU01 inner brow raiser: the inner brows and the central forehead go up (frontalis, medial).
    w = _pair(x, y, 17.0, 18.0, 11.0, 8.0) + 0.6 * _g2(x, y, 0.0, 32.0, 20.0, 12.0)
    w = w * _sig((y - 6.0) / 1.5)  # the lids stay
    f["AU01"] = _slide(P, np.stack([zeros, 6.0 * w], -1), follow=0.5)

    # AU02 outer brow raiser.
    w = _pair(x, y, 41.0, 17.0, 11.0, 8.0) + 0.5 * _pair(x, y, 40.0, 32.0, 14.0, 12.0)
    w = w * _sig((y - 6.0) / 1.5)
    f["AU02"] = _slide(P, np.stack([zeros, 6.0 * w], -1), follow=0.5)

    # AU04 brow lowerer: brows down and together, glabella bunches forward.
    wb = (_g((x - 20.0) / 12.0) + _g((x + 20.0) / 12.0)) * _g((y - 16.0) / np.where(y < 16.0, 4.0, 6.0))
    wx = _odd_pair(x, y, 17.0, 16.0, 11.0, 6.5)
    d = _slide(P, np.stack([-3.5 * wx, -4.0 * wb], -1), follow=0.3)
    d[:, 2] += 1.5 * _g2(x, y, 0.0, 13.0, 7.0, 5.0)
    f["AU04"] = d

    # AU05 upper lid raiser: the upper lid margin goes up 3 mm, exposing sclera.
    f["AU05"] = _lid_motion(P, up_shift=3.0 * qs**1.2 * (h > 0), lo_shift=zeros, d_up=8.0, ends=(0.0, 1.0), width=0.08)

    # AU06 cheek raiser: cheeks up and forward, lower lids pushed up, crow's feet bunching.
    cheek = _pair(x, y, 37.0, -20.0, 14.0, 10.0) * _sig((lo - 4.0 - y) / 1.2)
    d = _stack(0.0, 4.0 * cheek, 1.8 * cheek)
    down, lift = LID_CLOSURE["AU06"]
    d += _lid_motion(P, up_shift=-down * h, lo_shift=lift * h, d_lo=7.0)
    d[:, 2] += 0.8 * _pair(x, y, 52.0, -4.0, 5.0, 7.0)
    f["AU06"] = d

    # AU07 lid tightener: lower lid up, upper lid slightly down — the opening narrows.
    down, lift = LID_CLOSURE["AU07"]
    f["AU07"] = _lid_motion(P, up_shift=-down * h, lo_shift=lift * h, d_lo=5.0)

    # AU09 nose wrinkler: nose tip and alae up, bridge skin bunched, upper lip up a bit,
    # inner brows pulled down.
    d = _stack(0.0, 4.0 * _g2(x, y, 0.0, -38.0, 14.0, 10.0) + 1.2 * _g2(x, y, 0.0, -51.0, 14.0, 4.0), 0.0)
    d[:, 2] += 1.0 * _pair(x, y, 14.0, -40.0, 5.0, 5.0) + 0.8 * _g2(x, y, 0.0, -10.0, 7.0, 8.0)
    d[:, 1] += -1.5 * _pair(x, y, 13.0, 15.0, 7.0, 5.0)
    f["AU09"] = d

    # AU10 upper lip raiser: the upper lip goes up (parting from the lower lip), slightly
    # everted; the nasolabial region lifts.
    upper = split * _g(np.maximum(y - top, 0.0) / 6.0) * _mouth_window(x, extra=6.0, power=1.0)
    d = _stack(0.0, 3.5 * upper + 1.5 * _pair(x, y, 22.0, -48.0, 7.0, 7.0), 1.0 * upper)
    d[:, 2] += -2.0 * _g((y - line) / 0.45) * _mouth_window(x, extra=0.0, power=1.5)
    f["AU10"] = d

    # AU12 lip corner puller: corners up, out and back; the cheeks bunch up.
    corner = _pair(x, y, 25.0, -61.0, 8.0, 7.0)
    d = _stack(2.5 * _odd_pair(x, y, 25.0, -61.0, 8.0, 7.0), 4.5 * corner, -2.5 * corner)
    d[:, 1] += 2.0 * _pair(x, y, 34.0, -45.0, 9.0, 9.0)
    d[:, 2] += 1.5 * _pair(x, y, 34.0, -45.0, 9.0, 9.0)
    f["AU12"] = d

    # AU14 dimpler: corners tightened inwards and back, a dimple beside them.
    corner = _pair(x, y, 26.0, -62.0, 5.0, 5.0)
    d = _stack(-1.6 * _odd_pair(x, y, 26.0, -62.0, 5.0, 5.0), 0.0, -2.2 * corner)
    d[:, 2] += -1.2 * _pair(x, y, 31.0, -62.0, 2.5, 3.0)
    f["AU14"] = d

    # AU15 lip corner depressor: corners pulled down.
    corner = _pair(x, y, 25.0, -64.0, 8.0, 7.0)
    f["AU15"] = _stack(0.4 * _odd_pair(x, y, 25.0, -64.0, 8.0, 7.0), -4.0 * corner, -0.6 * corner)

    # AU17 chin raiser: the chin boss up and forward, pushing the lower lip up and out.
    chin = _g2(x, y, 0.0, -84.0, 15.0, 8.0)
    lip = _g2(x, y, 0.0, -68.0, 14.0, 5.0)
    f["AU17"] = _stack(0.0, 3.0 * chin + 1.2 * lip, 1.5 * chin + 2.0 * lip)

    # AU20 lip stretcher: corners pulled sideways (and slightly down/back), lips flattened.
    corner = _pair(x, y, 25.0, -63.0, 8.0, 7.0)
    d = _stack(3.5 * _odd_pair(x, y, 25.0, -63.0, 8.0, 7.0), -1.0 * corner, -1.5 * corner)
    d[:, 2] += -0.8 * _g2(x, y, 0.0, -62.0, 16.0, 6.0)
    f["AU20"] = d

    # AU23 lip tightener: the vermilion narrows (its borders move towards the mouth line) and
    # is pressed back; the corners move inwards.
    lipw = _g(x / 15.0)
    lu = _g((y - (top - 1.5)) / 2.2) * lipw
    ll = _g((y - (bottom + 1.5)) / 2.4) * lipw
    press = _g((y - line) / 5.0) * lipw
    f["AU23"] = _stack(-0.8 * _odd_pair(x, y, 23.0, -62.0, 6.0, 5.0), -1.25 * lu + 1.25 * ll, -1.5 * press)

    # AU25 lips part: the upper lip up, the lower lip down, a cavity between them.
    du = 2.0 * mw * split * _g(np.maximum(y - top, 0.0) / 7.0)
    dl = -4.0 * mw * (1.0 - split) * _g(np.maximum(bottom - y, 0.0) / 9.0)
    dz = -6.0 * mw * _g((y - line) / 0.45)
    f["AU25"] = _stack(0.0, du + dl, dz)

    # AU26 jaw drop: the mandible rotates about the temporomandibular axis (and slides forward
    # a little); the boundary with the upper face is sharp at the lips, smooth on the cheeks.
    sig_y = 0.3 + 9.0 * _smoothstep(0.8 * L.MOUTH_HALF_WIDTH, 48.0, ax)
    boundary = line + 0.35 * np.maximum(ax - L.MOUTH_HALF_WIDTH, 0.0)  # rising towards the ears
    wj = _sig((boundary - y) / sig_y)
    theta, cy_, cz_, slide_fwd = 0.12, -8.0, -90.0, 4.0
    d = _stack(0.0, -theta * (z - cz_) * wj, (theta * (y - cy_) + slide_fwd) * wj)
    d[:, 2] += -8.0 * mw * _g((y - line) / 0.45)
    f["AU26"] = d

    # AU45 blink: the upper lid comes down over the eye to meet the (slightly raised) lower lid.
    down, lift = LID_CLOSURE["AU45"]
    f["AU45"] = _lid_motion(P, up_shift=-down * h, lo_shift=lift * h, d_up=6.0)
    return f


# ----------------------------------------------------------------------------- albedo

ALBEDO_NAMES = (
    "skin_tone", "redness", "yellowness", "cheek_redness", "nose_redness", "lip_red", "lip_dark",
    "brow_light", "brow_thickness", "iris_blue", "iris_green", "iris_dark", "beard_shadow",
    "tan_gradient", "blotch_0", "blotch_1", "blotch_2", "blotch_3",
)
ALBEDO_SEED = 20170413
SKIN = np.array([0.58, 0.33, 0.22])
SCLERA = np.array([0.78, 0.73, 0.68])
IRIS_BROWN = np.array([0.11, 0.06, 0.032])
PUPIL = np.array([0.008, 0.007, 0.007])
LIPS = np.array([0.45, 0.16, 0.13])
BROW = np.array([0.05, 0.035, 0.025])
LASHES = np.array([0.03, 0.022, 0.02])
NOSTRIL = np.array([0.07, 0.03, 0.025])
LIPS_INNER = np.array([0.22, 0.055, 0.05])
MOUTH_INSIDE = np.array([0.05, 0.012, 0.012])


def _albedo_masks(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Soft masks (values in [0, 1]) of the coloured regions, functions of frontal (x, y)."""
    ax = np.abs(x)
    m: dict[str, np.ndarray] = {}
    sdf = T.eye_opening_sdf(x, y)
    m["eye"] = _sig(-(sdf + 0.15) / 0.22)  # the same opening as the geometry
    ex, ey = L.EYE_CENTER
    r = np.hypot(ax - ex, y - ey)
    m["iris"] = _sig((T.IRIS_RADIUS - r) / 0.15) * m["eye"]
    m["limbus"] = _g((r - T.IRIS_RADIUS + 0.3) / 0.35) * m["eye"]
    m["pupil"] = _sig((T.PUPIL_RADIUS - r) / 0.12) * m["eye"]
    m["caruncle"] = _g2(ax, y, ex - L.EYE_HALF_WIDTH + 2.0, ey, 1.8, 1.5) * m["eye"]
    up, lo, _ = T.eye_lid_curves(x)
    lash_w = np.where(y > ey, 1.1, 0.55)
    m["lashes"] = _g(np.maximum(sdf - 0.2, 0.0) / lash_w) * _sig(sdf / 0.15) * _sig((L.EYE_HALF_WIDTH + 1.5 - np.abs(ax - ex)) / 0.6)
    m["lid_shadow"] = _g(np.maximum(up - y, 0.0) / 1.3) * m["eye"]  # the upper lid shades the eyeball
    m["dark_circles"] = _pair(x, y, 29.0, -9.5, 9.0, 3.5) * (1.0 - m["eye"])
    # Eyebrows: an arch from the inner to the outer end, thick medially, tapering laterally.
    b0, b1 = L.BROW_X
    tb = np.clip((ax - b0) / (b1 - b0), -0.2, 1.2)
    centre = L.BROW_Y + 1.0 + 3.5 * np.sin(np.pi * np.clip(tb, 0, 1) * 0.85)
    half = 3.2 - 1.6 * np.clip(tb, 0, 1)
    along = _sig((ax - b0 + 1.0) / 1.2) * _sig((b1 + 2.0 - ax) / 1.5)
    dv = np.abs(y - centre)
    m["brow"] = 0.9 * _sig((half - dv) / 0.6) * along
    m["brow_edge"] = _g((dv - half) / 0.9) * along  # where thicker brows would add hair
    # Lips and mouth.
    line, top, bottom = T.mouth_curves(x)
    inside_x = _sig((L.MOUTH_HALF_WIDTH - ax) / 0.6)
    m["lips"] = _sig((top - y) / 0.45) * _sig((y - bottom) / 0.45) * inside_x
    m["mouth_line"] = _g((y - line) / 0.5) * _sig((L.MOUTH_HALF_WIDTH - 1.0 - ax) / 0.8)
    m["lips_inner"] = _g((y - line) / 1.5) * m["lips"]  # the wet inner lip, darker red
    m["nostrils"] = 0.9 * _sig((1.0 - np.hypot((ax - 6.5) / 3.2, (y - L.NOSE_BASE_Y - 2.6) / 1.7)) / 0.2)
    m["cheeks"] = _pair(x, y, 38.0, -32.0, 13.0, 11.0)
    m["nose_tip"] = _g2(x, y, 0.0, L.NOSE_TIP[1] - 1.0, 9.0, 7.0)
    m["beard"] = _smoothstep(-48.0, -66.0, y) * _sig((L.face_half_width(y) - 4.0 - ax) / 3.0) * (1.0 - m["lips"])
    m["beard"] = np.maximum(m["beard"], _g2(x, y, 0.0, -52.0, 18.0, 4.0) * (1.0 - m["lips"]) * (1.0 - _sig((y - L.NOSE_BASE_Y) / 1.0)))
    m["skin"] = (1.0 - m["eye"]) * (1.0 - m["nostrils"])
    return m


def _albedo_fields(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mean albedo (..., 3) and the per-standard-deviation components [(..., 3)] in linear RGB."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = _albedo_masks(x, y)
    c = lambda mask, rgb: mask[..., None] * np.asarray(rgb, dtype=np.float64)  # noqa: E731
    skin_like = m["skin"]
    mean = c(np.ones_like(x), SKIN)
    mean = mean + c(m["cheeks"], [0.05, -0.012, -0.006]) + c(m["nose_tip"], [0.03, -0.008, -0.004])
    mean = mean + c(m["dark_circles"], [-0.06, -0.045, -0.025])
    mean = mean + c(m["lips"], LIPS - SKIN)
    mean = mean * (1.0 - 0.8 * m["lips_inner"][..., None]) + c(0.8 * m["lips_inner"], LIPS_INNER)
    mean = mean * (1.0 - m["brow"][..., None]) + c(m["brow"], BROW)
    mean = mean * (1.0 - m["lashes"][..., None] * 0.85) + c(m["lashes"] * 0.85, LASHES)
    mean = mean * (1.0 - m["mouth_line"][..., None] * 0.9) + c(m["mouth_line"] * 0.9, MOUTH_INSIDE)
    mean = mean * (1.0 - m["nostrils"][..., None]) + c(m["nostrils"], NOSTRIL)
    # The eye: sclera, pink caruncle, brown iris with a dark limbal ring, pupil.
    eye = c(np.ones_like(x), SCLERA) + c(m["caruncle"], [0.0, -0.35, -0.35])
    eye = eye * (1.0 - m["iris"][..., None]) + c(m["iris"], IRIS_BROWN)
    eye = eye * (1.0 - 0.6 * m["limbus"][..., None]) + c(0.6 * m["limbus"], [0.02, 0.015, 0.01])
    eye = eye * (1.0 - m["pupil"][..., None]) + c(m["pupil"], PUPIL)
    eye = eye * (1.0 - 0.55 * m["lid_shadow"][..., None])
    mean = mean * (1.0 - m["eye"][..., None]) + eye * m["eye"][..., None]

    # Components per standard deviation.
    hair_free = skin_like * (1.0 - m["brow"])
    comps = [
        c(skin_like * (1.0 - 0.3 * m["lips"]), [-0.13, -0.085, -0.06]),  # skin_tone
        c(skin_like, [0.035, -0.01, -0.01]),  # redness
        c(skin_like, [0.008, 0.007, -0.014]),  # yellowness
        c(m["cheeks"], [0.05, -0.012, -0.006]),  # cheek_redness
        c(m["nose_tip"], [0.05, -0.012, -0.006]),  # nose_redness
        c(m["lips"], 0.3 * (LIPS - SKIN)),  # lip_red: lip contrast against the skin
        c(m["lips"], -0.15 * LIPS),  # lip_dark
        c(m["brow"], 0.6 * BROW + [0.03, 0.015, 0.0]),  # brow_light (- darker, + lighter / fairer)
        c(m["brow_edge"] * 0.45, BROW - SKIN),  # brow_thickness
        c(m["iris"] * (1.0 - m["pupil"]), [-0.01, 0.014, 0.032]),  # iris_blue
        c(m["iris"] * (1.0 - m["pupil"]), [0.005, 0.016, -0.004]),  # iris_green
        c(m["iris"] * (1.0 - m["pupil"]), -0.3 * IRIS_BROWN),  # iris_dark
        c(m["beard"] * hair_free, [-0.05, -0.035, -0.02]),  # beard_shadow
        c(hair_free * np.clip((y - L.FACE_CENTER_Y) / 90.0, -1.0, 1.0), [0.02, 0.012, 0.006]),  # tan_gradient
    ]
    rng = np.random.default_rng(ALBEDO_SEED)
    for _ in range(4):  # smooth random blotches: uneven pigmentation / flushing
        field = np.zeros_like(x)
        for _ in range(5):
            cx, cy = rng.uniform(-60, 60), rng.uniform(-90, 75)
            s = rng.uniform(6.0, 16.0)
            field = field + rng.standard_normal() * _g2(x, y, cx, cy, s, s)
        colour = np.array([0.02, 0.012, 0.008]) * (1.0 + 0.5 * rng.standard_normal(3))
        comps.append(c(field * hair_free, colour))
    assert len(comps) == len(ALBEDO_NAMES)
    return mean, comps


@lru_cache(maxsize=4)
def _albedo_texture_bank(size: int, row0: int = 0, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean (3, h, S) and components (K, 3, h, S) float32 of texture rows [row0, row0 + h)."""
    xy = L.uv_grid_xy(size)[row0: row0 + (size if rows is None else rows)]
    mean, comps = _albedo_fields(xy[..., 0], xy[..., 1])
    return (np.ascontiguousarray(mean.transpose(2, 0, 1), dtype=np.float32),
            np.ascontiguousarray(np.stack(comps).transpose(0, 3, 1, 2), dtype=np.float32))


def albedo_texture(model_or_params: MorphableModel | None, coef: torch.Tensor, size: int) -> torch.Tensor:
    """The synthetic albedo as a UV texture (B, 3, size, size), linear RGB clamped to [0, 1].

    ``model_or_params``: the synthetic :class:`MorphableModel` (its albedo component count must
    match) or None for the synthetic albedo functions themselves. ``coef`` (B, Ka) are in
    standard deviations, as for ``MorphableModel.albedo``; the texture agrees with the
    per-vertex albedo at every vertex's UV. Differentiable w.r.t. ``coef``; follows its
    device and dtype. Row = v, column = u (``layout``'s convention: the face upright).
    Sizes up to 512 are cached; larger ones are evaluated in bands of rows (1024²: ~1-2 s).
    """
    if model_or_params is not None:
        if not isinstance(model_or_params, MorphableModel) or not model_or_params.name.startswith("synthetic"):
            raise TypeError("albedo_texture needs the synthetic model (its albedo is analytic); "
                            f"got {getattr(model_or_params, 'name', type(model_or_params).__name__)!r}")
        if model_or_params.num_albedo != len(ALBEDO_NAMES):
            raise ValueError(f"model has {model_or_params.num_albedo} albedo components, expected {len(ALBEDO_NAMES)}")
    coef = torch.as_tensor(coef)
    if coef.ndim != 2 or coef.shape[1] != len(ALBEDO_NAMES):
        raise ValueError(f"coef must be (B, {len(ALBEDO_NAMES)}), got {tuple(coef.shape)}")
    size = int(size)
    if size <= 512:
        bands = [_albedo_texture_bank(size)]
    else:
        step = 64
        bands = (_albedo_texture_bank.__wrapped__(size, r, min(step, size - r)) for r in range(0, size, step))
    out = []
    for mean, comps in bands:
        mean_t = torch.as_tensor(mean).to(device=coef.device, dtype=coef.dtype)
        comps_t = torch.as_tensor(comps).to(device=coef.device, dtype=coef.dtype)
        out.append(mean_t.unsqueeze(0) + torch.einsum("bk,kcij->bcij", coef, comps_t))
    return torch.cat(out, dim=2).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- the model


def _unit_basis(fields: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm basis (K, V, 3) and std (K,) = the norm of each per-std field."""
    b = np.stack(fields).astype(np.float64)
    norms = np.sqrt((b.reshape(len(fields), -1) ** 2).sum(1))
    return b / norms[:, None, None], norms


def shape_names() -> list[str]:
    return list(SHAPE_NAMED) + [f"random_{k}" for k in range(NUM_RANDOM_SHAPE)]


def expression_fields(P: np.ndarray) -> np.ndarray:
    """Expression basis (17, V, 3): mm per unit AU intensity at template positions P (V, 3)."""
    P = np.asarray(P, dtype=np.float64)
    full = _expression_fields(P)
    out = []
    for name in L.AU_NAMES:
        out.append(full[name] * _region_window(name, P[:, :2])[:, None] / AU_FULL)
    return np.stack(out)


def synthetic_model(resolution: int = T.DEFAULT_RESOLUTION) -> MorphableModel:
    """The synthetic morphable model on the template of the given resolution."""
    tpl = T.build_template(resolution)
    P = tpl.vertices.astype(np.float64)
    named = _shape_named_fields(P)
    shape_fields = [named[k] for k in SHAPE_NAMED] + _shape_random_fields(P, NUM_RANDOM_SHAPE, SHAPE_SEED)
    shape_basis, shape_std = _unit_basis(shape_fields)
    expr_basis = expression_fields(P)
    albedo_mean, albedo_comps = _albedo_fields(P[:, 0], P[:, 1])
    albedo_basis, albedo_std = _unit_basis(albedo_comps)
    return MorphableModel(
        mean=P,
        shape_basis=shape_basis,
        shape_std=shape_std,
        expr_basis=expr_basis,
        expr_std=np.ones(len(L.AU_NAMES)),
        albedo_mean=np.clip(albedo_mean, 0.0, 1.0),
        albedo_basis=albedo_basis,
        albedo_std=albedo_std,
        faces=tpl.faces,
        uvs=tpl.uvs,
        landmarks=tpl.landmarks,
        expr_names=list(L.AU_NAMES),
        name="synthetic",
    )
