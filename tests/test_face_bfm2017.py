"""BFM2017 loading, on small files written in BFM2017's exact HDF5 layout."""

import json

import h5py
import numpy as np
import pytest
import torch

from facedet3d.face import layout as L
from facedet3d.face.bfm2017 import BFM_TO_IBUG, frontal_uv, load_bfm2017, uv_flip_count, write_bfm2017
from facedet3d.face.model import MorphableModel
from facedet3d.face.synthetic import synthetic_model


@pytest.fixture(scope="module")
def model() -> MorphableModel:
    return synthetic_model(64)


@pytest.fixture()
def bfm_file(model, tmp_path):
    path = tmp_path / "model2017-1_synthetic.h5"
    write_bfm2017(model, path)
    return path


def test_written_file_has_the_bfm2017_layout(model, bfm_file):
    n = model.num_vertices
    with h5py.File(bfm_file, "r") as f:
        for group, k in (("shape", model.num_shape), ("expression", model.num_expr), ("color", model.num_albedo)):
            assert f[f"{group}/model/mean"].shape == (3 * n,)
            assert f[f"{group}/model/pcaBasis"].shape == (3 * n, k)
            assert f[f"{group}/model/pcaVariance"].shape == (k,)
        assert f["shape/representer/points"].shape == (3, n)
        assert f["shape/representer/cells"].shape == (3, model.num_faces)
        basis = f["shape/model/pcaBasis"][()]
        np.testing.assert_allclose(np.linalg.norm(basis, axis=0), 1.0, atol=1e-4)
        lms = json.loads(f["metadata/landmarks/json"][()])
        assert len(lms) == 68 and {"id", "coordinates"} <= set(lms[0])


def test_round_trip_in_bfm_coordinates(model, bfm_file):
    m = load_bfm2017(bfm_file, align=False)
    assert m.name == "bfm2017"
    assert (m.num_vertices, m.num_shape, m.num_expr, m.num_albedo) == (
        model.num_vertices, model.num_shape, model.num_expr, model.num_albedo)
    np.testing.assert_array_equal(m.faces, model.faces)
    np.testing.assert_array_equal(m.landmarks, model.landmarks)
    np.testing.assert_allclose(m.mean, model.mean, atol=1e-4)
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, model.num_shape, generator=g)
    e = torch.rand(3, model.num_expr, generator=g) * 5
    a = torch.randn(3, model.num_albedo, generator=g)
    torch.testing.assert_close(m.vertices(s, e), model.vertices(s, e), atol=2e-3, rtol=0)
    torch.testing.assert_close(m.albedo(a), model.albedo(a), atol=1e-5, rtol=0)
    # The UV map is recomputed by the loader: the synthetic face is frontal, so it comes out as
    # the layout's own mapping, up to the landmark fit's residual (the landmarks are grid
    # vertices up to 1.1 mm off their layout positions on this 3 mm grid): < 2 mm.
    assert np.abs(m.uvs - model.uvs).max() < 0.01
    assert uv_flip_count(m.uvs, m.faces) == 0
    assert m.uvs.min() >= 0 and m.uvs.max() <= 1


def test_alignment_is_near_identity_for_a_frontal_face(model, bfm_file):
    m = load_bfm2017(bfm_file)
    assert np.abs(m.mean - model.mean).max() < 1.0
    v = m.vertices(torch.zeros(1, m.num_shape), torch.zeros(1, m.num_expr))[0].numpy()
    np.testing.assert_allclose(v, m.mean, atol=1e-4)


def _transform_file(path, R, t):
    """Move the model in a BFM file rigidly (points, means, basis directions, landmarks)."""
    with h5py.File(path, "r+") as f:
        for group in ("shape", "expression", "color"):
            pts = f[f"{group}/representer/points"][()]
            f[f"{group}/representer/points"][...] = (R @ pts + t[:, None]).astype(np.float32)
        mean = f["shape/model/mean"][()].reshape(-1, 3)
        f["shape/model/mean"][...] = (mean @ R.T + t).reshape(-1).astype(np.float32)
        for group in ("shape", "expression"):
            b = f[f"{group}/model/pcaBasis"][()]
            k = b.shape[1]
            b = (b.T.reshape(k, -1, 3) @ R.T).reshape(k, -1).T
            f[f"{group}/model/pcaBasis"][...] = b.astype(np.float32)
        lms = json.loads(f["metadata/landmarks/json"][()])
        for d in lms:
            d["coordinates"] = (R @ np.asarray(d["coordinates"]) + t).tolist()
        del f["metadata/landmarks/json"]
        f["metadata/landmarks/json"] = json.dumps(lms)


def test_a_moved_model_is_aligned_back(model, tmp_path):
    path = tmp_path / "moved.h5"
    write_bfm2017(model, path)
    a = np.deg2rad(12.0)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    R = R @ np.array([[1, 0, 0], [0, np.cos(0.1), -np.sin(0.1)], [0, np.sin(0.1), np.cos(0.1)]])
    _transform_file(path, R, np.array([3.0, -20.0, 95.0]))
    m = load_bfm2017(path)
    assert np.abs(m.mean - model.mean).max() < 1.0
    assert np.abs(m.uvs - model.uvs).max() < 0.01
    s = torch.randn(2, m.num_shape)
    e = torch.rand(2, m.num_expr) * 5
    torch.testing.assert_close(m.vertices(s, e), model.vertices(s, e), atol=1.5, rtol=0)
    # Without alignment the loader keeps the file's coordinates.
    raw = load_bfm2017(path, align=False)
    np.testing.assert_allclose(raw.mean, model.mean @ R.T + [3.0, -20.0, 95.0], atol=1e-3)


def test_bfm_semantic_landmarks(model, tmp_path):
    path = tmp_path / "named.h5"
    write_bfm2017(model, path, landmarks="bfm")
    with h5py.File(path, "r") as f:
        ids = [d["id"] for d in json.loads(f["metadata/landmarks/json"][()])]
    assert set(ids) == set(BFM_TO_IBUG)
    m = load_bfm2017(path)
    assert m.landmarks.shape == (68,)
    for name, k in BFM_TO_IBUG.items():
        assert m.landmarks[k] == model.landmarks[k], name
    # The other 56 come from the layout: close to the model's own landmarks.
    dist = np.linalg.norm(m.mean[m.landmarks, :2] - model.mean[model.landmarks, :2], axis=1)
    assert np.median(dist) < 3.5


def test_no_metadata_means_no_landmarks(model, tmp_path):
    path = tmp_path / "nolm.h5"
    write_bfm2017(model, path, landmarks="none")
    m = load_bfm2017(path)
    assert m.landmarks is None
    with pytest.raises(ValueError):
        m.landmarks_3d(torch.zeros(1, m.num_vertices, 3))
    # Nose-tip alignment only: still close to the frontal frame, UVs flip-free.
    assert np.abs(m.mean - model.mean).max() < 1.0
    assert uv_flip_count(m.uvs, m.faces) == 0


def test_reversed_winding_is_made_counter_clockwise(model, tmp_path):
    path = tmp_path / "cw.h5"
    write_bfm2017(model, path)
    with h5py.File(path, "r+") as f:
        cells = f["shape/representer/cells"][()]
        f["shape/representer/cells"][...] = cells[[0, 2, 1]]
    m = load_bfm2017(path)
    v = m.mean.astype(np.float64)
    a, b, c = v[m.faces[:, 0]], v[m.faces[:, 1]], v[m.faces[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert (area > 0).all()


def test_not_a_bfm_file_gives_a_clear_error(model, tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"other\.h5.*shape/representer/points"):
        load_bfm2017(other)

    partial = tmp_path / "partial.h5"
    write_bfm2017(model, partial)
    with h5py.File(partial, "r+") as f:
        del f["color/model/pcaVariance"]
    with pytest.raises(ValueError, match=r"partial\.h5.*color/model/pcaVariance"):
        load_bfm2017(partial)

    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"notes\.h5"):
        load_bfm2017(text)
    with pytest.raises(FileNotFoundError):
        load_bfm2017(tmp_path / "missing.h5")


def test_full_head_mask_falls_back_to_a_flip_free_projection():
    """A mesh wrapping round the head (beyond ±90°) folds under the frontal projection."""
    th, yy = np.meshgrid(np.linspace(-2.2, 2.2, 45), np.linspace(-100, 90, 39), indexing="xy")
    R, cz = 90.0, -80.0
    verts = np.stack([R * np.sin(th), yy, cz + R * np.cos(th)], -1).reshape(-1, 3)
    n_cols = th.shape[1]
    faces = []
    for r in range(th.shape[0] - 1):
        for c in range(n_cols - 1):
            tl, tr, bl, br = r * n_cols + c, r * n_cols + c + 1, (r + 1) * n_cols + c, (r + 1) * n_cols + c + 1
            faces += [[tl, br, bl], [tl, tr, br]]  # CCW seen from outside (rows go up in y)
    faces = np.asarray(faces)
    assert uv_flip_count(L.xy_to_uv(verts[:, :2]), faces) > 0
    uv, method = frontal_uv(verts, faces)
    assert method == "azimuthal"
    assert uv_flip_count(uv, faces) == 0
    assert uv.min() >= 0 and uv.max() <= 1
