"""results/evaluate/metrics.json: every stage's summary, the ablation comparison, the config and the code version."""

from __future__ import annotations

import json
import time

from facedet3d.paths import Results
from facedet3d.shards.format import code_version
from facedet3d.stages import STAGES


def gather(config: dict, photos: list[dict]) -> dict:
    """{"stages": {stage: summary.json}, "renderer_ablation": comparison (when it ran), "photos",
    "config", "code_version", "created"}. Stages that have not run are absent."""
    results = Results.of(config)
    stages = {}
    for name in (stage.name for stage in STAGES.values()):
        path = results.summary(name)
        if name != "evaluate" and path.is_file():
            stages[name] = json.loads(path.read_text())
    comparison = results.stage("train_renderer_ablation") / "comparison.json"
    return {
        "stages": stages,
        "renderer_ablation": json.loads(comparison.read_text()) if comparison.is_file() else None,
        "photos": photos,
        "config": config,
        "code_version": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
