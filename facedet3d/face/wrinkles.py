"""Expression-dependent wrinkles and folds of the synthetic faces (ground-truth detail maps).

A detail map is a (size, size) float32 UV map (layout.py's UV square, row = v) of the
displacement along the normal in millimetres: creases are negative, the skin between
them slightly raised. For one identity and one map size, ``WrinkleBank`` precomputes

* one unit pattern per Action Unit (deepest troughs about -1), stored only inside the
  AU's region boxes (``AU_REGIONS``), with its own anatomically placed creases;
* the static skin micro-structure (pores, fine relief), which never changes,

so that ``detail_map(aus, age)`` is a weighted sum

    micro + Σ_a [STATIC_MM_a · age_static(age) + BASE_MM_a · susceptibility_a ·
                 age_depth(age) · au_gain(aus_a)] · pattern_a

— the first term of the bracket being the age wrinkles that persist at neutral.
Everything is zero outside the face outline, inside the eye openings and the mouth gap.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .layout import AU_INDEX, AU_MAX, AU_NAMES, SPAN, X_MIN, Y_MAX, face_half_width

N_AU = len(AU_NAMES)

# Crease depth (mm) at intensity 5, age 45 (age_depth = 1), susceptibility 1 — per AU.
BASE_MM = np.array([
    0.40, 0.32, 0.38, 0.07, 0.26, 0.12, 0.26, 0.22, 0.45,  # AU01 02 04 05 06 07 09 10 12
    0.20, 0.22, 0.20, 0.14, 0.14, 0.00, 0.00, 0.10,        # AU14 15 17 20 23 25 26 45
], dtype=np.float32)
# Depth (mm) of the same creases that persist at neutral at age_static = 1 (age 70).
STATIC_MM = np.zeros(N_AU, np.float32)
for _au, _mm in {"AU01": 0.14, "AU02": 0.10, "AU04": 0.10, "AU06": 0.12, "AU07": 0.05,
                 "AU12": 0.14, "AU23": 0.05, "AU45": 0.04}.items():
    STATIC_MM[AU_INDEX[_au]] = _mm


def au_gain(intensity: np.ndarray) -> np.ndarray:
    """Smooth saturating gain of an AU intensity (0..5) -> 0..1, monotone, gain(5) = 1."""
    i = np.clip(np.asarray(intensity, np.float32), 0.0, AU_MAX)
    return ((1.0 - np.exp(-i / 2.5)) / (1.0 - np.exp(-2.0))).astype(np.float32)


def age_depth(age: float) -> float:
    """Factor on expression-wrinkle depth: 0.5 at 20 years, 1.0 at ~43, 1.6 at 70."""
    return float(np.clip(0.5 + 1.1 * (age - 20.0) / 50.0, 0.35, 1.9))


def age_static(age: float) -> float:
    """Weight of the permanent age wrinkles: 0 up to 25 years, 1 at 70."""
    return float(np.clip((age - 25.0) / 45.0, 0.0, 1.3) ** 1.5)


@dataclass(frozen=True)
class WrinkleIdentity:
    """Identity-specific wrinkle parameters (lengths in mm, angles in radians)."""

    susceptibility: tuple[float, ...]  # (17,) depth factor per AU
    forehead_spacing: float  # 6-12 mm between forehead lines
    forehead_phase: float  # 0-1, line offset in units of the spacing
    forehead_arch: float  # mm the lines rise above the lateral brows
    forehead_curvature: float  # 1/mm, lines y ~ c·x² (negative: sagging ends)
    glabella_spacing: float  # mm between the vertical glabellar lines
    crow_angle: float  # rad between crow's-feet lines
    lip_spacing: float  # mm between perioral lip lines
    crease_width: float  # factor on all crease widths
    tilt: float  # rad, slight whole-face orientation jitter of line families
    asymmetry: float  # left depth x(1 + a), right x(1 - a)
    fold_shift: float  # mm lateral shift of the nasolabial folds
    pore_scale: float  # mm, pore size (smaller = denser)
    pore_strength: float  # mm, typical pore depth
    seed: int  # seeds the per-line randomness and the static micro-structure


def sample_identity_details(rng: np.random.Generator) -> WrinkleIdentity:
    """Draw one identity's wrinkle parameters."""
    sus = np.clip(rng.lognormal(0.0, 0.3, N_AU), 0.5, 1.8)
    return WrinkleIdentity(
        susceptibility=tuple(float(s) for s in sus),
        forehead_spacing=float(rng.uniform(6.0, 12.0)),
        forehead_phase=float(rng.uniform(0.0, 1.0)),
        forehead_arch=float(rng.uniform(0.5, 4.0)),
        forehead_curvature=float(rng.uniform(-0.0025, 0.0015)),
        glabella_spacing=float(rng.uniform(3.0, 5.5)),
        crow_angle=float(np.deg2rad(rng.uniform(11.0, 18.0))),
        lip_spacing=float(rng.uniform(2.5, 4.5)),
        crease_width=float(rng.uniform(0.8, 1.25)),
        tilt=float(rng.normal(0.0, 0.02)),
        asymmetry=float(rng.uniform(-0.12, 0.12)),
        fold_shift=float(rng.normal(0.0, 1.5)),
        pore_scale=float(rng.uniform(0.3, 0.6)),
        pore_strength=float(rng.uniform(0.02, 0.045)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


# ----------------------------------------------------------------------------- primitives


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _crease(d, w, ridge=0.8):
    """Crease cross-section: trough -1 at d = 0, half-width ~w, shoulders +0.08·ridge/0.8."""
    q = (d / w) ** 2
    return (ridge * q - 1.0) * np.exp(-q)


def _taper(t):
    """Along-line envelope of t in [0, 1] (0 outside): smooth ends over 30 % of the length."""
    return _smoothstep(np.minimum(t, 1.0 - t) * (1.0 / 0.3))


def _antialias(w, px):
    """Crease width no finer than the texel; depth scaled to keep the crease's area."""
    waa = np.maximum(w, 0.8 * px)
    return waa, w / waa


def _lines(phi, s, spacing, phase, lines, width, px, scale=None, ridge=0.8):
    """A family of finite, tapered, slightly bent creases -> (h, w) float32.

    phi, s: (h, w) across / along coordinates (mm). Line k (0 <= k < K) lies at
    phi = (k + phase + off_k)·spacing and runs from s0_k to s1_k; lines: (K, 5) rows
    [off, s0, s1, depth, bend (mm)]. scale: optional (h, w) factor phi-distance -> mm.
    """
    cols = np.asarray(lines, np.float32).T
    q = phi * np.float32(1.0 / spacing) - np.float32(phase)
    k0 = np.floor(q)
    out = np.zeros(phi.shape, np.float32)
    for dk in (0.0, 1.0):  # the two nearest lines
        k = k0 + dk
        idx = k.astype(np.intp)
        valid = (idx >= 0) & (idx < cols.shape[1])
        idx = np.clip(idx, 0, cols.shape[1] - 1)
        off, s0, s1, depth, bend = (c[idx] for c in cols)
        t = (s - s0) / (s1 - s0)
        ramp = _taper(t) * valid
        d = (q - k - off) * np.float32(spacing)
        if scale is not None:
            d *= scale
        d -= bend * (2.0 * np.clip(t, 0.0, 1.0) - 1.0) ** 2
        waa, keep = _antialias(width * (0.5 + 0.5 * ramp), px)
        out += depth * ramp * keep * _crease(d, waa, ridge)
    return out


def _line_table(rng, n, s0, s1, depth=(0.5, 1.0), p_missing=0.12, bend=0.8, off=None):
    """(n, 5) line rows; s0/s1 are (lo, hi) ranges or arrays, off defaults to U(-0.15, 0.15)."""
    def draw(r):
        return rng.uniform(*r, n) if isinstance(r, tuple) else np.broadcast_to(r, (n,))
    off = rng.uniform(-0.15, 0.15, n) if off is None else off
    a, b = draw(s0), draw(s1)
    dep = rng.uniform(*depth, n) * (rng.random(n) > p_missing)
    return np.stack([off, a, np.maximum(b, a + 1.0), dep, rng.uniform(-bend, bend, n)], 1)


def _bezier(p0, p1, p2, n=24, t1=1.0):
    t = np.linspace(0.0, t1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _fold(X, Y, pts, width, bulge, px, ridge=0.3):
    """A crease along a polyline pts (n, 2) with a raised bulge on its right-hand side
    (the lateral side for a curve running downwards on the subject's left)."""
    best = np.full(X.shape, np.inf, np.float32)
    d = np.zeros(X.shape, np.float32)
    s = np.zeros(X.shape, np.float32)
    length = 0.0
    for a, b in zip(pts[:-1], pts[1:]):
        ab = (b - a).astype(np.float32)
        seg = float(np.hypot(*ab))
        px_, py_ = X - np.float32(a[0]), Y - np.float32(a[1])
        t = np.clip((px_ * ab[0] + py_ * ab[1]) / seg**2, 0.0, 1.0)
        dx, dy = px_ - t * ab[0], py_ - t * ab[1]
        d2 = dx * dx + dy * dy
        upd = d2 < best
        best = np.where(upd, d2, best)
        sign = np.where(ab[0] * py_ - ab[1] * px_ >= 0, 1.0, -1.0).astype(np.float32)
        d = np.where(upd, sign * np.sqrt(d2), d)
        s = np.where(upd, length + t * seg, s)
        length += seg
    ramp = _taper(s / length)
    waa, keep = _antialias(width * (0.5 + 0.5 * ramp), px)
    return ramp * keep * (_crease(d, waa, ridge) + bulge * np.exp(-(((d - 2.2 * waa) / (1.6 * waa)) ** 2)))


def _band_noise(spectrum, shape, px, sigma_mm):
    """Unit-std band-pass (DoG sigma, 2 sigma) noise from a white-noise rfft2 spectrum.

    Bands finer than the texel are clamped to it and attenuated accordingly.
    """
    sig = max(sigma_mm / px, 0.6)
    atten = min(1.0, sigma_mm / px / 0.6)
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    f2 = fy * fy + fx * fx
    h = np.exp(np.float32(-2 * np.pi**2 * sig**2) * f2) - np.exp(np.float32(-8 * np.pi**2 * sig**2) * f2)
    out = np.fft.irfft2(spectrum * h, s=shape).astype(np.float32)
    return out * np.float32(atten / (out.std() + 1e-12))


# ----------------------------------------------------------------------------- families
# Each family: f(Xm, Y, side, idn, rs, rl, px) -> unit pattern (h, w) float32. Xm is x
# mirrored to the subject's left (|x| in a one-sided box; signed x for side 0 = midline);
# rs draws what both sides share, rl what is per side.


def _forehead_phi(Xm, Y, side, idn, rs):
    x = Xm * (side if side else 1.0)
    arch = idn.forehead_arch * np.exp(-(((np.abs(x) - 34.0) / 16.0) ** 2))
    wave = rs.uniform(0.3, 1.0) * np.sin(x * (2 * np.pi / rs.uniform(60, 110)) + rs.uniform(0, 2 * np.pi))
    return Y - 21.0 - idn.forehead_curvature * x * x - arch - idn.tilt * x - wave


def _forehead_central(Xm, Y, side, idn, rs, rl, px):  # AU01
    phi = _forehead_phi(Xm, Y, side, idn, rs)
    n = 10
    off = rs.uniform(-0.15, 0.15, n)
    half = rl.uniform(14.0, 32.0, n)
    ctr = rl.normal(0.0, 5.0, n)
    tab = _line_table(rl, n, ctr - half, ctr + half, off=off)
    win = _smoothstep((Y - 22.0) / 5.0) * _smoothstep((70.0 - Y) / 12.0)
    return win * _lines(phi, Xm, idn.forehead_spacing, idn.forehead_phase, tab, 0.9 * idn.crease_width, px)


def _forehead_lateral(Xm, Y, side, idn, rs, rl, px):  # AU02, arched over the lateral brows
    phi = _forehead_phi(Xm, Y, side, idn, rs)
    n = 10
    off = rs.uniform(-0.15, 0.15, n)  # same draws as AU01: the same lines
    half = rl.uniform(8.0, 18.0, n)
    ctr = rl.normal(0.0, 4.0, n)
    tab = _line_table(rl, n, ctr - half, ctr + half, off=off)
    win = _smoothstep((Y - 23.0) / 5.0) * _smoothstep((66.0 - Y) / 10.0)
    return win * _lines(phi, Xm - 34.0, idn.forehead_spacing, idn.forehead_phase, tab, 0.85 * idn.crease_width, px)


def _glabella(Xm, Y, side, idn, rs, rl, px):  # AU04: the vertical "11" lines
    phi = Xm - 2.5 - 0.12 * (Y - 4.0)
    tab = _line_table(rl, 2, (2.0, 7.0), (17.0, 26.0), p_missing=0.0, bend=0.5)
    tab[:, 3] = [rl.uniform(0.8, 1.0), rl.uniform(0.3, 0.8) * (rl.random() < 0.6)]
    return _lines(phi, Y, idn.glabella_spacing, rs.uniform(0.1, 0.5), tab, 0.7 * idn.crease_width, px)


def _nose_root(Xm, Y, side, idn, rs, rl, px):  # AU04: horizontal line at the nasion
    phi = Y - 1.0 + 0.015 * Xm * Xm
    half = rl.uniform(6.0, 10.0, 2)
    tab = _line_table(rl, 2, -half, half, p_missing=0.0, bend=0.4)
    tab[1, 3] *= rl.random() < 0.5
    return _lines(phi, Xm, 3.0, 0.2, tab, 0.8 * idn.crease_width, px)


def _ring(Xm, Y, cx, cy, a, b):
    """Elliptic rings about (cx, cy): (phi = (rho - 1)·b in mm, angle from straight down)."""
    dx, dy = Xm - cx, Y - cy
    rho = np.sqrt((dx / a) ** 2 + (dy / b) ** 2)
    return (rho - 1.0) * b, np.arctan2(dx / a, -dy / b)


def _upper_lid_fold(Xm, Y, side, idn, rs, rl, px):  # AU05: the supratarsal fold
    phi, ang = _ring(Xm, Y, 32.0, 1.0, 17.0, 10.0)
    s = (np.pi - np.abs(ang)) * np.sign(ang) * 12.0  # 0 on top
    tab = _line_table(rl, 1, (-20.0, -14.0), (14.0, 20.0), depth=(0.8, 1.0), p_missing=0.0, bend=0.3)
    return _lines(phi, s, 2.0, -0.5, tab, 0.7 * idn.crease_width, px)


def _lid_creases(Xm, Y, side, idn, rs, rl, px):  # AU45: fine creases of the closed upper lid
    phi, ang = _ring(Xm, Y, 32.0, -0.5, 16.0, 8.0)
    s = (np.pi - np.abs(ang)) * np.sign(ang) * 10.0
    ctr = rl.normal(0.0, 3.0, 4)
    half = rl.uniform(5.0, 12.0, 4)
    tab = _line_table(rl, 4, ctr - half, ctr + half, bend=0.3)
    tab[:, 3] *= [1.0, 0.8, 0.6, 0.4]
    return _lines(phi, s, 1.3, 0.3, tab, 0.35 * idn.crease_width, px)


def _crows_feet(Xm, Y, side, idn, rs, rl, px):  # AU06 (and AU12): a fan at the outer canthus
    dx, dy = Xm - 46.0, Y - 0.5
    r = np.sqrt(dx * dx + dy * dy)
    theta = np.arctan2(dy, dx) + 0.012 * np.maximum(r - 6.0, 0.0) * np.minimum(dy, 0.0)  # lower lines droop
    n = int(1.5 / idn.crow_angle) + 1
    ang = (np.arange(n) + 0.5) * idn.crow_angle - 0.85
    s0 = rl.uniform(4.0, 9.0, n)
    tab = _line_table(rl, n, s0, s0 + rl.uniform(7.0, 16.0, n) * np.cos(ang * 0.8), bend=1.0)
    tab[:, 3] *= np.cos(ang * 0.9) ** 2
    return _lines((theta + 0.85) * 10.0, r, idn.crow_angle * 10.0, rs.uniform(0, 0.5), tab,
                  0.6 * idn.crease_width, px, scale=r * 0.1)


def _cheek_folds(Xm, Y, side, idn, rs, rl, px):  # AU06: lower-lid / cheek furrows
    phi, ang = _ring(Xm, Y, 31.0, 3.0, 24.0, 13.0)
    ctr = rl.normal(1.0, 2.0, 2)
    half = rl.uniform(10.0, 15.0, 2)
    tab = _line_table(rl, 2, ctr - half, ctr + half, depth=(0.6, 1.0), p_missing=0.0)
    tab[1, 3] *= 0.6
    return _lines(phi, ang * 15.0, rl.uniform(3.5, 5.0), 0.0, tab, 1.1 * idn.crease_width, px)


def _lower_lid_lines(Xm, Y, side, idn, rs, rl, px):  # AU07
    phi, ang = _ring(Xm, Y, 32.0, 0.5, 17.0, 8.0)
    ctr = rl.normal(0.0, 2.5, 3)
    half = rl.uniform(6.0, 12.0, 3)
    tab = _line_table(rl, 3, ctr - half, ctr + half, bend=0.3)
    return _lines(phi, ang * 12.0, rl.uniform(1.2, 1.8), 0.2, tab, 0.35 * idn.crease_width, px)


def _bunny_lines(Xm, Y, side, idn, rs, rl, px):  # AU09: chevrons over the nasal bridge
    slope = float(np.tan(np.deg2rad(rs.uniform(28.0, 42.0))))
    phi = (Y + 22.0 + slope * (np.sqrt(Xm * Xm + 9.0) - 3.0)) * float(np.cos(np.arctan(slope)))
    spacing = rs.uniform(2.5, 3.8)
    phase = rs.uniform(0.0, 1.0)
    n = 8
    y_mid = (np.arange(n) + phase) * spacing  # phi of each line at the midline
    s0 = -rs.uniform(0.0, 3.0, n)  # shared so the chevrons meet on the midline
    tab = _line_table(rl, n, s0, (7.0, 14.0), bend=0.4)
    tab[:, 3] *= _smoothstep((y_mid - 4.0) / 2.5) * _smoothstep((15.0 - y_mid) / 2.5)
    side_wall = 0.35 + 0.65 * _smoothstep((Xm - 1.0) / 5.0)  # fainter across the dorsum
    return side_wall * _lines(phi, Xm, spacing, phase, tab, 0.5 * idn.crease_width, px)


def _nasolabial_curve(idn, rl, t1):
    j = rl.normal(0.0, 0.7, 3)
    sh = idn.fold_shift
    return _bezier((16.5 + j[0], -40.0), (30.0 + sh + j[1], -50.0), (32.0 + sh + j[2], -73.0), t1=t1)


def _nasolabial_upper(Xm, Y, side, idn, rs, rl, px):  # AU10
    return _fold(Xm, Y, _nasolabial_curve(idn, rl, 0.6), 1.0 * idn.crease_width, 0.35, px)


def _nasolabial(Xm, Y, side, idn, rs, rl, px):  # AU12
    return _fold(Xm, Y, _nasolabial_curve(idn, rl, 1.05), 1.3 * idn.crease_width, 0.45, px)


def _dimple(Xm, Y, side, idn, rs, rl, px):  # AU14: comma crease and dimple at the corner
    j = [float(v) for v in rl.normal(0.0, 0.6, 4)]
    pts = _bezier((27.5 + j[0], -55.0), (31.5 + j[1], -62.0), (28.0 + j[2], -69.0), n=12)
    pit = np.exp(-((Xm - 30.5 - j[3]) ** 2 + (Y + 64.0) ** 2) / 2.2**2)
    return 0.8 * _fold(Xm, Y, pts, 0.8 * idn.crease_width, 0.2, px) - 0.6 * pit


def _marionette(Xm, Y, side, idn, rs, rl, px):  # AU15
    j = rl.normal(0.0, 0.8, 2)
    pts = _bezier((25.5, -66.0), (28.5 + j[0], -77.0), (28.0 + j[1], -91.0))
    return _fold(Xm, Y, pts, 1.2 * idn.crease_width, 0.4, px)


def _chin(Xm, Y, side, idn, rs, rl, px):  # AU17: mentolabial crease and peau d'orange
    phi = Y + 74.0 - 0.016 * Xm * Xm
    half = rl.uniform(11.0, 15.0, 1)
    tab = _line_table(rl, 1, -half, half, depth=(0.6, 0.8), p_missing=0.0, bend=0.6)
    crease = _lines(phi, Xm, 4.0, -0.5, tab, 1.4 * idn.crease_width, px)
    n = 48  # peau d'orange: round dimples scattered over the chin pad
    cx, cy = rl.uniform(-1.0, 1.0, n), rl.uniform(-1.0, 1.0, n)
    keep = cx**2 + cy**2 < 1.0
    dimples = np.zeros(Xm.shape, np.float32)
    pits = zip(15.0 * cx[keep], -87.0 + 9.0 * cy[keep], rl.uniform(0.8, 1.6, n), rl.uniform(0.3, 1.0, n))
    for x0, y0, r, dep in pits:  # (centre, radius, depth)
        dimples -= float(dep) * np.exp(-((Xm - float(x0)) ** 2 + (Y - float(y0)) ** 2) / float(r * r))
    return crease + 0.4 * dimples


def _stretch_lines(Xm, Y, side, idn, rs, rl, px):  # AU20: arcs lateral to the mouth corner
    dx, dy = Xm - 25.5, Y + 62.0
    r = np.sqrt(dx * dx + dy * dy)
    ctr = rl.normal(0.0, 1.0, 4)
    half = rl.uniform(3.0, 6.0, 4)
    tab = _line_table(rl, 4, ctr - half, ctr + half, bend=0.4)
    theta = np.arctan2(dy, dx)  # 0 = lateral; keep the arcs off the lips
    win = _smoothstep((1.3 - np.abs(theta)) / 0.4)
    return win * _lines(r, theta * r, rl.uniform(2.6, 3.6), 1.0, tab, 0.45 * idn.crease_width, px)


def _lip_lines(Xm, Y, side, idn, rs, rl, px):  # AU23: vertical lines above the upper lip
    dx, dy = Xm, Y + 92.0
    r = np.sqrt(dx * dx + dy * dy)
    n = int(1.3 * 36.0 / idn.lip_spacing) + 1
    tab = _line_table(rl, n, (-2.0, -0.5), (2.5, 7.5), depth=(0.4, 1.0), p_missing=0.2, bend=0.3)
    s = Y + 54.5 + 0.014 * Xm * Xm  # height above the vermilion border
    win = _smoothstep((18.0 - np.abs(Xm)) / 4.0)
    return win * _lines((np.arctan2(dx, dy) + 0.65) * 36.0, s, idn.lip_spacing, rl.uniform(0, 1), tab,
                        0.3 * idn.crease_width, px, scale=r / 36.0)


# (AU, family, box (x0, x1, y0, y1) in mm on the subject's left or across the midline,
#  bilateral, weight). Bilateral boxes are mirrored to the right with their own draws.
COMPONENTS = (
    ("AU01", _forehead_central, (-42.0, 42.0, 20.0, 72.0), False, 1.0),
    ("AU02", _forehead_lateral, (12.0, 62.0, 20.0, 70.0), True, 1.0),
    ("AU04", _glabella, (0.0, 14.0, -2.0, 32.0), True, 1.0),
    ("AU04", _nose_root, (-12.0, 12.0, -6.0, 8.0), False, 0.7),
    ("AU05", _upper_lid_fold, (12.0, 52.0, -3.0, 17.0), True, 1.0),
    ("AU06", _crows_feet, (44.0, 70.0, -20.0, 18.0), True, 1.0),
    ("AU06", _cheek_folds, (10.0, 56.0, -28.0, -6.0), True, 0.8),
    ("AU07", _lower_lid_lines, (12.0, 52.0, -16.0, 2.0), True, 1.0),
    ("AU09", _bunny_lines, (0.0, 18.0, -24.0, 6.0), True, 1.0),
    ("AU10", _nasolabial_upper, (8.0, 38.0, -64.0, -32.0), True, 1.0),
    ("AU12", _nasolabial, (8.0, 44.0, -82.0, -32.0), True, 1.0),
    ("AU12", _crows_feet, (44.0, 70.0, -20.0, 18.0), True, 0.45),
    ("AU14", _dimple, (18.0, 40.0, -74.0, -50.0), True, 1.0),
    ("AU15", _marionette, (14.0, 42.0, -96.0, -60.0), True, 1.0),
    ("AU17", _chin, (-26.0, 26.0, -100.0, -70.0), False, 1.0),
    ("AU20", _stretch_lines, (24.0, 50.0, -78.0, -46.0), True, 1.0),
    ("AU23", _lip_lines, (-22.0, 22.0, -60.0, -44.0), False, 1.0),
    ("AU45", _lid_creases, (12.0, 52.0, -3.0, 17.0), True, 1.0),
)


def _side_boxes(box, bilateral):
    x0, x1, y0, y1 = box
    return [(1, box), (-1, (-x1, -x0, y0, y1))] if bilateral else [(0, box)]


AU_REGIONS: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    au: tuple(dict.fromkeys(b for a, _, box, bil, _ in COMPONENTS if a == au for _, b in _side_boxes(box, bil)))
    for au in AU_NAMES
}
"""Per AU the boxes (x0, x1, y0, y1) in frontal mm holding its wrinkles; AU25, AU26: none."""
WRINKLE_AUS = tuple(au for au in AU_NAMES if AU_REGIONS[au])


def box_crop(box, size):
    """Row/column slices of the texels whose centres lie in box, and their x (w,) / y (h,) in mm."""
    x0, x1, y0, y1 = box
    f = size / SPAN
    c0 = max(int(np.ceil((x0 - X_MIN) * f - 0.5)), 0)
    c1 = min(int(np.floor((x1 - X_MIN) * f - 0.5)) + 1, size)
    r0 = max(int(np.ceil((Y_MAX - y1) * f - 0.5)), 0)
    r1 = min(int(np.floor((Y_MAX - y0) * f - 0.5)) + 1, size)
    xs = (X_MIN + (np.arange(c0, c1) + 0.5) / f).astype(np.float32)
    ys = (Y_MAX - (np.arange(r0, r1) + 0.5) / f).astype(np.float32)
    return slice(r0, r1), slice(c0, c1), xs, ys


def au_region_mask(au: str, size: int) -> np.ndarray:
    """Boolean (size, size) UV mask of AU_REGIONS[au] (all False for AUs without wrinkles)."""
    m = np.zeros((size, size), bool)
    for box in AU_REGIONS[au]:
        rs, cs, _, _ = box_crop(box, size)
        m[rs, cs] = True
    return m


def skin_mask(size: int) -> np.ndarray:
    """Soft (size, size) float32 mask: 1 on the skin, fading to exactly 0 within 1-6 mm of the
    face outline, 0 inside the eye openings and the mouth gap."""
    _, _, xs, ys = box_crop((X_MIN, X_MIN + SPAN, Y_MAX - SPAN, Y_MAX), size)
    hw = face_half_width(ys).astype(np.float32)
    m = _smoothstep((hw[:, None] - np.abs(xs)[None, :] - 1.0) / 5.0)
    for box, (cx, cy, a, b, fade) in (((14.0, 50.0, -8.0, 8.0), (32.0, 0.0, 14.0, 6.0, 0.15)),
                                       ((-25.0, 25.0, -65.0, -59.0), (0.0, -62.0, 23.0, 1.8, 0.4))):
        for _, bx in _side_boxes(box, cx != 0.0):
            rs, cs, x, y = box_crop(bx, size)
            rho = np.sqrt(((np.abs(x)[None, :] - cx) / a) ** 2 + ((y[:, None] - cy) / b) ** 2)
            m[rs, cs] *= _smoothstep((rho - 1.0) / fade)
    return m


def _box_fade(xs, ys, box, fade=2.5):
    """Separable window (h, w) fading to 0 at the box edges (not at an edge on the midline)."""
    x0, x1, y0, y1 = box
    fx = (_smoothstep((xs - x0) / fade) if x0 != 0 else 1.0) * (_smoothstep((x1 - xs) / fade) if x1 != 0 else 1.0)
    fy = _smoothstep((ys - y0) / fade) * _smoothstep((y1 - ys) / fade)
    return (fy[:, None] * np.asarray(fx, np.float32)[None, :]).astype(np.float32)


def _micro_structure(idn: WrinkleIdentity, size: int) -> np.ndarray:
    """Static pores + fine relief (size, size) float32 mm, stronger on the nose and cheeks."""
    rng = np.random.default_rng([idn.seed, 0])
    px = SPAN / size
    spec = np.fft.rfft2(rng.standard_normal((size, size), dtype=np.float32))
    fine = _band_noise(spec, (size, size), px, idn.pore_scale / 2.0)
    coarse = _band_noise(spec, (size, size), px, 1.0)
    _, _, xs, ys = box_crop((X_MIN, X_MIN + SPAN, Y_MAX - SPAN, Y_MAX), size)
    g = lambda v, c, s: np.exp(-(((v - c) / s) ** 2)).astype(np.float32)  # noqa: E731
    dens = 0.6 + 0.9 * np.outer(g(ys, -28.0, 14.0), g(xs, 0.0, 11.0)) \
        + 0.7 * np.outer(g(ys, -26.0, 14.0), g(np.abs(xs), 38.0, 15.0))
    micro = -np.maximum(fine - 1.0, 0.0) + 0.3 * fine + 0.15 * coarse
    return (np.float32(idn.pore_strength) * dens * micro).astype(np.float32)


class WrinkleBank:
    """One identity's precomputed detail-map ingredients at one UV size.

    micro: (size, size) float32 mm, the static micro-structure (masked).
    layers: list of (au index, row slice, column slice, unit pattern (h, w) float32).
    """

    def __init__(self, identity: WrinkleIdentity, size: int = 1024):
        self.identity, self.size = identity, size
        px = SPAN / size
        self.mask = skin_mask(size)
        self.micro = _micro_structure(identity, size) * self.mask
        self.layers: list[tuple[int, slice, slice, np.ndarray]] = []
        cache: dict = {}
        for au, fam, box, bilateral, weight in COMPONENTS:
            for side, bx in _side_boxes(box, bilateral):
                rs, cs, xs, ys = box_crop(bx, size)
                key = (fam.__name__, side)
                if key not in cache:
                    X, Y = np.meshgrid(xs * (side if side else 1.0), ys)
                    fid = zlib.crc32(fam.__name__.encode())
                    r_shared = np.random.default_rng([identity.seed, fid, 0])
                    r_side = np.random.default_rng([identity.seed, fid, 1 + (side < 0)])
                    pat = fam(X, Y, side, identity, r_shared, r_side, px).astype(np.float32)
                    cache[key] = pat * _box_fade(X[0], ys, box) * self.mask[rs, cs]
                gain = weight * (1.0 + side * identity.asymmetry)
                self.layers.append((AU_INDEX[au], rs, cs, (cache[key] * np.float32(gain))))
        self.susceptibility = np.asarray(identity.susceptibility, np.float32)

    def weights(self, aus: np.ndarray, age: float) -> np.ndarray:
        """(17,) mm per unit pattern: permanent age wrinkles + expression depth."""
        expr = BASE_MM * self.susceptibility * np.float32(age_depth(age)) * au_gain(aus)
        return (STATIC_MM * np.float32(age_static(age)) + expr).astype(np.float32)

    def detail_map(self, aus: np.ndarray, age: float, out: np.ndarray | None = None) -> np.ndarray:
        """Detail map (size, size) float32 mm for AU intensities aus (17,) in 0..5 at age (years)."""
        w = self.weights(np.asarray(aus, np.float32).reshape(N_AU), age)
        if out is None:
            out = self.micro.copy()
        else:
            np.copyto(out, self.micro)
        for a, rs, cs, pat in self.layers:
            if w[a] != 0.0:
                out[rs, cs] += w[a] * pat
        return out

    def static_map(self, age: float) -> np.ndarray:
        """The expression-independent part (size, size) float32 mm: micro-structure + age wrinkles."""
        return self.detail_map(np.zeros(N_AU, np.float32), age)

    def au_pattern(self, au: str | int) -> np.ndarray:
        """The unit pattern (size, size) float32 of one AU (all its layers, both sides)."""
        a = AU_INDEX[au] if isinstance(au, str) else int(au)
        out = np.zeros((self.size, self.size), np.float32)
        for b, rs, cs, pat in self.layers:
            if b == a:
                out[rs, cs] += pat
        return out


def detail_map(identity: WrinkleIdentity, aus: np.ndarray, age: float, size: int = 256) -> np.ndarray:
    """One-off detail map (size, size) float32 mm; build a WrinkleBank for many expressions."""
    return WrinkleBank(identity, size).detail_map(aus, age)
