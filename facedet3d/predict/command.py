"""`facedet3d predict PHOTO... --expression E --out DIR`: a detailed 3D face and its renderings per photo.

Per photo, in ``DIR/<photo stem>/``:
  mesh.obj, mesh.mtl, mesh.png  the detailed mesh (fitted shape, target expression α̂_e, displaced
                                along its normals by D̃(I_y)) with the photo's texture map
  detail.png                    D̃(I_y) after RCAN (×4 per pass; Eq. 20 makes two passes, ×16: the
                                default one pass takes 0.4 s on 2 CPU cores, two ~5 s), 16-bit, FDS's convention
                                (d + 1) / 2 · 65535 with d in millimetres (clipped to ±1 mm)
  render.png                    R's rendering in the target expression (the photo's light, its
                                yaw or --yaw)
  shaded.png                    the detailed geometry as grey clay, same view
  prediction.json               the target AUs, α̂_e, yaw, sizes and seconds
A photo that fails (unreadable, no face) is one line on stderr; the others go on; the exit
status is 2 when any failed. Models and expression are checked before any photo.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facedet3d.atomic import atomic_path, write_json_atomic
from facedet3d.data.grids import save_png
from facedet3d.errors import UserError
from facedet3d.face.expressions import nearest_expression
from facedet3d.face.layout import AU_NAMES

DETAIL_RANGE_MM = 1.0


def save_detail_png(path: Path, detail_mm: np.ndarray) -> Path:
    """A detail map (H, W) mm as a 16-bit PNG: (d + 1) / 2 · 65535, d clipped to ±1 mm."""
    d = np.clip(np.asarray(detail_mm, np.float64) / DETAIL_RANGE_MM, -1.0, 1.0)
    raw = np.round((d + 1.0) / 2.0 * 65535.0).astype(np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(raw).save(tmp, format="PNG")
    return path


def predict_photo(models, subject, aus: np.ndarray, out: Path, yaw_deg: float | None, rcan_passes: int = 1) -> dict:
    """Write the files above for one prepared photo; returns prediction.json's content."""
    from facedet3d.predict.apply import predict_target, render
    from facedet3d.render.obj import write_obj

    t0 = time.perf_counter()
    expr, fine = predict_target(models, subject, aus, rcan_passes)
    t1 = time.perf_counter()
    shown = render(models, subject, fine, aus, expr, yaw_deg)
    out.mkdir(parents=True, exist_ok=True)
    save_png(out / "render.png", shown["image"])
    save_png(out / "shaded.png", shown["shaded"])
    save_detail_png(out / "detail.png", fine.numpy())
    geo = models.geometry
    verts = geo.vertices(subject.vectors["shape"], torch.as_tensor(expr)[None], fine[None, None])
    write_obj(out / "mesh.obj", verts[0], geo.faces, geo.uvs, subject.texture)
    info = {"photo": str(subject.path), "expression": nearest_expression(aus),
            "aus": {n: round(float(a), 3) for n, a in zip(AU_NAMES, aus)},
            "expression_parameters": [round(float(e), 4) for e in expr],
            "yaw_deg": yaw_deg, "rcan_passes": rcan_passes, "detail_size": int(fine.shape[-1]), "detail_units": "mm, (d + 1) / 2 * 65535",
            "render_size": int(shown["image"].shape[0]),
            "seconds": {"detail": round(t1 - t0, 3), "render_and_write": round(time.perf_counter() - t1, 3)}}
    write_json_atomic(out / "prediction.json", info)
    return info


def run(photos: list[str], expression: str, out: str, models_dir: str = "results", yaw: float | None = None,
        device: str = "auto", rcan_passes: int = 1) -> int:
    """Predict for every photo; returns the exit status (0, or 2 when any photo failed)."""
    from facedet3d.predict.models import TrainedModels
    from facedet3d.predict.subject import make_annotators, make_extractor, prepare
    from facedet3d.predict.targets import parse_expression

    aus = parse_expression(expression)
    if yaw is not None and not -90.0 < yaw < 90.0:
        raise UserError(f"--yaw {yaw} is outside (-90, 90) degrees")
    models = TrainedModels.load(models_dir, device)
    extractor, annotators = make_extractor(models), make_annotators(models)
    out_dir, used, failed = Path(out), set(), 0
    for photo in photos:
        stem = Path(photo).stem
        name, k = stem, 2
        while name in used:
            name, k = f"{stem}_{k}", k + 1
        used.add(name)
        started = time.perf_counter()
        try:
            subject = prepare(models, photo, extractor, annotators)
            predict_photo(models, subject, aus, out_dir / name, yaw, rcan_passes)
        except UserError as err:
            message = str(err) if str(err).startswith(str(photo)) else f"{photo}: {err}"
            print(f"facedet3d predict: {message}", file=sys.stderr)
            failed += 1
            continue
        print(f"{photo} -> {out_dir / name} ({time.perf_counter() - started:.1f} s)", flush=True)
    return 2 if failed else 0
