"""results/evaluate/report.html: one self-contained page (images embedded, no network) with every
grid and its caption and every stage's figures as tables."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

CAPTIONS = {
    "fig4_expression.png": "Fig. 4, expression change. Per person: the input crop, its reconstruction by R with the "
                           "extracted D(I_x), then DetP's D̃(I_y) for Anger, Disgust, Fear, Happy, Sad and Surprise "
                           "rendered by R (first row) and as shaded detailed geometry (second row); the last "
                           "column zooms into the forehead of Surprise. For synthetic people the third row is the "
                           "generator's true photo of that person in that expression.",
    "fig5_details.png": "Fig. 5, details against none: R's renderings with D̃(I_y), with a zero detail map, and "
                        "their difference, amplified by the gain in the row label: where the predicted details change the image.",
    "fig6_views.png": "Fig. 6, view consistency: one new expression at several head yaws (R, shaded geometry, "
                      "and the true photo for synthetic people).",
    "fig7_lighting.png": "Fig. 7, lighting: one expression under the photo's own light and four SH lights. R was "
                         "trained with the photos' own lights only: its lighting is entangled with the texture, "
                         "as the paper says of its own.",
    "fig8_ablation.png": "Fig. 8, ablation: the same geometry rendered by the full R and by R trained without the "
                         "Augmented Wrinkle and Detailed Shading losses (make ablation).",
    "animation.gif": "One person from neutral to each expression and back, details on: R's rendering and the "
                     "shaded geometry.",
}


def _img(path: Path) -> str:
    mime = "image/gif" if path.suffix == ".gif" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.name)}" src="data:{mime};base64,{data}">'


def _table(header: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict) and "mean" in v:
        ci = v.get("ci95")
        return f"{v['mean']:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "") if v["mean"] is not None else "–"
    return "–" if v is None else str(v)


def _stage_tables(stages: dict) -> list[str]:
    out = []
    ex, an = stages.get("extract"), stages.get("annotate")
    if ex:
        out.append("<h3>Extraction (held-out images)</h3>" + _table(
            ["n_ok", "n_rejected", "n_total", "detail_corr", "detail_corr_sfs", "landmark_error_px", "s_per_image"],
            [[ex.get(k) for k in ("n_ok", "n_rejected", "n_total", "detail_corr", "detail_corr_sfs",
                                  "landmark_error_px", "s_per_image")]]))
    if an:
        out.append("<h3>Annotation</h3>" + _table(["au_mae", "id_auc", "age_spearman"],
                                                   [[an.get(k) for k in ("au_mae", "id_auc", "age_spearman")]]))
    detp = stages.get("train_detp")
    if detp and detp.get("vs_extracted"):
        for ref in ("vs_extracted", "vs_truth"):
            table = detp.get(ref)
            if table:
                metrics = sorted({m for v in table.values() for m in v})
                out.append(f"<h3>DetP, held-out pairs, {ref.replace('_', ' ')}</h3>" + _table(
                    ["method"] + metrics, [[name] + [v.get(m) for m in metrics] for name, v in table.items()]))
    rcan = stages.get("train_rcan")
    if rcan:
        out.append("<h3>RCAN ×4, held-out patches</h3>" + _table(
            ["psnr", "psnr_bicubic", "psnr_nearest"], [[rcan.get(k) for k in ("psnr", "psnr_bicubic", "psnr_nearest")]]))
    for name in ("train_renderer", "train_renderer_ablation"):
        r = stages.get(name)
        if r and r.get("methods"):
            for section, table in r["methods"].items():
                first = next(iter(table.values()))
                if "renderer" in first:  # by yaw: rows = yaws, columns = methods
                    methods = list(first)
                    rows = [[yaw] + [v[m] for m in methods] for yaw, v in table.items()]
                    out.append(f"<h3>{name}: {section}</h3>" + _table(["yaw"] + methods, rows))
                else:
                    figs = sorted({f for v in table.values() for f in v})
                    out.append(f"<h3>{name}: {section}</h3>" + _table(
                        ["method"] + figs, [[m] + [v.get(f) for f in figs] for m, v in table.items()]))
    return out


def write_report(path: Path, metrics: dict, images: list[Path]) -> Path:
    from facedet3d.atomic import write_text_atomic

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>FaceDet3D report</title><style>",
             "body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}",
             "img{max-width:100%;border:1px solid #ccc}table{border-collapse:collapse;margin:.5em 0}",
             "td,th{border:1px solid #bbb;padding:2px 6px;font-size:13px;text-align:right}",
             "figure{margin:1.5em 0}figcaption{font-size:14px;color:#333;max-width:1000px}",
             "</style></head><body><h1>FaceDet3D report</h1>"]
    cv = metrics.get("code_version") or {}
    parts.append(f"<p>Created {html.escape(metrics.get('created', ''))}; code {html.escape(str(cv))}; "
                 f"data source {html.escape(str(metrics['config'].get('data', {}).get('source')))}; "
                 f"seed {metrics['config'].get('seed')}.</p>")
    parts.append("<h2>Figures</h2>")
    for image in images:
        parts.append(f"<figure>{_img(image)}<figcaption><b>{html.escape(image.name)}</b>: "
                     f"{html.escape(CAPTIONS.get(image.name, ''))}</figcaption></figure>")
    photos = metrics.get("photos") or []
    if photos:
        parts.append("<h2>Real photos</h2>" + _table(["photo", "status", "reason"],
                                                       [[p["photo"], p["status"], p.get("reason", "")] for p in photos]))
    parts.append("<h2>Every stage's figures</h2>")
    parts += _stage_tables(metrics["stages"])
    if metrics.get("renderer_ablation"):
        rows = [[k, v["full"], v["ablation"], v["difference"], "yes" if v["intervals_apart"] else "no"]
                for k, v in metrics["renderer_ablation"].items()]
        parts.append("<h3>Renderer ablation</h3>" + _table(["figure", "full R", "without AugW, DSL", "difference",
                                                             "95 % intervals apart"], rows))
    parts.append("<h2>Summaries as recorded</h2>")
    for name, summary in metrics["stages"].items():
        parts.append(f"<details><summary>{html.escape(name)}</summary><pre>"
                     f"{html.escape(json.dumps(summary, indent=1)[:20000])}</pre></details>")
    parts.append("</body></html>")
    return write_text_atomic(path, "\n".join(parts))
