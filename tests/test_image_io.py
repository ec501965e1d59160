"""read_image / write_image: a restoration round trip loses nothing, and bad inputs fail clearly."""
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin

from archive_restore.errors import ImageTooLargeError, InputError
from archive_restore.media.image import (
    Photo,
    read_image,
    reset_exif_orientation,
    resize_alpha,
    write_image,
)

MAKE, ORIENTATION = 0x010F, 0x0112


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[MAKE] = "ArchiveCam"
    return exif.tobytes()


def _u16(values: np.ndarray) -> np.ndarray:
    return np.round(values * 65535).astype(np.uint16)


def _u8(values: np.ndarray) -> np.ndarray:
    return np.round(values * 255).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# ------------------------------------------------------------------------------ orientation, EXIF


def test_jpeg_orientation_6_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    source = tmp_path / "portrait.jpg"
    Image.fromarray(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)).save(source, exif=_exif(6), quality=95)
    original_exif = Image.open(source).info["exif"]

    photo = read_image(source)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(source)))
    assert photo.pixels.shape == (16, 8, 3) and photo.pixels.dtype == np.float32
    assert np.array_equal(_u8(photo.pixels), expected)
    assert (photo.format, photo.bit_depth, photo.alpha) == ("JPEG", 8, None)
    assert photo.exif == reset_exif_orientation(original_exif) != original_exif

    out = tmp_path / "out.jpg"
    write_image(out, photo.pixels, photo)
    written = Image.open(out)
    assert written.getexif()[ORIENTATION] == 1 and written.getexif()[MAKE] == "ArchiveCam"
    assert written.info["exif"] == photo.exif  # every other EXIF byte unchanged
    assert written.size == (8, 16)
    assert JpegImagePlugin.get_sampling(written) == 0  # 4:4:4
    assert np.abs(np.asarray(written, dtype=np.float32) - expected).mean() < 3.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_matches_pillow(tmp_path: Path, rng: np.random.Generator, orientation: int) -> None:
    source = tmp_path / "o.png"
    Image.fromarray(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)).save(source, exif=_exif(orientation))
    photo = read_image(source)
    assert np.array_equal(_u8(photo.pixels), np.asarray(ImageOps.exif_transpose(Image.open(source))))


# ------------------------------------------------------------------------------------ ICC profile


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".webp"])
def test_icc_profile_kept(tmp_path: Path, rng: np.random.Generator, suffix: str) -> None:
    icc = _srgb_icc()
    source = tmp_path / "tagged.png"
    Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).save(source, icc_profile=icc)
    photo = read_image(source)
    assert photo.icc_profile == icc
    out = tmp_path / f"out{suffix}"
    write_image(out, photo.pixels, photo)
    assert Image.open(out).info.get("icc_profile") == icc


# ------------------------------------------------------------------------------------ 16 bits


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16_bit_stays_16_bit(tmp_path: Path, rng: np.random.Generator, suffix: str, channels: int) -> None:
    stored = rng.integers(0, 65536, (5, 7, channels), dtype=np.uint16).squeeze()
    source = tmp_path / f"deep{suffix}"
    assert cv2.imwrite(str(source), stored)  # OpenCV order: BGR / BGRA
    photo = read_image(source)
    assert photo.bit_depth == 16
    color = stored[:, :, 2::-1] if channels >= 3 else stored[:, :, None]
    assert np.array_equal(_u16(photo.pixels), color)
    assert (photo.alpha is None) == (channels != 4)
    if channels == 4:
        assert np.array_equal(_u16(photo.alpha), stored[:, :, 3])

    out = tmp_path / f"out{suffix}"
    write_image(out, photo.pixels, photo, photo.alpha)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back, stored)


def test_16_bit_png_keeps_icc_dpi_and_gray_alpha(tmp_path: Path, rng: np.random.Generator) -> None:
    icc = _srgb_icc()
    gray = rng.integers(0, 65536, (6, 4, 1), dtype=np.uint16)
    alpha = rng.integers(0, 65536, (6, 4), dtype=np.uint16)
    like = Photo(gray / np.float32(65535), alpha / np.float32(65535), 16, "LA;16", "PNG",
                 icc_profile=icc, dpi=(300.0, 300.0))
    out = tmp_path / "gray_alpha.png"
    write_image(out, like.pixels, like, like.alpha)
    photo = read_image(out)
    assert (photo.bit_depth, photo.channels, photo.mode) == (16, 1, "LA;16")
    assert np.array_equal(_u16(photo.pixels), gray) and np.array_equal(_u16(photo.alpha), alpha)
    assert photo.icc_profile == icc and photo.dpi == pytest.approx((300.0, 300.0), abs=0.01)


def test_16_bit_tiff_keeps_icc_and_dpi(tmp_path: Path, rng: np.random.Generator) -> None:
    icc = _srgb_icc()
    color = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    like = Photo(color / np.float32(65535), None, 16, "RGB;16", "TIFF", icc, None, (600.0, 600.0))
    out = tmp_path / "scan.tif"
    write_image(out, like.pixels, like)
    photo = read_image(out)
    assert photo.bit_depth == 16 and np.array_equal(_u16(photo.pixels), color)
    assert photo.icc_profile == icc and photo.dpi == pytest.approx((600.0, 600.0))


# ----------------------------------------------------------------------- gray, alpha, palette, CMYK


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_gray_stays_gray(tmp_path: Path, rng: np.random.Generator, suffix: str) -> None:
    source = tmp_path / f"gray{suffix}"
    Image.fromarray(rng.integers(0, 256, (5, 6), dtype=np.uint8), "L").save(source)
    photo = read_image(source)
    assert photo.channels == 1 and photo.mode == "L"
    out = tmp_path / f"out{suffix}"
    write_image(out, np.repeat(photo.pixels, 3, axis=2), photo)  # a colour result of a gray photo
    assert Image.open(out).mode == "L"


def test_rgba_keeps_alpha(tmp_path: Path, rng: np.random.Generator) -> None:
    stored = rng.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    source = tmp_path / "rgba.png"
    Image.fromarray(stored, "RGBA").save(source)
    photo = read_image(source)
    assert photo.channels == 3 and np.array_equal(_u8(photo.alpha), stored[:, :, 3])
    out = tmp_path / "out.png"
    write_image(out, photo.pixels, photo, photo.alpha)
    assert np.array_equal(np.asarray(Image.open(out)), stored)

    bigger = cv2.resize(photo.pixels, (10, 8), interpolation=cv2.INTER_CUBIC)
    write_image(out, bigger, photo)  # no alpha passed: the original's, resized
    written = Image.open(out)
    assert written.mode == "RGBA" and written.size == (10, 8)


def test_palette_png_becomes_rgb_or_rgba(tmp_path: Path) -> None:
    palette = Image.new("P", (4, 2))
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    palette.putdata([0, 1, 2, 1, 0, 1, 2, 1])
    palette.save(tmp_path / "plain.png")
    palette.save(tmp_path / "clear.png", transparency=1)
    plain = read_image(tmp_path / "plain.png")
    assert plain.mode == "P" and plain.alpha is None
    assert np.array_equal(_u8(plain.pixels), np.asarray(palette.convert("RGB")))
    clear = read_image(tmp_path / "clear.png")
    assert np.array_equal(clear.alpha, np.array([[1, 0, 1, 0], [1, 0, 1, 0]], dtype=np.float32))


def test_cmyk_jpeg_is_read_as_rgb(tmp_path: Path) -> None:
    source = tmp_path / "print.jpg"
    Image.new("CMYK", (8, 6), (10, 200, 30, 40)).save(source)
    photo = read_image(source)
    assert (photo.mode, photo.channels, photo.icc_profile) == ("CMYK", 3, None)
    assert np.array_equal(_u8(photo.pixels), np.asarray(Image.open(source).convert("RGB")))


# ------------------------------------------------------------------------------- writing contract


def test_write_goes_to_exact_path_and_input_is_untouched(tmp_path: Path, rng: np.random.Generator) -> None:
    source = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(source)
    before = (source.read_bytes(), source.stat().st_mtime_ns)
    photo = read_image(source)
    partial = tmp_path / "out" / "in.png.partial"
    partial.parent.mkdir()
    write_image(partial, photo.pixels, photo)  # unknown extension: the original's format
    assert os.listdir(partial.parent) == ["in.png.partial"]
    assert Image.open(partial).format == "PNG"
    assert (source.read_bytes(), source.stat().st_mtime_ns) == before


def test_resize_alpha() -> None:
    alpha = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    resized = resize_alpha(alpha, (8, 6))
    assert resized.shape == (6, 8) and resized.dtype == np.float32
    assert resized.min() >= 0.0 and resized.max() <= 1.0
    assert resize_alpha(alpha, (4, 3)) is not alpha


# ---------------------------------------------------------------------------------- bad inputs


def _assert_refused(path: Path, reason: str, error: type = InputError) -> None:
    with pytest.raises(error) as caught:
        read_image(path)
    message = str(caught.value)
    assert str(path) in message and reason in message and "\n" not in message


def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.touch()
    _assert_refused(empty, "empty")


def test_truncated_jpeg_is_not_grey_filled(tmp_path: Path, rng: np.random.Generator) -> None:
    whole = tmp_path / "whole.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    _assert_refused(cut, "truncated")


def test_truncated_16_bit_png(tmp_path: Path, rng: np.random.Generator) -> None:
    whole = tmp_path / "whole.png"
    cv2.imwrite(str(whole), rng.integers(0, 65536, (32, 32, 3), dtype=np.uint16))
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    _assert_refused(cut, "cannot decode")


def test_text_named_png(tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture\n")
    _assert_refused(fake, "not a recognised image")


def test_huge_header_refused_before_decoding(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    header = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))
    # The IDAT is empty: decoding would fail differently, so this error comes from the header.
    _assert_refused(bomb, "10,000,000,000 pixels", ImageTooLargeError)
    _assert_refused(bomb, "limit of 200,000,000 pixels", ImageTooLargeError)
    _assert_refused(bomb, "raise max_pixels", ImageTooLargeError)


def test_max_pixels_names_the_size(tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(small)
    with pytest.raises(ImageTooLargeError, match=r"10x10, above the limit of 50 pixels"):
        read_image(small, max_pixels=50)


def test_unreadable_file(tmp_path: Path) -> None:
    locked = tmp_path / "locked.png"
    Image.new("RGB", (2, 2)).save(locked)
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running with privileges that read a chmod 000 file (e.g. root)")
        _assert_refused(locked, "permission denied")
    finally:
        locked.chmod(0o644)


def test_missing_file(tmp_path: Path) -> None:
    _assert_refused(tmp_path / "absent.jpg", "no such file")


def test_permission_denied_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same refusal as a chmod 000 file, reachable when tests run as root."""
    locked = tmp_path / "locked.png"
    Image.new("RGB", (2, 2)).save(locked)
    monkeypatch.setattr("archive_restore.media.image.os.access", lambda *_args, **_kwargs: False)
    _assert_refused(locked, "permission denied")


# ------------------------------------------------------------------------------------- real data


def test_real_16_bit_png_with_alpha(shared_data: Path) -> None:
    folder = shared_data / "real" / "photos" / "realesrgan_inputs"
    deep = read_image(folder / "tree_alpha_16bit.png")
    assert deep.bit_depth == 16 and deep.alpha is not None and deep.channels == 3
    assert deep.alpha.shape == deep.pixels.shape[:2]
    assert read_image(folder / "00017_gray.png").channels == 1


@pytest.mark.parametrize("suffix,bit_depth", [(".png", 8), (".jpg", 8), (".png", 16)])
def test_a_large_picture_is_written_without_full_size_float_copies(tmp_path: Path, monkeypatch, suffix: str,
                                                                    bit_depth: int) -> None:
    """Clipping and rounding go a band of rows at a time: writing never holds a second float copy of the
    picture (a 3840x2160 photo at x4 is 1.6 GB of float), and the samples are the rounded, clipped
    values all the same."""
    import tracemalloc

    from archive_restore.media import image as image_module

    monkeypatch.setattr(image_module, "QUANTISE_ROWS_BYTES", 64 << 10)
    ramp = np.linspace(-0.2, 1.2, 500, dtype=np.float32)  # values outside [0, 1] too; smooth, so it compresses
    pixels = (ramp[None, :, None] + np.linspace(0, 0.1, 600, dtype=np.float32)[:, None, None]
              + np.float32([0, 0.05, -0.05])).astype(np.float32)  # 3.6 MB
    like = Photo(pixels=np.zeros((2, 2, 3), np.float32), alpha=None, bit_depth=bit_depth,
                 mode="RGB;16" if bit_depth == 16 else "RGB", format="PNG")
    tracemalloc.start()
    try:
        write_image(tmp_path / f"out{suffix}", pixels, like)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    samples = (2 if bit_depth == 16 else 1) * pixels.size
    assert peak < samples + pixels.nbytes // 4, peak  # the samples and a band; no float copy (3.6 MB)
    if suffix == ".png":
        back = read_image(tmp_path / f"out{suffix}").pixels
        top = 65535 if bit_depth == 16 else 255
        assert np.array_equal(np.round(back * top), np.floor(np.clip(pixels, 0, 1) * np.float32(top) + np.float32(0.5)))


@pytest.mark.parametrize("suffix,bit_depth,mode,channels", [(".png", 8, "RGB", 3), (".jpg", 8, "RGB", 3),
                                                             (".png", 16, "RGB;16", 3), (".png", 8, "L", 1)])
def test_uint8_pixels_are_written_as_the_floats_they_round_from(tmp_path: Path, suffix: str, bit_depth: int,
                                                                mode: str, channels: int) -> None:
    """A picture rounded to 8 bits already (a photo rendered straight to uint8) is written as its float
    original would have been: the same file for 8-bit outputs, each sample x 257 for 16-bit ones, and a
    gray original's luma computed from it."""
    rng = np.random.default_rng(5)
    floats = rng.random((30, 40, 3), dtype=np.float32)
    rounded = (floats * 255 + 0.5).astype(np.uint8)
    like = Photo(pixels=np.zeros((2, 2, channels), np.float32), alpha=None, bit_depth=bit_depth, mode=mode,
                 format="PNG")
    write_image(tmp_path / f"int{suffix}", rounded, like)
    write_image(tmp_path / f"float{suffix}", rounded.astype(np.float32) / np.float32(255.0), like)
    assert (tmp_path / f"int{suffix}").read_bytes() == (tmp_path / f"float{suffix}").read_bytes()
    if bit_depth == 16:
        back = read_image(tmp_path / f"int{suffix}")
        assert back.bit_depth == 16
        np.testing.assert_array_equal(np.round(back.pixels * 65535).astype(np.uint16),
                                      rounded.astype(np.uint16) * 257)


def test_written_bit_depth_follows_the_original_and_the_format() -> None:
    from archive_restore.media.image import written_bit_depth

    deep = Photo(pixels=np.zeros((2, 2, 3), np.float32), alpha=None, bit_depth=16, mode="RGB;16", format="PNG")
    flat = Photo(pixels=np.zeros((2, 2, 3), np.float32), alpha=None, bit_depth=8, mode="RGB", format="PNG")
    assert written_bit_depth("a.png", deep) == 16 and written_bit_depth("a.tif", deep) == 16
    assert written_bit_depth("a.jpg", deep) == 8 and written_bit_depth("a.png", flat) == 8
