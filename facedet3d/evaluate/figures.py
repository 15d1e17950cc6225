"""The paper's Fig. 4–8 as image grids (numpy RGB), one block of rows per case.

Fig. 4 expression change   columns: input | reconstruction (D(I_x)) | the six expressions | a zoom
                           of the last one's forehead; rows: R's rendering, the shaded detailed
                           geometry, and for synthetic people the generator's true photo
Fig. 5 details vs none     the six expressions rendered by R with D̃(I_y), with a zero map, and
                           their difference (amplified, the gain in the row label)
Fig. 6 views               one expression at several yaws: R, shaded geometry, truth
Fig. 7 lighting            one expression under the photo's light and four SH lights: R, shaded
Fig. 8 ablation            per case: shaded geometry | full R | R without AugW and DSL | truth
"""

from __future__ import annotations

import numpy as np
import torch

from facedet3d.data.grids import image_grid
from facedet3d.evaluate.cases import EXPRESSIONS, Case
from facedet3d.render.shading import sh_from_light

CELL = 128
MAX_DIFF_GAIN = 1000.0  # Fig. 5's difference row: at most ×1000 (a 1/255 step then spans 4 grey levels)
# The extra lights of Fig. 7: (name, direction towards the light in camera space).
LIGHTS = (("left", (-1.0, 0.2, 0.6)), ("right", (1.0, 0.2, 0.6)), ("top", (0.0, 1.0, 0.5)), ("front", (0.0, 0.0, 1.0)))


def _blank() -> np.ndarray:
    return np.ones((8, 8, 3), np.float32)


def _truth_or_blank(image):
    return _blank() if image is None else image


def forehead_zoom(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The forehead of a rendering: the top third of the face mask's box, its middle half."""
    rows, cols = np.nonzero(mask > 0.5)
    if not len(rows):
        return image
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = bottom - top + 1, right - left + 1
    return image[top:top + max(2, h // 3), left + w // 4:left + max(w // 4 + 2, 3 * w // 4)]


def fig4_rows(case: Case) -> tuple[list, list]:
    own = case.render(case.own())
    renders = [case.render(case.target(e)) for e in EXPRESSIONS]
    crop = case.subject.crop.astype(np.float32) / 255.0
    last = renders[-1]
    r_row = [crop, own["image"]] + [r["image"] for r in renders] + [forehead_zoom(last["image"], last["mask"])]
    s_row = [crop, own["shaded"]] + [r["shaded"] for r in renders] + [forehead_zoom(last["shaded"], last["mask"])]
    rows, labels = [r_row, s_row], [f"{case.name}: R", "shaded G_D"]
    if case.synthetic:
        truths = [case.truth(case.target(e)[0]) for e in EXPRESSIONS]
        rows.append([crop, crop] + truths + [forehead_zoom(truths[-1], last["mask"])])
        labels.append("true photo")
    return rows, labels


FIG4_COLUMNS = ["input", "reconstruction"] + list(EXPRESSIONS) + [f"zoom: {EXPRESSIONS[-1]}"]


def fig5_rows(case: Case) -> tuple[list, list]:
    """R with D̃ and with a zero map, and their difference shown with a gain that puts the case's
    99th percentile at half scale (named in the row label: the details' effect can be tiny)."""
    with_d = [case.render(case.target(e))["image"] for e in EXPRESSIONS]
    without = [case.render(case.target(e), zero_detail=True)["image"] for e in EXPRESSIONS]
    diffs = [np.abs(a - b).mean(-1, keepdims=True).repeat(3, -1) for a, b in zip(with_d, without)]
    p99 = float(np.percentile(np.concatenate([d.ravel() for d in diffs]), 99))
    gain = min(0.5 / p99, MAX_DIFF_GAIN) if p99 > 0 else MAX_DIFF_GAIN
    diff = [np.clip(d * gain, 0, 1) for d in diffs]
    return [with_d, without, diff], [f"{case.name}: with D~", "zero map", f"|difference| x{gain:.0f}"]


def fig6_rows(case: Case, expression: str, yaws: list[float]) -> tuple[list, list]:
    target = case.target(expression)
    out = [case.render(target, yaw_deg=y) for y in yaws]
    rows, labels = [[o["image"] for o in out], [o["shaded"] for o in out]], [f"{case.name}: R", "shaded G_D"]
    if case.synthetic:
        rows.append([case.truth(target[0], y) for y in yaws])
        labels.append("true photo")
    return rows, labels


def fig7_rows(case: Case, expression: str) -> tuple[list, list]:
    target = case.target(expression)
    lights = [None] + [sh_from_light(d, 0.7, 0.45).to(torch.float32) for _, d in LIGHTS]
    out = [case.render(target, sh=sh) for sh in lights]
    return [[o["image"] for o in out], [o["shaded"] for o in out]], [f"{case.name}: R", "shaded G_D"]


FIG7_COLUMNS = ["photo's light"] + [f"light {name}" for name, _ in LIGHTS]


def fig8_row(case: Case, expression: str, ablation) -> list:
    target = case.target(expression)
    full, abl = case.render(target), case.render(target, renderer=ablation)
    return [full["shaded"], full["image"], abl["image"], _truth_or_blank(case.truth(target[0]))]


FIG8_COLUMNS = ["shaded G_D", "full R", "R w/o AugW, DSL", "true photo"]


def grid(blocks: list[tuple[list, list]], columns: list[str]) -> np.ndarray:
    """Stack the row blocks of several cases into one labelled grid."""
    rows, labels = [], []
    for r, lab in blocks:
        rows += r
        labels += lab
    return image_grid(rows, cell=CELL, col_labels=columns, row_labels=labels)
