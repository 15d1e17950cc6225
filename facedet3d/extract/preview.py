"""The extraction preview: per input, image | texture map | detail map | (synthetic data: the
true detail map) | shaded detailed geometry."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from facedet3d.data.images import load_image
from facedet3d.data.grids import image_grid, save_png
from facedet3d.extract.quality import resample
from facedet3d.render.relief import shade_detail_map

N_ROWS = 6


def shaded_geometry(model, shape, expr, pose, translation, focal, detail: np.ndarray,
                    image_size: tuple[int, int]) -> np.ndarray:
    """The fitted mesh displaced by its detail map, as grey clay seen from the fitted camera."""
    from facedet3d.render.camera import Camera
    from facedet3d.render.displace import displace
    from facedet3d.render.shaded import render_shaded

    verts = model.vertices(torch.as_tensor(shape, dtype=torch.float32)[None],
                           torch.as_tensor(expr, dtype=torch.float32)[None])
    detailed = displace(verts, torch.as_tensor(model.faces), torch.as_tensor(model.uvs),
                        torch.as_tensor(detail, dtype=torch.float32)[None, None])
    camera = Camera.perspective(image_size, float(focal))
    t = torch.as_tensor(np.asarray(translation, dtype=np.float32))
    out = render_shaded(detailed, torch.as_tensor(model.faces), camera, torch.as_tensor(np.asarray(pose)),
                        distance=0.0, background=1.0, translation=t)
    return out.image[0].permute(1, 2, 0).numpy()


def extract_preview(config: dict, chunk_paths: list[Path], out: Path) -> Path | None:
    """Write the preview grid of the first few accepted inputs (no file when nothing was accepted)."""
    from facedet3d.data.manifest import resolve_path
    from facedet3d.extract.backends import fitting_model

    manifest_dir = Path(config["results_dir"]) / "data"
    model = fitting_model(config)
    truth = None
    if config["data"]["source"] == "synthetic":
        from facedet3d.synth.truth import SyntheticGroundTruth

        truth = SyntheticGroundTruth(config["results_dir"])
    rows, labels = [], []
    for path in chunk_paths:
        with h5py.File(path, "r") as f:
            for i in range(min(len(f["id"]), N_ROWS - len(rows))):
                image = load_image(resolve_path(manifest_dir, {"path": f["path"].asstr()[i]})).rgb
                detail = f["detail"][i].astype(np.float32)
                row = [image, f["texture"][i], shade_detail_map(detail)]
                if truth is not None:
                    true_detail = truth.get(f["id"].asstr()[i]).detail
                    row.append(shade_detail_map(resample(true_detail, detail.shape[0])))
                if model is not None and "shape" in f and np.all(np.isfinite(f["shape"][i])):
                    row.append(shaded_geometry(model, f["shape"][i], f["expr"][i], f["pose"][i],
                                               f["translation"][i], f["focal"][i], detail, image.shape[:2]))
                rows.append(row)
                labels.append(f["id"].asstr()[i][:14])
        if len(rows) >= N_ROWS:
            break
    columns = ["input", "texture map", "detail map"] + (["true detail map"] if truth else []) + ["shaded geometry"]
    grid = image_grid(rows or [[np.ones((8, 8, 3))]], cell=256, col_labels=columns, row_labels=labels)
    return save_png(out, grid)
