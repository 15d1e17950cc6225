"""Face detection with dlib's HOG frontal face detector (its weights ship inside dlib-bin).

Used by extraction to find the face and by the synthetic generator to check that
a real, pretrained detector sees its renders as faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


class FaceDetector:
    """dlib HOG detector. Faces smaller than ~80 px are found by upsampling once.

    Args:
        upsample_small: upsample images whose shorter side is below this many pixels
            once more when nothing is found at the original size.
    """

    def __init__(self, upsample_small: int = 400):
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self.upsample_small = upsample_small

    def detect(self, image: np.ndarray) -> list[FaceBox]:
        """Faces in an RGB uint8 image (H, W, 3), largest first."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"detector needs an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image)
        rects, scores, _ = self._detector.run(image, 0, 0.0)
        if not rects and min(image.shape[:2]) < self.upsample_small:
            rects, scores, _ = self._detector.run(image, 1, 0.0)
        boxes = [FaceBox(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores)]
        return sorted(boxes, key=lambda b: b.area, reverse=True)
