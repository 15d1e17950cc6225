"""The `ingest` stage and the synthetic-gt backend: stable ids, identity splits, accounting, chunks."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from facedet3d.config import load_config, merge, validate
from facedet3d.ingest.stage import resolve, split_of
from facedet3d.ingest.stage import run as run_ingest
from facedet3d.data.manifest import read_manifest
from facedet3d.data.records import write_records
from facedet3d.errors import UserError
from facedet3d.paths import Results
from facedet3d.synth.truth import SyntheticGroundTruth
from tests.conftest import REPO

JUNK = {"readme.txt", "notes.TXT", "empty.jpg", ".DS_Store", "._alice_1.jpg", "clip.mp4"}


def ingest(config: dict) -> SimpleNamespace:
    """Run the stage; its outputs by name (the paths every stage shares, facedet3d.paths)."""
    summary = run_ingest(config)
    paths = Results.of(config)
    return SimpleNamespace(manifest=paths.manifest, rejects=paths.rejects("ingest"), summary=summary,
                           summary_path=paths.summary("ingest"), n_chunks=summary["n_chunks"])


def _png(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


@pytest.fixture
def tree(tmp_path) -> dict:
    """images/ with per-person folders, loose images and junk; videos/ with frame folders."""
    images, videos = tmp_path / "in" / "images", tmp_path / "in" / "videos"
    for person in ("alice", "bob", "carol", "dave"):
        for k in range(3):
            _png(images / person / f"{person}_{k}.jpg")
    _png(images / "bob" / "extra" / "bob_deep.PNG")
    for k in range(12):
        _png(images / f"loose_{k}.JPEG")
    (images / "readme.txt").write_text("about this folder")
    (images / "alice" / "notes.TXT").write_text("x")
    (images / "empty.jpg").write_bytes(b"")
    (images / ".DS_Store").write_bytes(b"\x00\x01")
    (images / "alice" / "._alice_1.jpg").write_bytes(b"\x00\x05\x16\x07")
    for person in ("erin", "frank"):
        for v in range(2):
            for t in (1, 2, 10):  # natural order: 1, 2, 10
                _png(videos / person / f"{person}_happy{v}" / f"frame{t}.png", value=t)
    _png(videos / "gina_sad" / "f1.png")
    _png(videos / "gina_sad" / "f2.png")
    (videos / "gina_sad" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    _png(videos / "stray_frame.png")  # not inside a video folder
    (videos / "empty_video").mkdir()
    return {"root": tmp_path, "images": images, "videos": videos}


def _config(root: Path, images: Path | None, videos: Path | None, results: str = "results", **ingest_keys) -> dict:
    """The shipped config with the test's folders; validated like the CLI does."""
    return validate(merge(load_config([REPO / "config.yaml"]), {
        "results_dir": str(root / results), "seed": 0,
        "data": {"source": "folders", "images_dir": str(images) if images else None,
                 "videos_dir": str(videos) if videos else None},
        "ingest": {"chunk_size": 7, **ingest_keys},
    }))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_input_is_a_row_or_a_reject(tree):
    result = ingest(_config(tree["root"], tree["images"], tree["videos"]))
    rows, rejects = _rows(result.manifest), _rows(result.rejects)
    inputs = {p for d in (tree["images"], tree["videos"]) for p in d.rglob("*") if p.is_file()}
    accepted = {resolve(result.manifest, r).resolve() for r in rows}
    rejected = {Path(r["input"]).resolve() for r in rejects}
    assert len(rows) + len(rejects) == len(inputs) == result.summary["n_inputs"]
    assert accepted | rejected == {p.resolve() for p in inputs} and not accepted & rejected
    assert {Path(r["input"]).name for r in rejects} == JUNK | {"stray_frame.png"}
    reasons = {Path(r["input"]).name: r["reason"] for r in rejects}
    assert reasons["readme.txt"] == "not an image: extension .txt"
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert "AppleDouble" in reasons["._alice_1.jpg"]
    assert "outside a video folder" in reasons["stray_frame.png"]
    assert all(r["stage"] == "ingest" for r in rejects)
    assert result.summary["n_skipped"] == len(rejects) == 7
    assert result.summary["empty_video_folders"] == ["empty_video"]
    assert list(rows[0]) == ["id", "path", "identity", "split", "kind", "sequence", "frame", "chunk",
                             "expression", "age"]
    assert all(not Path(r["path"]).is_absolute() for r in rows)


def test_ids_are_stable_and_identities_follow_folders(tree):
    first = ingest(_config(tree["root"], tree["images"], tree["videos"], results="a"))
    second = ingest(_config(tree["root"], tree["images"], tree["videos"], results="b"))
    assert first.manifest.read_bytes() == second.manifest.read_bytes()
    rows = _rows(first.manifest)
    assert len({r["id"] for r in rows}) == len(rows)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["bob_deep.PNG"]["identity"] == "bob"
    assert by_name["loose_3.JPEG"]["identity"] == by_name["loose_3.JPEG"]["id"]
    assert by_name["loose_3.JPEG"]["id"].startswith("loose_3-")
    video = [r for r in rows if r["sequence"] == "erin/erin_happy1"]
    assert [Path(r["path"]).name for r in video] == ["frame1.png", "frame2.png", "frame10.png"]
    assert [r["frame"] for r in video] == ["0", "1", "2"] and {r["identity"] for r in video} == {"erin"}
    assert {r["kind"] for r in video} == {"video"}
    gina = [r for r in rows if r["sequence"] == "gina_sad"]
    assert {r["identity"] for r in gina} == {"gina_sad"}
    per_file = ingest(_config(tree["root"], tree["images"], None, results="c", image_identity="file"))
    ids = {r["id"]: r for r in _rows(per_file.manifest)}
    assert all(r["identity"] == i for i, r in ids.items())
    assert set(ids) <= {r["id"] for r in rows}  # the same files keep the same ids


def test_video_identity_pattern(tree):
    result = ingest(_config(tree["root"], None, tree["videos"], video_identity_pattern=r"^([a-z]+)"))
    rows = _rows(result.manifest)
    assert {r["identity"] for r in rows if r["sequence"] == "gina_sad"} == {"gina"}
    assert {r["identity"] for r in rows if r["sequence"].startswith("erin/")} == {"erin"}
    assert result.summary["identity_pattern_misses"] == []
    miss = ingest(_config(tree["root"], None, tree["videos"], results="m", video_identity_pattern=r"^\d+"))
    assert len(miss.summary["identity_pattern_misses"]) == 5 and miss.summary["warnings"]


def test_splits_never_share_an_identity(tree):
    result = ingest(_config(tree["root"], tree["images"], tree["videos"]))
    rows = _rows(result.manifest)
    split_of_identity: dict[str, set] = {}
    for r in rows:
        split_of_identity.setdefault(r["identity"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_identity.values())
    assert sum(result.summary["rows_per_split"].values()) == len(rows)
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    names = [f"person{i}" for i in range(3000)]
    counts = {k: sum(split_of(n, 0, fractions) == k for n in names) for k in fractions}
    assert all(abs(counts[k] / 3000 - fractions[k]) < 0.03 for k in fractions), counts
    assert [split_of(n, 0, fractions) for n in names[:50]] != [split_of(n, 1, fractions) for n in names[:50]]


def test_chunks_are_contiguous_groups(tree):
    result = ingest(_config(tree["root"], tree["images"], tree["videos"]))
    rows = read_manifest(result.manifest)
    assert [int(r["chunk"]) for r in rows] == [i // 7 for i in range(len(rows))]
    assert result.summary["n_chunks"] == result.n_chunks == -(-len(rows) // 7)
    assert [r for r in rows if r["chunk"] == "1"] == rows[7:14]
    summary = json.loads(result.summary_path.read_text())
    assert summary["n_chunks"] == result.n_chunks and summary["chunk_size"] == 7
    assert summary["rows_per_kind"] == {"image": 25, "video": 14}


def test_missing_folders_and_bad_settings_name_the_key(tree):
    with pytest.raises(UserError, match=r"data\.images_dir.*nowhere"):
        ingest(_config(tree["root"], tree["root"] / "nowhere", None))
    with pytest.raises(UserError, match=r"data\.videos_dir"):
        ingest(_config(tree["root"], tree["images"], tree["root"] / "gone"))
    with pytest.raises(UserError, match="neither data.images_dir nor data.videos_dir"):
        ingest(_config(tree["root"], None, None))
    with pytest.raises(UserError, match=r"ingest\.split"):
        ingest(_config(tree["root"], tree["images"], None, split={"train": 0.5, "val": 0.1, "test": 0.1}))
    with pytest.raises(UserError, match=r"ingest\.chunk_size"):  # the schema's ConfigError
        ingest(_config(tree["root"], tree["images"], None, chunk_size=0))
    junk_only = tree["root"] / "junk"
    junk_only.mkdir()
    (junk_only / "a.txt").write_text("x")
    with pytest.raises(UserError, match="no images found"):
        ingest(_config(tree["root"], junk_only, None, results="j"))
    assert _rows(tree["root"] / "j" / "ingest" / "rejects.csv")[0]["reason"] == "not an image: extension .txt"


@pytest.fixture
def synth_results(tmp_path) -> Path:
    """A fake generator output: manifest.csv and one ground-truth chunk for 3 images."""
    results = tmp_path / "results"
    synth = results / "synth"
    ids = ["s00000_e0", "s00000_v0_f0", "s00001_e0"]
    for i in ids:
        _png(synth / "images" / "000" / f"{i}.png")
    with open(synth / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "identity", "split", "kind", "sequence", "frame", "expression", "age"])
        w.writerow([ids[0], f"images/000/{ids[0]}.png", "s00000", "test", "image", "", -1, "happy", "30.50"])
        w.writerow([ids[1], f"images/000/{ids[1]}.png", "s00000", "test", "video", "s00000_v0", 0, "sad", "30.50"])
        w.writerow([ids[2], f"images/000/{ids[2]}.png", "s00001", "train", "image", "", -1, "neutral", "61.00"])
    rng = np.random.default_rng(0)
    n = len(ids)
    write_records(synth / "chunks" / "000.h5", {
        "id": np.array(ids), "detail": rng.normal(size=(n, 16, 16)).astype(np.float16),
        "texture": rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8), "shape": rng.normal(size=(n, 5)),
        "expr": rng.normal(size=(n, 17)), "albedo": rng.normal(size=(n, 4)), "pose": rng.normal(size=(n, 3)),
        "sh": rng.normal(size=(n, 27)), "landmarks": rng.normal(size=(n, 68, 2)), "aus": rng.random((n, 17)),
        "distance": np.full(n, 600.0), "offset": np.zeros((n, 2)), "focal": np.full(n, 1000.0),
        "age": np.array([30.5, 30.5, 61.0]),
    })
    return results


def test_synthetic_source_keeps_generator_splits(synth_results):
    config = validate(merge(load_config([REPO / "config.yaml"]),
                            {"results_dir": str(synth_results), "ingest": {"chunk_size": 2}}))
    result = ingest(config)
    rows = read_manifest(result.manifest)
    assert [r["split"] for r in rows] == ["test", "test", "train"]
    assert [r["chunk"] for r in rows] == ["0", "0", "1"] and result.n_chunks == 2
    assert rows[0]["path"] == "../synth/images/000/s00000_e0.png"
    assert all(resolve(result.manifest, r).is_file() for r in rows)
    assert rows[1]["sequence"] == "s00000_v0" and rows[1]["expression"] == "sad" and rows[2]["age"] == "61.00"
    assert result.summary["n_skipped"] == 0 and result.rejects.read_text() == "input,stage,reason\n"
    with pytest.raises(UserError, match="synth/manifest.csv does not exist"):
        ingest({**config, "results_dir": str(synth_results.parent / "elsewhere")})


def test_synthetic_ground_truth_by_manifest_row(synth_results):
    config = validate(merge(load_config([REPO / "config.yaml"]), {"results_dir": str(synth_results)}))
    result = ingest(config)
    truth = SyntheticGroundTruth(synth_results)
    rows = read_manifest(result.manifest)
    gt = truth.get(rows[2])
    assert gt.id == "s00001_e0" and gt.detail.dtype == np.float32 and gt.detail.shape == (16, 16)
    assert gt.texture.shape == (8, 8, 3) and gt.landmarks.shape == (68, 2) and gt.age == 61.0
    assert len(truth) == 3 and "s00000_e0" in truth
    with pytest.raises(UserError, match="'loose-0123' .*is not a synthetic image"):
        truth.get({"id": "loose-0123", "path": "../../photos/loose.jpg"})
    with pytest.raises(UserError, match="holds no chunk files"):
        SyntheticGroundTruth(synth_results.parent / "empty")


def test_nested_folders_are_refused(tree):
    with pytest.raises(UserError, match=r"'data\.videos_dir' .* lies inside 'data\.images_dir'"):
        ingest(_config(tree["root"], tree["root"] / "in", tree["videos"]))
    with pytest.raises(UserError, match=r"'results_dir' .* lies inside 'data\.images_dir'"):
        ingest(_config(tree["root"], tree["images"], None, results="in/images/results"))
    assert not (tree["images"] / "results").exists()  # refused before writing anything
