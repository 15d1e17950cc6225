"""``facedet3d bench predict``: seconds per photo of `facedet3d predict`, by part (models loaded once)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np


def bench_predict(models_dir: str, device: str, repeats: int = 3) -> Iterator[dict]:
    import skimage.data
    from PIL import Image

    from facedet3d.predict.command import predict_photo
    from facedet3d.predict.models import TrainedModels
    from facedet3d.predict.subject import make_annotators, make_extractor, prepare
    from facedet3d.predict.targets import parse_expression

    t = time.perf_counter()
    models = TrainedModels.load(models_dir, device)
    extractor, annotators = make_extractor(models), make_annotators(models)
    load_s = time.perf_counter() - t
    aus = parse_expression("surprise")
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "astronaut.png"
        Image.fromarray(skimage.data.astronaut()).save(photo)
        prepare(models, photo, extractor, annotators)  # warm-up
        for passes in (1, 2):
            prep, rest = [], []
            for k in range(repeats):
                t = time.perf_counter()
                subject = prepare(models, photo, extractor, annotators)
                t1 = time.perf_counter()
                info = predict_photo(models, subject, aus, Path(tmp) / f"out{k}", None, passes)
                prep.append(t1 - t)
                rest.append(time.perf_counter() - t1)
            yield {"photo": "astronaut 512x512", "rcan_passes": passes, "detail_size": info["detail_size"],
                   "s_per_photo": round(float(np.median(np.add(prep, rest))), 3),
                   "s_extract_annotate": round(float(np.median(prep)), 3),
                   "s_detail": info["seconds"]["detail"], "s_render_write": info["seconds"]["render_and_write"],
                   "s_load_models": round(load_s, 2), "device": str(models.device)}
