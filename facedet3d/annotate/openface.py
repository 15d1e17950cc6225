"""Import OpenFace 2.x ``FeatureExtraction`` (or ``FaceLandmarkImg``) CSV output as AU intensities.

OpenFace writes one row per (frame, face): ``frame, face_id, timestamp, confidence, success,
..., AU01_r, AU02_r, ..., AU45_r, AU01_c, ...`` — with a space after every comma in the
header and the values (`` AU01_r``); both spellings are read. All 17 AUs of
``layout.AU_NAMES`` are OpenFace's intensity AUs (``AUxx_r``, 0..5), so the mapping is
one to one; the presence columns (``AUxx_c``) are ignored.

Per frame the face with the highest ``confidence`` among those with ``success == 1`` is
kept (several ``face_id`` rows per frame when OpenFace tracked several faces). A frame
where no face succeeded is *not* dropped silently: it is returned in ``failures`` with
its best confidence. ``FaceLandmarkImg`` CSVs (one image, columns ``face, confidence,
...``, no ``frame``/``success``) are one frame; a missing ``success`` column means success.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedet3d.errors import UserError
from facedet3d.face.layout import AU_NAMES

AU_COLUMNS = tuple(f"{name}_r" for name in AU_NAMES)


@dataclass
class OpenFaceAUs:
    """AUs of the frames OpenFace tracked, in frame order, and the frames it failed on."""

    frames: np.ndarray  # (N,) int64 frame numbers (1-based as OpenFace writes them)
    face_ids: np.ndarray  # (N,) int64 the face kept in each frame
    confidence: np.ndarray  # (N,) float32
    aus: np.ndarray  # (N, 17) float32, AU_NAMES order
    timestamps: np.ndarray  # (N,) float64 seconds (NaN when the CSV has none)
    failures: list[dict] = field(default_factory=list)  # {"frame", "face_id", "confidence"} per failed frame

    def as_dict(self) -> dict[int, np.ndarray]:
        """{frame: (17,) AUs} of the successful frames."""
        return {int(f): a for f, a in zip(self.frames, self.aus)}


def read_openface_csv(path: str | Path) -> OpenFaceAUs:
    """Parse one OpenFace CSV (see the module docstring); UserError on missing AU columns."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"OpenFace CSV {path} not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f) if row and any(c.strip() for c in row)]
    return parse_openface_rows(rows, str(path))


def parse_openface_rows(rows: list[list[str]], source: str = "OpenFace CSV") -> OpenFaceAUs:
    """Like :func:`read_openface_csv` for already split rows (header first)."""
    if not rows:
        raise UserError(f"{source} is empty (no header)")
    header = [h.strip() for h in rows[0]]
    index = {name: i for i, name in enumerate(header)}
    missing = [c for c in AU_COLUMNS if c not in index]
    if missing:
        raise UserError(f"{source} lacks the AU intensity columns {', '.join(missing)} "
                        "(run OpenFace FeatureExtraction with -aus, or all outputs)")
    frame_col = index.get("frame")
    face_col = index.get("face_id", index.get("face"))
    conf_col, ok_col, time_col = index.get("confidence"), index.get("success"), index.get("timestamp")

    best: dict[int, tuple] = {}  # frame -> (success, confidence, face_id, line, row)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"{source} line {line}: {len(row)} fields, header has {len(header)}")
        frame = _int(row, frame_col, 1, source, line, "frame")
        face = _int(row, face_col, 0, source, line, "face_id")
        conf = _float(row, conf_col, 1.0, source, line, "confidence")
        ok = _float(row, ok_col, 1.0, source, line, "success") > 0.5
        key = (ok, conf, -face)
        if frame not in best or key > best[frame][0]:
            best[frame] = (key, face, conf, line, row)

    frames, faces, confs, aus, times, failures = [], [], [], [], [], []
    for frame in sorted(best):
        (ok, _, _), face, conf, line, row = best[frame]
        if not ok:
            failures.append({"frame": frame, "face_id": face, "confidence": conf})
            continue
        values = [_float(row, index[c], None, source, line, c) for c in AU_COLUMNS]
        frames.append(frame)
        faces.append(face)
        confs.append(conf)
        aus.append(values)
        times.append(_float(row, time_col, float("nan"), source, line, "timestamp"))
    return OpenFaceAUs(
        frames=np.asarray(frames, np.int64), face_ids=np.asarray(faces, np.int64),
        confidence=np.asarray(confs, np.float32), aus=np.asarray(aus, np.float32).reshape(-1, len(AU_NAMES)),
        timestamps=np.asarray(times, np.float64), failures=failures,
    )


def _float(row, col, default, source, line, name) -> float:
    if col is None:
        return default
    try:
        value = float(row[col])
    except ValueError:
        raise UserError(f"{source} line {line}: {name} = {row[col]!r} is not a number") from None
    if not np.isfinite(value) and default is None:
        raise UserError(f"{source} line {line}: {name} = {row[col]!r} is not finite")
    return value


def _int(row, col, default, source, line, name) -> int:
    value = _float(row, col, default, source, line, name)
    if value != int(value):
        raise UserError(f"{source} line {line}: {name} = {row[col]!r} is not an integer")
    return int(value)
