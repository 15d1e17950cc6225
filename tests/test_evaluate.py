"""Stage `evaluate` on the finished tiny run: each grid's layout, the report's HTML (every image it
names embedded), metrics.json gathering every stage, the real photos (one fails: a cat), the GIF,
and Snakemake's own --report."""

from __future__ import annotations

import csv
import json
import zipfile
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from facedet3d.data.grids import _LABEL_H, _PAD
from facedet3d.evaluate.figures import CELL, FIG4_COLUMNS, FIG7_COLUMNS

pytestmark = pytest.mark.slow


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.captions, self.tables = [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append((a.get("alt"), a.get("src", "")))
        if tag in ("a", "link", "script") and (a.get("href") or a.get("src")):
            self.links.append(a.get("href") or a.get("src"))
        self.captions += tag == "figcaption"
        self.tables += tag == "table"


def _grid_shape(rows: int, cols: int, labels: bool = True) -> tuple[int, int]:
    return (_LABEL_H if labels else 0) + rows * (CELL + _PAD) + _PAD, cols * (CELL + _PAD) + _PAD


def test_evaluate_grids_have_a_block_per_face(tiny_run):
    _, results = tiny_run
    out = results / "evaluate"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_synthetic"] == 1 and summary["n_photos_ok"] == 1 and summary["n_photos_failed"] == 1
    synthetic, photos = summary["n_synthetic"], summary["n_photos_ok"]
    expected = {  # rows per synthetic person / per photo, columns
        "fig4_expression.png": (3 * synthetic + 2 * photos, len(FIG4_COLUMNS)),
        "fig5_details.png": (3 * (synthetic + photos), 6),
        "fig6_views.png": (3 * synthetic + 2 * photos, 3),
        "fig7_lighting.png": (2 * (synthetic + photos), len(FIG7_COLUMNS)),
    }
    for name, (rows, cols) in expected.items():
        image = np.asarray(Image.open(out / name))
        height, width = _grid_shape(rows, cols)
        assert image.shape[0] == height and image.shape[1] > width, name  # row labels add width on the left
    assert not (out / "fig8_ablation.png").exists()  # the ablation did not run
    gif = Image.open(out / "animation.gif")
    assert gif.n_frames == 6 * 2  # six expressions, two frames each (neutral and apex)


def test_report_is_self_contained_and_shows_every_figure(tiny_run):
    _, results = tiny_run
    out = results / "evaluate"
    page = _Page()
    page.feed((out / "report.html").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert [alt for alt, _ in page.images] == summary["figures"]
    assert all(src.startswith(("data:image/png;base64,", "data:image/gif;base64,")) for _, src in page.images)
    assert not page.links  # nothing fetched from anywhere
    assert page.captions == len(page.images) and page.tables >= 6


def test_metrics_gather_every_stage_and_the_failed_photo(tiny_run):
    _, results = tiny_run
    out = results / "evaluate"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"synth", "ingest", "extract", "annotate", "shards", "train_detp", "train_rcan", "train_renderer"} <= set(
        metrics["stages"])
    assert metrics["config"]["results_dir"] == str(results) and metrics["code_version"]
    photos = {p["photo"]: p for p in metrics["photos"]}
    assert photos["astronaut.png"]["status"] == "ok"
    assert photos["chelsea.png"]["status"] == "failed" and "no face found" in photos["chelsea.png"]["reason"]
    rows = list(csv.DictReader(open(out / "rejects.csv")))
    assert len(rows) == 1 and rows[0]["input"].endswith("chelsea.png") and rows[0]["stage"] == "evaluate"


def test_snakemake_report_holds_the_figures(tiny_run, tmp_path):
    from tests.conftest import run_tool

    args, _ = tiny_run
    target = tmp_path / "report.zip"
    run_tool(["snakemake", *args, "--report", target])
    names = zipfile.ZipFile(target).namelist()
    assert any(n.endswith("fig4_expression.png") for n in names) and any(n.endswith("report.html") for n in names)
