"""Labelled image grids (contact sheets, expression-change grids) written as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facedet3d.atomic import atomic_path

_PAD = 2
_LABEL_H = 14


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1|3) float in [0, 1] or uint8 -> (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def image_grid(
    rows: Sequence[Sequence[np.ndarray]],
    cell: int,
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Tile rows of images (any size; each resized to cell × cell) into one RGB uint8 image."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    top = _LABEL_H if col_labels else 0
    left = 8 * max((len(s) for s in row_labels), default=0) + 4 if row_labels else 0
    height = top + n_rows * (cell + _PAD) + _PAD
    width = left + n_cols * (cell + _PAD) + _PAD
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for j, label in enumerate(col_labels or []):
        draw.text((left + _PAD + j * (cell + _PAD) + 2, 1), label, fill=(0, 0, 0), font=font)
    for i, row in enumerate(rows):
        y = top + _PAD + i * (cell + _PAD)
        if row_labels:
            draw.text((2, y + cell // 2 - 6), row_labels[i], fill=(0, 0, 0), font=font)
        for j, image in enumerate(row):
            tile = Image.fromarray(to_uint8(image)).resize((cell, cell), Image.Resampling.BILINEAR)
            canvas.paste(tile, (left + _PAD + j * (cell + _PAD), y))
    return np.asarray(canvas)


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an image as PNG atomically (deterministic bytes for the same pixels)."""
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG")
    return Path(path)
