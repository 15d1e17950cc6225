"""The supplementary's animation: one person going from neutral to each expression and back, details on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facedet3d.atomic import atomic_path
from facedet3d.data.grids import to_uint8
from facedet3d.evaluate.cases import EXPRESSIONS, Case
from facedet3d.face.expressions import expression_aus
from facedet3d.predict.targets import NAMED_INTENSITY


def frames(case: Case, steps: int) -> list[np.ndarray]:
    """Per expression ``steps`` frames neutral → apex, then back: [R's rendering | shaded geometry]."""
    out = []
    ramp = list(np.linspace(0.0, 1.0, steps)) + list(np.linspace(1.0, 0.0, steps))[1:-1]
    for name in EXPRESSIONS:
        for t in ramp:
            shown = case.render(case.predict(expression_aus(name, NAMED_INTENSITY) * np.float32(t)))
            out.append(to_uint8(np.concatenate([shown["image"], shown["shaded"]], 1)))
    return out


def save_gif(path: Path, images: list[np.ndarray], ms_per_frame: int = 90) -> Path:
    pics = [Image.fromarray(im) for im in images]
    with atomic_path(path) as tmp:
        pics[0].save(tmp, format="GIF", save_all=True, append_images=pics[1:], duration=ms_per_frame, loop=0)
    return Path(path)
