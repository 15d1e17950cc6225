"""The synthetic dataset's contact sheet: per person, image | detail map | shaded geometry."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from facedet3d.data.grids import image_grid, save_png
from facedet3d.render.relief import shade_detail_map

SHOTS_PER_ROW = 3


def _pick(paths: list[Path], n_rows: int) -> list[tuple[Path, list[int]]]:
    """(chunk file, row indices) for the first n_rows identities, up to SHOTS_PER_ROW stills each."""
    picked = []
    for path in paths:
        with h5py.File(path, "r") as f:
            identity = f["identity"].asstr()[()]
            kind = f["kind"].asstr()[()]
        for name in dict.fromkeys(identity):
            rows = [i for i in range(len(identity)) if identity[i] == name and kind[i] == "image"]
            picked.append((path, rows[:SHOTS_PER_ROW]))
            if len(picked) == n_rows:
                return picked
    return picked


def contact_sheet(config: dict, chunk_paths: list[Path], out: Path) -> Path:
    """Render the sheet from the stored ground truth (the shaded geometry is re-rendered)."""
    from facedet3d.synth.render import SynthRenderer

    s = config["synth"]
    renderer = SynthRenderer(s["mesh_resolution"], s["image_size"], s["texture_size"])
    root = out.parent
    rows, labels = [], []
    for path, indices in _pick(chunk_paths, s["contact_sheet_rows"]):
        row = []
        with h5py.File(path, "r") as f:
            for i in indices:
                image = np.asarray(Image.open(root / f["path"].asstr()[i]).convert("RGB"))
                detail = f["detail"][i].astype(np.float32)
                shaded = renderer.render_shaded(f["shape"][i], f["expr"][i], f["pose"][i], float(f["distance"][i]),
                                                f["offset"][i], detail)
                row += [image, shade_detail_map(detail), shaded]
            labels.append(f"{f['identity'].asstr()[indices[0]]} age {f['age'][indices[0]]:.0f}")
        rows.append(row)
    columns = ["image", "detail map", "shaded geometry"] * SHOTS_PER_ROW
    grid = image_grid(rows, cell=min(256, s["image_size"]), col_labels=columns, row_labels=labels)
    return save_png(out, grid)
