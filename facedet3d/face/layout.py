"""The face layout shared by the template mesh, the UV square and the wrinkle model.

Coordinates ("frontal plane") are millimetres, as in BFM2017:
x to the image's right (the subject's left), y up, z towards the camera.
The origin lies on the midline at eye height, on the corneal plane's depth.

The UV square is an orthographic projection of the frontal plane:
``u = (x - X_MIN) / SPAN``, ``v = (Y_MAX - y) / SPAN`` — so a UV map stored as an
image (row = v, column = u) shows the face upright, forehead on top, the subject's
right on the image's left, exactly like a frontal photograph. ``torch.grid_sample``
reads such a map with grid ``(2u - 1, 2v - 1)`` and ``align_corners=False``.

Everything anatomical (landmarks, AU wrinkle regions) is placed in these frontal
coordinates once, here, so that geometry and detail maps agree by construction.
"""

from __future__ import annotations

import numpy as np

# The frontal window that the UV square covers (mm).
X_MIN, X_MAX = -100.0, 100.0
Y_MIN, Y_MAX = -105.0, 95.0
SPAN = 200.0

# Face outline: an egg shape, wider at the temples than at the jaw (mm).
FACE_CENTER_Y = -8.0
FACE_HALF_WIDTH = 74.0  # at the cheekbones
FACE_TOP_Y = 88.0  # hairline / top of the forehead
FACE_BOTTOM_Y = -102.0  # under the chin

# Key anatomical points (x, y) in mm; the subject's right is negative x.
EYE_CENTER = (32.0, 0.0)  # (+/- x, y) pupil centres, interpupillary distance 64 mm
EYE_HALF_WIDTH = 14.0
EYE_HALF_HEIGHT = 6.0
BROW_Y = 15.0  # brow line height above the pupils
BROW_X = (12.0, 52.0)  # inner and outer brow ends (+/- x)
NOSE_BRIDGE = (0.0, 0.0)
NOSE_TIP = (0.0, -36.0)
NOSE_BASE_Y = -46.0  # subnasale
NOSTRIL_X = 16.0  # alae, +/- x
MOUTH_CENTER = (0.0, -62.0)
MOUTH_HALF_WIDTH = 25.0
UPPER_LIP_TOP_Y = -54.0
LOWER_LIP_BOTTOM_Y = -71.0
CHIN = (0.0, -90.0)

# The 17 Action Units in OpenFace order (AU01 02 04 05 06 07 09 10 12 14 15 17 20 23 25 26 45).
AU_NAMES = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45",
)
AU_INDEX = {name: i for i, name in enumerate(AU_NAMES)}
AU_MAX = 5.0


def xy_to_uv(xy: np.ndarray) -> np.ndarray:
    """Map frontal coordinates (..., 2) in mm to UV (..., 2) in [0, 1]²."""
    xy = np.asarray(xy, dtype=np.float64)
    u = (xy[..., 0] - X_MIN) / SPAN
    v = (Y_MAX - xy[..., 1]) / SPAN
    return np.stack([u, v], axis=-1)


def uv_to_xy(uv: np.ndarray) -> np.ndarray:
    """Map UV (..., 2) in [0, 1]² to frontal coordinates (..., 2) in mm."""
    uv = np.asarray(uv, dtype=np.float64)
    x = X_MIN + uv[..., 0] * SPAN
    y = Y_MAX - uv[..., 1] * SPAN
    return np.stack([x, y], axis=-1)


def uv_grid_xy(size: int) -> np.ndarray:
    """Frontal coordinates (size, size, 2) of the texel centres of a size² UV map."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    u, v = np.meshgrid(c, c, indexing="xy")
    return uv_to_xy(np.stack([u, v], axis=-1))


def face_half_width(y: np.ndarray) -> np.ndarray:
    """Half-width (mm) of the face outline at height y (mm); <= 0 outside the face.

    Egg-shaped: full width from the temples to the cheekbones, narrowing along
    the jaw to a rounded chin, rounded at the top of the forehead.
    """
    y = np.asarray(y, dtype=np.float64)
    top = np.clip((y - 30.0) / (FACE_TOP_Y - 30.0), 0.0, None)  # forehead dome
    w_top = FACE_HALF_WIDTH * np.sqrt(np.clip(1.0 - top**2.2, 0.0, None))
    t = np.clip((-10.0 - y) / (-10.0 - FACE_BOTTOM_Y), 0.0, None)  # jaw taper
    w_jaw = FACE_HALF_WIDTH * (1.0 - 0.62 * t**1.6) * np.sqrt(np.clip(1.0 - t**6, 0.0, None))
    w = np.where(y >= 30.0, w_top, np.where(y <= -10.0, w_jaw, FACE_HALF_WIDTH))
    return np.where((y > FACE_TOP_Y) | (y < FACE_BOTTOM_Y), 0.0, w)


def face_mask_xy(xy: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """True where frontal points (..., 2) lie inside the face outline shrunk by margin (mm)."""
    xy = np.asarray(xy, dtype=np.float64)
    w = face_half_width(xy[..., 1])
    # w > 0: above the forehead and below the chin the half-width is 0, which must not make
    # the midline itself (|x| = 0 <= 0) count as inside.
    return (np.abs(xy[..., 0]) <= w - margin) & (w > 0)


def face_mask_uv(size: int, margin: float = 0.0) -> np.ndarray:
    """Boolean (size, size) mask of the face region in a size² UV map."""
    return face_mask_xy(uv_grid_xy(size), margin)


def landmarks_68_xy() -> np.ndarray:
    """The 68-point (iBUG 300-W order) landmark positions (68, 2) in frontal mm.

    0-16 jaw line (subject's right ear → chin → left ear), 17-21 right brow,
    22-26 left brow, 27-30 nose bridge, 31-35 nostrils, 36-41 right eye,
    42-47 left eye, 48-59 outer lip, 60-67 inner lip. "Right" is the subject's
    right, i.e. negative x (image left), as in 300-W annotations.
    """
    pts = []
    # Jaw: 17 points from y=+10 at the right temple side down to the chin and up again.
    ys = np.concatenate([np.linspace(5.0, -70.0, 7), np.linspace(-80.0, FACE_BOTTOM_Y + 6, 2)])
    jaw_right = [(-face_half_width(y) + 3.0, y) for y in ys]  # 9 points, last near the chin
    jaw_right[-1] = (0.0, FACE_BOTTOM_Y + 4.0)  # 8: chin tip
    jaw_right[-2] = (-22.0, -93.0)
    jaw = jaw_right + [(-x, y) for x, y in reversed(jaw_right[:-1])]
    pts += jaw
    ex, ey = EYE_CENTER
    # Brows: right brow 17-21 from outer to inner, left brow 22-26 from inner to outer.
    bx = np.linspace(BROW_X[1], BROW_X[0], 5)
    brow = [(-x, BROW_Y + 4.0 * np.sin(np.pi * (x - BROW_X[0]) / (BROW_X[1] - BROW_X[0] + 8))) for x in bx]
    pts += brow
    pts += [(-x, y) for x, y in reversed(brow)]
    # Nose bridge 27-30 and nostrils 31-35.
    pts += [(0.0, y) for y in np.linspace(-2.0, NOSE_TIP[1], 4)]
    pts += [(x, NOSE_BASE_Y + 2.0 - 2.0 * (1 - abs(x) / NOSTRIL_X)) for x in np.linspace(-NOSTRIL_X + 4, NOSTRIL_X - 4, 5)]
    # Eyes 36-41 (right) and 42-47 (left): outer corner, 2 upper, inner corner, 2 lower.
    def eye(cx: float, outer_sign: float):
        w, h = EYE_HALF_WIDTH, EYE_HALF_HEIGHT
        o = outer_sign
        return [
            (cx + o * w, ey), (cx + o * 0.35 * w, ey + h), (cx - o * 0.35 * w, ey + h),
            (cx - o * w, ey), (cx - o * 0.35 * w, ey - h), (cx + o * 0.35 * w, ey - h),
        ]
    pts += eye(-ex, -1.0)
    right_eye_reordered = eye(ex, 1.0)
    # Left eye in 300-W order starts at its inner corner.
    pts += [right_eye_reordered[i] for i in (3, 2, 1, 0, 5, 4)]
    # Outer lip 48-59: right corner, upper lip to left corner, lower lip back.
    mx, my = MOUTH_CENTER
    mw = MOUTH_HALF_WIDTH
    upper = [(-mw, my), (-16.0, -56.5), (-6.0, UPPER_LIP_TOP_Y), (0.0, -55.0), (6.0, UPPER_LIP_TOP_Y), (16.0, -56.5), (mw, my)]
    lower = [(16.0, -68.0), (7.0, LOWER_LIP_BOTTOM_Y), (0.0, LOWER_LIP_BOTTOM_Y), (-7.0, LOWER_LIP_BOTTOM_Y), (-16.0, -68.0)]
    pts += upper + lower
    # Inner lip 60-67.
    pts += [(-mw + 4, my), (-10.0, my + 1.5), (0.0, my + 1.5), (10.0, my + 1.5), (mw - 4, my), (10.0, my - 1.5), (0.0, my - 1.5), (-10.0, my - 1.5)]
    out = np.asarray(pts, dtype=np.float64)
    assert out.shape == (68, 2), out.shape
    return out
