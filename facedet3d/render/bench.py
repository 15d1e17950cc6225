"""Rasterizer benchmark and the synthetic meshes it (and the tests) use.

:func:`bench_rasterize` times :func:`facedet3d.render.rasterize.rasterize` on a
mesh given in the frontal frame (mm), framed by :func:`face_camera` as a face
would be; :func:`subdivide_to` densifies a mesh to show how the time grows with
the triangle count. :func:`uv_sphere` and :func:`relief_mesh` are stand-ins for
the face template.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from facedet3d.face import layout
from facedet3d.render.camera import face_camera, place_face
from facedet3d.render.rasterize import chunking_as, rasterize


def uv_sphere(
    radius: float = 1.0, n_lat: int = 32, n_lon: int = 64, center=(0.0, 0.0, 0.0), dtype=torch.float32
) -> tuple[Tensor, Tensor]:
    """A UV sphere: verts (2 + (n_lat-1)*n_lon, 3), faces (2*(n_lat-1)*n_lon, 3) long.

    Triangles are counter-clockwise seen from outside (normals point outwards).
    """
    theta = torch.arange(1, n_lat, dtype=torch.float64) * math.pi / n_lat  # polar angle from +y
    phi = torch.arange(n_lon, dtype=torch.float64) * 2 * math.pi / n_lon
    st, ct = torch.sin(theta)[:, None], torch.cos(theta)[:, None]
    ring = torch.stack(
        [st * torch.sin(phi), ct.expand(-1, n_lon), st * torch.cos(phi)], -1
    ).reshape(-1, 3)
    verts = torch.cat([torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), ring,
                       torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)])
    verts = verts * radius + torch.tensor(center, dtype=torch.float64)
    south = verts.shape[0] - 1

    def vid(i, j):  # ring i (0..n_lat-2), column j
        return 1 + i * n_lon + j % n_lon

    faces = []
    for j in range(n_lon):
        faces.append((0, vid(0, j), vid(0, j + 1)))
        faces.append((south, vid(n_lat - 2, j + 1), vid(n_lat - 2, j)))
        for i in range(n_lat - 2):
            a, b, c, d = vid(i, j), vid(i, j + 1), vid(i + 1, j), vid(i + 1, j + 1)
            faces.append((a, c, d))
            faces.append((a, d, b))
    return verts.to(dtype), torch.tensor(faces, dtype=torch.long)


def relief_mesh(cells: int = 122, dtype=torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """A face-like height field over the layout's UV window, cut to the face outline.

    A ``cells`` x ``cells`` grid (2 triangles per cell, about 1.4 * cells**2
    triangles survive the cut) with a rounded relief and a nose bump, in frontal
    mm, counter-clockwise seen from +z. Returns (verts (V, 3), faces (F, 3), uvs (V, 2)).
    """
    c = torch.linspace(0.0, 1.0, cells + 1, dtype=torch.float64)
    v, u = torch.meshgrid(c, c, indexing="ij")
    x = layout.X_MIN + u * layout.SPAN
    y = layout.Y_MAX - v * layout.SPAN
    r2 = (x / 80.0) ** 2 + ((y + 5.0) / 105.0) ** 2
    z = 55.0 * torch.sqrt(torch.clamp(1.0 - r2, min=0.0)) - 40.0
    z = z + 22.0 * torch.exp(-((x / 9.0) ** 2) - ((y + 25.0) / 18.0) ** 2)
    verts = torch.stack([x, y, z], -1).reshape(-1, 3)
    uvs = torch.stack([u, v], -1).reshape(-1, 2)
    n = cells + 1
    i, j = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    a = (i * n + j).reshape(-1)  # top-left; rows go down in y
    b, cc, d = a + 1, a + n, a + n + 1
    faces = torch.cat([torch.stack([a, cc, b], -1), torch.stack([b, cc, d], -1)])
    centre = verts[faces].mean(1)
    inside = torch.as_tensor(layout.face_mask_xy(centre[:, :2].numpy()))
    faces = faces[inside]
    used = torch.unique(faces)
    remap = torch.full((verts.shape[0],), -1, dtype=torch.long)
    remap[used] = torch.arange(used.numel())
    return verts[used].to(dtype), remap[faces], uvs[used].to(dtype)


def subdivide(verts: Tensor, faces: Tensor, attrs: Tensor | None = None):
    """Midpoint 1 -> 4 subdivision: verts (V, C), faces (F, 3) -> (V + E, C), (4F, 3).

    ``attrs`` (V, D) (e.g. uvs) are interpolated the same way and returned third when given.
    """
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # (3F, 2)
    e_sorted = e.sort(1).values
    uniq, inv = torch.unique(e_sorted, dim=0, return_inverse=True)
    nv = verts.shape[0]
    mids = nv + inv.view(3, -1)  # m01, m12, m20 per face
    new_verts = torch.cat([verts, 0.5 * (verts[uniq[:, 0]] + verts[uniq[:, 1]])])
    a, b, c = faces.unbind(1)
    m01, m12, m20 = mids
    new_faces = torch.cat([
        torch.stack([a, m01, m20], 1), torch.stack([m01, b, m12], 1),
        torch.stack([m20, m12, c], 1), torch.stack([m01, m12, m20], 1),
    ])
    if attrs is None:
        return new_verts, new_faces
    return new_verts, new_faces, torch.cat([attrs, 0.5 * (attrs[uniq[:, 0]] + attrs[uniq[:, 1]])])


def subdivide_to(verts: Tensor, faces: Tensor, min_triangles: int) -> tuple[Tensor, Tensor]:
    """Subdivide (1 -> 4) until the mesh has at least ``min_triangles`` triangles."""
    while faces.shape[0] < min_triangles:
        verts, faces = subdivide(verts, faces)
    return verts, faces


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_torch_ops(fn: Callable[[], object]) -> int:
    """Torch operator calls made by ``fn()``, views excluded (they launch no kernel).

    On a GPU every one is (at least) one kernel launch and a few microseconds of host
    time, so the count is a device-independent proxy for launch overhead.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not getattr(func, "is_view", False):
                self.calls += 1
            return func(*args, **(kwargs or {}))

    with _Count() as counter:
        fn()
    return counter.calls


def count_cuda_syncs(fn: Callable[[], object]) -> int:
    """Host synchronisations (as flagged by ``torch.cuda.set_sync_debug_mode``) made by ``fn()`` on CUDA."""
    import warnings

    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return sum("synchronizing" in str(w.message) for w in caught)


def bench_rasterize(
    verts: Tensor,
    faces: Tensor,
    image_sizes: Sequence[int] = (128, 256, 512),
    batches: Sequence[int] = (1, 8),
    threads: int | None = 1,
    device: str = "cpu",
    repeats: int = 5,
    kind: str = "perspective",
    triangle_counts: Sequence[int] | None = None,
) -> Iterator[dict]:
    """Time the rasterizer on a face-framed mesh; yields one dict row per configuration.

    Args:
        verts: (V, 3) frontal-frame mm (e.g. the face template); faces (F, 3).
        image_sizes: square image sides in pixels.
        batches: batch sizes; the batch holds the mesh at yaws spread over +-0.3 rad.
        threads: ``torch.set_num_threads`` during the run (restored after); None = leave.
        device: torch device string.
        repeats: timed runs after one warm-up; the median is reported.
        kind: camera kind, "perspective" (perspective-correct) or "orthographic".
        triangle_counts: if given, also run on the mesh subdivided to at least each count.

    Row keys: image_size, triangles, batch, ms_per_face, ms_per_batch (medians),
    covered (mean fraction of pixels covered), device, threads, kind; ops_per_batch,
    the torch operator calls (views excluded) of one batch on the GPU's code path, a
    device-independent proxy for kernel launches that does not grow with the batch,
    and ops_per_batch_as_run, the same on this device's code path (the CPU's cuts the
    batch into passes of whole images); on CUDA also cuda_syncs (host synchronisations
    per batch) and peak_mem_mb. Only :func:`rasterize` is timed (projection excluded),
    forward only.
    """
    dev = torch.device(device)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        meshes = [(verts, faces)]
        for count in triangle_counts or ():
            meshes.append(subdivide_to(verts, faces, count))
        for mv, mf in meshes:
            mv = mv.to(dev, torch.float32)
            mf = mf.to(dev, torch.long)
            for size in image_sizes:
                cam = face_camera((size, size), kind)
                for batch in batches:
                    yaw = torch.linspace(-0.3, 0.3, batch) if batch > 1 else torch.zeros(1)
                    pose = torch.stack([yaw, torch.zeros(batch), torch.zeros(batch)], -1).to(dev)
                    screen = cam.project(place_face(mv, pose))
                    run = lambda: rasterize(screen, mf, (size, size), perspective_correct=cam.is_perspective)
                    covered = float(run().mask.float().mean())
                    _sync(dev)
                    with chunking_as("cuda"):
                        run()  # fills the caches, so the count is that of a steady call
                        ops = count_torch_ops(run)
                    ops_here = count_torch_ops(run)
                    extra = {}
                    if dev.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(dev)
                        extra = {"cuda_syncs": count_cuda_syncs(run),
                                 "peak_mem_mb": torch.cuda.max_memory_allocated(dev) / 2**20}
                    times = []
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        run()
                        _sync(dev)
                        times.append(time.perf_counter() - t0)
                    ms = 1000.0 * statistics.median(times)
                    yield {
                        "image_size": size,
                        "triangles": int(mf.shape[0]),
                        "batch": batch,
                        "ms_per_face": ms / batch,
                        "ms_per_batch": ms,
                        "covered": covered,
                        "device": str(dev),
                        "threads": torch.get_num_threads(),
                        "kind": kind,
                        "ops_per_batch": ops,
                        "ops_per_batch_as_run": ops_here,
                        **extra,
                    }
    finally:
        torch.set_num_threads(old_threads)
