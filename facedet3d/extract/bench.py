"""`facedet3d bench extract`: seconds per image of the builtin extraction backend.

Renders a few synthetic 256² faces with the real `synth` stage into a temporary folder, then
times :meth:`~facedet3d.extract.builtin.BuiltinExtractor.extract` on each PNG (decoded
beforehand) on one torch thread, after one warm-up image (model and cache building are not
counted). The extractor is the one the config's ``extract`` section builds (detail network
included or not). Reports the mean seconds per image and its parts.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

REPO_CONFIG = "config.yaml"
PARTS = ("detect", "landmarks", "fit", "unwrap", "detail")


def _render(tmp: str, n_images: int, config_paths: Sequence[str | Path]) -> list[np.ndarray]:
    """n_images synthetic 256² renders (RGB uint8), made by the synth stage in tmp."""
    from PIL import Image

    from facedet3d.config import load_config, merge
    from facedet3d.synth.stage import run_chunk

    per_identity = 4
    identities = math.ceil((n_images + 1) / per_identity)
    config = merge(load_config(config_paths), {
        "results_dir": tmp,
        "synth": {"n_identities": identities, "identities_per_chunk": identities, "image_size": 256,
                  "detail_size": 512, "expressions_per_identity": per_identity, "videos_per_identity": 0,
                  "detector_check": False},
    })
    run_chunk(config, 0)
    paths = sorted(Path(tmp, "synth", "images", "000").glob("*.png"))
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths[: n_images + 1]]


def bench_extract(n_images: int = 12, quick: bool = False, config_paths: Sequence[str | Path] = (REPO_CONFIG,)) -> Iterator[dict]:
    """One row: mean s_per_image and its parts (s_detect, s_landmarks, s_fit, s_unwrap,
    s_detail) of builtin extraction at 256² on one thread, over n_images renders (3 if quick)."""
    import torch

    from facedet3d.config import load_config
    from facedet3d.extract.backends import builtin_extractor
    from facedet3d.extract.errors import NoFaceError

    torch.set_num_threads(1)
    n_images = 3 if quick else int(n_images)
    with tempfile.TemporaryDirectory() as tmp:
        images = _render(tmp, n_images, config_paths)
    extractor = builtin_extractor(load_config(config_paths))
    extractor.extract(images[0])  # warm-up: caches of the UV rasters and bases
    totals, parts, missed = [], {k: [] for k in PARTS}, 0
    for image in images[1:]:
        start = time.perf_counter()
        try:
            result = extractor.extract(image)
        except NoFaceError:
            missed += 1
            continue
        totals.append(time.perf_counter() - start)
        for k in PARTS:
            parts[k].append(result.timings[k])
    row = {"s_per_image": round(float(np.mean(totals)), 4) if totals else None}
    row |= {f"s_{k}": round(float(np.mean(v)), 4) if v else None for k, v in parts.items()}
    yield row | {
        "images": len(totals),
        "no_face": missed,
        "image_size": 256,
        "texture_size": extractor.texture_size,
        "detail_size": extractor.detail_size,
        "threads": 1,
        "detail_net": extractor.detail_net is not None,
        "model": f"{extractor.model.name} ({extractor.model.num_vertices} vertices)",
    }
