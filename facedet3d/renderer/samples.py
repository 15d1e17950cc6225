"""samples.png of the renderer stages: held-out people, one row each.

Columns: input I_x | Î_x re-rendered | Î_y: x in the expression of their photo I_y (its fitted
geometry, D(I_y), camera and light) | that detailed geometry G_D shaded as grey clay | the photo
I_y (for synthetic data, the generator's true image) | Î*: x with another held-out person's
details (fake wrinkles) | their shading L_Sph(G_D*, l), what Î* should show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedet3d.data.grids import image_grid, save_png
from facedet3d.face.expressions import nearest_expression
from facedet3d.renderer.data import Faces, as_float
from facedet3d.renderer.evaluate import donors, partners, render
from facedet3d.renderer.geometry import FaceGeometry
from facedet3d.renderer.model import Renderer

COLUMNS = ["input I_x", "R: re-rendered", "R: expression of I_y", "shaded G_D(I_y)", "photo I_y",
           "R: fake details D*", "shading of G_D*"]


def _hwc(t) -> np.ndarray:
    return t.clamp(0, 1).permute(1, 2, 0).numpy()


def _clay(raster, k: int) -> np.ndarray:
    """Image k of a raster's shading as grey clay on white."""
    return _hwc(raster.clay()[k])


def samples_png(r: Renderer, geometry: FaceGeometry, test: Faces, out: Path, rows: int = 6) -> Path:
    src, tgt = partners(test)
    chosen, people = [], set()
    for p in range(len(src)):
        if test.identity[src[p]] not in people:
            chosen.append(p)
            people.add(test.identity[src[p]])
        if len(chosen) == rows:
            break
    if not chosen:
        return save_png(out, np.ones((8, 8, 3)))
    x, y = src[chosen], tgt[chosen]
    z = donors(test)[x]
    tex = as_float(test.texture[x])
    own = render(r, geometry, tex, test.shape[x], test.albedo[x], test.expr[x], test.detail[x], test.aus[x], test.view(x))
    new = render(r, geometry, tex, test.shape[y], test.albedo[x], test.expr[y], test.detail[y], test.aus[y], test.view(y))
    fake = render(r, geometry, tex, test.shape[x], test.albedo[x], test.expr[x], test.detail[z], test.aus[x],
                  test.view(x))
    photos = as_float(test.image)
    grid = [[_hwc(photos[x[k]]), _hwc(own["image"][k]), _hwc(new["image"][k]), _clay(new["detailed"], k),
             _hwc(photos[y[k]]), _hwc(fake["image"][k]), _clay(fake["detailed"], k)] for k in range(len(x))]
    labels = [f"{test.ids[a]} -> {nearest_expression(test.aus[b].numpy())}" for a, b in zip(x, y)]
    return save_png(out, image_grid(grid, cell=160, col_labels=COLUMNS, row_labels=labels))
