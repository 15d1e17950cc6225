"""Robust loading of real-world image files into 8-bit RGB arrays.

:func:`load_image` either returns a :class:`LoadedImage` — an ``(H, W, 3) uint8`` array
plus a list of human-readable notes saying everything that was changed — or raises
:class:`BadImageError` with one clear reason. Nothing is changed silently and no
traceback leaves this module for a bad file.

What is converted (each with a note):
  * grayscale (1, L, LA, I;16*, I, F) → RGB ("converted from grayscale ...");
  * 16 bits per channel (PNG/TIFF) → 8 bits;
  * CMYK, YCbCr, LAB, HSV → RGB (no colour management);
  * palette images → RGB (through RGBA when the palette has transparency);
  * alpha (RGBA, LA, PA, P+transparency) → composited over white;
  * EXIF orientation 2..8 → the pixels are rotated / mirrored upright;
  * multi-frame files (GIF, multi-page TIFF) → the first frame;
  * longer side > ``max_side`` → downscaled (area filter) to ``max_side``.

What is rejected (:class:`BadImageError`):
  * missing path, directory, empty file;
  * content that is not an image ("not an image: PDF document", "... text file",
    "... unrecognised data (file is named .jpg)") or an image format this loader does not
    read (HEIC, SVG, ...);
  * truncated or corrupt image data (the header parses but the full decode fails);
  * shorter side < ``min_side`` (64 px), before or after downscaling;
  * more pixels than Pillow's decompression-bomb limit (2 × ``Image.MAX_IMAGE_PIXELS``,
    about 179 Mpx): such files are refused before decoding, never downscaled.
"""

from __future__ import annotations

import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facedet3d.errors import UserError

MIN_SIDE = 64
MAX_SIDE = 8192
# Pillow formats this loader opens; anything else is "unsupported", never guessed at.
FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF", "PPM")

_ORIENTATION = {
    2: "mirrored left-right", 3: "rotated 180°", 4: "mirrored top-bottom",
    5: "transposed", 6: "rotated 90° clockwise", 7: "transversed", 8: "rotated 90° counter-clockwise",
}

# The file extensions taken for images when listing folders (any case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class BadImageError(UserError):
    """An input image that cannot be used; ``reason`` says why, ``path`` which file."""

    def __init__(self, reason: str, path: str | Path | None = None):
        self.reason = reason
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {reason}" if path is not None else reason)


@dataclass
class LoadedImage:
    """A decoded image: ``rgb`` (H, W, 3) uint8, upright, and the notes on what was changed."""

    rgb: np.ndarray
    notes: list[str] = field(default_factory=list)
    format: str = ""
    original_size: tuple[int, int] = (0, 0)  # (width, height) as stored in the file


def load_image(path: str | Path, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> LoadedImage:
    """Decode ``path`` into 8-bit RGB, or raise :class:`BadImageError` naming the reason.

    Args:
        path: the image file.
        max_side: images whose longer side exceeds this are downscaled to it.
        min_side: images whose shorter side is below this are rejected.
    """
    path = Path(path)
    header = _check_file(path)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = _open(path, header)
        try:
            width, height = img.size
            if min(width, height) < min_side:
                raise BadImageError(f"image too small: {width}x{height}, need >= {min_side} px", path)
            if img.format == "PNG":
                _verify(path)
            rgb = _decode(path, img, max_side, notes)
            fmt = img.format or ""
        finally:
            img.close()
    notes[:0] = _warning_notes(caught, (width, height))
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        raise BadImageError(f"image too small: {w}x{h} after downscaling from {width}x{height}, "
                            f"need >= {min_side} px", path)
    return LoadedImage(np.ascontiguousarray(rgb), notes, fmt, (width, height))


def _warning_notes(caught: list, size: tuple[int, int]) -> list[str]:
    """Decoder warnings become notes (deduplicated, in order)."""
    out: list[str] = []
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            text = (f"very large image ({size[0]}x{size[1]}), above Pillow's decompression-bomb warning "
                    "threshold; decoded anyway")
        else:
            text = f"decoder warning: {str(w.message).strip()}"
        if text not in out:
            out.append(text)
    return out


def _check_file(path: Path) -> bytes:
    """The first bytes of a regular, non-empty file; BadImageError otherwise."""
    if not path.exists():
        raise BadImageError("file not found" + (" (broken symbolic link)" if path.is_symlink() else ""), path)
    if not path.is_file():
        raise BadImageError("not a regular file", path)
    try:
        with open(path, "rb") as f:
            header = f.read(64)
    except OSError as err:
        raise BadImageError(f"cannot read file: {err.strerror or err}", path) from None
    if not header:
        raise BadImageError("empty file (0 bytes)", path)
    return header


def _open(path: Path, header: bytes) -> Image.Image:
    """Image.open restricted to FORMATS, with Pillow's failures turned into reasons."""
    try:
        return Image.open(path, formats=FORMATS)
    except Image.DecompressionBombError as err:
        raise BadImageError(f"image too large: {_bomb_size(err)}exceeds Pillow's decompression-bomb limit "
                            f"of {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx; refused without decoding",
                            path) from None
    except UnidentifiedImageError:
        raise BadImageError(_identify_failure(path, header), path) from None
    except Exception as err:  # noqa: BLE001 - any parser failure on untrusted bytes is a bad file
        raise BadImageError(f"truncated or corrupt image file ({_describe(err)})", path) from None


def _verify(path: Path) -> None:
    """PNG chunk CRCs (Image.verify) on a second handle; a failure means a corrupt file."""
    try:
        with Image.open(path, formats=FORMATS) as probe:
            probe.verify()
    except Exception as err:  # noqa: BLE001
        raise BadImageError(f"truncated or corrupt image file ({_describe(err)})", path) from None


def _decode(path: Path, img: Image.Image, max_side: int, notes: list[str]) -> np.ndarray:
    """Full decode, first frame, EXIF orientation, mode → RGB, downscale."""
    n_frames = getattr(img, "n_frames", 1)
    longer = max(img.size)
    if longer > max_side and img.format in ("JPEG", "MPO"):
        img.draft(None, _fit(img.size, max_side))  # decode at reduced scale when the codec can
    bits16 = _is_16bit(img)
    try:
        img.load()
    except Exception as err:  # noqa: BLE001
        raise BadImageError(f"truncated or corrupt image file ({_describe(err)})", path) from None
    if n_frames > 1:
        notes.append(f"used the first of {n_frames} frames")
    img = _apply_orientation(img, notes)
    if bits16 and not img.mode.startswith("I;16"):
        notes.append("reduced from 16 to 8 bits per channel")
    try:
        img = _to_rgb(img, notes)
    except ValueError as err:
        raise BadImageError(f"unsupported pixel mode {img.mode} ({_describe(err)})", path) from None
    if max(img.size) > max_side:
        img = img.resize(_fit(img.size, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if longer > max_side:
        notes.append(f"downscaled to {img.size[0]}x{img.size[1]}: longer side {longer} px > max_side {max_side}")
    return np.asarray(img, dtype=np.uint8)


def _apply_orientation(img: Image.Image, notes: list[str]) -> Image.Image:
    try:
        orientation = img.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - a broken EXIF block does not spoil the pixels
        notes.append("unreadable EXIF data ignored")
        return img
    if orientation in (None, 1):
        return img
    if orientation not in _ORIENTATION:
        notes.append(f"ignored invalid EXIF orientation {orientation}")
        return img
    out = ImageOps.exif_transpose(img)
    notes.append(f"rotated per EXIF orientation {orientation} ({_ORIENTATION[orientation]})")
    return out


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """Any Pillow mode → RGB, alpha composited over white; ValueError for modes Pillow cannot convert."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        notes.append(f"converted from grayscale ({_high_depth_name(mode)})")
        return Image.fromarray(_gray_to_8bit(img)).convert("RGB")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        notes.append("converted from palette" + (" with transparency" if has_alpha else ""))
        return _flatten_alpha(img.convert("RGBA"), notes) if has_alpha else img.convert("RGB")
    if mode in ("LA", "La"):
        notes.append("converted from grayscale")
        return _flatten_alpha(img.convert("RGBA"), notes)
    if mode in ("RGBA", "RGBa"):
        return _flatten_alpha(img.convert("RGBA"), notes)
    if mode in ("1", "L"):
        notes.append("converted from grayscale" + (" (1-bit)" if mode == "1" else ""))
        return img.convert("RGB")
    if mode == "CMYK":
        notes.append("converted from CMYK to RGB (no colour management)")
        return img.convert("RGB")
    out = img.convert("RGB")
    notes.append(f"converted from {mode} to RGB")
    return out


def _flatten_alpha(rgba: Image.Image, notes: list[str]) -> Image.Image:
    """Composite an RGBA image over white and say how much of it was transparent."""
    alpha = np.asarray(rgba.getchannel("A"))
    transparent = float(np.mean(alpha < 255))
    if transparent == 0.0:
        notes.append("dropped a fully opaque alpha channel")
        return rgba.convert("RGB")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    notes.append(f"alpha channel composited over white ({100 * transparent:.1f}% of pixels not opaque)")
    return Image.alpha_composite(white, rgba).convert("RGB")


def _gray_to_8bit(img: Image.Image) -> np.ndarray:
    """8-bit gray from 16-bit, 32-bit integer or float gray."""
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    a = a.astype(np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if img.mode == "F" and lo >= 0.0 and hi <= 1.0:
        scale = (0.0, 1.0)
    elif img.mode == "I" and lo >= 0 and hi <= 65535:
        scale = (0.0, 65535.0 if hi > 255 else 255.0)
    else:
        scale = (lo, hi if hi > lo else lo + 1.0)
    out = (np.nan_to_num(a, nan=scale[0]) - scale[0]) / (scale[1] - scale[0])
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def _high_depth_name(mode: str) -> str:
    if mode.startswith("I;16"):
        return "16-bit, reduced to 8 bits"
    if mode == "I":
        return "32-bit integer, reduced to 8 bits"
    return "floating point, reduced to 8 bits"


def _is_16bit(img: Image.Image) -> bool:
    """True when the file stores 16 bits per channel that Pillow reduces to an 8-bit mode."""
    for tile in img.tile or ():
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _bomb_size(err: Exception) -> str:
    """'N Mpx ' from Pillow's bomb message when it is there."""
    m = re.search(r"\((\d+) pixels\)", str(err))
    return f"{int(m.group(1)) / 1e6:.0f} Mpx " if m else ""


# Signatures of image formats (PIL may still fail on them: then the file is corrupt or unsupported)
_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "BigTIFF"), (b"MM\x00+", "BigTIFF"),
    (b"P1", "PPM"), (b"P2", "PPM"), (b"P3", "PPM"), (b"P4", "PPM"), (b"P5", "PPM"), (b"P6", "PPM"),
)
_UNSUPPORTED_MAGIC = (
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"\xff\x4f\xff\x51", "JPEG 2000 codestream"),
    (b"8BPS", "Photoshop PSD"), (b"\x00\x00\x01\x00", "Windows icon"), (b"qoif", "QOI"),
)
_OTHER_MAGIC = (
    (b"%PDF", "PDF document"), (b"PK\x03\x04", "ZIP archive (or Office document)"), (b"\x1f\x8b", "gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"), (b"Rar!", "RAR archive"), (b"BZh", "bzip2 archive"),
    (b"\x7fELF", "executable (ELF)"), (b"MZ", "executable (Windows)"), (b"ID3", "MP3 audio"), (b"OggS", "Ogg media"),
    (b"fLaC", "FLAC audio"), (b"\x1a\x45\xdf\xa3", "Matroska/WebM video"), (b"\x89HDF", "HDF5 file"),
    (b"\x93NUMPY", "NumPy array file"), (b"SQLite format 3", "SQLite database"),
)


def _identify_failure(path: Path, header: bytes) -> str:
    """Why Pillow could not identify a file: unsupported image, corrupt image, or not an image."""
    if header[:4] == b"RIFF" and header[8:12] == b"WEBP":
        return "truncated or corrupt image file (WEBP header not decodable)"
    if header[4:8] == b"ftyp":
        brand = header[8:12].decode("ascii", "replace")
        if brand in ("heic", "heix", "heim", "heis", "hevc", "mif1", "msf1", "avif"):
            return f"unsupported image format: HEIF/AVIF ('{brand}'); convert it to PNG or JPEG"
        return f"not an image: video or MP4-family file ('{brand}')"
    for magic, name in _IMAGE_MAGIC:
        if header.startswith(magic) and not (name == "PPM" and len(header) > 2 and header[2:3] not in b" \t\r\n#"):
            return f"truncated or corrupt image file (starts like {name} but cannot be parsed)"
    for magic, name in _UNSUPPORTED_MAGIC:
        if header.startswith(magic):
            return f"unsupported image format: {name}; convert it to PNG or JPEG"
    if header.startswith(b"RIFF"):
        return f"not an image: RIFF {header[8:12].decode('ascii', 'replace').strip()} file"
    for magic, name in _OTHER_MAGIC:
        if header.startswith(magic):
            return f"not an image: {name}"
    text = _text_kind(path)
    if text:
        return f"not an image: {text}"
    suffix = path.suffix.lower()
    named = f"file is named {suffix}" if suffix else "file has no extension"
    return f"not an image: unrecognised data ({named})"


def _text_kind(path: Path) -> str | None:
    """'SVG vector image', 'HTML page', 'text file' ... when the file's start decodes as text."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a multi-byte character cut at the 4 KiB edge
            return None
        text = head[:err.start].decode("utf-8")
    start = text.lstrip("\ufeff \t\r\n").lower()
    if "<svg" in start[:1000]:
        return "SVG vector image (rasterise it to PNG first)"
    if start.startswith(("<!doctype html", "<html")):
        return "HTML page"
    if start.startswith("<?xml"):
        return "XML file"
    if start.startswith(("{", "[")):
        return "text file (JSON?)"
    return "text file"


_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_PNG_EXIF_KEYS = (b"Raw profile type exif", b"XML:com.adobe.xmp")  # text chunks Pillow reads an orientation from


def _png_unrotated(path: str) -> bool:
    """True when the PNG at ``path`` has no chunk Pillow takes an EXIF orientation from (eXIf, or a
    raw-EXIF / XMP text chunk): its pixels are decoded as stored. Only chunk headers are read."""
    with open(path, "rb") as f:
        if f.read(8) != _PNG:
            return False
        while True:
            head = f.read(8)
            if len(head) < 8:
                return False
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                return True
            if kind == b"eXIf":
                return False
            if kind in _PNG_TEXT:
                key = f.read(min(length, 80)).split(b"\0", 1)[0]
                if key in _PNG_EXIF_KEYS:
                    return False
                f.seek(length - min(length, 80) + 4, 1)
            else:
                f.seek(length + 4, 1)


def photo_hw(path: str | Path) -> tuple[int, int]:
    """(h, w) of ``load_image(path).rgb`` read from the file's header where that is certain (a PNG without
    EXIF or XMP chunks, a JPEG: Pillow's size turned per its EXIF orientation), the sides inside
    load_image's bounds (no downscale, not too small); otherwise the photo is decoded."""
    known = False
    try:
        with Image.open(path, formats=FORMATS) as img:
            w, h = img.size
            orientation = 1
            if img.format == "PNG":
                known = _png_unrotated(str(path))
            elif img.format == "JPEG":
                known = True
                try:
                    orientation = img.getexif().get(0x0112)
                except Exception:  # noqa: BLE001 - load_image ignores an unreadable EXIF block too
                    orientation = 1
    except Exception:  # noqa: BLE001 - load_image says what is wrong with the file
        known = False
    if not known or not (MIN_SIDE <= min(w, h) and max(w, h) <= MAX_SIDE):
        return load_image(path).rgb.shape[:2]
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)  # EXIF 5-8 turn the photo a quarter
