"""The `fds` backend: FDS folders built by write_fds_folder import back; malformed ones name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facedet3d.errors import UserError
from facedet3d.extract.fds import (DISPLACEMENT, ISOMAP, OBJ, FdsFolderError, import_fds_folder,
                                   pose_from_rotation, write_fds_folder)
from facedet3d.render.camera import rotation_matrix

POSE = (0.3, -0.1, 0.05)  # yaw, pitch, roll


def _mesh(rng):
    """A 6x6 vertex grid, every vertex used by a face, with per-vertex UVs."""
    u, v = np.meshgrid(np.linspace(0, 1, 6), np.linspace(0, 1, 6))
    uvs = np.stack([u.ravel(), v.ravel()], -1)
    verts = np.column_stack([uvs * 200 - 100, rng.normal(0, 5, 36)])
    quads = [(r * 6 + c, r * 6 + c + 1, (r + 1) * 6 + c) for r in range(5) for c in range(5)]
    quads += [(r * 6 + c + 1, (r + 1) * 6 + c + 1, (r + 1) * 6 + c) for r in range(5) for c in range(5)]
    return verts, np.array(quads), uvs


@pytest.fixture
def arrays() -> dict:
    rng = np.random.default_rng(0)
    verts, faces, uvs = _mesh(rng)
    rotation = rotation_matrix(*POSE).double().numpy()
    modelview = np.eye(4)
    modelview[:3, :3], modelview[:3, 3] = rotation, (1.0, -2.0, -600.0)
    affine = np.zeros((3, 4))
    affine[:2, :3], affine[:2, 3], affine[2, 3] = 2.5 * rotation[:2] * [[1], [-1]], (128, 128), 1.0
    return {
        "vertices": verts, "faces": faces, "uvs": uvs,
        "texture": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "texture_mask": rng.random((64, 64)) > 0.3,
        "detail": np.clip(rng.normal(0, 0.4, (128, 128)), -1, 1),
        "camera": {"modelview": modelview, "affine": affine},
    }


@pytest.fixture
def folder(tmp_path, arrays) -> Path:
    return write_fds_folder(tmp_path / "img001", **arrays)


def test_round_trip(folder, arrays):
    assert {p.name for p in folder.iterdir()} >= {OBJ, ISOMAP, DISPLACEMENT}
    with Image.open(folder / DISPLACEMENT) as im:
        assert im.mode == "I;16"
    rec = import_fds_folder(folder, detail_size=128, texture_size=64)
    assert rec.uv_layout == "fds"
    assert rec.detail.dtype == np.float32 and rec.detail.shape == (128, 128)
    assert np.abs(rec.detail - arrays["detail"]).max() <= 1.0 / 65535 + 1e-6  # 16-bit quantisation
    assert np.array_equal(rec.texture, arrays["texture"]) and rec.texture.dtype == np.uint8
    assert np.array_equal(rec.texture_mask, arrays["texture_mask"])
    assert np.allclose(rec.vertices, arrays["vertices"], atol=1e-5)
    assert np.array_equal(rec.faces, arrays["faces"])
    assert np.allclose(rec.uvs, arrays["uvs"], atol=1e-5)
    assert rec.camera["source"] == "eos"
    assert np.allclose(rec.camera["pose"], POSE, atol=1e-6)
    assert np.allclose(rec.camera["translation"], (1.0, -2.0, -600.0))
    assert rec.camera["scale"] == pytest.approx(2.5) and np.isnan(rec.camera["focal"])
    assert any("FDS writes 4096x4096" in n for n in rec.notes)  # other sizes accepted, with a note


def test_resizing_and_missing_camera(tmp_path, arrays):
    folder = write_fds_folder(tmp_path / "nocam", **{**arrays, "camera": None})
    rec = import_fds_folder(folder, detail_size=32, texture_size=16)
    assert rec.detail.shape == (32, 32) and rec.texture.shape == (16, 16, 3) and rec.texture_mask.shape == (16, 16)
    coarse = arrays["detail"].reshape(32, 4, 32, 4).mean(axis=(1, 3))
    assert np.abs(rec.detail - coarse).max() < 1e-3
    assert rec.camera["source"] == "missing" and np.isnan(rec.camera["pose"]).all()
    assert any("no camera file" in n for n in rec.notes)


def test_camera_txt(tmp_path, arrays):
    camera = {"focal": 1015.0, "pose": np.array(POSE), "translation": np.array([0.0, 0.0, -600.0])}
    folder = write_fds_folder(tmp_path / "txt", **{**arrays, "camera": camera}, camera_format="txt")
    rec = import_fds_folder(folder, 128, 64)
    assert rec.camera["source"] == "camera.txt" and rec.camera["focal"] == 1015.0
    assert np.allclose(rec.camera["pose"], POSE) and np.isnan(rec.camera["scale"])
    (folder / "result.camera.txt").write_text("fov 30\n")
    with pytest.raises(FdsFolderError, match=r"result\.camera\.txt line 1: unknown key 'fov'"):
        import_fds_folder(folder, 128, 64)


def test_pose_from_rotation_inverts_rotation_matrix():
    rng = np.random.default_rng(1)
    for yaw, pitch, roll in rng.uniform(-1.2, 1.2, (20, 3)):
        r = rotation_matrix(yaw, pitch, roll).double().numpy()
        assert np.allclose(pose_from_rotation(3.0 * r), (yaw, pitch, roll), atol=1e-9)


def _expect(folder: Path, pattern: str) -> None:
    with pytest.raises(FdsFolderError, match=pattern) as info:
        import_fds_folder(folder, 128, 64)
    assert isinstance(info.value, UserError)


@pytest.mark.parametrize("name", [OBJ, ISOMAP, DISPLACEMENT])
def test_missing_or_empty_file(folder, name):
    (folder / name).write_bytes(b"")
    _expect(folder, rf"{name} in .* is empty")
    (folder / name).unlink()
    _expect(folder, rf"{name} missing in FDS folder")


def test_missing_folder(tmp_path):
    _expect(tmp_path / "nope", "FDS folder .*nope does not exist")


def test_eight_bit_displacement(folder, arrays):
    Image.fromarray(((arrays["detail"] + 1) * 127.5).astype(np.uint8)).save(folder / DISPLACEMENT)
    _expect(folder, r"result\.displacementmap\.png .* is 8-bit, expected 16-bit")


def test_obj_without_faces(folder):
    text = (folder / OBJ).read_text()
    (folder / OBJ).write_text("".join(line + "\n" for line in text.splitlines() if not line.startswith("f ")))
    _expect(folder, r"result\.obj .* has no faces")
    (folder / OBJ).write_text("v 1 2\nf 1 2 3\n")
    _expect(folder, r"result\.obj .* is malformed")


def test_isomap_not_png(folder, arrays):
    Image.fromarray(arrays["texture"]).save(folder / ISOMAP, format="JPEG")
    _expect(folder, r"result\.isomap\.png .* is not a PNG \(looks like JPEG data\)")
    data = (folder / DISPLACEMENT).read_bytes()
    (folder / DISPLACEMENT).write_bytes(data[: len(data) // 3])
    Image.fromarray(np.dstack([arrays["texture"], np.full((64, 64), 255, np.uint8)])).save(folder / ISOMAP)
    _expect(folder, r"result\.displacementmap\.png .* truncated or corrupt PNG")


def test_non_square_map(folder, arrays):
    Image.fromarray(np.dstack([arrays["texture"], np.full((64, 64), 255, np.uint8)])[:, :32]).save(folder / ISOMAP)
    _expect(folder, r"result\.isomap\.png .* is 32x64, expected a square map")
