"""samples.png of `train_detp`: held-out people, one row each.

Columns: input image | D(I_x) | D̃(I_y) (the target AUs named as the nearest expression) |
D(I_y) extracted | D(I_y) true (synthetic data). Maps are shown as grey levels, mid-grey 0,
white raised, black sunken; the extracted and predicted maps of a row share one scale (±3 std
of its D(I_x)), the true map has its own (it is several times stronger than what extraction sees).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedet3d.data.grids import image_grid, save_png
from facedet3d.data.images import load_image
from facedet3d.data.manifest import read_manifest, resolve_path
from facedet3d.errors import UserError
from facedet3d.face.expressions import nearest_expression
from facedet3d.paths import Results


def _pick(test, src: np.ndarray, tgt: np.ndarray, rows: int) -> list[int]:
    """Pair positions from distinct people, the largest expression change first."""
    change = (test.aus[tgt] - test.aus[src]).abs().sum(1).numpy()
    chosen, people = [], set()
    for p in np.argsort(-change, kind="stable"):
        if test.identity[src[p]] not in people:
            chosen.append(int(p))
            people.add(test.identity[src[p]])
        if len(chosen) == rows:
            break
    return chosen


def _image(paths: Results, by_id: dict, image_id: str) -> np.ndarray:
    row = by_id.get(image_id)
    if row is None:
        return np.ones((8, 8, 3))
    try:
        return load_image(resolve_path(paths.manifest.parent, row)).rgb
    except UserError:
        return np.ones((8, 8, 3))


def _grey(detail, span: float) -> np.ndarray:
    """(1, S, S) mm -> (S, S) in [0, 1]: 0.5 + d / (2 span)."""
    return np.clip(0.5 + detail[0].numpy() / (2.0 * span), 0.0, 1.0)


def samples_png(g, test, scale: float, device, paths: Results, out: Path, rows: int = 6) -> Path:
    from facedet3d.detp.stage import held_out_pairs, predict

    src, tgt = held_out_pairs(test)
    picked = _pick(test, src, tgt, rows)
    if not picked:
        return save_png(out, np.ones((8, 8, 3)))
    a, b = src[picked], tgt[picked]
    pred = predict(g, test, a, b, scale, device)
    by_id = {r["id"]: r for r in read_manifest(paths.manifest)}
    grid, labels = [], []
    for i, (x, y) in enumerate(zip(a, b)):
        span = 3.0 * float(test.detail[x].std()) or 1.0
        row = [_image(paths, by_id, test.ids[x])] + [_grey(m, span) for m in (test.detail[x], pred[i], test.detail[y])]
        if test.truth is not None:
            row.append(_grey(test.truth[y], 3.0 * float(test.truth[y].std()) or 1.0))
        grid.append(row)
        labels.append(f"{test.ids[x]} -> {nearest_expression(test.aus[y].numpy())}")
    columns = ["input I_x", "D(I_x)", "DetP D~(I_y)", "D(I_y) extracted"] + (["D(I_y) true"] if test.truth is not None else [])
    return save_png(out, image_grid(grid, cell=192, col_labels=columns, row_labels=labels))
