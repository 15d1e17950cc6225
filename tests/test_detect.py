"""Face detection on photos of any size, with real faces (public-domain sample photos) pasted
onto large canvases, through the builtin extractor's own detection path (no mocks).

A face of ~100-400 px must be found on canvases up to 4000x3000 (ordinary camera photos), its
box in full-image pixels, and every face of a two-person picture must be counted.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facedet3d.data.detect import FaceBox, FaceDetector, merge_boxes, working_scales
from facedet3d.extract.builtin import BuiltinExtractor
from facedet3d.extract.errors import NoFaceError

CANVASES = [(1000, 1000), (1980, 3000), (3000, 4000)]  # (H, W)


@pytest.fixture(scope="module")
def extractor() -> BuiltinExtractor:
    return BuiltinExtractor(refine_schedule=(), detail_net=None)


def _photo(name: str, scale: float) -> tuple[np.ndarray, FaceBox]:
    """A real face photo resized by ``scale`` and the box dlib finds in it on its own."""
    import matplotlib.cbook
    from skimage import data as skdata

    if name == "astronaut":
        image = skdata.astronaut()[0:240, 110:330]  # the head and shoulders
    else:
        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            image = np.asarray(Image.open(f).convert("RGB"))[:520]  # the head and shoulders
    if scale != 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    boxes = FaceDetector().detect(image)
    assert len(boxes) == 1
    return image, boxes[0]


def _canvas(size: tuple[int, int], background: str) -> np.ndarray:
    if background == "grey":
        return np.full((*size, 3), 128, np.uint8)
    return np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)


def _paste(canvas: np.ndarray, image: np.ndarray, box: FaceBox, top: int, left: int) -> FaceBox:
    """Paste ``image`` at (top, left); the face box in canvas pixels."""
    canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    return FaceBox(box.left + left, box.top + top, box.right + left, box.bottom + top, box.score)


def test_working_scales_start_shrunk_and_end_at_the_full_image():
    assert working_scales((480, 640), 640) == [1.0] and working_scales((3000, 4000), None) == [1.0]
    scales = working_scales((3000, 4000), 640)
    assert scales[0] == pytest.approx(0.16) and scales[-1] == 1.0
    steps = np.array(scales[1:]) / np.array(scales[:-1])
    assert np.all(steps > 1.0) and np.all(steps <= 2.0 + 1e-9)


def test_merge_boxes_keeps_one_box_per_face():
    a, b = FaceBox(100, 100, 200, 200, 1.0), FaceBox(500, 100, 600, 200, 1.0)
    near_a = FaceBox(105, 95, 210, 205, 0.5)
    assert merge_boxes([a], [near_a, b]) == [a, b]
    assert a.iou(a) == 1.0 and a.iou(b) == 0.0


@pytest.mark.parametrize("size", CANVASES, ids=lambda s: f"{s[1]}x{s[0]}")
@pytest.mark.parametrize("name, scale, background", [("astronaut", 1.1, "noise"), ("grace_hopper", 1.0, "grey"),
                                                     ("grace_hopper", 1.8, "noise")])
def test_a_face_is_found_on_large_canvases(extractor, size, name, scale, background):
    image, box = _photo(name, scale)
    canvas = _canvas(size, background)
    top, left = (size[0] - image.shape[0]) // 2, (size[1] - image.shape[1]) * 2 // 3
    expected = _paste(canvas, image, box, top, left)
    found, n_faces = extractor._detect(canvas)
    print(f"\n{name} face {box.side} px on {size[1]}x{size[0]}: {found}, {n_faces} face(s)")
    assert 100 <= box.side <= 400
    assert found.iou(expected) > 0.5, (found, expected)


def test_a_canvas_without_a_face_raises_no_face_error(extractor):
    with pytest.raises(NoFaceError, match="no face found in the 4000x3000 image"):
        extractor._detect(_canvas((3000, 4000), "grey"))


def _two_people(size: tuple[int, int]) -> tuple[np.ndarray, FaceBox, FaceBox]:
    """Two real faces side by side (~300 and ~215 px): the canvas and their boxes, larger first."""
    canvas = _canvas(size, "grey")
    big = _paste(canvas, *_photo("astronaut", 3.5), top=100, left=100)
    small = _paste(canvas, *_photo("grace_hopper", 1.0), top=200, left=1000)
    assert big.side > small.side > 200
    return canvas, big, small


@pytest.mark.parametrize("size", [(1980, 3000), (3000, 4000)], ids=lambda s: f"{s[1]}x{s[0]}")
def test_both_faces_of_a_two_person_picture_are_counted(extractor, size):
    canvas, big, small = _two_people(size)
    found, n_faces = extractor._detect(canvas)
    assert n_faces == 2
    assert found.iou(big) > 0.5
    boxes = extractor.detector.detect(canvas, first_side=extractor.detect_max_side)
    assert boxes[1].iou(small) > 0.5


def test_a_two_person_picture_is_noted_by_the_builtin_backend(tmp_path):
    from facedet3d.config import load_config, merge
    from facedet3d.extract.backends import BuiltinBackend
    from tests.conftest import REPO

    canvas, big, _ = _two_people((1980, 3000))
    Image.fromarray(canvas).save(tmp_path / "two.png")
    config = merge(load_config([REPO / "config.yaml"]), {"results_dir": str(tmp_path), "data": {"source": "folders"},
                                                         "extract": {"detail_net": False}})
    record = BuiltinBackend(config).extract_row({"id": "two", "path": str(tmp_path / "two.png")}, Path(tmp_path))
    assert record["n_faces"] == 2
    assert "2 faces found, kept the largest" in record["notes"]
    assert FaceBox(*record["box"].astype(int), 0.0).iou(big) > 0.5
