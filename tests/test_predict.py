"""`facedet3d predict`: target expressions, a real photo through the trained tiny run, and each bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from facedet3d.errors import UserError
from facedet3d.face.layout import AU_INDEX
from facedet3d.predict.targets import ExpressionTable, parse_expression


def test_expressions_by_name_or_action_units():
    happy = parse_expression("Happy")
    assert happy[AU_INDEX["AU12"]] > 0 and happy[AU_INDEX["AU04"]] == 0
    aus = parse_expression("AU12=2.5, AU6=1.8")
    assert aus[AU_INDEX["AU12"]] == 2.5 and aus[AU_INDEX["AU06"]] == np.float32(1.8) and aus.sum() == np.float32(4.3)
    for bad, match in (("grumpy", "unknown expression 'grumpy'"), ("AU99=1", "unknown action unit"),
                       ("AU12=lots", "not a number"), ("AU12=7", "outside 0..5")):
        with pytest.raises(UserError, match=match):
            parse_expression(bad)


def test_expression_table_averages_the_nearest_faces():
    aus = np.array([[0, 0], [1, 0], [5, 5]], np.float32)
    expr = np.array([[0.0], [2.0], [9.0]], np.float32)
    table = ExpressionTable(aus, expr, k=2)
    assert table(np.array([0.4, 0.0])) == pytest.approx([1.0])


def _photos(tmp_path):
    import skimage.data

    face = tmp_path / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(face)
    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    cat = tmp_path / "cat.jpg"
    Image.fromarray(skimage.data.chelsea()).save(cat)
    return face, junk, cat


@pytest.mark.slow
def test_predict_a_real_photo_and_report_the_bad_ones(run_cmd, tiny_run, tmp_path):
    _, results = tiny_run
    face, junk, cat = _photos(tmp_path)
    out = tmp_path / "out"
    proc = run_cmd(["facedet3d", "predict", str(face), str(junk), str(cat), str(tmp_path / "missing.png"),
                    "--expression", "surprise", "--yaw", "15", "--models", str(results), "--out", str(out)], check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("facedet3d predict:")]
    assert len(errors) == 3 and "Traceback" not in proc.stderr
    assert any("notes.png: not an image" in e for e in errors)
    assert any("cat.jpg: no face found" in e for e in errors)
    assert any("missing.png: file not found" in e for e in errors)
    got = out / "astronaut"
    info = json.loads((got / "prediction.json").read_text())
    assert info["expression"] == "surprise" and info["yaw_deg"] == 15
    detail = Image.open(got / "detail.png")
    assert detail.mode.startswith("I;16") and detail.size == (info["detail_size"],) * 2
    config = json.loads((results / "train_detp" / "summary.json").read_text())
    assert info["detail_size"] == 4 * 32  # the tiny DetP's 32² map after one RCAN pass
    d = np.asarray(detail).astype(np.float64) / 65535 * 2 - 1
    assert np.abs(d).max() < 1 and d.std() > 0
    obj = (got / "mesh.obj").read_text().splitlines()
    assert obj[0] == "mtllib mesh.mtl" and any(line.startswith("vt ") for line in obj)
    assert (got / "mesh.png").is_file() and "map_Kd mesh.png" in (got / "mesh.mtl").read_text()
    render = np.asarray(Image.open(got / "render.png"))
    assert render.shape == (32, 32, 3) and render.std() > 0
    assert np.asarray(Image.open(got / "shaded.png")).shape == (32, 32, 3)
    assert config["n_pairs"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--expression", "grumpy"], "unknown expression 'grumpy'"),
    (["--expression", "AU99=2"], "unknown action unit"),
    (["--expression", "happy", "--models", "/nonexistent/results"], "config.yaml not found"),
])
def test_predict_bad_arguments_are_one_line(run_cmd, tiny_run, tmp_path, args, message):
    _, results = tiny_run
    face, _, _ = _photos(tmp_path)
    if "--models" not in args:
        args = args + ["--models", str(results)]
    proc = run_cmd(["facedet3d", "predict", str(face), *args, "--out", str(tmp_path / "o")], check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_bench_predict_rows(run_cmd, tiny_run):
    _, results = tiny_run
    proc = run_cmd(["facedet3d", "bench", "predict", "--quick", "--models", str(results)])
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [r["rcan_passes"] for r in rows] == [1, 2]
    assert all(r["bench"] == "predict" and r["s_per_photo"] > 0 and r["s_extract_annotate"] > 0 for r in rows)
    assert rows[1]["detail_size"] == 4 * rows[0]["detail_size"]
