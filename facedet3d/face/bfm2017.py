"""Basel Face Model 2017 (Statismo HDF5) → :class:`MorphableModel`, with a UV map by this project.

File layout read (BFM2017 units are millimetres; vectors interleave x, y, z per vertex)::

    shape/model/{mean (3N,), pcaBasis (3N, K), pcaVariance (K,)}
    shape/representer/{points (3, N), cells (3, F)}
    expression/model/{mean, pcaBasis, pcaVariance}
    color/model/{mean, pcaBasis, pcaVariance}          # RGB in [0, 1]
    metadata/landmarks/json                             # optional

A sample is ``mean + pcaBasis @ (coef * sqrt(pcaVariance))``: the loaded model keeps the
(orthonormal) basis and uses ``std = sqrt(pcaVariance)``.

Alignment and UV map (computed here; BFM2017 ships none):

1. The mesh is rigidly moved into the project's frontal frame (``layout``: x right, y up, z
   towards the camera, origin between the eyes on the corneal plane). With landmarks, a
   similarity transform is fitted from the landmark positions to their layout positions (z from
   the project's template; the jaw contour is left out); its rotation and translation move the model (the basis vectors
   are rotated too), its scale is kept only for the UV map. Without landmarks the model keeps
   its axes (BFM is frontal already) and is translated so that its nose tip (the most frontal
   vertex) sits at the layout's nose tip.
2. ``uv = layout.xy_to_uv(scale * xy)``: the frontal orthographic projection with the layout's
   mapping, so anatomy lands where the layout (and the wrinkle detail maps) expect it. If that
   projection folds (triangles facing away from the camera — the sides of a full-head mask,
   ears, under the chin), an azimuthal projection around a vertical axis through the head is
   used instead (equal to the orthographic one on the midline, ~5 % wider at ±30°).
3. Points beyond 80 % of the UV square's half-width are pulled in radially (a monotone map, so
   it creates no flips) to keep every UV inside [0, 1]; the face itself is left untouched.

The loader counts UV triangles of the wrong orientation (:func:`uv_flip_count`) and warns if
any remain. Landmarks: 68 iBUG indices if the metadata holds them (ids ``"ibug.<n>"``, or BFM's
semantic names, which fix 12 of the 68 points — the others are then the vertices nearest to the
layout positions in the aligned frontal projection); ``None`` without metadata.
"""

from __future__ import annotations

import json
import os
import re
import warnings

import numpy as np

from . import layout as L
from . import template as T
from .model import MorphableModel

# BFM2017 semantic landmark names with an iBUG 300-W counterpart ("right" = subject's right).
BFM_TO_IBUG = {
    "center.chin.tip": 8,
    "center.nose.tip": 30,
    "right.eye.corner_outer": 36,
    "right.eye.corner_inner": 39,
    "left.eye.corner_inner": 42,
    "left.eye.corner_outer": 45,
    "right.lips.corner": 48,
    "center.lips.upper.outer": 51,
    "left.lips.corner": 54,
    "center.lips.lower.outer": 57,
    "center.lips.upper.inner": 62,
    "center.lips.lower.inner": 66,
}
HEAD_AXIS_Z = -80.0  # mm, the vertical axis of the azimuthal UV fallback (frontal frame)
_IBUG_ID = re.compile(r"^(?:ibug(?:68)?[._-]?)?(\d{1,2})$", re.IGNORECASE)


# ----------------------------------------------------------------------------- reading


def _read(f, path: str, filename: str) -> np.ndarray:
    if path not in f:
        raise ValueError(f"{filename}: not a Basel Face Model 2017 file — dataset '{path}' is missing")
    obj = f[path]
    if not hasattr(obj, "shape"):
        raise ValueError(f"{filename}: not a Basel Face Model 2017 file — '{path}' is not a dataset")
    return np.asarray(obj[()])


def _read_pca(f, group: str, n: int, filename: str):
    mean = _read(f, f"{group}/model/mean", filename).astype(np.float64).reshape(-1)
    basis = _read(f, f"{group}/model/pcaBasis", filename).astype(np.float64)
    var = _read(f, f"{group}/model/pcaVariance", filename).astype(np.float64).reshape(-1)
    if mean.shape[0] != 3 * n:
        raise ValueError(f"{filename}: '{group}/model/mean' has {mean.shape[0]} values, expected 3 x {n} points")
    if basis.ndim != 2 or basis.shape[0] != 3 * n:
        raise ValueError(f"{filename}: '{group}/model/pcaBasis' has shape {basis.shape}, expected ({3 * n}, K)")
    if var.shape[0] != basis.shape[1]:
        raise ValueError(f"{filename}: '{group}/model/pcaVariance' has {var.shape[0]} values for {basis.shape[1]} components")
    std = np.sqrt(np.clip(var, 0.0, None))
    return mean.reshape(n, 3), basis.T.reshape(-1, n, 3), std


def _landmark_json(f) -> list[tuple[str, np.ndarray]] | None:
    if "metadata/landmarks/json" not in f:
        return None
    raw = f["metadata/landmarks/json"][()]
    if isinstance(raw, np.ndarray):
        raw = raw.tobytes() if raw.dtype.kind in "uiS" else raw.item()
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    data = json.loads(text.strip("\x00"))
    items: list[tuple[str, np.ndarray]] = []
    if isinstance(data, dict):  # {"name": [x, y, z], ...}
        for k, v in data.items():
            items.append((str(k), np.asarray(v, dtype=np.float64).reshape(3)))
    else:  # [{"id": name, "coordinates": [x, y, z], ...}, ...] (BFM2017)
        for d in data:
            items.append((str(d["id"]), np.asarray(d["coordinates"], dtype=np.float64).reshape(3)))
    return items


def _ibug_index(name: str) -> int | None:
    if name in BFM_TO_IBUG:
        return BFM_TO_IBUG[name]
    m = _IBUG_ID.match(name.strip())
    if m and int(m.group(1)) < 68:
        return int(m.group(1))
    return None


# ----------------------------------------------------------------------------- geometry helpers


def _similarity(p: np.ndarray, q: np.ndarray):
    """Least-squares s, R, t with q ≈ s R p + t (Umeyama, no reflection)."""
    mp, mq = p.mean(0), q.mean(0)
    pc, qc = p - mp, q - mq
    U, S, Vt = np.linalg.svd(qc.T @ pc / len(p))
    D = np.eye(3)
    if np.linalg.det(U @ Vt) < 0:
        D[2, 2] = -1.0
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / (pc**2).sum(1).mean())
    return s, R, mq - s * R @ mp


def uv_signed_areas(uvs: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Signed areas of the UV triangles in the (x = u, y = -v) plane, i.e. positive for a
    triangle that is counter-clockwise when the UV map is viewed as an upright image."""
    a, b, c = uvs[faces[:, 0]], uvs[faces[:, 1]], uvs[faces[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    return -0.5 * cross  # v points down the image


def uv_flip_count(uvs: np.ndarray, faces: np.ndarray, eps: float = 0.0) -> int:
    """Number of UV triangles with non-positive orientation (flipped or degenerate)."""
    return int((uv_signed_areas(np.asarray(uvs, np.float64), np.asarray(faces)) <= eps).sum())


def _fit_into_square(uv: np.ndarray, keep: float = 0.8, limit: float = 0.995) -> np.ndarray:
    """Pull UVs beyond ``keep`` of the square's half-width (L∞, about the centre) radially in
    so that all lie within ``limit`` — monotone along each ray, hence flip-free."""
    c = np.array([0.5, 0.5])
    d = uv - c
    r = 2.0 * np.abs(d).max(1)
    if r.max() <= limit:
        return uv
    span = limit - keep
    r_new = np.where(r > keep, keep + span * np.tanh((r - keep) / span), r)
    scale = np.where(r > 1e-12, r_new / np.maximum(r, 1e-12), 1.0)
    return c + d * scale[:, None]


def frontal_uv(vertices: np.ndarray, faces: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, str]:
    """The UV map described in the module docstring for vertices already in the frontal frame.
    Returns (uvs (V, 2), method) with method 'orthographic' or 'azimuthal'."""
    v = np.asarray(vertices, dtype=np.float64) * scale
    uv = L.xy_to_uv(v[:, :2])
    method = "orthographic"
    if uv_flip_count(uv, faces) > 0:
        # Azimuthal projection around a vertical axis through the middle of the head
        # (z = HEAD_AXIS_Z), unrolled at the radius of the face's midline.
        cz = HEAD_AXIS_Z
        front = np.abs(v[:, 0]) < 10.0
        radius = float(np.median(v[front, 2] - cz)) if front.any() else -cz
        theta = np.arctan2(v[:, 0], v[:, 2] - cz)
        uv = L.xy_to_uv(np.stack([radius * theta, v[:, 1]], -1))
        method = "azimuthal"
    return _fit_into_square(uv), method


# ----------------------------------------------------------------------------- loading


def load_bfm2017(path: str | os.PathLike, align: bool = True, srgb_to_linear: bool = False) -> MorphableModel:
    """Load a Basel Face Model 2017 ``.h5`` file (see the module docstring).

    ``align``: move the model into the project's frontal frame (default) or keep BFM's own
    coordinates (the UV map is computed from the aligned pose either way).
    ``srgb_to_linear``: BFM colours are stored as captured (gamma-encoded RGB); set True to
    convert the colour mean to linear RGB (the basis is mapped by the conversion's derivative at
    the mean, a first-order approximation). Raises ``ValueError`` naming the file and the
    missing dataset if the file is not a BFM2017 file.
    """
    import h5py

    filename = os.fspath(path)
    if not os.path.exists(filename):
        raise FileNotFoundError(f"{filename}: no such Basel Face Model file")
    try:
        f = h5py.File(filename, "r")
    except OSError as e:
        raise ValueError(f"{filename}: not a Basel Face Model 2017 file — not readable as HDF5 ({e})") from None
    with f:
        points = _read(f, "shape/representer/points", filename).astype(np.float64)
        cells = _read(f, "shape/representer/cells", filename)
        if points.ndim != 2 or points.shape[0] != 3:
            raise ValueError(f"{filename}: 'shape/representer/points' has shape {points.shape}, expected (3, N)")
        if cells.ndim != 2 or cells.shape[0] != 3:
            raise ValueError(f"{filename}: 'shape/representer/cells' has shape {cells.shape}, expected (3, F)")
        n = points.shape[1]
        faces = cells.T.astype(np.int64)
        if faces.size and (faces.min() < 0 or faces.max() >= n):
            raise ValueError(f"{filename}: 'shape/representer/cells' indexes beyond the {n} points")
        shape_mean, shape_basis, shape_std = _read_pca(f, "shape", n, filename)
        expr_mean, expr_basis, expr_std = _read_pca(f, "expression", n, filename)
        color_mean, color_basis, color_std = _read_pca(f, "color", n, filename)
        lm_items = _landmark_json(f)
    reference = points.T

    mean = shape_mean + expr_mean
    # Triangles counter-clockwise seen from the front (+z), as in the project.
    a, b, c = mean[faces[:, 0]], mean[faces[:, 1]], mean[faces[:, 2]]
    nz = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    if (nz < 0).sum() > (nz > 0).sum():
        faces = faces[:, [0, 2, 1]]

    # Landmark vertex indices (iBUG order) from the metadata.
    known: dict[int, int] = {}
    if lm_items:
        for name, xyz in lm_items:
            k = _ibug_index(name)
            if k is not None:
                known[k] = int(((reference - xyz) ** 2).sum(1).argmin())

    # Rigid alignment to the frontal frame (+ a UV-only scale).
    layout_xy = L.landmarks_68_xy()
    # The jaw contour (0-16 but the chin, 8) lies where the head turns away: a small offset in
    # the frontal plane is a large one in depth there, so those points do not steer the fit.
    fit_ids = [k for k in sorted(known) if k >= 17 or k == 8]
    if len(fit_ids) >= 3:
        ids = np.array(fit_ids)
        q = np.concatenate([layout_xy[ids], T.height(layout_xy[ids, 0], layout_xy[ids, 1])[:, None]], 1)
        s, R, t = _similarity(mean[[known[i] for i in ids]], q)
        t_geom = t / s
    else:
        s, R = 1.0, np.eye(3)
        tip = int(mean[:, 2].argmax())
        tip_z = float(T.height(np.array(L.NOSE_TIP[0]), np.array(L.NOSE_TIP[1])))
        t_geom = np.array([L.NOSE_TIP[0], L.NOSE_TIP[1], tip_z]) - mean[tip]
    aligned_mean = mean @ R.T + t_geom
    uvs, method = frontal_uv(aligned_mean, faces, scale=s)
    flips = uv_flip_count(uvs, faces)
    if flips:
        warnings.warn(f"{filename}: the {method} UV map still has {flips} flipped triangles", stacklevel=2)

    if align:
        mean_out = aligned_mean
        rot = lambda basis: basis @ R.T  # noqa: E731  (directions rotate, no translation)
    else:
        mean_out = mean
        rot = lambda basis: basis  # noqa: E731

    landmarks = None
    if known:
        # The points the metadata lacks: nearest front-facing vertex to the layout position.
        front = np.flatnonzero(T.vertex_normals(aligned_mean, faces)[:, 2] > 0.3)
        landmarks = front[T.nearest_vertices(s * aligned_mean[front, :2], layout_xy)]
        for k, vi in known.items():
            landmarks[k] = vi

    albedo_mean, albedo_basis = color_mean, color_basis
    if srgb_to_linear:
        x = np.clip(color_mean, 0.0, 1.0)
        lin = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
        dlin = np.where(x <= 0.04045, 1.0 / 12.92, 2.4 / 1.055 * ((x + 0.055) / 1.055) ** 1.4)
        albedo_mean, albedo_basis = lin, color_basis * dlin[None]

    return MorphableModel(
        mean=mean_out,
        shape_basis=rot(shape_basis),
        shape_std=shape_std,
        expr_basis=rot(expr_basis),
        expr_std=expr_std,
        albedo_mean=np.clip(albedo_mean, 0.0, 1.0),
        albedo_basis=albedo_basis,
        albedo_std=color_std,
        faces=faces,
        uvs=uvs,
        landmarks=landmarks,
        expr_names=[f"bfm_expr_{k:03d}" for k in range(expr_basis.shape[0])],
        name="bfm2017",
    )


# ----------------------------------------------------------------------------- writing


def write_bfm2017(model: MorphableModel, path: str | os.PathLike, landmarks: str = "ibug") -> None:
    """Write a model in BFM2017's exact HDF5 layout (unit-norm basis columns, variances).

    ``landmarks``: "ibug" writes the 68 landmarks as ids ``"ibug.<n>"``; "bfm" writes only the
    12 with a BFM2017 semantic name; "none" writes no metadata. Used by the tests and to hand
    the synthetic model to BFM tools."""
    import h5py

    n = model.num_vertices
    points = model.mean.astype(np.float32).T  # (3, N)
    cells = model.faces.astype(np.int32).T  # (3, F)

    def pca(mean, basis, std):
        b = basis.reshape(basis.shape[0], -1).astype(np.float64)  # (K, 3N)
        norm = np.sqrt((b**2).sum(1))
        norm = np.where(norm > 0, norm, 1.0)
        return (mean.reshape(-1).astype(np.float32), (b / norm[:, None]).T.astype(np.float32),
                ((std * norm) ** 2).astype(np.float32))

    with h5py.File(os.fspath(path), "w") as f:
        zeros = np.zeros((n, 3))
        for group, (mean, basis, std) in {
            "shape": (model.mean, model.shape_basis, model.shape_std),
            "expression": (zeros, model.expr_basis, model.expr_std),
            "color": (model.albedo_mean, model.albedo_basis, model.albedo_std),
        }.items():
            m, b, v = pca(mean, basis, std)
            f[f"{group}/model/mean"] = m
            f[f"{group}/model/pcaBasis"] = b
            f[f"{group}/model/pcaVariance"] = v
            f[f"{group}/model/noiseVariance"] = np.float32(0.0)
            f[f"{group}/representer/points"] = points
            f[f"{group}/representer/cells"] = cells
            f[f"{group}/version/majorVersion"] = np.int32(0)
            f[f"{group}/version/minorVersion"] = np.int32(9)
        f["color/representer/colorspace"] = "RGB"
        if landmarks != "none" and model.landmarks is not None:
            items = []
            if landmarks == "ibug":
                for k, vi in enumerate(model.landmarks):
                    items.append({"id": f"ibug.{k}", "coordinates": model.mean[vi].astype(float).tolist()})
            else:
                for name, k in BFM_TO_IBUG.items():
                    items.append({"id": name, "coordinates": model.mean[model.landmarks[k]].astype(float).tolist()})
            f["metadata/landmarks/json"] = json.dumps(items)
