"""Vertex normals, SH shading and the shaded preview renderer."""

import math

import pytest
import torch

from facedet3d.render.bench import relief_mesh, uv_sphere
from facedet3d.render.camera import face_camera
from facedet3d.render.shaded import GREY_ALBEDO, render_shaded
from facedet3d.render.shading import (
    A0,
    A1,
    C0,
    C1,
    default_sh,
    lambertian,
    sh_basis,
    sh_from_light,
    sh_irradiance,
    vertex_normals,
)


def random_normals(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)


def test_sphere_vertex_normals_are_radial():
    centre = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    verts, faces = uv_sphere(5.0, 16, 32, center=tuple(centre.tolist()), dtype=torch.float64)
    normals = vertex_normals(verts[None].expand(2, -1, -1), faces)
    radial = (verts - centre) / 5.0
    assert normals.shape == (2, verts.shape[0], 3)
    assert ((normals[0] * radial).sum(-1) > 0.999).all()  # exact up to the tessellation
    torch.testing.assert_close(normals.norm(dim=-1), torch.ones(2, verts.shape[0], dtype=torch.float64))
    torch.testing.assert_close(vertex_normals(verts, faces), normals[0])


def test_vertex_normals_are_area_weighted():
    # Vertex 0 is shared by a big triangle in the z = 0 plane and a small one in the x = 0 plane.
    verts = torch.tensor([[0.0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 3, 4]])
    n0 = vertex_normals(verts, faces)[0]
    expected = torch.nn.functional.normalize(torch.tensor([1.0 * 1, 0, 16.0]), dim=0).double()  # areas 8 : 0.5
    torch.testing.assert_close(n0, expected)


def test_constant_sh_gives_uniform_irradiance():
    normals = random_normals(500)[None]
    sh = torch.zeros(1, 27, dtype=torch.float64)
    sh[0, [0, 9, 18]] = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    irr = sh_irradiance(normals, sh)
    assert irr.shape == (1, 500, 3)
    expected = A0 * C0 * torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(irr, expected.expand(1, 500, 3))
    assert A0 * C0 == pytest.approx(math.sqrt(math.pi) / 2)


def test_single_directional_terms_follow_the_basis():
    normals = random_normals(200)[None]
    x, y, z = normals[0].unbind(-1)
    for k, expected in [(2, A1 * C1 * z), (1, -A1 * C1 * y), (3, -A1 * C1 * x)]:
        sh = torch.zeros(1, 27, dtype=torch.float64)
        sh[0, 9 + k] = 1.0  # green channel only
        irr = sh_irradiance(normals, sh)[0]
        torch.testing.assert_close(irr[:, 1], expected)
        assert (irr[:, [0, 2]] == 0).all()
    basis = sh_basis(normals[0])
    assert basis.shape == (200, 9)
    # Band-2 terms: the values of the documented polynomials.
    k2 = 2 * math.pi / math.sqrt(8) * 3 * math.sqrt(5) / math.sqrt(12 * math.pi)
    torch.testing.assert_close(basis[:, 4], k2 * x * y)
    torch.testing.assert_close(basis[:, 6], k2 / (2 * math.sqrt(3)) * (3 * z * z - 1))
    torch.testing.assert_close(basis[:, 8], k2 / 2 * (x * x - y * y))


def test_sh_from_light_approximates_clamped_cosine():
    d = torch.tensor([0.3, 0.5, 0.8])
    sh = sh_from_light(d, intensity=2.0, ambient=0.25, color=(1.0, 0.5, 0.0))
    normals = random_normals(300).float()[None]
    cos = normals[0] @ (d / d.norm())
    order2 = 0.25 + 0.5 * cos + 5.0 / 16.0 * (3 * cos * cos - 1) / 2  # exact SH-2 irradiance
    irr = sh_irradiance(normals, sh)[0]
    torch.testing.assert_close(irr[:, 0], 0.25 + 2.0 * order2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(irr[:, 1], 0.5 * irr[:, 0])
    assert (irr[:, 2] == 0).all()
    assert (irr[:, 0] - (0.25 + 2.0 * cos.clamp(min=0))).abs().max() < 0.4  # close to max(0, cos)
    sh_default = default_sh(4)
    assert sh_default.shape == (4, 27)
    irr = sh_irradiance(torch.tensor([[[0.0, 0.0, 1.0]]]), sh_default[:1])
    assert 0.7 < irr.min() and irr.max() < 1.2  # a frontal normal is well lit


def test_lambertian_is_albedo_times_irradiance():
    normals = random_normals(50)[None]
    albedo = torch.rand(1, 50, 3, dtype=torch.float64)
    sh = torch.randn(1, 27, dtype=torch.float64)
    torch.testing.assert_close(lambertian(albedo, normals, sh), albedo * sh_irradiance(normals, sh))


@pytest.mark.parametrize("kind", ["perspective", "orthographic"])
def test_render_shaded_uniform_light_and_mask(kind):
    verts, faces = uv_sphere(60.0, 24, 48, center=(0.0, -5.0, 0.0))
    cam = face_camera(64, kind)
    sh = torch.zeros(1, 27)
    sh[0, [0, 9, 18]] = 1.0
    img, mask = render_shaded(verts, faces, cam, sh=sh, background=(0.0, 0.0, 1.0))
    assert img.shape == (1, 3, 64, 64) and mask.shape == (1, 1, 64, 64)
    inside = mask[0, 0] > 0
    assert inside.float().mean() == pytest.approx(math.pi * (60 * 64 / 200) ** 2 / 64**2, rel=0.1)
    torch.testing.assert_close(img[0, :, inside], torch.full_like(img[0, :, inside], GREY_ALBEDO * A0 * C0))
    assert (img[0, 2, ~inside] == 1).all() and (img[0, :2, ~inside] == 0).all()


def test_render_shaded_rotates_normals_with_pose():
    # A square facing the camera; only the z-term of the light is on.
    half = 50.0
    verts = torch.tensor([[-half, -half - 5, 0], [half, -half - 5, 0], [half, half - 5, 0], [-half, half - 5, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    sh = torch.zeros(1, 27)
    sh[0, [2, 11, 20]] = 1.0
    cam = face_camera(32, "orthographic")
    for yaw in (0.0, 0.6):
        img, mask = render_shaded(verts, faces, cam, pose=(yaw, 0.0, 0.0), sh=sh, albedo=1.0)
        inside = mask[0, 0] > 0
        assert inside.sum() > 50
        expected = A1 * C1 * math.cos(yaw)
        torch.testing.assert_close(img[0, :, inside], torch.full_like(img[0, :, inside], min(expected, 1.0)))
    # Per-vertex albedo and a batch of poses.
    colours = torch.tensor([[1.0, 0.0, 0.0]]).expand(4, 3)
    img, mask = render_shaded(verts, faces, cam, pose=torch.tensor([[0.0, 0, 0], [0.3, 0, 0]]), sh=sh, albedo=colours)
    assert img.shape == (2, 3, 32, 32)
    assert (img[:, 1:] == 0).all() and img[:, 0].max() > 0.8


def test_render_shaded_default_light_on_a_relief():
    verts, faces, _ = relief_mesh(40)
    img, mask = render_shaded(verts, faces, face_camera(64), pose=(0.2, -0.1, 0.05))
    assert 0.3 < mask.mean() < 0.8
    lit = img[0, 0][mask[0, 0] > 0]
    assert lit.min() >= 0 and lit.max() <= 1 and lit.std() > 0.02
    verts.requires_grad_(True)
    img, _ = render_shaded(verts, faces, face_camera(32))
    img.sum().backward()
    assert verts.grad is not None and verts.grad.abs().sum() > 0
