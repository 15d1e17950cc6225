"""The project's own face template: a smooth analytic height field z(x, y) over the face outline.

The template is a regular grid in the frontal plane (``layout``'s millimetres), clipped to
``layout.face_half_width`` (border vertices snapped onto the outline) and lifted to 3D by
:func:`height`, a sum of smooth analytic
anatomical terms (head curvature, forehead, brow ridges, eye sockets, eyeballs and lids,
nose, cheeks, lips, chin). Because every vertex keeps the (x, y) of its grid node, the frontal
projection is injective and ``uvs = layout.xy_to_uv(vertices[:, :2])`` never overlaps.

Resolution: ``resolution`` is the number of grid cells across the 200 mm UV square, i.e. the
grid step is ``200 / resolution`` mm. The face covers ~56 % of the square, so
``V ≈ 0.564 · resolution²`` and ``F ≈ 2 V``:

=========== ======== ========= =========
resolution  step mm  vertices  triangles
=========== ======== ========= =========
48          4.17     1 294     2 470
64          3.13     2 299     4 442
128         1.56     9 254     18 194
200         1.00     22 589    44 688
256 (def.)  0.78     36 940    73 252
512         0.39     147 897   294 538
=========== ======== ========= =========

Everything is vectorised numpy; building the default template takes ~0.15 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from facedet3d.face.bumps import gauss as _g, gauss2 as _g2, gauss_pair as _pair  # noqa: F401
from facedet3d.face.bumps import sigmoid as _sig, smoothstep as _smoothstep  # noqa: F401

from . import layout as L

DEFAULT_RESOLUTION = 256

# Eyeball: a sphere behind the corneal apex plus a corneal cap; the corneal apex is z = 0.
EYEBALL_RADIUS = 11.5
EYEBALL_CENTER_Z = -12.5
CORNEA_RADIUS = 7.8
IRIS_RADIUS = 5.8
PUPIL_RADIUS = 1.9
LID_THICKNESS = 1.3


@dataclass
class Template:
    """A face mesh in the frontal frame (mm). All arrays are numpy."""

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int64, counter-clockwise seen from +z
    uvs: np.ndarray  # (V, 2) float32, layout.xy_to_uv of the neutral (x, y)
    landmarks: np.ndarray  # (68,) int64 vertex indices
    grid_ij: np.ndarray  # (V, 2) int64 (row, column) of each vertex's grid node (border ones moved)
    resolution: int

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


# ----------------------------------------------------------------------------- helpers











def _softplus(u, k):
    """Smooth max(u, 0) with softness k (mm)."""
    return k * np.logaddexp(0.0, u / k)


def _relu(u):
    return np.maximum(u, 0.0)


# ----------------------------------------------------------------------------- anatomy curves

def head_half_width(y: np.ndarray) -> np.ndarray:
    """Half-width (mm) of the head's lateral fall-off at height y: just outside the face outline
    below the temples (so the surface turns steeply back at the outline), wider than the
    forehead's rounded outline above (the hairline is not the head's silhouette)."""
    y = np.asarray(y, dtype=np.float64)
    s = np.clip((y - 30.0) / (L.FACE_TOP_Y - 30.0), 0.0, 1.0)
    upper = L.FACE_HALF_WIDTH + 5.0 - 16.0 * s**2
    lower = L.face_half_width(np.maximum(y, L.FACE_BOTTOM_Y)) + 5.0
    return np.where(y > 30.0, upper, lower)


def eye_lid_curves(x: np.ndarray):
    """Upper and lower lid margins (y in mm) of the almond eye opening at frontal x (both eyes),
    and the normalised horizontal coordinate s across the opening (|s| <= 1 inside it; outside
    the corners both curves are at the corners' height)."""
    ex, ey = L.EYE_CENTER
    s = (np.abs(x) - ex) / L.EYE_HALF_WIDTH
    q = np.clip(1.0 - s * s, 0.0, None)
    # The corners are at y = ey (layout landmarks); the lids pass through (±0.35 w, ±h).
    up = ey + (L.EYE_HALF_HEIGHT / 0.8775**0.8) * q**0.8
    lo = ey - (L.EYE_HALF_HEIGHT / 0.8775**0.9) * q**0.9
    return up, lo, s


def eye_opening_sdf(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm) to the almond eye opening: < 0 inside, > 0 outside."""
    up, lo, s = eye_lid_curves(x)
    ey = L.EYE_CENTER[1]
    dv = np.maximum(y - up, lo - y)
    dh = (np.abs(s) - 1.0) * L.EYE_HALF_WIDTH
    d = np.maximum(dv, dh)
    # Outside the horizontal extent measure the distance to the corner.
    corner = np.hypot(np.maximum(dh, 0.0), y - ey)
    return np.where(dh > 0.0, np.maximum(corner, d), d)


def mouth_curves(x: np.ndarray):
    """Mouth line, top of the upper lip's vermilion and bottom of the lower lip (y in mm)."""
    mx, my = L.MOUTH_CENTER
    s = np.clip(np.abs(x - mx) / L.MOUTH_HALF_WIDTH, 0.0, 1.0)
    q = 1.0 - s * s
    line = my + 0.6 * q  # the mouth line sags very slightly at the corners
    top = my + (L.UPPER_LIP_TOP_Y - my + 0.4) * q**0.7 - 1.0 * _g(x / 2.2)  # Cupid's bow
    bottom = my - (my - L.LOWER_LIP_BOTTOM_Y) * q**0.8
    return line, top, bottom


def eyeball_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """z of the eyeball surface (sclera sphere + corneal cap), extended smoothly outside the sphere."""
    ex, ey = L.EYE_CENTER
    d2 = (np.abs(x) - ex) ** 2 + (y - ey) ** 2
    r2 = EYEBALL_RADIUS**2
    # Sphere, continued beyond its silhouette by a steep parabola so the function stays finite.
    inside = np.sqrt(np.clip(r2 - d2, 1e-6, None))
    ball = EYEBALL_CENTER_Z + np.where(d2 < 0.8 * r2, inside, np.sqrt(0.2 * r2) - (d2 - 0.8 * r2) / (2 * np.sqrt(0.2 * r2)))
    cornea = -CORNEA_RADIUS + np.sqrt(np.clip(CORNEA_RADIUS**2 - d2, 0.0, None))
    cornea = np.where(d2 < CORNEA_RADIUS**2, cornea, -1e3)
    return ball + _softplus(cornea - ball, 0.15)


# ----------------------------------------------------------------------------- the height field

def height_terms(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The named anatomical terms of the template's height field (mm). Their sum is the skin;
    :func:`height` adds the lids resting on the eyeballs and the eyeballs in the openings."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ax = np.abs(x)
    t: dict[str, np.ndarray] = {}

    # Head: an egg-shaped cap. Midline profile: forehead curving back, under-chin falling back.
    t["midline"] = 4.0 - 24.0 * _relu((y - 22.0) / 66.0) ** 2 - 26.0 * _relu((-90.0 - y) / 12.0) ** 2
    W = head_half_width(y)
    r = np.clip(ax / W, 0.0, 0.999)
    p = 2.4
    t["head"] = -0.9 * W * (1.0 - (1.0 - r**p) ** (1.0 / p))

    # Forehead: slight frontal bossing, temples hollow.
    t["forehead"] = 2.0 * _pair(x, y, 24.0, 48.0, 16.0, 16.0) - 3.5 * _pair(x, y, 64.0, 22.0, 8.0, 14.0)

    # Brow ridge: strongest medially (glabella), arching over the eyes, fading at the tails.
    xb = (x / 28.0) ** 2
    brow_c = L.BROW_Y + 0.5 + 2.5 * xb * np.exp(1.0 - xb)  # arched, highest above the pupils
    t["brow"] = 8.0 * _g((y - brow_c) / 5.5) * _sig((58.0 - ax) / 4.0) * (1.0 - 0.15 * _g2(ax, y, 0, 15, 6, 6))

    # Eye sockets: the soft tissue sinks around the eyeball (orbit), steeper towards the rims.
    ex, ey = L.EYE_CENTER
    sy = np.where(y > ey + 1.0, 9.5, 11.0)
    t["socket"] = 0.0
    for side in (-1.0, 1.0):
        q2 = ((x - side * ex) / 17.0) ** 2 + ((y - ey - 1.0) / sy) ** 2
        t["socket"] = t["socket"] - 13.0 * np.exp(-0.5 * q2**1.4)
    t["lid_crease"] = -1.0 * _g((y - (eye_lid_curves(x)[0] + 5.0)) / 1.3) * _g((ax - ex - 2.0) / 9.0)

    # Cheeks: malar prominence (cheekbones) and fuller lower cheeks; nasolabial fold.
    t["cheekbone"] = 6.0 * _pair(x, y, 40.0, -20.0, 15.0, 11.0)
    t["cheek"] = 3.0 * _pair(x, y, 33.0, -44.0, 14.0, 14.0)
    # Distance to the nasolabial segment from the ala to beside the mouth corner.
    a = np.array([18.0, -44.0])
    b = np.array([31.0, -68.0])
    ab = b - a
    h = np.clip(((ax - a[0]) * ab[0] + (y - a[1]) * ab[1]) / (ab @ ab), 0.0, 1.0)
    dseg = np.hypot(ax - a[0] - h * ab[0], y - a[1] - h * ab[1])
    t["nasolabial"] = -1.4 * _g(dseg / 2.2) * (0.4 + 0.6 * np.sin(np.pi * h))

    # Nose: dorsum (bridge), lobule (tip), underside to the subnasale, alae, nostrils.
    tip_y = L.NOSE_TIP[1]
    base_y = L.NOSE_BASE_Y
    td = np.clip((8.0 - y) / (8.0 - tip_y), 0.0, 1.0)  # 0 at the nasion, 1 at the tip
    dorsum_h = 5.5 + 12.5 * td**1.15 + 1.2 * np.sin(np.pi * td) * _g((td - 0.45) / 0.2)
    under = np.clip((tip_y - y) / (tip_y - base_y + 1.5), 0.0, 1.0)  # 0 at tip, 1 below subnasale
    dorsum_h = dorsum_h * (1.0 - under**1.7)
    above = _sig((y - 16.0) / -3.0)  # the dorsum starts under the glabella
    half_w = 4.5 + 3.5 * td**1.5
    u = np.clip(ax / (2.2 * half_w), 0.0, 1.0)
    section = (0.5 * (1.0 + np.cos(np.pi * u))) ** 1.3
    t["nose_dorsum"] = dorsum_h * section * above
    t["nose_tip"] = 4.5 * _g2(x, y, 0.0, tip_y + 1.0, 6.0, 5.0) * (1.0 - under**2)
    t["nose_alae"] = 5.0 * _pair(x, y, L.NOSTRIL_X - 2.5, base_y + 4.0, 4.0, 4.0)
    # Alar-facial groove: a crease hugging the ala on its lateral and upper side.
    ra = np.hypot((ax - (L.NOSTRIL_X - 2.5)) / 1.0, (y - base_y - 4.5) / 1.1)
    t["alar_groove"] = -1.4 * _g((ra - 5.5) / 1.0) * _sig((ax - L.NOSTRIL_X + 4.0) / 1.5)
    t["nostrils"] = -2.5 * _pair(x, y, 6.5, base_y + 3.0, 2.6, 1.6)
    t["subnasal"] = -1.0 * _g((y - base_y + 0.5) / 1.4) * _g(ax / 10.0)

    # Mouth: the teeth arch pushes the perioral region forward; philtrum; lips; mouth line.
    mx, my = L.MOUTH_CENTER
    t["perioral"] = 10.0 * _g2(x, y, mx, my + 3.0, 22.0, 13.0) + 2.5 * _g2(x, y, mx, base_y - 4.0, 13.0, 4.5)
    philtrum_col = _g((y - (base_y - 4.5)) / 2.8)
    t["philtrum"] = (0.5 * (_g((x - 5.0) / 1.5) + _g((x + 5.0) / 1.5)) - 0.4 * _g(x / 2.0)) * philtrum_col
    line, top, bottom = mouth_curves(x)
    s = np.clip(ax / L.MOUTH_HALF_WIDTH, 0.0, 1.5)
    taper = np.clip(1.0 - s * s, 0.0, None) ** 1.2
    hu = np.maximum(top - line, 0.5)
    hl = np.maximum(line - bottom, 0.5)
    t["upper_lip"] = 3.5 * taper * _g((y - (line + 0.5 * hu)) / (0.3 * hu + 0.4))
    t["lower_lip"] = 4.0 * taper * _g((y - (line - 0.55 * hl)) / (0.3 * hl + 0.4))
    t["vermilion_border"] = 0.4 * _g((y - top) / 0.7) * taper
    t["mouth_line"] = -2.5 * _g((y - line) / 0.7) * np.clip(1.0 - (ax / (L.MOUTH_HALF_WIDTH + 2.0)) ** 2, 0.0, None) ** 0.7
    t["commissure"] = -1.5 * _g2(ax, y, L.MOUTH_HALF_WIDTH + 1.5, my, 2.5, 3.0)
    t["labiomental"] = -2.0 * _g2(x, y, 0.0, L.LOWER_LIP_BOTTOM_Y - 6.0, 13.0, 3.5)

    # Chin and jaw.
    t["chin"] = 6.5 * _g2(x, y, 0.0, L.CHIN[1] + 2.0, 13.0, 8.5)
    t["jaw"] = 2.0 * _g2(ax, y, 50.0, -72.0, 10.0, 14.0)
    return t


def height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Template height z(x, y) (mm): the skin terms, the lids wrapped over the eyeball, and
    the eyeball itself exposed inside the almond eye opening."""
    t = height_terms(x, y)
    skin = sum(t.values())
    ball = eyeball_height(x, y)
    sdf = eye_opening_sdf(x, y)
    # Lids: the skin rests on the eyeball with a lid's thickness near the opening.
    lid_zone = _smoothstep(9.0, 3.0, sdf)
    lid = ball + LID_THICKNESS + 0.5 * _g((sdf - 1.2) / 1.0)  # lid margin: a slight ridge
    skin = skin + lid_zone * _softplus(lid - skin, 0.8)
    # Inside the opening the eyeball shows; the margin is a small step back onto the ball.
    inside = _sig(-(sdf + 0.15) / 0.22)
    return skin * (1.0 - inside) + ball * inside


# ----------------------------------------------------------------------------- mesh

def _grid_faces(res: int, inside: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Triangulate the grid cells lying inside the outline. Full cells are split along the same
    diagonal everywhere (a mirrored pattern would leave a visible seam where stretched
    triangles meet on the midline); a cell with one corner outside keeps the triangle of its
    three inside corners, so the covered region (and its border) is left-right symmetric.
    Counter-clockwise seen from +z."""
    n = res + 1
    r, c = np.meshgrid(np.arange(res), np.arange(res), indexing="ij")
    # Grid rows go down the face (y decreasing), columns go right (x increasing).
    tl = (r * n + c).reshape(-1)
    tr, bl = tl + 1, tl + n
    br = bl + 1
    ins = inside.reshape(-1)
    i_tl, i_tr, i_bl, i_br = ins[tl], ins[tr], ins[bl], ins[br]
    full = i_tl & i_tr & i_bl & i_br
    count = i_tl.astype(int) + i_tr + i_bl + i_br
    three = count == 3
    # With y up and rows going down, (tl, bl, br) is counter-clockwise seen from +z.
    tris = [np.stack([tl, bl, br], -1)[full], np.stack([tl, br, tr], -1)[full]]
    for missing, tri in ((~i_tl, (bl, br, tr)), (~i_tr, (tl, bl, br)), (~i_bl, (tl, br, tr)), (~i_br, (tl, bl, tr))):
        tris.append(np.stack(tri, -1)[three & missing])
    return index[np.concatenate(tris, 0)]


def outline_polygon(num: int = 2048) -> np.ndarray:
    """The face outline as a closed polygon (num, 2), sampled by angle around the face centre,
    every point a hair (1e-4 mm) inside the outline."""
    theta = np.linspace(0.0, 2.0 * np.pi, num, endpoint=False)
    d = np.stack([np.sin(theta), np.cos(theta)], -1)
    c = np.array([0.0, L.FACE_CENTER_Y])
    lo, hi = np.zeros(num), np.full(num, 150.0)
    for _ in range(40):  # bisection on the (star-shaped) outline's radius
        mid = 0.5 * (lo + hi)
        ok = L.face_mask_xy(c + d * mid[:, None])
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return c + d * np.maximum(lo - 1e-4, 0.0)[:, None]


def _snap_border(x: np.ndarray, y: np.ndarray, faces: np.ndarray, step: float, mirror: np.ndarray):
    """Move the mesh's border vertices onto the face outline (nearest outline point, at most
    1.5 grid steps away) so the border follows the outline instead of the grid's staircase.
    A move is undone where it would make an incident triangle flip or nearly degenerate — and
    then for the vertex's mirror image too (``mirror``: index of the x-mirrored vertex or -1),
    so the vertices stay left-right symmetric."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    key = e[:, 0] * (len(x) + 1) + e[:, 1]
    uniq, counts = np.unique(key, return_counts=True)
    border_edges = uniq[counts == 1]
    border = np.unique(np.concatenate([border_edges // (len(x) + 1), border_edges % (len(x) + 1)]))
    poly = outline_polygon(max(1024, 16 * int(L.SPAN / step)))
    d2 = (x[border, None] - poly[None, :, 0]) ** 2 + (y[border, None] - poly[None, :, 1]) ** 2
    j = d2.argmin(1)
    movable = d2[np.arange(len(border)), j] < (1.5 * step) ** 2
    nx, ny = x.copy(), y.copy()
    nx[border[movable]], ny[border[movable]] = poly[j[movable], 0], poly[j[movable], 1]
    min_area = 0.1 * 0.5 * step * step
    for _ in range(10):
        a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
        area = 0.5 * ((nx[b] - nx[a]) * (ny[c] - ny[a]) - (ny[b] - ny[a]) * (nx[c] - nx[a]))
        bad = np.unique(faces[area < min_area])
        moved = bad[(nx[bad] != x[bad]) | (ny[bad] != y[bad])]
        if len(moved) == 0:
            break
        partners = mirror[moved]
        moved = np.concatenate([moved, partners[partners >= 0]])
        nx[moved], ny[moved] = x[moved], y[moved]
    return nx, ny


def build_template(resolution: int = DEFAULT_RESOLUTION) -> Template:
    """Build the face template on a grid of ``resolution`` cells across the UV square.

    ``resolution`` must be even (so x = 0 is a grid line and the vertices are left-right
    symmetric) and >= 16.
    """
    res = int(resolution)
    if res < 16 or res % 2:
        raise ValueError(f"resolution must be an even integer >= 16, got {resolution!r}")
    n = res + 1
    step = L.SPAN / res
    xs = L.X_MIN + step * np.arange(n)
    ys = L.Y_MAX - step * np.arange(n)
    X, Y = np.meshgrid(xs, ys, indexing="xy")  # (row, col): row = y going down
    inside = L.face_mask_xy(np.stack([X, Y], -1))
    # Number only the vertices used by a kept triangle.
    index_all = np.full(n * n, -1, dtype=np.int64)
    flat_inside = inside.reshape(-1)
    index_all[flat_inside] = np.arange(int(flat_inside.sum()))
    faces = _grid_faces(res, inside, index_all)
    used = np.zeros(int(flat_inside.sum()), dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    faces = remap[faces].astype(np.int64)
    sel = np.flatnonzero(flat_inside)[used]
    rows, cols = sel // n, sel % n
    lookup = np.full(n * n, -1, dtype=np.int64)
    lookup[sel] = np.arange(len(sel))
    mirror = lookup[rows * n + (res - cols)]
    x, y = _snap_border(X.reshape(-1)[sel], Y.reshape(-1)[sel], faces, step, mirror)
    z = height(x, y)
    vertices = np.stack([x, y, z], -1).astype(np.float32)
    uvs = L.xy_to_uv(vertices[:, :2].astype(np.float64)).astype(np.float32)
    grid_ij = np.stack([rows, cols], -1).astype(np.int64)
    landmarks = nearest_vertices(vertices[:, :2], L.landmarks_68_xy())
    return Template(vertices=vertices, faces=faces, uvs=uvs, landmarks=landmarks, grid_ij=grid_ij, resolution=res)


def nearest_vertices(vertex_xy: np.ndarray, points_xy: np.ndarray) -> np.ndarray:
    """Index of the vertex nearest (in the frontal plane) to each point."""
    vxy = np.asarray(vertex_xy, dtype=np.float32)
    pts = np.asarray(points_xy, dtype=np.float32)
    d2 = (pts[:, 0:1] - vxy[None, :, 0]) ** 2 + (pts[:, 1:2] - vxy[None, :, 1]) ** 2
    return d2.argmin(axis=1).astype(np.int64)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of a triangle mesh (numpy)."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
