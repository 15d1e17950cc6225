"""The ``builtin`` extraction backend (paper Eq. 1): a Linux-native stand-in for FDS.

One RGB image in, one :class:`ExtractResult` out: dlib HOG face detection (the largest face),
dlib's 68 landmarks, a morphable-model fit (landmarks, then photometric refinement through the
project's rasterizer; :mod:`.fit`), the image unwrapped into the model's UV square
(:mod:`.unwrap`) and a detail displacement map recovered from the residual shading
(:mod:`.detail`). The camera is a pinhole with the focal length of
:func:`~facedet3d.render.camera.face_camera` for the image size and the principal point at
the image centre; fitting works on a crop around the face (downscaled for large faces), so
its cost does not grow with the photo's size. CPU only; ~0.6 s per 256² image on one core
(``facedet3d bench extract``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from facedet3d.extract.detail import DetailResult, log_shading_ratio, recover_detail, to_output_size
from facedet3d.extract.detail_net import DetailNet, load_weights, refine_detail
from facedet3d.extract.errors import ExtractError, NoFaceError
from facedet3d.extract.fit import (INTERIOR, REFINE_SCHEDULE, FaceFit, ModelFitter, default_focal,
                                   texel_albedo_basis)
from facedet3d.extract.unwrap import unwrap
from facedet3d.face.model import MorphableModel
from facedet3d.render.color import srgb_decode

# The fitting crop: the face box grown by this fraction of its size on every side.
CROP_MARGIN = 0.75


@dataclass
class ExtractResult:
    """What extraction recovers from one image (pixel coordinates: (column, row)).

    box (4,) int: detected face (left, top, right, bottom); n_faces: faces detected (the
    largest is used); landmarks (68, 2) float32: dlib's landmarks.
    shape (Ks,), expr (Ke,), albedo (Ka,) float32: fitted coefficients (std units; expr = AU
    intensities 0..5 for the synthetic model); pose (3,) yaw, pitch, roll (rad); translation
    (3,) camera-space position of ``FACE_PIVOT`` (mm; = (offset_x, offset_y, -distance) of the
    synthetic renders); focal (px; principal point = image centre); sh (27,) SH light.
    landmark_error_px: mean distance between the fitted model's projected landmarks and
    dlib's, jaw (0-16) excluded.
    texture (T, T, 3) uint8 sRGB image colours in UV; texture_mask (T, T) bool visible texels.
    detail (S, S) float32: displacement along the normal in mm (UV layout), 0 where unknown:
    shape from shading refined by the detail network, or shape from shading alone without one.
    detail_sfs (S, S) float32: shape from shading alone; shading: its maps on the texture grid.
    timings: seconds for detect, landmarks, fit, unwrap, detail.
    image_size: (H, W) of the input.
    """

    box: np.ndarray
    n_faces: int
    landmarks: np.ndarray
    shape: np.ndarray
    expr: np.ndarray
    albedo: np.ndarray
    pose: np.ndarray
    translation: np.ndarray
    focal: float
    sh: np.ndarray
    landmark_error_px: float
    texture: np.ndarray
    texture_mask: np.ndarray
    detail: np.ndarray
    detail_sfs: np.ndarray | None = None
    shading: DetailResult | None = None
    timings: dict = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)

    def face_fit(self) -> FaceFit:
        """The fit as a :class:`~facedet3d.extract.fit.FaceFit` in full-image pixels."""
        h, w = self.image_size
        return FaceFit(self.shape, self.expr, self.albedo, self.pose, self.translation, self.focal,
                       np.array([w / 2.0, h / 2.0], np.float32), self.image_size, self.sh)


class BuiltinExtractor:
    """Detect, fit, unwrap and recover detail for single face images.

    Args:
        model: the morphable model (with 68 landmark vertices); None = the synthetic model at
            ``mesh_resolution``.
        texture_size: UV size T of the texture map and of the shape-from-shading grid.
        detail_size: UV size S of the returned detail map (paper: 4096; resampled from T).
        mesh_resolution: resolution of the default synthetic model (grid cells across 200 mm).
        refine_schedule: photometric refinement levels (blur px, iterations, UV raster size);
            () = landmarks only.
        detect_max_side: face detection starts on a copy downscaled to this size and goes up to
            the full image only when it finds no face there, or when it could miss faces half
            the size of the largest one found.
        work_face_px: faces whose detected box is larger are downscaled to this size for fitting,
            unwrapping and detail recovery (a 256² render's face box is ~180 px; the UV maps
            hold no more detail than that at texture_size 256).
        detail_net: the detail refinement network (:mod:`.detail_net`); "shipped" = the weights
            in the package, None = shape from shading alone.
    """

    def __init__(self, model: MorphableModel | None = None, texture_size: int = 256, detail_size: int = 512,
                 mesh_resolution: int = 128, refine_schedule: tuple[tuple[float, int, int], ...] = REFINE_SCHEDULE,
                 detect_max_side: int = 640, work_face_px: int = 200, detail_net: DetailNet | str | None = "shipped"):
        from facedet3d.data.detect import FaceDetector
        from facedet3d.extract.landmarks import LandmarkDetector

        if model is None:
            from facedet3d.face.synthetic import synthetic_model

            model = synthetic_model(mesh_resolution)
        self.model = model
        self.texture_size = int(texture_size)
        self.detail_size = int(detail_size)
        self.refine_schedule = tuple(refine_schedule)
        self.detect_max_side = int(detect_max_side)
        self.work_face_px = int(work_face_px)
        self.detector = FaceDetector()
        self.landmarker = LandmarkDetector()
        fit_size = max([int(level[2]) for level in self.refine_schedule] + [64])
        self.fitter = ModelFitter(model, fit_size=fit_size)
        self.detail_net = load_weights() if detail_net == "shipped" else detail_net

    def _detect(self, image: np.ndarray):
        """The largest face box (in full-image pixels) and the number of faces found (those at
        least half its size: :meth:`~facedet3d.data.detect.FaceDetector.detect`)."""
        boxes = self.detector.detect(image, first_side=self.detect_max_side)
        if not boxes:
            raise NoFaceError(f"no face found in the {image.shape[1]}x{image.shape[0]} image")
        return boxes[0], len(boxes)

    def extract(self, image: np.ndarray) -> ExtractResult:
        """Extract from an RGB uint8 image (H, W, 3). Raises NoFaceError without a face."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ExtractError(f"extraction needs an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        timings = {}
        t = time.perf_counter()
        box, n_faces = self._detect(image)
        timings["detect"] = time.perf_counter() - t

        t = time.perf_counter()
        landmarks = self.landmarker.detect(image, box)
        timings["landmarks"] = time.perf_counter() - t

        # Fit, unwrap and detail work on a crop around the face, rescaled so that the face box
        # is at most work_face_px wide, with the full image's camera (scaled alike).
        h, w = image.shape[:2]
        side = max(box.right - box.left, box.bottom - box.top, 1)
        grow = CROP_MARGIN * side
        x0, y0 = int(max(0, np.floor(box.left - grow))), int(max(0, np.floor(box.top - grow)))
        x1, y1 = int(min(w, np.ceil(box.right + grow))), int(min(h, np.ceil(box.bottom + grow)))
        scale = min(1.0, self.work_face_px / side)
        crop = image[y0:y1, x0:x1]
        if scale < 1.0:
            crop = cv2.resize(crop, (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))),
                              interpolation=cv2.INTER_AREA)
        sx, sy = crop.shape[1] / (x1 - x0), crop.shape[0] / (y1 - y0)
        to_crop = lambda p: (p - np.array([x0, y0])) * np.array([sx, sy])  # noqa: E731
        linear = srgb_decode(np.ascontiguousarray(crop))
        focal = default_focal((h, w)) * sx
        principal = tuple(to_crop(np.array([w / 2.0, h / 2.0])))

        t = time.perf_counter()
        with torch.no_grad():
            fit = self.fitter.fit_landmarks(to_crop(landmarks), crop.shape[:2], focal, principal)
            if self.refine_schedule:
                fit = self.fitter.refine(linear, fit, to_crop(landmarks), self.refine_schedule)
        projected = fit.landmarks_2d(self.model) / np.array([sx, sy]) + np.array([x0, y0])
        lm_error = float(np.linalg.norm(projected - landmarks, axis=1)[INTERIOR].mean())
        timings["fit"] = time.perf_counter() - t

        t = time.perf_counter()
        with torch.no_grad():
            mean, comps = texel_albedo_basis(self.model, self.texture_size)
            albedo_texels = (mean + torch.einsum("k,knc->nc", torch.as_tensor(fit.albedo), comps)).clamp(0, 1)
            verts_cam = fit.camera_vertices(self.model)
            unwrapped = unwrap(linear, self.model, fit.camera(), verts_cam, fit.sh, albedo_texels, self.texture_size)
        timings["unwrap"] = time.perf_counter() - t

        t = time.perf_counter()
        with torch.no_grad():
            ratio = log_shading_ratio(linear, self.model, fit.camera(), verts_cam, fit.sh, unwrapped)
        shading = recover_detail(unwrapped, fit.sh, ratio, self.detail_size)
        detail = shading.detail
        if self.detail_net is not None:
            refined = refine_detail(self.detail_net, shading.rho, shading.b_col, shading.b_row, shading.detail_t,
                                    shading.mask, shading.rho_all, unwrapped.mask)
            detail = to_output_size(refined, unwrapped.mask, self.detail_size)
        timings["detail"] = time.perf_counter() - t

        return ExtractResult(
            box=np.array([box.left, box.top, box.right, box.bottom], np.int32), n_faces=int(n_faces),
            landmarks=landmarks.astype(np.float32), shape=fit.shape, expr=fit.expr, albedo=fit.albedo,
            pose=fit.pose, translation=fit.translation, focal=float(default_focal((h, w))), sh=fit.sh,
            landmark_error_px=lm_error, texture=unwrapped.texture, texture_mask=unwrapped.mask,
            detail=detail, detail_sfs=shading.detail, shading=shading, timings=timings, image_size=(int(h), int(w)),
        )
