"""The extraction preview (extract/preview.png) of real photos and of synthetic data, written by
the real stages: rows from distinct identities, full ids as labels, inputs of any shape framed as
an undistorted square around the face, and the shaded geometry framed like the input.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facedet3d.config import load_config, merge, validate
from facedet3d.data.grids import _LABEL_H, _PAD
from facedet3d.data.manifest import resolve_path
from facedet3d.data.records import read_records, write_records
from facedet3d.extract import stage
from facedet3d.extract.preview import CELL, crop_square, extract_preview, face_square, pick_rows, row_label
from facedet3d.ingest.stage import run as ingest
from facedet3d.paths import Results
from tests.conftest import REPO

INTERIOR = slice(17, 68)  # dlib landmarks without the jaw line


def _config(tmp_path: Path, **overlay) -> dict:
    base = load_config([REPO / "config.yaml", REPO / "tests" / "configs" / "tiny.yaml"])
    return validate(merge(base, {"results_dir": str(tmp_path / "results"), **overlay}))


def _photos(folder: Path) -> None:
    """Real photos of two people, none of them square: Grace Hopper (600x512, twice, the second
    mirrored) and the astronaut on a wide 1400x700 canvas; long file names."""
    import matplotlib.cbook
    from skimage import data as skdata

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    wide = np.full((700, 1400, 3), 128, np.uint8)
    wide[100:612, 800:1312] = skdata.astronaut()
    for person, name, image in (("grace", "rear_admiral_grace_hopper_official_portrait", hopper),
                                ("grace", "rear_admiral_grace_hopper_official_portrait_mirrored", hopper[:, ::-1]),
                                ("astronaut", "astronaut_eileen_collins_on_a_wide_grey_canvas", wide)):
        (folder / person).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(folder / person / f"{name}.png")


@pytest.fixture(scope="module")
def real_preview(tmp_path_factory) -> dict:
    """The builtin backend's extract stage over the real photos (its merge writes the preview)."""
    tmp = tmp_path_factory.mktemp("preview_real")
    _photos(tmp / "photos")
    config = _config(tmp, data={"source": "folders", "images_dir": str(tmp / "photos"), "videos_dir": None})
    ingest(config)
    summary = stage.run(config)
    assert summary["n_ok"] == 3, summary
    paths = [Results.of(config).chunk("extract", c) for c in stage.chunks(config)]
    return {"config": config, "paths": paths, "png": Results.of(config).extract_preview}


def _cell(grid: np.ndarray, left: int, i: int, j: int) -> np.ndarray:
    """Cell (row i, column j) of a preview grid with a left label margin of ``left`` px."""
    y, x = _LABEL_H + _PAD + i * (CELL + _PAD), left + _PAD + j * (CELL + _PAD)
    return grid[y:y + CELL, x:x + CELL]


def test_pick_rows_takes_distinct_identities_first(tmp_path):
    # Synthetic-style chunks: 8 people x 3 expressions, 4 people per chunk, each person's images together.
    paths = []
    for chunk in range(2):
        ids = [f"s{p:05d}_e{e}" for p in range(4 * chunk, 4 * chunk + 4) for e in range(3)]
        fields = {"id": np.array(ids, object), "identity": np.array([i[:6] for i in ids], object)}
        paths.append(write_records(tmp_path / f"{chunk:03d}.h5", fields))
    picked = [read_records(p, ["id"])["id"][i] for p, i in pick_rows(paths, 6)]
    assert picked == ["s00000_e0", "s00001_e0", "s00002_e0", "s00003_e0", "s00004_e0", "s00005_e0"]
    # Fewer people than rows: one image of each, then the second of each, and so on.
    picked = [read_records(paths[0], ["id"])["id"][i] for _, i in pick_rows(paths[:1], 6)]
    assert picked == ["s00000_e0", "s00001_e0", "s00002_e0", "s00003_e0", "s00000_e1", "s00001_e1"]


def test_face_square_and_crop_keep_the_aspect_ratio():
    image = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    assert face_square(None, (300, 500)) == (0, -100, 500)
    assert face_square(np.full(4, np.nan), (300, 500)) == (0, -100, 500)
    assert face_square([200, 100, 260, 170], (300, 500)) == (160, 65, 140)
    assert face_square([10, 0, 70, 70], (300, 500)) == (0, 0, 140)  # moved inside the image
    assert face_square([20, 25, 108, 115], (128, 128)) == (0, 0, 128)  # a face filling the image: all of it
    assert face_square([50, 20, 370, 340], (300, 500)) == (50, 20, 320)  # taller than the image: not cut
    padded = crop_square(image, (0, -100, 500), 250)
    assert padded.shape == (250, 250, 3)
    assert np.all(padded[:45] == 255) and np.all(padded[-45:] == 255)  # white above and below, not stretched
    assert np.abs(padded[50:200].astype(int) - cv2.resize(image, (250, 150), interpolation=cv2.INTER_AREA)).max() <= 1
    assert row_label("x" * 51) == "x" * 51 and len(row_label("y" * 200)) <= 60


def test_real_photo_preview_is_framed_on_the_face_and_labelled_with_full_ids(real_preview):
    picks = pick_rows(real_preview["paths"])
    records = [read_records(p) for p in sorted(set(p for p, _ in picks))]
    assert len(records) == 1 and len(picks) == 3
    rec = records[0]
    order = [i for _, i in picks]
    assert {rec["identity"][i] for i in order[:2]} == {"grace", "astronaut"}  # both people before a repeat
    ids = [rec["id"][i] for i in order]
    assert all(len(i) > 40 and row_label(i) == i for i in ids)

    grid = np.asarray(Image.open(real_preview["png"]).convert("RGB"))
    left = 8 * max(len(i) for i in ids) + 4  # image_grid's label margin: the full ids fit
    n_cols = 4  # input, texture map, detail map, shaded geometry
    assert grid.shape == (_LABEL_H + 3 * (CELL + _PAD) + _PAD, left + n_cols * (CELL + _PAD) + _PAD, 3)
    for row, i in enumerate(order):
        path = resolve_path(Path(real_preview["config"]["results_dir"]) / "data", {"path": rec["path"][i]})
        image = np.asarray(Image.open(path).convert("RGB"))
        assert image.shape[0] != image.shape[1]
        square = face_square(rec["box"][i], image.shape[:2])
        cell = _cell(grid, left, row, 0).astype(int)
        squashed = cv2.resize(image, (CELL, CELL), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(cell - crop_square(image, square)).mean() < 2  # a square of the photo, scaled alike in x and y
        assert np.abs(cell - squashed).mean() > 20  # not the whole photo squashed into the cell

        # The shaded geometry shows the face where the input cell shows it: the detected landmarks,
        # mapped into the cell like the input, fall on the rendered face, which fills the cell.
        geometry = _cell(grid, left, row, 3)
        face = np.any(geometry < 250, axis=-1)
        lm = (rec["landmarks"][i][INTERIOR] - square[:2]) * CELL / square[2]
        cols, rows_ = np.clip(lm.round().astype(int), 0, CELL - 1).T
        assert face[rows_, cols].mean() > 0.9
        assert 0.2 < face.mean() < 0.9


def test_real_photo_preview_png_is_deterministic(real_preview, tmp_path):
    again = extract_preview(real_preview["config"], real_preview["paths"], tmp_path / "again.png")
    assert again.read_bytes() == real_preview["png"].read_bytes()


def test_synthetic_preview_shows_distinct_identities(tmp_path):
    from facedet3d.synth.stage import run as synth_all

    config = _config(tmp_path, synth={"detector_check": False}, extract={"backend": "synthetic-gt"})
    synth_all(config)
    ingest(config)
    stage.run(config)
    paths = [Results.of(config).chunk("extract", c) for c in stage.chunks(config)]
    identities = [read_records(p, ["identity"])["identity"][i] for p, i in pick_rows(paths)]
    assert len(identities) == 6 and len(set(identities)) == 6
    grid = np.asarray(Image.open(Results.of(config).extract_preview))
    assert grid.shape[0] == _LABEL_H + 6 * (CELL + _PAD) + _PAD
