"""Fit a morphable model to one face image: landmarks first, then photometric refinement.

Image formation (that of :mod:`facedet3d.synth.render`): model vertices
``X(shape, expr)`` in the frontal frame (mm) are posed as ``C = R(pose) (X - pivot) + t``
(``pivot`` = :data:`~facedet3d.render.camera.FACE_PIVOT`, ``t`` = the pivot's camera-space
position, i.e. ``(offset_x, offset_y, -distance)``) and projected by a pinhole camera whose focal
length follows the image size like :func:`~facedet3d.render.camera.face_camera` (3 × the
shorter side: a 200 mm window at 600 mm fills the image); pixel colour = albedo × SH irradiance
of the normal, in linear RGB.

1. **Landmarks** (:meth:`ModelFitter.fit_landmarks`): Levenberg–Marquardt on pose (yaw, pitch,
   roll), translation, shape and expression coefficients (rigid first, then all), minimising
   the reprojection error of the model's 68 landmark vertices against dlib's, with a Tikhonov
   prior on the coefficients (std units) and the expression coefficients (AU intensities) kept
   in [0, 5]. dlib's jaw points follow the silhouette, not fixed vertices, so only the chin
   counts (:data:`LANDMARK_WEIGHTS`).
2. **Photometric refinement** (:meth:`ModelFitter.refine`): on the texels of a UV raster of the
   mesh (their positions are fixed linear maps of the coefficients; normals come from the
   mesh), alternately (a) the light — ambient + one directional light per colour, as SH (27,) —
   given normals and albedo (:func:`solve_light`), (b) the albedo coefficients, linear given
   the light, with a prior (:func:`solve_albedo`), (c) a damped Gauss–Newton step on pose,
   translation, shape and expression for the luminance residual ``image(project(texel)) -
   albedo · irradiance(normal)``: its Jacobian through the image gradient at the projected
   texel and through the normals (exact for rotation, linearised at the mean face for shape
   and expression), with robust (Huber) weights, the landmark term and the priors —
   coarse to fine over a blurred image and a denser raster (:data:`REFINE_SCHEDULE`).

CPU numpy / torch without autograd; about 0.35-0.45 s per 256² image on one core.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from facedet3d.extract.detail import sh_normal_gradient
from facedet3d.extract.errors import ExtractError
from facedet3d.extract.unwrap import depth_visibility, project_points, sample_image, uv_raster
from facedet3d.face.model import MorphableModel
from facedet3d.render.camera import DEFAULT_DISTANCE, FACE_PIVOT, Camera
from facedet3d.render.shading import A0, C0, sh_basis, sh_from_light, vertex_normals

# Landmark weights (68,): dlib's jaw line (0-16) lies on the silhouette, so only the chin counts.
LANDMARK_WEIGHTS = np.ones(68)
LANDMARK_WEIGHTS[0:17] = 0.0
LANDMARK_WEIGHTS[7:10] = (0.25, 0.5, 0.25)
INTERIOR = np.arange(17, 68)

# Focal length in pixels per pixel of the shorter image side (face_camera's default framing).
FOCAL_PER_SIDE = DEFAULT_DISTANCE / 200.0
# Default refinement, per level: (image blur sigma in pixels, Gauss-Newton iterations, UV raster size).
REFINE_SCHEDULE = ((2.0, 4, 64), (1.0, 4, 64), (0.5, 3, 96), (0.0, 3, 128))


@dataclass
class FaceFit:
    """A fitted face: model coefficients, rigid pose, camera and light.

    shape (Ks,), expr (Ke,), albedo (Ka,): coefficients in std units (expr = AU intensities).
    pose (3,): yaw, pitch, roll in radians (:mod:`facedet3d.render.camera` convention).
    translation (3,): camera-space position (mm) of ``FACE_PIVOT``: ``C = R (X - pivot) + t``.
    focal: pixels; principal (2,): (column, row); image_size: (H, W).
    sh (27,): SH light in camera space (:mod:`facedet3d.render.shading` convention).
    """

    shape: np.ndarray
    expr: np.ndarray
    albedo: np.ndarray
    pose: np.ndarray
    translation: np.ndarray
    focal: float
    principal: np.ndarray
    image_size: tuple[int, int]
    sh: np.ndarray

    def camera(self) -> Camera:
        return Camera.perspective(self.image_size, float(self.focal), tuple(float(c) for c in self.principal))

    def frontal_vertices(self, model: MorphableModel) -> torch.Tensor:
        """Vertices (1, V, 3) float32 in the frontal frame, mm."""
        return model.vertices(torch.as_tensor(self.shape, dtype=torch.float32)[None],
                              torch.as_tensor(self.expr, dtype=torch.float32)[None])

    def camera_vertices(self, model: MorphableModel) -> torch.Tensor:
        """Vertices (1, V, 3) float32 in camera space, mm."""
        return pose_points(self.frontal_vertices(model), self.pose, self.translation)

    def landmarks_2d(self, model: MorphableModel) -> np.ndarray:
        """The model's 68 landmarks projected into the image, (68, 2) pixel (column, row)."""
        lm = model.landmarks_3d(self.camera_vertices(model))[0]
        return project_points(self.camera(), lm).numpy()


def rotation_and_derivatives(angles) -> tuple[np.ndarray, list[np.ndarray]]:
    """``R = Rz(roll) Ry(yaw) Rx(pitch)`` (3, 3) for angles (yaw, pitch, roll) and its partial
    derivatives [dR/dyaw, dR/dpitch, dR/droll] (float64 numpy)."""
    yaw, pitch, roll = (float(a) for a in angles)
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    drx = np.array([[0, 0, 0], [0, -sp, -cp], [0, cp, -sp]])
    dry = np.array([[-sy, 0, cy], [0, 0, 0], [-cy, 0, -sy]])
    drz = np.array([[-sr, -cr, 0], [cr, -sr, 0], [0, 0, 0]])
    return rz @ ry @ rx, [rz @ dry @ rx, rz @ ry @ drx, drz @ ry @ rx]


def pose_points(points: torch.Tensor, pose, translation) -> torch.Tensor:
    """Frontal-frame points (..., 3) -> camera space ``R (p - pivot) + t`` (same shape and dtype)."""
    rot = torch.as_tensor(rotation_and_derivatives(pose)[0], dtype=points.dtype)
    pivot = torch.tensor(FACE_PIVOT, dtype=points.dtype)
    return (points - pivot) @ rot.t() + torch.as_tensor(np.asarray(translation), dtype=points.dtype)


def default_focal(image_size: tuple[int, int]) -> float:
    """Focal length (pixels) assumed for an image of (H, W) pixels, as ``face_camera``."""
    return FOCAL_PER_SIDE * float(min(image_size))


# ----------------------------------------------------------------------------- texel bases


@functools.lru_cache(maxsize=8)
def texel_albedo_basis(model: MorphableModel, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's albedo at the covered texels of ``uv_raster(model, size)``, linear in the
    coefficients: mean (N, 3) and per-std components (Ka, N, 3), float32.

    The synthetic model's albedo is analytic, so its texture is evaluated exactly (sharp brows,
    lashes, lip borders); other models interpolate their per-vertex albedo.
    """
    raster = uv_raster(model, size)
    if model.name.startswith("synthetic"):
        from facedet3d.face.synthetic import albedo_texture

        coef = torch.cat([torch.zeros(1, model.num_albedo), torch.eye(model.num_albedo)])
        tex = albedo_texture(model, coef, size).reshape(model.num_albedo + 1, 3, -1)[:, :, raster.index]
        tex = tex.permute(0, 2, 1)  # (1 + Ka, N, 3)
        return tex[0].contiguous(), (tex[1:] - tex[:1]).contiguous()
    mean = raster.interpolate(torch.as_tensor(model.albedo_mean))
    basis = torch.as_tensor(model.albedo_basis) * torch.as_tensor(model.albedo_std)[:, None, None]
    return mean, raster.interpolate(basis)


@dataclass(frozen=True, eq=False)
class _TexelBasis:
    """Per-texel linear models of the UV raster's N texels (float64 numpy), K = Ks + Ke.

    position: mean (N, 3) and per-coefficient derivatives (3N, K) float32 (x rows, then y,
        then z), frontal frame, mm.
    normal: derivatives (3, N, K) float32 of the frontal unit normals at the mean face.
    albedo: mean (N, 3) and components (Ka, N, 3).
    """

    size: int
    position_mean: np.ndarray
    position: np.ndarray
    normal: np.ndarray
    albedo_mean: np.ndarray
    albedo: np.ndarray


@functools.lru_cache(maxsize=8)
def _texel_basis(model: MorphableModel, size: int, step: float = 0.5) -> _TexelBasis:
    raster = uv_raster(model, size)
    basis = np.concatenate([model.shape_basis * model.shape_std[:, None, None],
                            model.expr_basis * model.expr_std[:, None, None]])  # (K, V, 3)
    position = raster.interpolate(torch.as_tensor(basis)).double().numpy()  # (K, N, 3)
    # Normal derivatives by central differences of ± step about the mean face.
    k = basis.shape[0]
    coef = torch.cat([torch.eye(k), -torch.eye(k)]) * step
    verts = model.vertices(coef[:, :model.num_shape], coef[:, model.num_shape:])
    normals = F.normalize(raster.interpolate(vertex_normals(verts, torch.as_tensor(model.faces))), dim=-1)
    normal = ((normals[:k] - normals[k:]) / (2.0 * step)).double().numpy()
    alb_mean, alb = texel_albedo_basis(model, size)
    return _TexelBasis(
        size=int(size),
        position_mean=raster.interpolate(torch.as_tensor(model.mean)).double().numpy(),
        position=np.ascontiguousarray(position.transpose(2, 1, 0), dtype=np.float32).reshape(-1, k),
        normal=np.ascontiguousarray(normal.transpose(2, 1, 0), dtype=np.float32),
        albedo_mean=alb_mean.double().numpy(),
        albedo=alb.double().numpy(),
    )


def _along(vectors: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Σ_j vectors[:, j] · basis[j] for vectors (N, 3) and a (3, N, K) basis -> (N, K) float32."""
    v = vectors.astype(np.float32)
    return v[:, 0:1] * basis[0] + v[:, 1:2] * basis[1] + v[:, 2:3] * basis[2]


# ----------------------------------------------------------------------------- light and albedo


def _direction_grid(n: int) -> np.ndarray:
    """n unit directions (n, 3) spread evenly (Fibonacci) over the hemisphere z > 0."""
    k = np.arange(n) + 0.5
    z = 1.0 - k / n
    phi = np.pi * (1.0 + 5.0**0.5) * k
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)


def _unit_light_sh(dirs: np.ndarray) -> np.ndarray:
    """SH coefficients (n, 9) of a unit directional light from each direction (n, 3)."""
    return sh_from_light(torch.as_tensor(dirs), 1.0, 0.0).reshape(-1, 3, 9)[:, 0].double().numpy()


@functools.lru_cache(maxsize=1)
def _coarse_lights(n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    dirs = _direction_grid(n)
    return dirs, _unit_light_sh(dirs)


def solve_light(obs: np.ndarray, albedo: np.ndarray, normals: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """SH light (27,) of ambient + one directional light, with per-colour intensities, for
    ``obs ≈ albedo · E(normals)`` (weighted least squares).

    obs, albedo (N, 3) linear RGB; normals (N, 3) unit, camera space; weights (N,). For every
    direction of a hemisphere grid (then of two finer grids around the best) the per-colour
    ambient and directional intensities are linear, solved in closed form from 9-dimensional
    SH moments of the data; the direction with the least error wins. Unlike a free
    27-coefficient fit — ill-conditioned on a face, whose normals mostly face the camera (the
    constant and z terms are nearly collinear) — this pins the light direction down.
    """
    basis = sh_basis(torch.as_tensor(normals, dtype=torch.float64)).numpy()  # (N, 9)
    moments = []
    for c in range(3):
        aw = albedo[:, c] * weights
        m1 = basis * (aw * albedo[:, c])[:, None]
        moments.append((float((aw * albedo[:, c]).sum()), m1.sum(0), m1.T @ basis,
                        (basis * (aw * obs[:, c])[:, None]).sum(0), float((aw * obs[:, c]).sum())))
    dirs, coeff = _coarse_lights()
    best = dirs[_best_light(moments, coeff)[0]]
    for spread in (0.16, 0.05):  # finer grids in shrinking cones around the optimum
        local = best + spread * _direction_grid(64) * np.array([1.0, 1.0, 0.0])
        local = np.concatenate([best[None], local])
        local = local / np.linalg.norm(local, axis=1, keepdims=True)
        local = local[local[:, 2] > 0]
        local_sh = _unit_light_sh(local)
        j, amb, inten = _best_light(moments, local_sh)
        best = local[j]
    sh = inten[:, None] * local_sh[j][None, :]
    sh[:, 0] += amb / (A0 * C0)
    return sh.reshape(27)


def _best_light(moments, coeff: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Best unit light among the rows of ``coeff`` (D, 9): its index and the per-colour ambient
    and intensity (3,) (>= 0). ``moments`` per colour: Σwa², Σwa²Y, Σwa²YYᵀ, Σway·Y, Σway."""
    err = np.zeros(coeff.shape[0])
    sols = []
    for s00, m1, m2, b1v, b0 in moments:
        s01 = coeff @ m1
        s11 = np.einsum("di,ij,dj->d", coeff, m2, coeff)
        b1 = coeff @ b1v
        det = np.maximum(s00 * s11 - s01 * s01, 1e-12)
        x0 = np.maximum((s11 * b0 - s01 * b1) / det, 0.0)
        x1 = np.maximum((s00 * b1 - s01 * b0) / det, 0.0)
        err += s00 * x0 * x0 + 2 * s01 * x0 * x1 + s11 * x1 * x1 - 2 * (x0 * b0 + x1 * b1)  # minus Σwy²
        sols.append((x0, x1))
    j = int(np.argmin(err))
    return j, np.array([x0[j] for x0, _ in sols]), np.array([x1[j] for _, x1 in sols])


def solve_albedo(obs: np.ndarray, irradiance: np.ndarray, mean: np.ndarray, comps: np.ndarray,
                 weights: np.ndarray, prior: float) -> np.ndarray:
    """Albedo coefficients (Ka,) for ``obs ≈ (mean + Σ α_k comps_k) · irradiance``.

    obs, irradiance, mean (N, 3); comps (Ka, N, 3); weights (N,); ``prior``: Tikhonov weight on
    α (std units) relative to one unit-weight residual.
    """
    k = comps.shape[0]
    a = (comps * irradiance[None]).reshape(k, -1).T  # (3N, Ka)
    y = (obs - mean * irradiance).reshape(-1)
    aw = a * np.repeat(weights, 3)[:, None]
    return np.linalg.solve(aw.T @ a + prior * np.eye(k), aw.T @ y)


def _irradiance(normals: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """SH irradiance (N, 3) of unit normals (N, 3) under sh (27,), float64."""
    basis = sh_basis(torch.as_tensor(normals, dtype=torch.float64)).numpy()
    return basis @ np.asarray(sh, np.float64).reshape(3, 9).T


def _neutral_sh() -> np.ndarray:
    """A uniform white light of irradiance 0.8 (27,)."""
    sh = np.zeros(27)
    sh[[0, 9, 18]] = 0.8 / (A0 * C0)
    return sh


def _image_stack(image_linear: np.ndarray, sigma: float) -> torch.Tensor:
    """(9, H, W) float32: the image blurred by sigma (px) and its column / row derivatives per channel."""
    img = np.ascontiguousarray(image_linear, dtype=np.float32)
    if sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)
    gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3, scale=1.0 / 8.0)
    gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3, scale=1.0 / 8.0)
    grads = np.stack([gx, gy], axis=-1).reshape(*img.shape[:2], 6)  # per channel (d/dcol, d/drow)
    return torch.as_tensor(np.concatenate([img, grads], axis=2)).permute(2, 0, 1).contiguous()


def _bounded_step(lhs: np.ndarray, grad: np.ndarray, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Newton step ``-lhs⁻¹ grad`` with the parameters that sit on a bound and would leave it
    held fixed (a small active set), so clipping does not distort the step."""
    free = np.ones(x.size, bool)
    for _ in range(3):
        step = np.zeros(x.size)
        step[free] = np.linalg.solve(lhs[np.ix_(free, free)], -grad[free])
        out = ((x <= lo + 1e-9) & (step < 0)) | ((x >= hi - 1e-9) & (step > 0))
        if not (out & free).any():
            break
        free &= ~out
    return step


# ----------------------------------------------------------------------------- the fitter


class ModelFitter:
    """Fits ``model`` (a :class:`MorphableModel` with 68 landmark vertices) to images.

    Parameter vector: (yaw, pitch, roll, tx, ty, tz, shape (Ks), expr (Ke)).

    Args:
        model: the morphable model.
        fit_size: UV raster size (texels) of the photometric refinement.
        landmark_sigma_mm: landmark noise (mm on the face) of the landmark fit.
        refine_landmark_sigma_mm: the same during photometric refinement (weaker: dlib's
            landmarks are off by a few pixels, the image is more precise).
        shape_prior, expr_prior, albedo_prior: Tikhonov weights on the coefficients (std units).
        photo_sigma: luminance residual scale (linear RGB summed over channels).
        photo_samples: effective number of independent photometric measurements (the
            photometric term's total weight against the landmarks and priors; the residuals
            of neighbouring texels are strongly correlated).
    """

    def __init__(self, model: MorphableModel, fit_size: int = 96, landmark_sigma_mm: float = 2.0,
                 refine_landmark_sigma_mm: float = 6.0, shape_prior: float = 1.0, expr_prior: float = 0.5,
                 albedo_prior: float = 1.0, photo_sigma: float = 0.05, photo_samples: float = 150.0):
        if model.landmarks is None or len(model.landmarks) != 68:
            raise ExtractError(f"model {model.name!r} has no 68 landmark vertices; extraction needs them")
        self.model = model
        self.fit_size = int(fit_size)
        self.landmark_sigma_mm = landmark_sigma_mm
        self.refine_landmark_sigma_mm = refine_landmark_sigma_mm
        self.albedo_prior = albedo_prior
        self.photo_sigma, self.photo_samples = photo_sigma, photo_samples
        self.ks, self.ke = model.num_shape, model.num_expr
        self._prior = np.concatenate([np.zeros(6), np.full(self.ks, shape_prior), np.full(self.ke, expr_prior)])
        self._lo = np.concatenate([[-1.4, -1.4, -1.4], np.full(3 + self.ks, -np.inf), np.zeros(self.ke)])
        self._hi = np.concatenate([[1.4, 1.4, 1.4], np.full(3 + self.ks, np.inf), np.full(self.ke, 5.0)])
        idx = np.asarray(model.landmarks)
        self._lm_mean = model.mean[idx].astype(np.float64)  # (68, 3)
        basis = np.concatenate([model.shape_basis * model.shape_std[:, None, None],
                                model.expr_basis * model.expr_std[:, None, None]])
        self._lm_basis = basis[:, idx].astype(np.float64)  # (K, 68, 3)
        self._faces = torch.as_tensor(model.faces)

    # ------------------------------------------------------------------ landmarks

    def _landmark_terms(self, x: np.ndarray, target: np.ndarray, weights: np.ndarray, focal: float,
                        principal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weighted landmark residuals (136,) in px · weight and their Jacobian (136, P)."""
        rot, drot = rotation_and_derivatives(x[:3])
        pts = self._lm_mean + np.tensordot(x[6:], self._lm_basis, 1)
        q = pts - np.asarray(FACE_PIVOT)
        cam = q @ rot.T + x[3:6]
        depth = -cam[:, 2]
        proj = np.stack([principal[0] + focal * cam[:, 0] / depth, principal[1] - focal * cam[:, 1] / depth], 1)
        dp = np.zeros((68, 2, 3))  # d(column, row)/dC
        dp[:, 0, 0] = focal / depth
        dp[:, 0, 2] = focal * cam[:, 0] / depth**2
        dp[:, 1, 1] = -focal / depth
        dp[:, 1, 2] = -focal * cam[:, 1] / depth**2
        cols = [dp @ (q @ d.T)[:, :, None] for d in drot]  # each (68, 2, 1)
        cols.append(dp)  # translation (68, 2, 3)
        cols.append(np.einsum("lij,klj->lik", dp @ rot, self._lm_basis))
        jac = np.concatenate(cols, axis=2)
        w = weights[:, None]
        return ((proj - target) * w).reshape(-1), (jac * w[:, :, None]).reshape(136, -1)

    def _initial_rigid(self, landmarks: np.ndarray, focal: float, principal: np.ndarray) -> np.ndarray:
        """Frontal pose, distance from the eye distance, centred on the interior landmarks."""
        eyes = lambda p: (p[36:42].mean(0), p[42:48].mean(0))  # noqa: E731
        l_img, r_img = eyes(landmarks)
        l_mod, r_mod = eyes(self._lm_mean)
        dist = focal * np.linalg.norm(r_mod[:2] - l_mod[:2]) / max(np.linalg.norm(r_img - l_img), 1.0)
        centre = landmarks[INTERIOR].mean(0)
        q = self._lm_mean[INTERIOR].mean(0) - np.asarray(FACE_PIVOT)
        x = np.zeros(6 + self.ks + self.ke)
        x[3] = (centre[0] - principal[0]) * dist / focal - q[0]
        x[4] = -(centre[1] - principal[1]) * dist / focal - q[1]
        x[5] = -dist - q[2]
        return x

    def fit_landmarks(self, landmarks: np.ndarray, image_size: tuple[int, int], focal: float | None = None,
                      principal: tuple[float, float] | None = None, iterations: int = 30) -> FaceFit:
        """Fit pose, translation, shape and expression to 68 landmarks (68, 2) pixel (column, row).

        ``focal`` None = :func:`default_focal` of ``image_size`` (H, W); ``principal`` (column,
        row) None = the image centre. Returns a :class:`FaceFit` with zero albedo coefficients
        and a neutral light.
        """
        landmarks = np.asarray(landmarks, np.float64)
        h, w = image_size
        focal = default_focal(image_size) if focal is None else float(focal)
        principal = np.array([w / 2.0, h / 2.0] if principal is None else principal, np.float64)
        x = self._initial_rigid(landmarks, focal, principal)
        lw = LANDMARK_WEIGHTS / (self.landmark_sigma_mm * focal / -x[5])
        prior2 = self._prior**2

        def terms(z):
            r, j = self._landmark_terms(z, landmarks, lw, focal, principal)
            return (r * r).sum() + (prior2 * z * z).sum(), j.T @ j + np.diag(prior2), j.T @ r + prior2 * z

        for free in (np.arange(6), np.arange(x.size)):  # rigid first, then everything
            mask = np.zeros(x.size, bool)
            mask[free] = True
            x = self._levenberg_marquardt(x, terms, mask, iterations)
        return self._to_fit(x, np.zeros(self.model.num_albedo), _neutral_sh(), focal, principal, image_size)

    def _levenberg_marquardt(self, x, terms, mask, iterations, mu: float = 1e-3) -> np.ndarray:
        """Minimise ``terms(x) -> (energy, JᵀJ, Jᵀr)`` over the parameters in ``mask``, in bounds."""
        energy, jtj, jtr = terms(x)
        for _ in range(iterations):
            lhs = jtj[np.ix_(mask, mask)]
            step = np.zeros(x.size)
            step[mask] = _bounded_step(lhs + mu * np.diag(np.diag(lhs) + 1e-9), jtr[mask], x[mask],
                                       self._lo[mask], self._hi[mask])
            x_new = np.clip(x + step, self._lo, self._hi)
            e_new, jtj_new, jtr_new = terms(x_new)
            if e_new < energy:
                converged = energy - e_new < 1e-7 * energy
                x, energy, jtj, jtr = x_new, e_new, jtj_new, jtr_new
                mu = max(mu / 3.0, 1e-7)
                if converged:
                    break
            else:
                mu *= 4.0
                if mu > 1e6:
                    break
        return x

    def _to_fit(self, x, albedo, sh, focal, principal, image_size) -> FaceFit:
        ks = self.ks
        return FaceFit(shape=x[6:6 + ks].astype(np.float32), expr=x[6 + ks:].astype(np.float32),
                       albedo=np.asarray(albedo, np.float32), pose=x[:3].astype(np.float32),
                       translation=x[3:6].astype(np.float32), focal=float(focal),
                       principal=np.asarray(principal, np.float32), image_size=tuple(image_size),
                       sh=np.asarray(sh, np.float32))

    @staticmethod
    def _params(fit: FaceFit) -> np.ndarray:
        return np.concatenate([fit.pose, fit.translation, fit.shape, fit.expr]).astype(np.float64)

    # ------------------------------------------------------------------ photometric

    def refine(self, image_linear: np.ndarray, fit: FaceFit, landmarks: np.ndarray,
               schedule: tuple[tuple[float, int], ...] = REFINE_SCHEDULE) -> FaceFit:
        """Photometric refinement of a landmark fit on a linear-RGB image (H, W, 3) float32.

        ``schedule``: (image blur sigma in pixels, Gauss–Newton iterations, UV raster size) per
        level — coarse levels on a sparser raster.
        Returns the refined fit with the albedo coefficients and the SH light filled in.
        """
        x = self._params(fit)
        albedo = np.asarray(fit.albedo, np.float64)
        focal, principal = fit.focal, np.asarray(fit.principal, np.float64)
        camera = fit.camera()
        lw = LANDMARK_WEIGHTS / (self.refine_landmark_sigma_mm * focal / -x[5])
        landmarks = np.asarray(landmarks, np.float64)
        prior2 = self._prior**2
        weight = self.photo_samples / self.photo_sigma**2
        mu = 1e-2
        sh = np.asarray(fit.sh, np.float64)
        for sigma, iterations, size in schedule:
            tb = _texel_basis(self.model, int(size))
            stack = _image_stack(image_linear, sigma)
            st = self._texel_state(x, tb, stack, camera, need_visibility=True)
            visible = st["visible"]
            for it in range(iterations):
                valid = visible & st["inside"] & (st["facing"] > 0.15)
                n_valid = int(valid.sum())
                if n_valid < 50:
                    raise ExtractError("the fitted face is not visible in the image")
                w = valid.astype(np.float64)
                if it == 0:  # (a) the light, once per level
                    sh = solve_light(st["obs"], tb.albedo_mean + np.tensordot(albedo, tb.albedo, 1), st["normals"], w)
                irr = _irradiance(st["normals"], sh)
                # (b) the albedo, linear given the light.
                albedo = solve_albedo(st["obs"], irr, tb.albedo_mean, tb.albedo, w,
                                      self.albedo_prior * self.photo_sigma**2 * n_valid / self.photo_samples)
                albedo_tex = np.clip(tb.albedo_mean + np.tensordot(albedo, tb.albedo, 1), 0.0, 1.0)
                # (c) one damped Gauss-Newton step on the geometry (luminance residual, Huber weights).
                r = st["obs"].sum(1) - (albedo_tex * irr).sum(1)
                huber = np.minimum(1.0, 2.0 * self.photo_sigma / np.maximum(np.abs(r), 1e-9))
                wp = w * huber * (weight / n_valid)
                rl, jl = self._landmark_terms(x, landmarks, lw, focal, principal)
                energy = (wp * r * r).sum() + (rl * rl).sum() + (prior2 * x * x).sum()
                jp = self._photo_jacobian(x, st, tb, albedo_tex, sh)
                jpw = jp * wp[:, None].astype(np.float32)
                jtj = (jpw.T @ jp).astype(np.float64) + jl.T @ jl + np.diag(prior2)
                jtr = (jpw.T @ r.astype(np.float32)).astype(np.float64) + jl.T @ rl + prior2 * x
                diag = np.diag(jtj)
                for _try in range(4):
                    x_new = np.clip(x + _bounded_step(jtj + np.diag(mu * diag + 1e-9), jtr, x, self._lo, self._hi),
                                    self._lo, self._hi)
                    st_new = self._texel_state(x_new, tb, stack, camera, need_visibility=False)
                    r_new = st_new["obs"].sum(1) - (albedo_tex * _irradiance(st_new["normals"], sh)).sum(1)
                    r_new = np.where(st_new["inside"], r_new, r)
                    rl_new, _ = self._landmark_terms(x_new, landmarks, lw, focal, principal)
                    e_new = (wp * r_new * r_new).sum() + (rl_new * rl_new).sum() + (prior2 * x_new * x_new).sum()
                    if e_new < energy:
                        x, st = x_new, st_new
                        mu = max(mu / 3.0, 1e-4)
                        break
                    mu *= 4.0
                else:
                    break
        # The light at the refined geometry, on the sharp image.
        tb = _texel_basis(self.model, self.fit_size)
        st = self._texel_state(x, tb, _image_stack(image_linear, 0.0), camera, need_visibility=True)
        valid = st["visible"] & st["inside"] & (st["facing"] > 0.15)
        sh = solve_light(st["obs"], tb.albedo_mean + np.tensordot(albedo, tb.albedo, 1), st["normals"],
                         valid.astype(np.float64))
        return self._to_fit(x, albedo, sh, focal, principal, fit.image_size)

    def _texel_state(self, x, tb: _TexelBasis, stack: torch.Tensor, camera: Camera, need_visibility: bool) -> dict:
        """Posed texel positions and normals, and the image (and its gradient) sampled there."""
        rot = rotation_and_derivatives(x[:3])[0]
        coef = x[6:]
        frontal = tb.position_mean + (tb.position @ coef.astype(np.float32)).reshape(3, -1).T  # (N, 3)
        q = frontal - np.asarray(FACE_PIVOT)
        cam = q @ rot.T + x[3:6]
        # Normals from the mesh itself (exact), posed.
        raster = uv_raster(self.model, tb.size)
        verts = self.model.vertices(torch.as_tensor(coef[:self.ks], dtype=torch.float32)[None],
                                    torch.as_tensor(coef[self.ks:], dtype=torch.float32)[None])
        verts_cam = pose_points(verts, x[:3], x[3:6])
        normals = F.normalize(raster.interpolate(vertex_normals(verts_cam, self._faces)[0]), dim=-1)
        cam_t = torch.as_tensor(cam, dtype=torch.float32)
        px = project_points(camera, cam_t)
        h, w = camera.image_size
        inside = ((px[:, 0] >= 1) & (px[:, 0] < w - 1) & (px[:, 1] >= 1) & (px[:, 1] < h - 1)).numpy()
        samples = sample_image(stack, px).double().numpy()  # (N, 9)
        n_np = normals.double().numpy()
        state = dict(q=q, cam=cam, rot=rot, focal=float(camera.focal), inside=inside, normals=n_np,
                     obs=samples[:, :3], grad=samples[:, 3:].reshape(-1, 3, 2),
                     facing=(n_np * -cam / np.linalg.norm(cam, axis=1, keepdims=True)).sum(1))
        if need_visibility:
            state["visible"] = depth_visibility(camera, verts_cam, self._faces, cam_t, normals).numpy()
        return state

    def _photo_jacobian(self, x, st: dict, tb: _TexelBasis, albedo_tex: np.ndarray, sh: np.ndarray) -> np.ndarray:
        """d(residual)/d(params) (N, P) of the luminance residual ``image(project(texel)) - predicted``:
        the image term through the image gradient at the projected texels, the prediction term
        through the normals (rotation exactly, shape / expression linearised at the mean face)."""
        cam, q, focal, rot = st["cam"], st["q"], st["focal"], st["rot"]
        depth = -cam[:, 2]
        grad = st["grad"].sum(1)  # (N, 2) luminance gradient d/dcol, d/drow
        dl = np.stack([grad[:, 0] * focal / depth, -grad[:, 1] * focal / depth,
                       (grad[:, 0] * cam[:, 0] - grad[:, 1] * cam[:, 1]) * focal / depth**2], 1)  # dL/dC
        _, grad_e = sh_normal_gradient(st["normals"], sh)  # (N, colour, 3)
        ge = (albedo_tex[:, :, None] * grad_e).sum(1)  # d(predicted luminance)/dn, camera frame
        _, drot = rotation_and_derivatives(x[:3])
        n_frontal = st["normals"] @ rot  # Rᵀ n
        cols = [((q @ d.T) * dl).sum(1, keepdims=True) - ((n_frontal @ d.T) * ge).sum(1, keepdims=True)
                for d in drot]
        cols.append(dl)
        u = (dl @ rot).astype(np.float32)
        n = u.shape[0]
        pos = tb.position.reshape(3, n, -1)
        cols.append(u[:, 0:1] * pos[0] + u[:, 1:2] * pos[1] + u[:, 2:3] * pos[2] - _along(ge @ rot, tb.normal))
        return np.concatenate([c.astype(np.float32) for c in cols], 1)
