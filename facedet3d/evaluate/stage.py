"""Stage `evaluate`: the paper's figures for held-out people and real photos, and one report.

Writes under ``results/evaluate/``:
  fig4_expression.png, fig5_details.png, fig6_views.png, fig7_lighting.png   (:mod:`.figures`)
  fig8_ablation.png   when `train_renderer_ablation` has run (`make ablation`)
  animation.gif       the first case from neutral to each expression and back (:mod:`.animation`)
  metrics.json        every stage's figures, the config and the code version (:mod:`.gather`)
  report.html         all of it on one self-contained page (:mod:`.report`)
  rejects.csv         real photos that could not be used, with the reason
  summary.json        counts and seconds
Cases: ``evaluate.people`` held-out synthetic people (with the generator's true photos), then the
real photos of ``evaluate.photos_dir`` (default: the face photo scikit-image ships, and its cat
photo, which has no face and shows how a failed photo is reported). Every case goes through the
same path as `facedet3d predict`: extraction, annotation, DetP, RCAN, R.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from tqdm import tqdm

from facedet3d.atomic import write_json_atomic
from facedet3d.data.grids import save_png
from facedet3d.data.images import IMAGE_EXTENSIONS
from facedet3d.data.rejects import reject, write_rejects
from facedet3d.errors import UserError
from facedet3d.evaluate import figures
from facedet3d.evaluate.animation import frames, save_gif
from facedet3d.evaluate.cases import Case, held_out_ids
from facedet3d.evaluate.gather import gather
from facedet3d.evaluate.report import write_report
from facedet3d.paths import Results
from facedet3d.predict.models import TrainedModels
from facedet3d.predict.subject import make_annotators, make_extractor, prepare

log = logging.getLogger(__name__)
STAGE = "evaluate"
FIGURES = ("fig4_expression.png", "fig5_details.png", "fig6_views.png", "fig7_lighting.png")
# scikit-image's sample photos used when evaluate.photos_dir is null: a face, and a cat (no face).
DEFAULT_PHOTOS = ("astronaut", "chelsea")


def default_photos(folder: Path) -> list[Path]:
    """Write scikit-image's sample photos (shipped in the wheel: no download) to ``folder``."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in DEFAULT_PHOTOS:
        path = folder / f"{name}.png"
        if not path.is_file():
            Image.fromarray(getattr(skimage.data, name)()).save(path)
        out.append(path)
    return out


def photo_paths(config: dict, out: Path) -> list[Path]:
    folder = config[STAGE]["photos_dir"]
    if folder is None:
        return default_photos(out / "photos")
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"config key 'evaluate.photos_dir' names {folder}, which is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def ablation_renderer(paths: Results, device):
    """R of `train_renderer_ablation` when it has run, else None."""
    from facedet3d.renderer.model import load_renderer

    path = paths.stage("train_renderer_ablation") / "final.pt"
    return load_renderer(path, "ablation renderer weights").to(device) if path.is_file() else None


def run(config: dict) -> dict:
    s = config[STAGE]
    started = time.perf_counter()
    torch.set_num_threads(s["threads"])
    paths = Results.of(config)
    out = paths.stage(STAGE)
    out.mkdir(parents=True, exist_ok=True)
    models = TrainedModels.load(paths.root, s["device"], config=config)
    extractor, annotators = make_extractor(models), make_annotators(models)
    retaker = None
    todo: list[tuple[str, Path, str | None]] = []
    if config["data"]["source"] == "synthetic":
        from facedet3d.synth.retake import Retaker

        retaker = Retaker(config)
        todo += [(image_id, path, image_id) for image_id, path in held_out_ids(models, s["people"])]
    todo += [(p.name, p, None) for p in photo_paths(config, out)]
    cases, photos, rejects = [], [], []
    for name, path, image_id in tqdm(todo, desc="evaluate: prepare", unit="photo"):
        try:
            subject = prepare(models, path, extractor, annotators)
        except UserError as err:
            reason = str(err).removeprefix(f"{path}: ")
            rejects.append(reject(path, STAGE, reason))
            if image_id is None:
                photos.append({"photo": name, "status": "failed", "reason": reason})
            continue
        cases.append(Case(name, subject, models, image_id, retaker))
        if image_id is None:
            photos.append({"photo": name, "status": "ok"})
    if not cases:
        raise UserError("evaluate: no face could be used (every held-out image and photo failed; see "
                        f"{out / 'rejects.csv'})")
    write_rejects(out / "rejects.csv", rejects)

    blocks = {k: [] for k in FIGURES}
    for case in tqdm(cases, desc="evaluate: figures", unit="face"):
        blocks["fig4_expression.png"].append(figures.fig4_rows(case))
        blocks["fig5_details.png"].append(figures.fig5_rows(case))
        blocks["fig6_views.png"].append(figures.fig6_rows(case, s["view_expression"], s["view_yaws_deg"]))
        blocks["fig7_lighting.png"].append(figures.fig7_rows(case, s["light_expression"]))
    columns = {"fig4_expression.png": figures.FIG4_COLUMNS, "fig5_details.png": list(figures.EXPRESSIONS),
               "fig6_views.png": [f"{s['view_expression']}, yaw {y:+g}" for y in s["view_yaws_deg"]],
               "fig7_lighting.png": figures.FIG7_COLUMNS}
    images = [save_png(out / name, figures.grid(blocks[name], columns[name])) for name in FIGURES]
    ablation = ablation_renderer(paths, models.device)
    fig8 = out / "fig8_ablation.png"
    if ablation is not None:
        rows = [figures.fig8_row(c, s["ablation_expression"], ablation) for c in cases]
        images.append(save_png(fig8, figures.image_grid(rows, figures.CELL, figures.FIG8_COLUMNS,
                                                         [c.name for c in cases])))
    elif fig8.exists():
        fig8.unlink()  # from an earlier run whose ablation results are gone
    images.append(save_gif(out / "animation.gif", frames(cases[0], s["gif_frames"])))

    metrics = gather(config, photos)
    write_json_atomic(out / "metrics.json", metrics)
    write_report(out / "report.html", metrics, images)
    summary = {"n_cases": len(cases), "n_synthetic": sum(c.synthetic for c in cases),
               "n_photos_ok": sum(p["status"] == "ok" for p in photos),
               "n_photos_failed": sum(p["status"] != "ok" for p in photos), "n_rejected": len(rejects),
               "ablation": ablation is not None, "figures": [p.name for p in images],
               "seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(paths.summary(STAGE), summary)
    log.info("evaluate: %s", summary)
    return summary
