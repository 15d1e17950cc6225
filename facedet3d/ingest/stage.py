"""Stage `ingest`: list the input images once, as the manifest that extraction reads.

Outputs under ``<results_dir>``:
  data/manifest.csv      id, path, identity, split, kind, sequence, frame, chunk, expression, age
  ingest/summary.json    counts per split and kind, n_chunks, n_skipped and the reasons
  ingest/rejects.csv     input, stage, reason: files skipped here (clearly not images)

``path`` is relative to the manifest's folder (``resolve`` turns it back into a file path);
it is computed between the real paths (symbolic links resolved), so it stays valid when
``results_dir`` itself is a link. Rows are sorted, ids are stable: the same tree gives the
same manifest byte for byte. ``chunk`` numbers contiguous groups of ``ingest.chunk_size``
rows, one extraction job each.

Sources (``data.source``):
  * ``synthetic`` — the rows of ``<results_dir>/synth/manifest.csv``, keeping the generator's
    ids, identities, splits, expressions and ages.
  * ``folders`` — every file under ``data.images_dir`` and ``data.videos_dir`` (recursive,
    hidden files included, directory links not followed). Images are the extensions in
    ``IMAGE_EXTENSIONS`` (any case); any other file, an empty file or a macOS ``._``
    resource fork goes to rejects.csv — every file is either a row or a reject. Whether an
    accepted file really decodes is judged at extract time (``facedet3d.data.images``).

Identity rules (``folders``):
  * images_dir: with ``ingest.image_identity: folder`` (default) an image inside a
    sub-folder belongs to the person named by its first-level folder
    (``images_dir/<person>/.../x.jpg``); an image directly in images_dir is its own
    identity (its id). With ``file`` every image is its own identity (FFHQ-like sets whose
    folders are arbitrary batches).
  * videos_dir: every folder that directly holds image files is one video; ``sequence`` is
    its path under videos_dir, frames are sorted naturally (``f2`` before ``f10``) and
    numbered 0, 1, ...; the identity is the first path component (``videos_dir/<person>/
    <video>/``, or the video folder itself when it sits directly in videos_dir). With
    ``ingest.video_identity_pattern`` set, the identity is that regular expression's first
    group (or whole match) searched in the identity component; no match keeps the component
    and is reported in summary.json.
  * the same identity name in images_dir and videos_dir is the same person (same split).

Splits (``folders``): each identity goes to train/val/test by a hash of (seed, identity)
cut at the ``ingest.split`` fractions: deterministic, independent of the rest of the data
set (adding people never moves anyone), and identities are never shared between splits.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

from facedet3d.atomic import write_json_atomic
from facedet3d.config import check_input_paths
from facedet3d.data.images import IMAGE_EXTENSIONS
from facedet3d.data.manifest import COLUMNS as MANIFEST_COLUMNS
from facedet3d.data.manifest import SPLITS, resolve_path, write_csv
from facedet3d.data.rejects import reason_counts, reject, write_rejects
from facedet3d.errors import UserError
from facedet3d.paths import Results

log = logging.getLogger(__name__)



def settings(config: dict) -> dict:
    """The ``ingest`` section (types and ranges already checked by the config schema)."""
    s = config["ingest"]
    if abs(sum(s["split"].values()) - 1.0) > 1e-6:
        raise UserError(f"config key 'ingest.split': fractions must sum to 1, got {sum(s['split'].values()):g}")
    if s["video_identity_pattern"] is not None:
        try:
            re.compile(s["video_identity_pattern"])
        except re.error as err:
            raise UserError("config key 'ingest.video_identity_pattern' is not a valid regular expression: "
                            f"{err}") from None
    return s


def run(config: dict) -> dict:
    """Build manifest.csv, summary.json and rejects.csv for ``config['data']['source']``; returns the summary."""
    s = settings(config)
    source = config["data"]["source"]
    if source not in ("synthetic", "folders"):
        raise UserError(f"config key 'data.source' must be 'synthetic' or 'folders', got {source!r}")
    inputs = _input_dirs(config) if source == "folders" else None  # checked before anything is written
    paths = Results.of(config)
    out = paths.manifest
    out.parent.mkdir(parents=True, exist_ok=True)
    base = os.path.realpath(out.parent)  # relative paths are computed from here
    if inputs is None:
        rows, rejects, info = _synthetic_rows(config, base)
    else:
        rows, rejects, info = _folder_rows(config, s, base, *inputs)
    for index, row in enumerate(rows):
        row["chunk"] = index // s["chunk_size"]
    summary = _summary(config, s, source, rows, rejects, info)
    write_rejects(paths.rejects("ingest"), rejects)
    write_json_atomic(paths.summary("ingest"), summary)
    if not rows:
        out.unlink(missing_ok=True)  # never leave a stale manifest behind
        raise UserError(f"no images found for data.source={source}; every file was rejected "
                        f"({len(rejects)} listed in {paths.rejects('ingest')})")
    write_csv(out, MANIFEST_COLUMNS, rows)
    log.info("ingest: %d rows in %d chunks, %d files skipped (see %s)", len(rows), summary["n_chunks"],
             len(rejects), paths.rejects("ingest"))
    return summary


# ---------------------------------------------------------------------------------------- reading


def resolve(manifest: str | Path, row: dict) -> Path:
    """The file of a manifest row: its ``path`` taken relative to the manifest's folder (or absolute)."""
    return resolve_path(Path(manifest).parent, row)


# -------------------------------------------------------------------------------------- synthetic


def _synthetic_rows(config: dict, base: str) -> tuple[list[dict], list[dict], dict]:
    synth_manifest = Results.of(config).synth_manifest
    if not synth_manifest.is_file():
        raise UserError(f"data.source is 'synthetic' but {synth_manifest} does not exist; "
                        "run `facedet3d synth` (or the Snakemake rule `synth`) first")
    rows = []
    with open(synth_manifest, newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            rows.append({
                "id": rec["id"], "path": _relative(synth_manifest.parent / rec["path"], base),
                "identity": rec["identity"], "split": rec["split"], "kind": rec["kind"],
                "sequence": rec.get("sequence", ""), "frame": int(rec.get("frame") or -1),
                "expression": rec.get("expression", ""), "age": rec.get("age", ""),
            })
    return rows, [], {"inputs": {"synth_manifest": str(synth_manifest)}, "n_inputs": len(rows)}


# ---------------------------------------------------------------------------------------- folders


def _input_dirs(config: dict) -> tuple[Path | None, Path | None]:
    """(images_dir, videos_dir), checked: existing folders, at least one, apart from each other and results."""
    check_input_paths(config)  # existing folders, at least one (the check the Snakefile runs too)
    images_dir, videos_dir = (Path(v).expanduser() if v else None
                              for v in (config["data"].get("images_dir"), config["data"].get("videos_dir")))
    _check_apart({"data.images_dir": images_dir, "data.videos_dir": videos_dir,
                  "results_dir": Path(config["results_dir"])})
    return images_dir, videos_dir


def _folder_rows(config: dict, s: dict, base: str, images_dir: Path | None,
                 videos_dir: Path | None) -> tuple[list[dict], list[dict], dict]:
    rows: list[dict] = []
    rejects: list[dict] = []
    info: dict = {"inputs": {}, "n_inputs": 0, "empty_video_folders": [], "identity_pattern_misses": []}
    if images_dir is not None:
        files = _walk(images_dir)
        info["inputs"]["images_dir"] = str(images_dir)
        info["n_inputs"] += len(files)
        for rel in files:
            reason = _reject_reason(images_dir / rel)
            if reason:
                rejects.append(reject(images_dir / rel, "ingest", reason))
                continue
            rows.append(_image_row(images_dir, rel, s, base))
    if videos_dir is not None:
        files = _walk(videos_dir)
        info["inputs"]["videos_dir"] = str(videos_dir)
        info["n_inputs"] += len(files)
        frames: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for rel in files:
            parts = tuple(rel.split("/"))
            reason = _reject_reason(videos_dir / rel)
            if not reason and len(parts) == 1:
                reason = "frame outside a video folder (data.videos_dir needs one sub-folder per video)"
            if reason:
                rejects.append(reject(videos_dir / rel, "ingest", reason))
                continue
            frames[parts[:-1]].append(parts[-1])
        for folder in sorted(frames, key=lambda p: _natural("/".join(p))):
            rows.extend(_video_rows(videos_dir, folder, frames[folder], s, base, info))
        info["empty_video_folders"] = _empty_leaf_dirs(videos_dir)
    seed = config["seed"]
    for row in rows:
        row["split"] = split_of(row["identity"], seed, s["split"])
    _check_unique_ids(rows)
    return rows, rejects, info


def _check_apart(folders: dict[str, Path | None]) -> None:
    """Inputs must not contain each other or the results (every file would be listed twice)."""
    real = {key: Path(os.path.realpath(p)) for key, p in folders.items() if p is not None}
    for a, pa in real.items():
        for b, pb in real.items():
            if a != b and b != "results_dir" and pa.is_relative_to(pb):
                raise UserError(f"config key '{a}' ({folders[a]}) lies inside '{b}' ({folders[b]}); "
                                "keep the input folders and results_dir apart")


def _walk(root: Path) -> list[str]:
    """Every file (or file link) under root as a POSIX path relative to root, sorted naturally."""
    out = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        base = Path(folder).relative_to(root)
        for name in names:
            out.append((base / name).as_posix())
        out.extend((base / d).as_posix() for d in dirs if (Path(folder) / d).is_symlink())  # not followed
    return sorted(out, key=_natural)


def _reject_reason(path: Path) -> str | None:
    """Why a file is clearly not an input image, or None."""
    if path.is_symlink() and not path.exists():
        return "broken symbolic link"
    if path.is_dir():
        return "linked folder (links to folders are not followed)"
    if path.name.startswith("._"):
        return "macOS resource fork (AppleDouble) file, not an image"
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        return f"not an image: extension {suffix}" if suffix else "not an image: no file extension"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None


def _image_row(root: Path, rel: str, s: dict, base: str) -> dict:
    image_id = make_id("images", rel)
    parts = rel.split("/")
    identity = parts[0] if s["image_identity"] == "folder" and len(parts) > 1 else image_id
    return {"id": image_id, "path": _relative(root / rel, base), "identity": identity, "kind": "image",
            "sequence": "", "frame": -1, "expression": "", "age": ""}


def _video_rows(root: Path, folder: tuple[str, ...], names: list[str], s: dict, base: str,
                info: dict) -> list[dict]:
    sequence = "/".join(folder)
    identity = folder[0]
    pattern = s["video_identity_pattern"]
    if pattern:
        m = re.search(pattern, identity)
        if m:
            identity = m.group(1) if m.re.groups else m.group(0)
        if not m or not identity:
            info["identity_pattern_misses"].append(sequence)
            identity = folder[0]
    rows = []
    for frame, name in enumerate(sorted(names, key=_natural)):
        rel = f"{sequence}/{name}"
        rows.append({"id": make_id("videos", rel), "path": _relative(root / rel, base), "identity": identity,
                     "kind": "video", "sequence": sequence, "frame": frame, "expression": "", "age": ""})
    return rows


def _empty_leaf_dirs(root: Path) -> list[str]:
    """Folders under root without any file below them (videos without frames)."""
    out = []
    for folder, dirs, names in os.walk(root):
        if not dirs and not names and Path(folder) != root:
            out.append(Path(folder).relative_to(root).as_posix())
    return sorted(out, key=_natural)


# ---------------------------------------------------------------------------------- ids and splits


def make_id(namespace: str, rel: str) -> str:
    """Stable id of an input file: sanitized stem + short sha1 of (namespace, relative POSIX path)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(rel).stem).strip("_")[:40] or "img"
    digest = hashlib.sha1(f"{namespace}/{rel}".encode("utf-8")).hexdigest()[:10]
    return f"{stem}-{digest}"


def split_of(identity: str, seed: int, fractions: dict) -> str:
    """train / val / test for an identity: sha256(seed, identity) as a uniform number, cut at the fractions."""
    h = hashlib.sha256(f"facedet3d-split:{seed}:{identity}".encode("utf-8")).digest()
    u = int.from_bytes(h[:8], "big") / 2.0**64
    edge = 0.0
    for name in SPLITS:
        edge += fractions[name]
        if u < edge:
            return name
    return next(n for n in reversed(SPLITS) if fractions[n] > 0)


def _check_unique_ids(rows: list[dict]) -> None:
    counts = Counter(r["id"] for r in rows)
    dup = [i for i, n in counts.items() if n > 1]
    if dup:
        raise UserError(f"duplicate input ids {dup[:5]}: two inputs share a path; rename one")


def _natural(text: str) -> tuple:
    """Sort key that orders digit runs by value ('f2' < 'f10'), ties broken by the raw text."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p.lower()) for p in parts), text


def _relative(path: Path, base: str) -> str:
    """path relative to base (the manifest's real folder), between real paths; absolute when impossible."""
    target = os.path.realpath(path)
    try:
        return Path(os.path.relpath(target, base)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(target).as_posix()


# ---------------------------------------------------------------------------------------- outputs


def _summary(config: dict, s: dict, source: str, rows: list[dict], rejects: list[dict], info: dict) -> dict:
    per_split = {k: sum(1 for r in rows if r["split"] == k) for k in SPLITS}
    identities = defaultdict(set)
    for r in rows:
        identities[r["split"]].add(r["identity"])
    kinds = sorted({r["kind"] for r in rows} | {"image", "video"})
    n_chunks = math.ceil(len(rows) / s["chunk_size"]) if rows else 0
    warnings = [f"split '{k}' is empty" for k in SPLITS if s["split"].get(k, 0) > 0 and not per_split[k]]
    if info.get("empty_video_folders"):
        warnings.append(f"{len(info['empty_video_folders'])} video folder(s) hold no files")
    if info.get("identity_pattern_misses"):
        warnings.append(f"ingest.video_identity_pattern matched no identity in {len(info['identity_pattern_misses'])} "
                        "video(s); their top folder name is used")
    return {
        "source": source,
        "inputs": info.get("inputs", {}),
        "n_inputs": info.get("n_inputs", len(rows)),
        "n_rows": len(rows),
        "n_skipped": len(rejects),
        "skipped_reasons": reason_counts(rejects),
        "n_chunks": n_chunks,
        "chunk_size": s["chunk_size"],
        "rows_per_split": per_split,
        "rows_per_kind": {k: sum(1 for r in rows if r["kind"] == k) for k in kinds},
        "rows_per_split_kind": {sp: {k: sum(1 for r in rows if r["split"] == sp and r["kind"] == k) for k in kinds}
                                for sp in SPLITS},
        "identities_per_split": {k: len(identities[k]) for k in SPLITS},
        "n_identities": len({r["identity"] for r in rows}),
        "n_videos": len({r["sequence"] for r in rows if r["kind"] == "video"}),
        "split_rule": "generator's split" if source == "synthetic" else "hash(seed, identity) cut at ingest.split",
        "split_fractions": s["split"],
        "seed": config["seed"],
        "empty_video_folders": info.get("empty_video_folders", []),
        "identity_pattern_misses": info.get("identity_pattern_misses", []),
        "warnings": warnings,
    }
