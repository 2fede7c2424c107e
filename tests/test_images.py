"""Tests of clustermine.method.images on hostile, real files built in tmp_path."""

from __future__ import annotations

import io
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clustermine.core.errors import ImageError, NoImagesError
from clustermine.method.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageRecord,
    load_rgb,
    scan_images,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels but holds (almost) no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------
# load_rgb
# ---------------------------------------------------------------------------------------------


def test_zero_byte_file_is_image_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert info.value.path == str(path)
    assert "not a readable image" in info.value.reason


def test_text_named_jpg_is_image_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 10)
    with pytest.raises(ImageError, match="cannot identify image file"):
        load_rgb(path)


def test_truncated_jpeg_is_image_error(tmp_path: Path) -> None:
    full = _save(_noise(128, 96), tmp_path / "full.jpg", quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageError) as info:
        load_rgb(cut)
    assert "truncated or corrupt" in info.value.reason


def test_missing_file_is_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found"):
        load_rgb(tmp_path / "nope.png")


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(50_000, 50_000))
    start = time.perf_counter()
    with pytest.raises(ImageError) as info:
        load_rgb(path)
    assert time.perf_counter() - start < 2.0
    assert info.value.reason == (
        f"image is 50000 x 50000 = 2500000000 pixels, over the limit of {DEFAULT_MAX_PIXELS} "
        "pixels (set max_pixels to allow it)"
    )


def test_pixel_limit_is_explicit_not_pils_global(tmp_path: Path) -> None:
    path = _save(_noise(20, 20), tmp_path / "small.png")
    with pytest.raises(ImageError, match=r"image is 20 x 20 = 400 pixels, over the limit of 399"):
        load_rgb(path, max_pixels=399)
    assert load_rgb(path, max_pixels=400).size == (20, 20)
    # Raising our limit above PIL's global one lets decoding go ahead (this file then turns out
    # to hold no pixel data): the explicit limit, not Image.MAX_IMAGE_PIXELS, decides.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(50_000, 50_000))
    with pytest.raises(ImageError) as info:
        load_rgb(bomb, max_pixels=None)
    assert "over the limit" not in info.value.reason


def test_pils_own_bomb_error_becomes_image_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.new("RGB", (32, 32)), tmp_path / "icon.ico")  # ICO reader checks PIL's limit itself
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 1024 px > 2 x limit: DecompressionBombError
    with pytest.raises(ImageError, match="decompression-bomb"):
        load_rgb(path, max_pixels=None)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1024 px > limit: DecompressionBombWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="decompression-bomb"):
            load_rgb(path, max_pixels=None)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_rgb(path))
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 64, 128, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    img = load_rgb(path)
    assert img.mode == "RGB"
    assert _close(img.getpixel((8, 8)), RED, tol=20)


def test_palette_png_transparency_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.putpixel((0, 0), 1)
    path = _save(img, tmp_path / "pal.png", transparency=0)
    out = load_rgb(path)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == RED
    assert out.getpixel((3, 3)) == (255, 255, 255)  # transparent black -> white, not black


@pytest.mark.parametrize(
    ("mode", "fill", "ext", "expected"),
    [
        ("L", 128, "png", (128, 128, 128)),
        ("LA", (0, 0), "png", (255, 255, 255)),
        ("RGBA", (255, 0, 0, 255), "png", RED),
        ("RGBA", (255, 0, 0, 0), "png", (255, 255, 255)),
        ("1", 1, "png", (255, 255, 255)),
        ("I", 1000, "tiff", (4, 4, 4)),  # 0..65535 range scaled to 0..255
        ("F", 0.5, "tiff", (128, 128, 128)),  # 0..1 floats scaled to 0..255
        ("RGB", RED, "webp", RED),
        ("RGB", BLUE, "bmp", BLUE),
    ],
)
def test_modes_convert_to_rgb(tmp_path: Path, mode: str, fill: object, ext: str, expected: tuple[int, ...]) -> None:
    path = _save(Image.new(mode, (6, 5), fill), tmp_path / f"img.{ext}", **({"lossless": True} if ext == "webp" else {}))
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (6, 5)
    assert _close(out.getpixel((2, 2)), expected, tol=2)


def test_animated_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 8), RED), Image.new("RGB", (10, 8), BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (10, 8)
    assert _close(out.getpixel((5, 4)), RED)


def test_exif_rotated_jpeg_comes_out_upright(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))  # left half red, right half blue, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: display rotated 90 degrees clockwise
    path = _save(stored, tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    out = load_rgb(path)
    assert out.size == (20, 40)  # portrait after rotation
    assert _close(out.getpixel((10, 5)), RED)  # stored left side is now on top
    assert _close(out.getpixel((10, 35)), BLUE)


@pytest.mark.parametrize("size", [(1, 1), (10000, 20), (20, 10000)])
def test_extreme_shapes(tmp_path: Path, size: tuple[int, int]) -> None:
    path = _save(Image.new("RGB", size, BLUE), tmp_path / "odd.png")
    out = load_rgb(path)
    assert out.size == size and out.getpixel((0, 0)) == BLUE


def test_load_result_is_detached_from_file(tmp_path: Path) -> None:
    path = _save(_noise(8, 8), tmp_path / "a.png")
    out = load_rgb(path)
    path.unlink()
    assert np.asarray(out).shape == (8, 8, 3)


# ---------------------------------------------------------------------------------------------
# scan_images
# ---------------------------------------------------------------------------------------------

ODD_NAMES = ["a b.jpg", "ünïcödé 日本.png", "$(touch pwned); `rm -rf x` 'q\".jpg", "-dash.JPEG"]


def _folder_with_everything(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "data"
    outside = tmp_path / "outside"
    _save(_noise(12, 12, 1), root / "cls_b" / "img1.jpg")
    _save(_noise(12, 12, 2), root / "cls_a" / "img2.PNG")
    for i, name in enumerate(ODD_NAMES):
        _save(_noise(9, 9, 10 + i), root / "odd" / name, **({"format": "JPEG"} if name.endswith("JPEG") else {}))
    (root / "cls_c").mkdir()
    (root / "cls_c" / "copy_of_img1.jpg").write_bytes((root / "cls_b" / "img1.jpg").read_bytes())
    (root / "cls_a" / "empty.png").write_bytes(b"")
    (root / "cls_a" / "readme.md").write_text("hello")
    (root / "labels.csv").write_text("a,b\n")
    (root / "notes.txt").write_text("x")
    (root / "meta.json").write_text("{}")
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    _save(_noise(4, 4), root / ".hidden" / "secret.jpg")
    _save(_noise(12, 12, 3), outside / "elsewhere.jpg")
    os.symlink(outside / "elsewhere.jpg", root / "link.jpg")
    os.symlink(outside, root / "linked_dir")
    return root, outside


def test_scan_everything(tmp_path: Path) -> None:
    root, _ = _folder_with_everything(tmp_path)
    records = scan_images(root)
    by_path = {r.path: r for r in records}
    assert [r.path for r in records] == sorted(by_path)
    expected = {
        "cls_c/copy_of_img1.jpg",
        "cls_a/empty.png",
        "cls_a/img2.PNG",
        "cls_a/readme.md",
        "cls_b/img1.jpg",
        "link.jpg",
        "linked_dir",
        *(f"odd/{n}" for n in ODD_NAMES),
    }
    assert set(by_path) == expected  # sidecars, hidden files and hidden folders are ignored
    assert by_path["cls_a/empty.png"].reason == "empty file (0 bytes)"
    assert by_path["cls_a/readme.md"].reason == "not an image file extension"
    for link in ("link.jpg", "linked_dir"):
        assert by_path[link].status == "skipped"
        assert by_path[link].reason == "symbolic link (not followed)"
        assert by_path[link].sha1 is None
    assert by_path["cls_b/img1.jpg"].status == "ok" and by_path["cls_b/img1.jpg"].duplicate_of is None
    dup = by_path["cls_c/copy_of_img1.jpg"]
    assert dup.status == "ok" and dup.duplicate_of == "cls_b/img1.jpg"
    assert dup.sha1 == by_path["cls_b/img1.jpg"].sha1
    for name in ODD_NAMES:
        rec = by_path[f"odd/{name}"]
        assert rec.status == "ok" and Path(rec.abs_path).is_file()
        assert load_rgb(rec.abs_path).size == (9, 9)
    assert not (Path.cwd() / "pwned").exists()


def test_scan_is_deterministic_and_roundtrips(tmp_path: Path) -> None:
    root, _ = _folder_with_everything(tmp_path)
    first, second = scan_images(root), scan_images(root)
    assert first == second
    assert [ImageRecord.from_dict(r.to_dict()) for r in first] == first


def test_scan_max_file_bytes(tmp_path: Path) -> None:
    small = _save(Image.new("RGB", (4, 4)), tmp_path / "small.png")
    big = _save(_noise(64, 64), tmp_path / "big.png")
    records = {r.path: r for r in scan_images(tmp_path, max_file_bytes=small.stat().st_size)}
    assert records["small.png"].status == "ok"
    assert records["big.png"].status == "skipped"
    assert str(big.stat().st_size) in records["big.png"].reason.replace(",", "")


def test_scan_extensions_case_insensitive(tmp_path: Path) -> None:
    for i, ext in enumerate(sorted(IMAGE_EXTENSIONS)):
        (tmp_path / f"f{i}{ext.upper()}").write_bytes(b"bytes")
    records = scan_images(tmp_path)
    assert len(records) == len(IMAGE_EXTENSIONS) and all(r.status == "ok" for r in records)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(NoImagesError, match=r"no image files found in .*\(looked for .*\.jpg.*\.png"):
        scan_images(tmp_path)


def test_folder_with_only_sidecars(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("x")
    (tmp_path / "doc.pdf").write_text("x")
    with pytest.raises(NoImagesError, match="no image files found"):
        scan_images(tmp_path)


def test_folder_with_only_broken_candidates(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(NoImagesError, match="empty file"):
        scan_images(tmp_path)


def test_missing_or_file_root(tmp_path: Path) -> None:
    with pytest.raises(NoImagesError, match="not found"):
        scan_images(tmp_path / "missing")
    file = _save(Image.new("RGB", (2, 2)), tmp_path / "x.png")
    with pytest.raises(NoImagesError, match="not a folder"):
        scan_images(file)


def test_scan_then_load_detects_bad_content(tmp_path: Path) -> None:
    """scan_images does not decode: a text file named .jpg is a candidate; load_rgb refuses it."""
    (tmp_path / "fake.jpg").write_bytes(b"GIF89a but not really")
    _save(_noise(5, 5), tmp_path / "real.jpg")
    records = scan_images(tmp_path)
    assert [r.status for r in records] == ["ok", "ok"]
    with pytest.raises(ImageError):
        load_rgb(records[0].abs_path)
    assert load_rgb(records[1].abs_path).size == (5, 5)


def test_png_bytes_in_memory_header_helper_is_valid() -> None:
    """The hand-built PNG header used above is well formed (PIL reads its size)."""
    with Image.open(io.BytesIO(_png_header_only(7, 3))) as im:
        assert im.size == (7, 3)
