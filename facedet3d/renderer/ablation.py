"""Stage `train_renderer_ablation`: R trained without the Augmented Wrinkle and Detailed Shading losses.

The same training as `train_renderer` with the keys of config section ``train_renderer_ablation``
replaced (by default augw and dsl off: the paper's Fig. 8), written to
``results/train_renderer_ablation/``, and then compared with the full model's metrics.json:
``comparison.json`` and ``comparison.md`` (every held-out figure of both, with 95 % bootstrap
intervals, and whether the intervals of the detail figures are apart).
"""

from __future__ import annotations

import json

from facedet3d.atomic import write_json_atomic, write_text_atomic
from facedet3d.errors import UserError
from facedet3d.paths import Results
from facedet3d.renderer.stage import ABLATION, STAGE
from facedet3d.renderer.stage import run as run_stage


def _figures(metrics: dict) -> dict[str, dict]:
    """{"section / figure": {"mean", "ci95"}} of R's own figures."""
    tables, out = metrics["methods"], {}
    for section in ("rerender", "new_expression"):
        for fig, v in tables[section]["renderer"].items():
            out[f"{section} / {fig}"] = v
    for section in ("detail_strength", "detail_response", "detail_fidelity", "detail_strength_gain1",
                    "detail_response_gain", "detail_fidelity_gain1"):
        for yaw, v in tables.get(section, {}).items():
            out[f"{section} / {yaw}"] = v["renderer"]
    return out


def compare(full: dict, ablation: dict) -> dict:
    """Per figure: both means and intervals, the difference, and whether the intervals are apart."""
    a, b = _figures(full), _figures(ablation)
    rows = {}
    for key in a:
        fa, fb = a[key], b.get(key)
        if fb is None or fa["mean"] is None or fb["mean"] is None:
            continue
        apart = fa["ci95"][0] > fb["ci95"][1] or fb["ci95"][0] > fa["ci95"][1]
        rows[key] = {"full": fa, "ablation": fb, "difference": round(fa["mean"] - fb["mean"], 4), "intervals_apart": apart}
    return rows


def comparison_md(rows: dict, switches: dict) -> str:
    lines = [f"# R with and without AugW and DSL (ablation switches: {switches})", "",
             "| figure (held-out people) | full R | ablation | difference | 95 % intervals apart |",
             "|---|---|---|---|---|"]
    for key, r in rows.items():
        fmt = lambda v: f"{v['mean']:.4f} [{v['ci95'][0]:.4f}, {v['ci95'][1]:.4f}]"  # noqa: E731
        lines.append(f"| {key} | {fmt(r['full'])} | {fmt(r['ablation'])} | {r['difference']:+.4f} | "
                     f"{'yes' if r['intervals_apart'] else 'no'} |")
    return "\n".join(lines) + "\n"


def run(config: dict) -> dict:
    """Train the ablation, then compare it with the full model (which must have run). Data-parallel,
    only rank 0 compares; the other processes return an empty dict."""
    paths = Results.of(config)
    full_path = paths.stage(STAGE) / "metrics.json"
    if not full_path.is_file():
        raise UserError(f"{full_path} is missing: run `facedet3d train-renderer` before the ablation")
    summary = run_stage(config, ABLATION)
    if not summary:  # not rank 0 of a data-parallel run
        return summary
    rows = compare(json.loads(full_path.read_text()), summary)
    out = paths.stage(ABLATION)
    write_json_atomic(out / "comparison.json", rows)
    write_text_atomic(out / "comparison.md", comparison_md(rows, config[ABLATION]))
    return summary | {"comparison": rows}
