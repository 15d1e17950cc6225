"""``facedet3d bench train-renderer``: samples/s of one renderer training step (all phases), and the
share of the step spent rasterizing G_P and G_D (every step rasterizes five geometries per image:
G_P and G_D of x, G_D* with the fake map, G_P and G_D of the target expression)."""

from __future__ import annotations

import math
import time
from typing import Iterator

import numpy as np
import torch

from facedet3d.render.camera import face_camera
from facedet3d.render.color import to_srgb
from facedet3d.renderer.data import Faces, make_batch_fn
from facedet3d.renderer.geometry import FaceGeometry, View
from facedet3d.renderer.perceptual import feature_net
from facedet3d.renderer.stage import build, make_phases, renderer_config
from facedet3d.train.loop import run_step


def _wrinkles(n: int, size: int, seed: int) -> torch.Tensor:
    """(n, 1, size, size) mm: horizontal ridges of 0.3 mm, a different phase per map."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0, 1, size)[:, None].expand(size, size)
    phase = torch.rand(n, generator=g)[:, None, None, None] * 2 * math.pi
    return 0.3 * torch.sin(2 * math.pi * 12 * rows + phase)


def synthetic_faces(geometry: FaceGeometry, size: int, texture_size: int, people: int = 4, per_person: int = 2,
                    seed: int = 0) -> Faces:
    """A small :class:`Faces` of random people of ``geometry``'s model, each photo the model's own
    Lambertian render of its wrinkled geometry (for tests and benches; no files)."""
    n = people * per_person
    g = torch.Generator().manual_seed(seed)
    model = geometry.model
    aus = torch.zeros(n, 17)
    aus[torch.arange(n), torch.arange(n) % 17] = 3.0
    cam = face_camera(size)
    vec = {"shape": torch.randn(n, model.num_shape, generator=g) * 0.5, "expr": aus.clone(), "aus": aus,
           "albedo": torch.zeros(n, model.num_albedo), "pose": torch.randn(n, 3, generator=g) * 0.1,
           "translation": torch.tensor([0.0, 0.0, -600.0]).expand(n, 3).clone(),
           "focal": torch.full((n,), float(cam.focal)), "principal": torch.full((n, 2), size / 2.0),
           "sh": torch.tensor([0.9, 0.0, 0.0, 0.5, 0, 0, 0, 0, 0] * 3, dtype=torch.float32).expand(n, 27).clone()}
    detail = _wrinkles(n, 64, seed)
    view = View(size, vec["pose"], vec["translation"], vec["focal"], vec["principal"], vec["sh"])
    raster = geometry.raster(geometry.vertices(vec["shape"], vec["expr"], detail), view, vec["albedo"])
    image = (to_srgb(raster.shaded_albedo.cpu()) * 255).round().to(torch.uint8)
    texture = torch.randint(0, 256, (n, 4, texture_size, texture_size), generator=g, dtype=torch.uint8)
    return Faces(image=image, texture=texture, detail=detail, identity=np.array([f"p{i // per_person}" for i in range(n)]),
                 ids=np.array([f"i{i}" for i in range(n)]), kind=np.array(["image"] * n), size=size, **vec)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train_renderer(settings: dict[str, dict], model, device: torch.device, steps: int = 3) -> Iterator[dict]:
    """One row per named ``train_renderer`` section: a full step timed after a warm-up, and the
    seconds of it spent in rasterization (G_P / G_D, five per image)."""
    for name, s in settings.items():
        geometry = FaceGeometry(model, device)
        faces = synthetic_faces(geometry, s["size"], s["texture_size"], people=max(2, s["batch"]))
        nets = {k: v.to(device) for k, v in build(renderer_config(s, model.num_albedo)).items()}
        pcpt = feature_net(s["perceptual"], s["perceptual_weights"]) if s["weights"]["pcpt"] > 0 else None
        phases = make_phases(nets, s, geometry, pcpt.to(device) if pcpt is not None else None)
        batch_fn = make_batch_fn(faces, s["batch"], seed=0)
        raster, spent = geometry.raster, [0.0]

        def timed(*args, **kwargs):
            _sync(device)
            t = time.perf_counter()
            out = raster(*args, **kwargs)
            _sync(device)
            spent[0] += time.perf_counter() - t
            return out

        geometry.raster = timed
        run_step(phases, {k: v.to(device) for k, v in batch_fn(0).items()}, 0, device)
        _sync(device)
        spent[0] = 0.0
        start = time.perf_counter()
        for i in range(1, steps + 1):
            run_step(phases, {k: v.to(device) for k, v in batch_fn(i).items()}, i, device)
        _sync(device)
        seconds = (time.perf_counter() - start) / steps
        yield {"config": name, "size": s["size"], "batch": s["batch"], "triangles": int(model.num_faces),
               "ms_per_step": round(seconds * 1000, 1), "samples_per_s": round(s["batch"] / seconds, 2),
               "raster_ms_per_step": round(spent[0] / steps * 1000, 1),
               "raster_share": round(spent[0] / steps / seconds, 3), "device": str(device),
               "parameters": {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()}}
