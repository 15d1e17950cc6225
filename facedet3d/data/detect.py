"""Face detection with dlib's HOG frontal face detector (its weights ship inside dlib-bin).

Used by extraction to find the face and by the synthetic generator to check that
a real, pretrained detector sees its renders as faces.

dlib's HOG window is 80 px: without upsampling it finds faces of ~80 px and more. Large photos
are searched on a pyramid of working copies (:func:`working_scales`): a cheap shrunk copy first,
then larger ones up to the full image until a face is found, then at most one more pass, large
enough to count the other faces of similar size (:meth:`FaceDetector.detect`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The smallest face (px) dlib's HOG detector finds in an image without upsampling it.
DLIB_MIN_FACE_PX = 80
# Boxes found at two scales are the same face when their intersection over union is at least this.
SAME_FACE_IOU = 0.3


@dataclass(frozen=True)
class FaceBox:
    """A detected face: pixel box (left, top, right, bottom) and the detector's score."""

    left: int
    top: int
    right: int
    bottom: int
    score: float

    @property
    def area(self) -> int:
        return max(0, self.right - self.left) * max(0, self.bottom - self.top)

    @property
    def side(self) -> int:
        return max(self.right - self.left, self.bottom - self.top)

    def scaled(self, factor: float) -> FaceBox:
        """The box with its coordinates multiplied by ``factor`` (rounded to pixels)."""
        return FaceBox(*(int(round(v * factor)) for v in (self.left, self.top, self.right, self.bottom)), self.score)

    def iou(self, other: FaceBox) -> float:
        """Intersection over union of two boxes."""
        w = min(self.right, other.right) - max(self.left, other.left)
        h = min(self.bottom, other.bottom) - max(self.top, other.top)
        inter = max(0, w) * max(0, h)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


def working_scales(size: tuple[int, int], first_side: int | None) -> list[float]:
    """Detection scales for an image of ``size`` (H, W): the copy shrunk to ``first_side`` px
    (longest side) first, then larger ones, each at most twice the previous, up to 1 (the full
    image). ``first_side`` None or at least the image's size: [1.0]."""
    s0 = 1.0 if first_side is None else min(1.0, first_side / max(size))
    if s0 >= 1.0:
        return [1.0]
    n = int(np.ceil(np.log2(1.0 / s0) - 1e-9))
    return [s0 ** (1.0 - k / n) for k in range(n + 1)]


def merge_boxes(found: list[FaceBox], new: list[FaceBox]) -> list[FaceBox]:
    """``found`` plus the boxes of ``new`` that overlap none of them (a face seen at two scales
    keeps the box it was first found with)."""
    merged = list(found)
    for box in new:
        if all(box.iou(other) < SAME_FACE_IOU for other in merged):
            merged.append(box)
    return merged


class FaceDetector:
    """dlib HOG detector. Faces smaller than ~80 px are found by upsampling once (small images).

    Args:
        upsample_small: upsample images whose shorter side is below this many pixels
            once more when nothing is found at the original size.
    """

    def __init__(self, upsample_small: int = 400):
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self.upsample_small = upsample_small

    def detect(self, image: np.ndarray, first_side: int | None = None, count_ratio: float = 0.5) -> list[FaceBox]:
        """Faces in an RGB uint8 image (H, W, 3), in its pixels, largest (then surest) first.

        ``first_side`` None: one pass over the image itself. Otherwise detection starts on a copy
        shrunk to ``first_side`` px (cheap; finds faces of ~80 * side / first_side px and more) and
        moves up :func:`working_scales` towards the full image until it finds a face. Then, so
        that every face at least ``count_ratio`` times the size of the largest one is counted,
        one more pass runs at the scale where such a face is 80 px, if that is larger; boxes
        found at both scales are merged.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"detector needs an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        boxes, scale = [], 1.0
        for scale in working_scales(image.shape[:2], first_side):
            boxes = self._run_scaled(image, scale)
            if boxes:
                break
        if boxes:
            need = min(1.0, DLIB_MIN_FACE_PX / (count_ratio * max(b.side for b in boxes)))
            if need > scale:
                boxes = merge_boxes(boxes, self._run_scaled(image, need))
        elif min(image.shape[:2]) < self.upsample_small:
            boxes = self._run(image, 1)
        return sorted(boxes, key=lambda b: (b.area, b.score), reverse=True)

    def _run_scaled(self, image: np.ndarray, scale: float) -> list[FaceBox]:
        """One detector pass on the image resized by ``scale``, boxes in the image's pixels."""
        if scale == 1.0:
            return self._run(image, 0)
        import cv2

        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return [box.scaled(1.0 / scale) for box in self._run(small, 0)]

    def _run(self, image: np.ndarray, upsample: int) -> list[FaceBox]:
        """One dlib pass (``upsample`` times upsampled) with its boxes as FaceBoxes."""
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), upsample, 0.0)
        return [FaceBox(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores)]
