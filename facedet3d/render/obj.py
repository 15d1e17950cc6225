"""Wavefront OBJ export (with optional UVs, .mtl and texture PNG) and a tiny reader.

OBJ texture coordinates have v pointing up (v = 0 at the image's bottom row),
whereas the project's UV maps are stored with v down (row = v), so ``vt`` lines
hold ``(u, 1 - v)``. Files are written atomically (temporary file, then os.replace).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facedet3d.atomic import atomic_path, write_text_atomic


def _array(x, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def write_obj(path, verts, faces, uvs=None, texture=None) -> Path:
    """Write a triangle mesh as OBJ.

    Args:
        path: the .obj path; with a texture, ``<stem>.mtl`` and ``<stem>.png`` are
            written next to it.
        verts: (V, 3) float array / tensor; faces (F, 3) int, 0-based.
        uvs: optional (V, 2) per-vertex UVs in the project's convention (v down).
        texture: optional (H, W, 3) uint8 image in the UV layout (row = v); needs uvs.
    Returns the .obj path.
    """
    path = Path(path)
    v = _array(verts, np.float64).reshape(-1, 3)
    f = _array(faces, np.int64).reshape(-1, 3) + 1
    lines = []
    if texture is not None:
        if uvs is None:
            raise ValueError("a texture needs per-vertex uvs")
        mtl, png = path.with_suffix(".mtl"), path.with_suffix(".png")
        tex = _array(texture, np.uint8)
        with atomic_path(png) as tmp:
            Image.fromarray(tex).save(tmp, format="PNG")
        mtl_text = (
            "newmtl material0\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
            f"map_Kd {png.name}\n"
        )
        write_text_atomic(mtl, mtl_text)
        lines += [f"mtllib {mtl.name}", "usemtl material0"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    if uvs is not None:
        uv = _array(uvs, np.float64).reshape(-1, 2)
        if uv.shape[0] != v.shape[0]:
            raise ValueError("uvs must be per vertex, (V, 2)")
        lines += [f"vt {a:.6f} {1.0 - b:.6f}" for a, b in uv]
        lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in f]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in f]
    text = "\n".join(lines) + "\n"
    write_text_atomic(path, text)
    return path


def read_obj(path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a triangle OBJ: (verts (V, 3) float64, faces (F, 3) int64 0-based, uvs (V, 2) or None).

    UVs are returned per vertex in the project's convention (v down), taken from
    each face corner's ``vt`` (polygons are fan-triangulated; normals ignored).
    """
    verts, vts, faces, face_vt = [], [], [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(p) for p in parts[1:4]])
        elif parts[0] == "vt":
            vts.append([float(p) for p in parts[1:3]])
        elif parts[0] == "f":
            corners = [p.split("/") for p in parts[1:]]
            vi = [int(c[0]) for c in corners]
            ti = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
            for k in range(1, len(vi) - 1):
                faces.append([vi[0], vi[k], vi[k + 1]])
                face_vt.append([ti[0], ti[k], ti[k + 1]])
    v = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    nv = v.shape[0]
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    f = np.where(f < 0, f + nv, f - 1)
    uvs = None
    ft = np.asarray(face_vt, dtype=np.int64).reshape(-1, 3)
    if vts and (ft != 0).all():
        vt = np.asarray(vts, dtype=np.float64)
        ft = np.where(ft < 0, ft + len(vt), ft - 1)
        uvs = np.zeros((nv, 2))
        uvs[f.reshape(-1)] = vt[ft.reshape(-1)]
        uvs[:, 1] = 1.0 - uvs[:, 1]
    return v, f, uvs
