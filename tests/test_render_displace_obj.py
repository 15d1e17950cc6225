"""UV-map lookup, displacement along normals and OBJ export."""

import numpy as np
import pytest
import torch
from PIL import Image

from facedet3d.render.bench import relief_mesh, uv_sphere
from facedet3d.render.displace import displace, sample_uv_map
from facedet3d.render.obj import read_obj, write_obj
from facedet3d.render.shading import vertex_normals


def sphere_with_uvs(r=10.0):
    verts, faces = uv_sphere(r, 12, 24, dtype=torch.float64)
    uvs = torch.rand(verts.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return verts, faces, uvs


def test_sample_uv_map_layout():
    # Values encode the texel: 100 * row + column; u picks the column, v the row.
    h, w = 5, 7
    uv_map = (100.0 * torch.arange(h)[:, None] + torch.arange(w)[None, :])[None, None].double()
    rc = torch.tensor([[0, 0], [4, 6], [2, 3], [1, 5]])
    rcd = rc.double()
    uvs = torch.stack([(rcd[:, 1] + 0.5) / w, (rcd[:, 0] + 0.5) / h], -1)
    out = sample_uv_map(uv_map, uvs)
    assert out.shape == (1, 4, 1)
    torch.testing.assert_close(out[0, :, 0], (100.0 * rc[:, 0] + rc[:, 1]).double())
    # Bilinear halfway between two columns; batched uvs broadcast against a shared map.
    mid = torch.tensor([[[3.0 / w, 0.5 / h]]], dtype=torch.float64).expand(3, 1, 2)
    torch.testing.assert_close(sample_uv_map(uv_map, mid)[:, 0, 0], torch.full((3,), 2.5, dtype=torch.float64))


def test_zero_detail_leaves_mesh_unchanged():
    verts, faces, uvs = sphere_with_uvs()
    out = displace(verts[None], faces, uvs, torch.zeros(1, 1, 16, 16, dtype=torch.float64))
    torch.testing.assert_close(out[0], verts)


@pytest.mark.parametrize("c", [0.7, -1.5])
def test_constant_detail_moves_along_normals(c):
    verts, faces, uvs = sphere_with_uvs(10.0)
    batch = verts[None].expand(2, -1, -1)
    out = displace(batch, faces, uvs, torch.full((2, 1, 8, 8), c, dtype=torch.float64))
    torch.testing.assert_close(out, batch + c * vertex_normals(batch, faces))
    torch.testing.assert_close((out - batch).norm(dim=-1), torch.full((2, verts.shape[0]), abs(c), dtype=torch.float64))
    radius = out[0].norm(dim=-1)
    assert (radius - (10.0 + c)).abs().max() < 0.01  # a sphere grows / shrinks by c


def test_displacement_follows_the_map_and_is_differentiable():
    verts, faces, uvs = relief_mesh(20, dtype=torch.float64)
    detail = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    detail[..., :, 16:] = 2.0  # right half of the UV square (u > 0.5) only
    detail.requires_grad_(True)
    out = displace(verts[None], faces, uvs, detail)
    moved = (out[0] - verts).norm(dim=-1)
    right = uvs[:, 0] > 0.52
    left = uvs[:, 0] < 0.48
    torch.testing.assert_close(moved[right], torch.full_like(moved[right], 2.0))
    assert (moved[left] < 1e-12).all()
    out.sum().backward()
    assert detail.grad.abs().sum() > 0


def test_obj_round_trip(tmp_path):
    verts, faces, uvs = relief_mesh(10)
    texture = (np.random.default_rng(0).random((16, 24, 3)) * 255).astype(np.uint8)
    path = write_obj(tmp_path / "sub" / "face.obj", verts, faces, uvs, texture)
    v, f, uv = read_obj(path)
    np.testing.assert_allclose(v, verts.numpy(), atol=1e-5)
    np.testing.assert_array_equal(f, faces.numpy())
    np.testing.assert_allclose(uv, uvs.numpy(), atol=1e-5)
    text = path.read_text()
    assert "mtllib face.mtl" in text
    assert "map_Kd face.png" in (tmp_path / "sub" / "face.mtl").read_text()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "sub" / "face.png")), texture)
    # OBJ's vt is v-up: a vertex at the top of the UV square (v = 0) gets vt v = 1.
    top = int(np.argmin(uvs[:, 1].numpy()))
    vt_lines = [line for line in text.splitlines() if line.startswith("vt ")]
    assert float(vt_lines[top].split()[2]) == pytest.approx(1.0 - float(uvs[top, 1]), abs=1e-6)
    # No temporary files are left behind; a plain mesh round-trips without uvs.
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["face.mtl", "face.obj", "face.png"]
    v2, f2, uv2 = read_obj(write_obj(tmp_path / "plain.obj", verts.numpy(), faces.numpy()))
    assert uv2 is None and f2.shape == faces.shape
    with pytest.raises(ValueError):
        write_obj(tmp_path / "bad.obj", verts, faces, texture=texture)
