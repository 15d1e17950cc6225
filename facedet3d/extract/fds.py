"""Backend `fds`: import the per-image output folders of FDS (Facial Details Synthesis).

FDS (Chen et al., ICCV 2019; github.com/apchenstu/Facial_Details_Synthesis) writes one
folder per input image. This module reads, from such a folder:

  result.obj                 proxy mesh fitted by eos (BFM2017 topology); ``v`` lines, ``f`` lines
                             and optionally ``vt`` (written by eos with v flipped, like ours)
  result.isomap.png          texture map in FDS/eos's UV layout, square (FDS: 1024²), RGBA with
                             alpha = visibility (255 seen in the photo, 0 not); an RGB isomap is
                             accepted with a note, visibility then = non-black texels
  result.displacementmap.png single-channel 16-bit PNG, square (FDS: 4096²), storing
                             ``(d + 1) / 2 · 65535`` for the displacement d ∈ [-1, 1] in DFDN's
                             own units; decoded back to d (float32), not rescaled to mm
  camera (optional)          see below; missing → camera fields NaN and a note

Camera — an assumption, because FDS's camera output depends on its proxy fitter. Accepted,
in this order:
  1. eos's files (what FDS's fit-model.exe writes): ``result.modelview.txt`` (4 rows of 4
     numbers, the OpenGL model-view matrix) and/or ``result.affine_from_ortho.txt`` (3 rows of
     4 numbers, the scaled-orthographic camera in image pixels). From them: ``pose`` = (yaw,
     pitch, roll) of the model-view rotation in :mod:`facedet3d.render.camera`'s convention
     (R = Rz(roll) Ry(yaw) Rx(pitch); eos's BFM frame is x right, y up, z to the viewer like
     ours), ``translation`` = its last column, ``scale`` = pixels per model unit of the affine
     camera, ``focal`` = NaN (orthographic).
  2. ``result.camera.txt``, a small key-value text file for other fitters: one ``key values...``
     per line, ``#`` comments; keys ``focal F`` (pixels), ``pose YAW PITCH ROLL`` (radians,
     our convention), ``translation TX TY TZ`` (mm), ``scale S``; unknown keys are errors.
Optional ``result.coeffs_pca_shape.txt`` / ``result.coeffs_expression.txt`` (one number per
line, eos) are read when present.

UV layout: FDS's maps are kept in FDS's own UV parameterisation (``uv_layout = "fds"``), NOT
remapped to the project's UV square (:mod:`facedet3d.face.layout`); whoever combines them with
project maps has to resample through the meshes' UVs.

:func:`write_fds_folder` builds such a folder from arrays (tests build FDS folders; none ship).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facedet3d.data.uvmaps import resize_map
from facedet3d.errors import UserError

OBJ = "result.obj"
ISOMAP = "result.isomap.png"
DISPLACEMENT = "result.displacementmap.png"
MODELVIEW = "result.modelview.txt"
AFFINE = "result.affine_from_ortho.txt"
CAMERA_TXT = "result.camera.txt"
SHAPE_COEFFS = "result.coeffs_pca_shape.txt"
EXPR_COEFFS = "result.coeffs_expression.txt"

FDS_ISOMAP_SIZE = 1024
FDS_DISPLACEMENT_SIZE = 4096
BFM2017_VERTICES = 53149  # bfm2017-1_bfm_nomouth, the model FDS fits
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_CAMERA_KEYS = {"focal": 1, "pose": 3, "translation": 3, "scale": 1}


class FdsFolderError(UserError):
    """An FDS output folder that cannot be imported; the message names the file and the problem."""


@dataclass
class FdsRecord:
    """One imported FDS folder. Maps are in FDS's UV layout (``uv_layout == "fds"``)."""

    folder: Path
    texture: np.ndarray  # (T, T, 3) uint8
    texture_mask: np.ndarray  # (T, T) bool, True where the texel was visible in the photo
    detail: np.ndarray  # (S, S) float32, displacement in [-1, 1] (DFDN units)
    vertices: np.ndarray  # (V, 3) float64, model units (BFM2017: mm)
    faces: np.ndarray  # (F, 3) int64, 0-based
    uvs: np.ndarray | None  # (V, 2) per-vertex UVs, v down, or None
    camera: dict  # source, focal, pose (3,), translation (3,), scale, modelview (4, 4), affine (3, 4)
    shape_coeffs: np.ndarray | None = None
    expr_coeffs: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    uv_layout: str = "fds"


def import_fds_folder(folder: str | Path, detail_size: int, texture_size: int) -> FdsRecord:
    """Read an FDS output folder; maps are resized to detail_size² and texture_size².

    Raises FdsFolderError naming the file for a missing folder, a missing, empty or malformed
    file, or a map that is not square.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FdsFolderError(f"FDS folder {folder} does not exist" if not folder.exists()
                             else f"FDS folder {folder} is not a folder")
    notes: list[str] = []
    vertices, faces, uvs = _read_mesh(folder / OBJ, notes)
    texture, mask = _read_isomap(folder / ISOMAP, texture_size, notes)
    detail = _read_displacement(folder / DISPLACEMENT, detail_size, notes)
    camera = _read_camera(folder, notes)
    shape = _read_coeffs(folder / SHAPE_COEFFS, notes)
    expr = _read_coeffs(folder / EXPR_COEFFS, notes)
    return FdsRecord(folder, texture, mask, detail, vertices, faces, uvs, camera, shape, expr, notes)


# ------------------------------------------------------------------------------------------ mesh


def _read_mesh(path: Path, notes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    from facedet3d.render.obj import read_obj

    _require(path)
    try:
        vertices, faces, uvs = read_obj(path)
    except UnicodeDecodeError:
        raise FdsFolderError(f"{path.name} in {path.parent} is not a text OBJ file") from None
    except (ValueError, IndexError) as err:
        raise FdsFolderError(f"{path.name} in {path.parent} is malformed ({err})") from None
    if len(vertices) == 0:
        raise FdsFolderError(f"{path.name} in {path.parent} has no vertices")
    if len(faces) == 0:
        raise FdsFolderError(f"{path.name} in {path.parent} has no faces")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise FdsFolderError(f"{path.name} in {path.parent} has face indices outside 1..{len(vertices)}")
    if not np.isfinite(vertices).all():
        raise FdsFolderError(f"{path.name} in {path.parent} has non-finite vertex coordinates")
    if len(vertices) != BFM2017_VERTICES:
        notes.append(f"{path.name}: {len(vertices)} vertices, not BFM2017's {BFM2017_VERTICES}")
    if uvs is None:
        notes.append(f"{path.name}: no texture coordinates (vt)")
    return vertices, faces, uvs


# ------------------------------------------------------------------------------------------ maps


def _open_png(path: Path) -> tuple[Image.Image, bool]:
    """A fully loaded PNG and whether it stores 16 bits per channel in a multi-channel mode
    (Pillow reduces those to 8 bits), or FdsFolderError saying what is wrong with the file."""
    _require(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head != _PNG_MAGIC:
        raise FdsFolderError(f"{path.name} in {path.parent} is not a PNG ({_sniff(head)})")
    try:
        img = Image.open(path, formats=["PNG"])
        reduced16 = _rawmode_16bit(img)  # the tile list is gone after load()
        img.load()
    except Exception as err:  # noqa: BLE001 - any decoder failure means a broken file
        raise FdsFolderError(f"{path.name} in {path.parent} is a truncated or corrupt PNG ({err})") from None
    return img, reduced16


def _check_square(path: Path, img: Image.Image, expected: int, notes: list[str]) -> None:
    w, h = img.size
    if w != h:
        raise FdsFolderError(f"{path.name} in {path.parent} is {w}x{h}, expected a square map")
    if w != expected:
        notes.append(f"{path.name}: {w}x{h}, FDS writes {expected}x{expected}")


def _read_isomap(path: Path, size: int, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    img, reduced16 = _open_png(path)
    _check_square(path, img, FDS_ISOMAP_SIZE, notes)
    if reduced16:
        notes.append(f"{path.name}: 16 bits per channel reduced to 8")
    if img.mode == "RGBA":
        rgba = np.asarray(img)
        rgb, alpha = rgba[..., :3], rgba[..., 3]
    elif img.mode in ("RGB", "L", "P"):
        rgb = np.asarray(img.convert("RGB"))
        alpha = np.where(rgb.max(axis=-1) > 0, 255, 0).astype(np.uint8)
        notes.append(f"{path.name}: no alpha channel (mode {img.mode}); visibility taken as non-black texels")
    elif img.mode in ("LA", "PA"):
        rgba = np.asarray(img.convert("RGBA"))
        rgb, alpha = rgba[..., :3], rgba[..., 3]
        notes.append(f"{path.name}: grayscale texture (mode {img.mode}) converted to RGB")
    else:
        raise FdsFolderError(f"{path.name} in {path.parent} has pixel mode {img.mode}, expected RGBA")
    if img.size[0] != size:
        rgb = resize_map(rgb, size)
        alpha = resize_map(alpha, size)
    texture = np.ascontiguousarray(rgb, dtype=np.uint8)
    return texture, np.asarray(alpha) >= 128


def _read_displacement(path: Path, size: int, notes: list[str]) -> np.ndarray:
    img, _ = _open_png(path)
    _check_square(path, img, FDS_DISPLACEMENT_SIZE, notes)
    if img.mode in ("L", "P", "1"):
        raise FdsFolderError(f"{path.name} in {path.parent} is 8-bit, expected 16-bit")
    if img.mode in ("RGB", "RGBA", "LA", "PA"):
        raise FdsFolderError(f"{path.name} in {path.parent} has {len(img.getbands())} channels (mode {img.mode}), "
                             "expected a single-channel 16-bit map")
    if not (img.mode.startswith("I;16") or img.mode == "I"):
        raise FdsFolderError(f"{path.name} in {path.parent} has pixel mode {img.mode}, expected 16-bit grayscale")
    raw = np.asarray(img).astype(np.float64)
    if raw.min() < 0 or raw.max() > 65535:
        raise FdsFolderError(f"{path.name} in {path.parent} holds values outside 0..65535")
    detail = (raw / 65535.0 * 2.0 - 1.0).astype(np.float32)
    if img.size[0] != size:
        detail = resize_map(detail, size)
    return np.ascontiguousarray(detail, dtype=np.float32)


def _rawmode_16bit(img: Image.Image) -> bool:
    """True for a multi-channel 16-bit PNG that Pillow presents as an 8-bit mode."""
    for tile in img.tile or ():
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode and not img.mode.startswith("I"):
            return True
    return False


def _sniff(head: bytes) -> str:
    for magic, name in ((b"\xff\xd8\xff", "JPEG data"), (b"GIF8", "GIF data"), (b"BM", "BMP data"),
                        (b"II*\x00", "TIFF data"), (b"MM\x00*", "TIFF data"), (b"RIFF", "RIFF/WEBP data")):
        if head.startswith(magic):
            return f"looks like {name}"
    return "unrecognised content"


# ---------------------------------------------------------------------------------------- camera


def _nan_camera() -> dict:
    return {"source": "missing", "focal": math.nan, "pose": np.full(3, np.nan), "translation": np.full(3, np.nan),
            "scale": math.nan, "modelview": np.full((4, 4), np.nan), "affine": np.full((3, 4), np.nan)}


def _read_camera(folder: Path, notes: list[str]) -> dict:
    camera = _nan_camera()
    modelview, affine = folder / MODELVIEW, folder / AFFINE
    if modelview.exists() or affine.exists():
        camera["source"] = "eos"
        if modelview.exists():
            m = _read_matrix(modelview, (4, 4))
            camera["modelview"] = m
            camera["pose"] = pose_from_rotation(m[:3, :3])
            camera["translation"] = m[:3, 3].copy()
        if affine.exists():
            a = _read_matrix(affine, (3, 4))
            camera["affine"] = a
            camera["scale"] = float(np.linalg.norm(a[:2, :3], axis=1).mean())
        missing = [p.name for p in (modelview, affine) if not p.exists()]
        if missing:
            notes.append(f"camera: {missing[0]} missing, its fields are NaN")
        return camera
    text = folder / CAMERA_TXT
    if text.exists():
        camera.update(_read_camera_txt(text))
        camera["source"] = "camera.txt"
        return camera
    notes.append(f"no camera file ({MODELVIEW}, {AFFINE} or {CAMERA_TXT}); camera fields are NaN")
    return camera


def _read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    _require(path)
    try:
        rows = [[float(x) for x in line.replace(",", " ").split()] for line in path.read_text().splitlines()
                if line.strip()]
        m = np.asarray(rows, dtype=np.float64)
    except (ValueError, UnicodeDecodeError):
        raise FdsFolderError(f"{path.name} in {path.parent} is malformed: expected {shape[0]} rows of "
                             f"{shape[1]} numbers") from None
    if m.shape != shape:
        raise FdsFolderError(f"{path.name} in {path.parent} is malformed: expected {shape[0]} rows of "
                             f"{shape[1]} numbers, found {len(rows)} row(s)")
    if not np.isfinite(m).all():
        raise FdsFolderError(f"{path.name} in {path.parent} holds non-finite numbers")
    return m


def _read_camera_txt(path: Path) -> dict:
    _require(path)
    out: dict = {}
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise FdsFolderError(f"{path.name} in {path.parent} is not a text file") from None
    for number, line in enumerate(lines, 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        key, values = parts[0].lower(), parts[1:]
        if key not in _CAMERA_KEYS:
            raise FdsFolderError(f"{path.name} line {number}: unknown key '{key}' "
                                 f"(known: {', '.join(_CAMERA_KEYS)})")
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            numbers = []
        if len(numbers) != _CAMERA_KEYS[key]:
            raise FdsFolderError(f"{path.name} line {number}: '{key}' needs {_CAMERA_KEYS[key]} number(s)")
        out[key] = numbers[0] if len(numbers) == 1 else np.asarray(numbers)
    if not out:
        raise FdsFolderError(f"{path.name} in {path.parent} holds no camera values")
    return out


def pose_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in radians with ``rotation = Rz(roll) @ Ry(yaw) @ Rx(pitch)``.

    The rotation's scale (if any) is divided out first.
    """
    r = np.asarray(rotation, dtype=np.float64)
    r = r / np.cbrt(np.linalg.det(r)) if np.linalg.det(r) > 0 else r
    yaw = math.asin(float(np.clip(-r[2, 0], -1.0, 1.0)))
    pitch = math.atan2(r[2, 1], r[2, 2])
    roll = math.atan2(r[1, 0], r[0, 0])
    return np.array([yaw, pitch, roll])


def _read_coeffs(path: Path, notes: list[str]) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        values = np.asarray([float(x) for x in path.read_text().split()], dtype=np.float32)
    except (ValueError, UnicodeDecodeError):
        raise FdsFolderError(f"{path.name} in {path.parent} is malformed: expected one number per line") from None
    if values.size == 0:
        notes.append(f"{path.name} is empty, ignored")
        return None
    return values


def _require(path: Path) -> None:
    if not path.is_file():
        raise FdsFolderError(f"{path.name} missing in FDS folder {path.parent}")
    if path.stat().st_size == 0:
        raise FdsFolderError(f"{path.name} in {path.parent} is empty (0 bytes)")


# ---------------------------------------------------------------------------------------- writing


def write_fds_folder(folder: str | Path, vertices: np.ndarray, faces: np.ndarray, texture: np.ndarray,
                     detail: np.ndarray, uvs: np.ndarray | None = None, texture_mask: np.ndarray | None = None,
                     camera: dict | None = None, camera_format: str = "eos") -> Path:
    """Write an FDS-style folder: result.obj, RGBA isomap, 16-bit displacement map, camera.

    Args:
        vertices (V, 3), faces (F, 3) 0-based, uvs (V, 2) optional (v down).
        texture: (T, T, 3) or (T, T, 4) uint8; texture_mask (T, T) bool becomes alpha
            (default: all visible, or the texture's own alpha).
        detail: (S, S) displacement in [-1, 1]; stored as round((d + 1) / 2 · 65535).
        camera: for ``camera_format="eos"`` a dict with ``modelview`` (4, 4) and/or ``affine``
            (3, 4); for ``"txt"`` any of ``focal``, ``pose``, ``translation``, ``scale``;
            None writes no camera file.
    Returns the folder.
    """
    from facedet3d.render.obj import write_obj

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_obj(folder / OBJ, vertices, faces, uvs=uvs)
    tex = np.asarray(texture, dtype=np.uint8)
    if tex.shape[-1] == 3:
        alpha = np.full(tex.shape[:2], 255, np.uint8) if texture_mask is None else \
            np.where(np.asarray(texture_mask), 255, 0).astype(np.uint8)
        tex = np.dstack([tex, alpha])
    elif texture_mask is not None:
        tex = tex.copy()
        tex[..., 3] = np.where(np.asarray(texture_mask), 255, 0)
    Image.fromarray(tex, "RGBA").save(folder / ISOMAP, format="PNG")
    d = np.clip(np.asarray(detail, dtype=np.float64), -1.0, 1.0)
    encoded = np.round((d + 1.0) / 2.0 * 65535.0).astype(np.uint16)
    Image.fromarray(encoded).save(folder / DISPLACEMENT, format="PNG")  # mode I;16
    if camera is not None:
        _write_camera(folder, camera, camera_format)
    return folder


def _write_camera(folder: Path, camera: dict, camera_format: str) -> None:
    def rows(m) -> str:
        return "".join(" ".join(f"{x:.9g}" for x in row) + " \n" for row in np.asarray(m, dtype=np.float64))

    if camera_format == "eos":
        if "modelview" in camera:
            (folder / MODELVIEW).write_text(rows(camera["modelview"]))
        if "affine" in camera:
            (folder / AFFINE).write_text(rows(camera["affine"]))
    elif camera_format == "txt":
        lines = ["# camera of an FDS folder: focal px, pose yaw pitch roll rad, translation mm, scale"]
        for key in _CAMERA_KEYS:
            if key in camera:
                lines.append(f"{key} " + " ".join(f"{x:.9g}" for x in np.atleast_1d(camera[key])))
        (folder / CAMERA_TXT).write_text("\n".join(lines) + "\n")
    else:
        raise ValueError(f"camera_format must be 'eos' or 'txt', not {camera_format!r}")
