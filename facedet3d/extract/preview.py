"""The extraction preview: per input, image | texture map | detail map | (synthetic data: the
true detail map) | shaded detailed geometry.

Inputs come from distinct identities when there are enough (:func:`pick_rows`). The input and
the shaded geometry show the same square around the detected face (:func:`face_square`; the
whole image padded to a square without a box), so photos of any shape or size are framed alike
and never distorted. Rows are labelled with the full input id.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import torch

from facedet3d.data.images import load_image
from facedet3d.data.grids import image_grid, save_png
from facedet3d.extract.quality import resample
from facedet3d.paths import Results
from facedet3d.render.relief import shade_detail_map

N_ROWS = 6
CELL = 256  # grid cell size (px)
# The preview's square around a face: its box grown by this fraction of its size on every side.
FACE_MARGIN = 0.5
# Longer ids are shortened in the middle for the row label.
MAX_LABEL = 60


def face_square(box, image_size: tuple[int, int]) -> tuple[int, int, int]:
    """The square (x0, y0, side) in pixels that the preview shows of an image of ``image_size``
    (H, W): around the face box (left, top, right, bottom) grown by FACE_MARGIN (less where the
    image is smaller, never less than the box) and moved inside the image where it fits; the
    whole image, centred, without a (finite) box. It may reach outside the image (white there)."""
    h, w = image_size
    box = np.asarray(box if box is not None else [np.nan] * 4, np.float64)
    if not (np.all(np.isfinite(box)) and box[2] > box[0] and box[3] > box[1]):
        side = max(h, w)
        return (w - side) // 2, (h - side) // 2, side
    face = max(box[2] - box[0], box[3] - box[1])
    side = int(np.ceil(max(face, min(face * (1 + 2 * FACE_MARGIN), h, w))))
    return _inside((box[0] + box[2]) / 2, side, w), _inside((box[1] + box[3]) / 2, side, h), side


def _inside(centre: float, side: int, length: int) -> int:
    """Start of a window of ``side`` pixels centred on ``centre``, moved into [0, length) if it fits."""
    start = int(round(centre - side / 2))
    return min(max(start, 0), length - side) if side <= length else start


def crop_square(image: np.ndarray, square: tuple[int, int, int], size: int = CELL) -> np.ndarray:
    """The square (x0, y0, side) of an (H, W, 3) uint8 image at size x size pixels; white outside the image."""
    x0, y0, side = square
    out = np.full((side, side, 3), 255, np.uint8)
    h, w = image.shape[:2]
    ax, ay, bx, by = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if bx > ax and by > ay:
        out[ay - y0:by - y0, ax - x0:bx - x0] = image[ay:by, ax:bx]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interpolation)


def square_camera(image_size: tuple[int, int], focal: float, square: tuple[int, int, int] | None, size: int):
    """The fitted camera (principal point at the image centre), or, for a square (x0, y0, side)
    of the image, the camera that sees just that square at size x size pixels."""
    from facedet3d.render.camera import Camera

    if square is None:
        return Camera.perspective(image_size, float(focal))
    (h, w), (x0, y0, side) = image_size, square
    k = size / side
    return Camera.perspective((size, size), float(focal) * k, ((w / 2 - x0) * k, (h / 2 - y0) * k))


def shaded_geometry(model, shape, expr, pose, translation, focal, detail: np.ndarray,
                    image_size: tuple[int, int], square: tuple[int, int, int] | None = None,
                    size: int = CELL) -> np.ndarray:
    """The fitted mesh displaced by its detail map, as grey clay seen from the fitted camera:
    the whole image (``square`` None) or the square (x0, y0, side) of it at size x size pixels,
    framed like :func:`crop_square` of the input."""
    from facedet3d.render.displace import displace
    from facedet3d.render.shaded import render_shaded

    verts = model.vertices(torch.as_tensor(shape, dtype=torch.float32)[None],
                           torch.as_tensor(expr, dtype=torch.float32)[None])
    detailed = displace(verts, torch.as_tensor(model.faces), torch.as_tensor(model.uvs),
                        torch.as_tensor(detail, dtype=torch.float32)[None, None])
    camera = square_camera(image_size, focal, square, size)
    t = torch.as_tensor(np.asarray(translation, dtype=np.float32))
    out = render_shaded(detailed, torch.as_tensor(model.faces), camera, torch.as_tensor(np.asarray(pose)),
                        distance=0.0, background=1.0, translation=t)
    return out.image[0].permute(1, 2, 0).numpy()


def pick_rows(chunk_paths: list[Path], n: int = N_ROWS) -> list[tuple[Path, int]]:
    """(record file, row) of up to ``n`` accepted inputs, from distinct identities first: the
    first row of each identity in file order, then the second of each, and so on."""
    ranked: list[tuple[int, int, Path, int]] = []
    seen: dict[str, int] = {}
    for path in chunk_paths:
        with h5py.File(path, "r") as f:
            identities = f["identity" if "identity" in f else "id"].asstr()[()]
        for i, identity in enumerate(identities):
            seen[identity] = seen.get(identity, 0) + 1
            ranked.append((seen[identity] - 1, len(ranked), path, i))
        if len(seen) >= n:
            break
    return [(path, i) for _, _, path, i in sorted(ranked)[:n]]


def row_label(image_id: str) -> str:
    """The row label of an input: its id, shortened in the middle beyond MAX_LABEL characters."""
    if len(image_id) <= MAX_LABEL:
        return image_id
    keep = (MAX_LABEL - 3) // 2
    return f"{image_id[:keep]}...{image_id[-keep:]}"


def _preview_row(f: h5py.File, i: int, manifest_dir: Path, model, truth) -> list[np.ndarray]:
    """The grid cells of row ``i`` of an open record file."""
    from facedet3d.data.manifest import resolve_path

    image = load_image(resolve_path(manifest_dir, {"path": f["path"].asstr()[i]})).rgb
    square = face_square(f["box"][i] if "box" in f else None, image.shape[:2])
    detail = f["detail"][i].astype(np.float32)
    row = [crop_square(image, square), f["texture"][i], shade_detail_map(detail)]
    if truth is not None:
        true_detail = truth.get(f["id"].asstr()[i]).detail
        row.append(shade_detail_map(resample(true_detail, detail.shape[0])))
    if model is not None and "shape" in f and np.all(np.isfinite(f["shape"][i])):
        row.append(shaded_geometry(model, f["shape"][i], f["expr"][i], f["pose"][i], f["translation"][i],
                                   f["focal"][i], detail, image.shape[:2], square))
    return row


def extract_preview(config: dict, chunk_paths: list[Path], out: Path) -> Path | None:
    """Write the preview grid of a few accepted inputs (:func:`pick_rows`; a blank grid when
    nothing was accepted)."""
    from facedet3d.extract.backends import fitting_model

    manifest_dir = Results.of(config).manifest.parent
    model = fitting_model(config)
    truth = None
    if config["data"]["source"] == "synthetic":
        from facedet3d.synth.truth import SyntheticGroundTruth

        truth = SyntheticGroundTruth(config["results_dir"])
    rows, labels = [], []
    for path, i in pick_rows(chunk_paths):
        with h5py.File(path, "r") as f:
            rows.append(_preview_row(f, i, manifest_dir, model, truth))
            labels.append(row_label(f["id"].asstr()[i]))
    columns = ["input", "texture map", "detail map"] + (["true detail map"] if truth else []) + ["shaded geometry"]
    grid = image_grid(rows or [[np.ones((8, 8, 3))]], cell=CELL, col_labels=columns, row_labels=labels)
    return save_png(out, grid)
