"""Robust image loading: every kind of bad or unusual file gives its documented result."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from facedet3d.data.images import BadImageError, load_image
from facedet3d.errors import UserError


@pytest.fixture
def photo() -> np.ndarray:
    """A smooth 120x160 RGB test picture (compresses well, survives JPEG)."""
    y, x = np.mgrid[0:120, 0:160]
    return np.stack([x * 1.5, y * 2.0, (x + y) * 0.9], axis=-1).clip(0, 255).astype(np.uint8)


def _reject(path: Path) -> str:
    with pytest.raises(BadImageError) as info:
        load_image(path)
    assert isinstance(info.value, UserError)
    assert str(path) in str(info.value)
    return info.value.reason


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG with a valid IHDR and no pixel data: tiny on disk, any size in its header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_plain_rgb_loads_without_notes(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "ok.png")
    loaded = load_image(tmp_path / "ok.png")
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.shape == (120, 160, 3)
    assert np.array_equal(loaded.rgb, photo)
    assert loaded.notes == [] and loaded.format == "PNG"


def test_truncated_jpeg_is_corrupt(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "header.jpg").write_bytes(data[:40])
    assert _reject(tmp_path / "half.jpg").startswith("truncated or corrupt image file")
    assert _reject(tmp_path / "header.jpg").startswith("truncated or corrupt image file")


def test_png_with_bad_checksum_is_corrupt(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.png").write_bytes(bytes(data))
    assert _reject(tmp_path / "flipped.png").startswith("truncated or corrupt image file")


def test_non_images_are_named(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "notes.txt").write_text("not a face\n")
    (tmp_path / "paper.png").write_bytes(b"%PDF-1.7\n% fake\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reject(tmp_path / "noise.jpg") == "not an image: unrecognised data (file is named .jpg)"
    assert _reject(tmp_path / "notes.txt") == "not an image: text file"
    assert _reject(tmp_path / "paper.png") == "not an image: PDF document"
    assert _reject(tmp_path / "empty.jpg") == "empty file (0 bytes)"
    assert _reject(tmp_path / "missing.jpg") == "file not found"
    assert _reject(tmp_path) == "not a regular file"


def test_grayscale_and_16bit_become_8bit_rgb(tmp_path, photo):
    gray = photo[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gray16.png")  # mode I;16
    cv2.imwrite(str(tmp_path / "rgb16.png"), photo[..., ::-1].astype(np.uint16) * 257)  # 48-bit PNG
    for name in ("gray.png", "gray16.png"):
        loaded = load_image(tmp_path / name)
        assert loaded.rgb.shape == (120, 160, 3)
        assert np.array_equal(loaded.rgb[..., 0], gray) and np.array_equal(loaded.rgb[..., 2], gray)
        assert any(n.startswith("converted from grayscale") for n in loaded.notes), loaded.notes
    assert any("16-bit" in n for n in load_image(tmp_path / "gray16.png").notes)
    loaded = load_image(tmp_path / "rgb16.png")
    assert np.array_equal(loaded.rgb, photo)
    assert loaded.notes == ["reduced from 16 to 8 bits per channel"]


def test_cmyk_jpeg_becomes_rgb(tmp_path, photo):
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    loaded = load_image(tmp_path / "cmyk.jpg")
    assert loaded.rgb.shape == (120, 160, 3)
    assert np.abs(loaded.rgb.astype(int) - photo).mean() < 8
    assert any("CMYK" in n for n in loaded.notes)


def test_alpha_is_composited_over_white(tmp_path, photo):
    alpha = np.zeros((120, 160), np.uint8)
    alpha[:, 80:] = 255
    Image.fromarray(np.dstack([photo, alpha])).save(tmp_path / "rgba.png")
    loaded = load_image(tmp_path / "rgba.png")
    assert (loaded.rgb[:, :80] == 255).all() and np.array_equal(loaded.rgb[:, 80:], photo[:, 80:])
    assert any("composited over white (50.0%" in n for n in loaded.notes), loaded.notes


def test_palette_with_transparency(tmp_path, photo):
    pal = Image.fromarray(photo).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    index = np.asarray(pal)[0, 0]
    pal.save(tmp_path / "pal.png", transparency=int(index))
    loaded = load_image(tmp_path / "pal.png")
    assert loaded.rgb.shape == (120, 160, 3)
    assert (loaded.rgb[0, 0] == 255).all()  # the transparent palette entry shows white
    assert "converted from palette with transparency" in loaded.notes
    assert any("composited over white" in n for n in loaded.notes)
    pal.save(tmp_path / "opaque.png")
    assert load_image(tmp_path / "opaque.png").notes == ["converted from palette"]


def test_exif_orientation_is_applied(tmp_path, photo):
    image = Image.fromarray(photo)  # 160 wide, 120 high
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: display rotated 90° clockwise
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.rgb.shape == (160, 120, 3)
    assert loaded.original_size == (160, 120)
    assert loaded.notes == ["rotated per EXIF orientation 6 (rotated 90° clockwise)"]
    upright = np.rot90(photo, k=-1)  # clockwise
    assert np.abs(loaded.rgb.astype(int) - upright).mean() < 4


def test_tiny_image_is_rejected(tmp_path):
    Image.new("RGB", (40, 40), (90, 60, 30)).save(tmp_path / "tiny.png")
    assert _reject(tmp_path / "tiny.png") == "image too small: 40x40, need >= 64 px"


def test_huge_image_is_downscaled(tmp_path):
    Image.new("RGB", (9000, 200), (10, 20, 30)).save(tmp_path / "wide.png")
    assert (tmp_path / "wide.png").stat().st_size < 100_000
    loaded = load_image(tmp_path / "wide.png")
    assert loaded.rgb.shape == (182, 8192, 3)
    assert loaded.notes == ["downscaled to 8192x182: longer side 9000 px > max_side 8192"]
    assert (loaded.rgb == (10, 20, 30)).all()
    assert load_image(tmp_path / "wide.png", max_side=4096).rgb.shape == (91, 4096, 3)
    with pytest.raises(BadImageError, match=r"image too small: 2048x46 after downscaling from 9000x200"):
        load_image(tmp_path / "wide.png", max_side=2048)


def test_decompression_bomb_is_refused(tmp_path):
    _png_header_only(tmp_path / "bomb.png", 20000, 20000)  # 400 Mpx in a 57-byte file
    reason = _reject(tmp_path / "bomb.png")
    assert reason.startswith("image too large: 400 Mpx exceeds Pillow's decompression-bomb limit")


def test_photo_sizes_from_the_header_are_the_decoded_ones(tmp_path, monkeypatch):
    """photo_hw reads a PNG's or JPEG's size without decoding it, turned per its EXIF orientation, and
    decodes whatever it cannot be sure of (a PNG with EXIF, a GIF): always load_image's (h, w)."""
    from PIL import Image, PngImagePlugin

    from facedet3d.data import images

    pixels = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8))
    rotated = Image.Exif()
    rotated[0x0112] = 6  # rotated 90° clockwise: the upright photo is 120 high, 80 wide
    text = PngImagePlugin.PngInfo()
    text.add_text("Software", "a test")
    xmp = PngImagePlugin.PngInfo()
    xmp.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>')
    files = {"plain.png": {}, "text.png": {"pnginfo": text}, "plain.jpg": {}, "rotated.jpg": {"exif": rotated},
             "rotated.png": {"exif": rotated}, "xmp.png": {"pnginfo": xmp}, "plain.gif": {}}
    decoded = {}
    for name, options in files.items():
        pixels.save(tmp_path / name, **options)
        decoded[name] = images.load_image(tmp_path / name).rgb.shape[:2]
        assert images.photo_hw(tmp_path / name) == decoded[name], name
    assert decoded["rotated.jpg"] == decoded["rotated.png"] == (120, 80) and decoded["plain.png"] == (80, 120)

    def no_decoding(path, *args, **kwargs):
        raise AssertionError(f"{path} decoded")

    monkeypatch.setattr(images, "load_image", no_decoding)
    for name in ("plain.png", "text.png", "plain.jpg", "rotated.jpg"):
        assert images.photo_hw(tmp_path / name) == decoded[name], name  # from the header alone
    for name in ("rotated.png", "xmp.png", "plain.gif"):
        with pytest.raises(AssertionError, match="decoded"):
            images.photo_hw(tmp_path / name)
