"""`facedet3d verify [RESULTS]`: is a results folder whole? Exit status 0, or 2 with the findings.

Checks, each stage that has run:
  * shards: every shard file re-hashed against ``shards/index.json`` (missing or changed files);
    the DetP samples and RCAN patches the index lists equal those of ``shards/summary.json``;
  * the accounting of each stage's summary: synth stills + video frames = images; ingest rows +
    skipped = inputs; extract ok + rejected = total; annotate ok + rejected = extract's ok;
    shards samples + skipped (unannotated) = extract's ok;
  * every training stage's ``final.pt`` reads back (weights_only; a truncated file is a finding).
"""

from __future__ import annotations

import json
from pathlib import Path

from facedet3d.errors import UserError
from facedet3d.paths import Results

TRAINING = ("train_detp", "train_rcan", "train_renderer", "train_renderer_ablation")


def _summaries(results: Results) -> dict[str, dict]:
    out = {}
    for stage in ("synth", "ingest", "extract", "annotate", "shards", "evaluate"):
        path = results.summary(stage)
        if path.is_file():
            try:
                out[stage] = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                out[stage] = {"_unreadable": f"{path}: not JSON ({err.msg}, line {err.lineno})"}
    return out


def _sum_is(findings: list[str], stage: str, parts: dict[str, int], total_name: str, total) -> None:
    if any(v is None for v in parts.values()) or total is None:
        findings.append(f"{stage}: summary lacks one of {', '.join(parts)}, {total_name}")
    elif sum(parts.values()) != total:
        findings.append(f"{stage}: {' + '.join(f'{k} {v}' for k, v in parts.items())} = {sum(parts.values())}, "
                        f"but {total_name} is {total}")


def check_counts(s: dict[str, dict]) -> list[str]:
    """The accounting findings of the stage summaries ``s`` (stage -> summary)."""
    f = [v["_unreadable"] for v in s.values() if "_unreadable" in v]
    s = {k: v for k, v in s.items() if "_unreadable" not in v}
    if "synth" in s:
        _sum_is(f, "synth", {"n_stills": s["synth"].get("n_stills"), "n_video_frames": s["synth"].get("n_video_frames")},
                "n_images", s["synth"].get("n_images"))
    if "ingest" in s:
        _sum_is(f, "ingest", {"n_rows": s["ingest"].get("n_rows"), "n_skipped": s["ingest"].get("n_skipped")},
                "n_inputs", s["ingest"].get("n_inputs"))
    if "extract" in s:
        e = s["extract"]
        _sum_is(f, "extract", {"n_ok": e.get("n_ok"), "n_rejected": e.get("n_rejected")}, "n_total", e.get("n_total"))
        if "annotate" in s:
            a = s["annotate"]
            _sum_is(f, "annotate", {"n_ok": a.get("n_ok"), "n_rejected": a.get("n_rejected")}, "extract's n_ok",
                    e.get("n_ok"))
        if "shards" in s:
            h = s["shards"]
            _sum_is(f, "shards", {"n_samples": h.get("n_samples"), "n_skipped_unannotated": h.get("n_skipped_unannotated")},
                    "extract's n_ok", e.get("n_ok"))
    return f


def check_shards(results: Results, summary: dict | None) -> list[str]:
    from facedet3d.shards.format import read_index, verify_index

    index_path = results.shard_index
    if not index_path.is_file():
        return []
    try:
        index = read_index(index_path)
    except UserError as err:
        return [str(err)]
    found = [f"shards: {p}" for p in verify_index(index_path)]
    if summary:
        listed = {kind: sum(e["n"] for e in index["shards"] if e["kind"] == kind) for kind in ("detp", "rcan")}
        if summary.get("n_samples") is not None and listed["detp"] != summary["n_samples"]:
            found.append(f"shards: index.json lists {listed['detp']} DetP samples, summary.json {summary['n_samples']}")
        if summary.get("n_rcan_patches") is not None and listed["rcan"] != summary["n_rcan_patches"]:
            found.append(f"shards: index.json lists {listed['rcan']} RCAN patches, summary.json {summary['n_rcan_patches']}")
    return found


def check_weights(results: Results) -> list[str]:
    from facedet3d.train.checkpoint import load_checkpoint

    found = []
    for stage in TRAINING:
        path = results.stage(stage) / "final.pt"
        if path.exists():
            try:
                load_checkpoint(path, f"{stage} weights")
            except UserError as err:
                found.append(str(err))
    return found


def verify(root: str | Path = "results") -> tuple[list[str], list[str]]:
    """(findings, what was checked) for the results folder ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: give the results folder of a run (default results/)")
    results = Results(root)
    summaries = _summaries(results)
    checked = [f"{k}/summary.json" for k in summaries]
    findings = check_counts(summaries) + check_shards(results, summaries.get("shards")) + check_weights(results)
    if results.shard_index.is_file():
        checked.append("shards/index.json and its shards (sha256)")
    checked += [f"{s}/final.pt" for s in TRAINING if (results.stage(s) / "final.pt").exists()]
    if not checked:
        raise UserError(f"{root} holds no stage summary, shard index or trained model: nothing to verify")
    return findings, checked


def main(root: str) -> int:
    findings, checked = verify(root)
    for line in findings:
        print(f"facedet3d verify: {line}")
    print(f"{root}: {len(checked)} things checked ({', '.join(checked)}); "
          + (f"{len(findings)} finding(s)" if findings else "all consistent"))
    return 2 if findings else 0
