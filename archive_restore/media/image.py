"""Reading and writing photos so that a restoration round trip loses nothing.

`read_image` returns a `Photo`: float32 RGB (or gray) pixels in [0, 1] with the EXIF orientation
already applied, the alpha channel split out, and everything needed to write the result back the
way the original was stored: bit depth, ICC profile, EXIF (orientation reset to 1), resolution.
`write_image` writes a result beside that description.

Decisions worth knowing:

* 16-bit PNG and TIFF are decoded with OpenCV (Pillow turns 16-bit RGB into 8-bit) and written by
  the small PNG/TIFF encoders below, so 16 bits, alpha, ICC profile and resolution all survive.
  EXIF is written to JPEG, PNG (8 and 16 bit) and WebP; TIFF outputs carry ICC and resolution only
  (a TIFF's EXIF lives in its own tags, which are not copied).
* CMYK JPEGs are converted to RGB. With an embedded CMYK profile the conversion goes through it to
  sRGB (LittleCMS) and the profile is dropped, since it no longer describes the pixels; the result
  is untagged sRGB. Without a profile Pillow's plain conversion is used.
* Palette images become RGB, or RGBA when the palette has transparency; 1-bit images become gray.
* The pixel limit is checked on the header, before any pixel is decoded. To let that limit apply,
  Pillow's own decompression-bomb limit is raised (never lowered) to at least `max_pixels`.
* Truncated files are refused: Pillow raises on load as long as `ImageFile.LOAD_TRUNCATED_IMAGES`
  stays False (its default; this module never sets it).
* Only the first frame of a multi-frame file (TIFF pages, animated WebP) is read.
"""
from __future__ import annotations

import io
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

try:  # LittleCMS support is optional in Pillow builds; without it CMYK converts without a profile
    from PIL import ImageCms
except ImportError:  # pragma: no cover - depends on the Pillow build
    ImageCms = None

from ..errors import (
    ImageTooLargeError,
    InputError,
    UnsupportedFormatError,
)
from .quiet import native_stderr

DEFAULT_MAX_PIXELS = 200_000_000

ORIENTATION_TAG = 0x0112

FORMAT_BY_EXTENSION = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
}

# Pillow's format name -> ours (cameras write JPEGs that Pillow opens as MPO).
_FORMAT_ALIASES = {"MPO": "JPEG"}

_SUPPORTED_FORMATS = frozenset(FORMAT_BY_EXTENSION.values())

# Source Pillow mode -> the mode the pixels are delivered in (8-bit path).
_TARGET_MODE = {
    "1": "L",
    "L": "L",
    "LA": "LA",
    "La": "LA",
    "P": "RGB",
    "PA": "RGBA",
    "RGB": "RGB",
    "RGBX": "RGB",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "YCbCr": "RGB",
    "CMYK": "RGB",
}

# Modes that gain an alpha channel when the file declares a transparent colour.
_WITH_TRANSPARENCY = {"L": "LA", "RGB": "RGBA", "P": "RGBA"}

_EXIF_HEADER = b"Exif\x00\x00"


@dataclass
class Photo:
    """A decoded photo plus what is needed to write a result the way the original was stored.

    pixels:      float32 HxWxC in [0, 1], RGB order; C is 1 for gray, 3 for colour.
    alpha:       float32 HxW in [0, 1], or None when the image has no transparency.
    bit_depth:   8 or 16, bits per sample of the original.
    mode:        the original's layout, e.g. 'RGB', 'L', 'P', 'CMYK', 'RGBA;16', 'L;16'.
    format:      'JPEG', 'PNG', 'TIFF', 'BMP' or 'WEBP'.
    icc_profile: the embedded ICC profile, or None (untagged, i.e. sRGB).
    exif:        raw EXIF bytes with the orientation tag reset to 1, or None.
    dpi:         (x, y) resolution in dots per inch, or None.
    decoder_said: what the native decoders (libtiff, OpenCV...) printed while decoding it, or "".
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    mode: str
    format: str
    icc_profile: bytes | None = None
    exif: bytes | None = None
    dpi: tuple[float, float] | None = None
    decoder_said: str = ""

    @property
    def height(self) -> int:
        """Rows of pixels (after orientation)."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Columns of pixels (after orientation)."""
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        """Colour channels without alpha: 1 (gray) or 3 (RGB)."""
        return int(self.pixels.shape[2])


# --------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Photo:
    """Decode a photo; raise InputError (or a subclass) naming the file when it cannot be used.

    The header's size is checked against `max_pixels` before decoding (ImageTooLargeError). What the
    native decoders print meanwhile is kept off the terminal: it ends in the error's message, or in
    the photo's ``decoder_said``.
    """
    path = Path(path)
    _check_readable_file(path)
    _allow_pillow_up_to(max_pixels)
    failure = None
    with native_stderr() as said:
        try:
            photo = _decode(path, max_pixels)
        except InputError as exc:
            failure = exc
    if failure is not None:
        raise type(failure)(said.folded(str(failure))) from failure
    photo.decoder_said = said.text
    return photo


def _decode(path: Path, max_pixels: int) -> Photo:
    with _open_header(path, max_pixels) as im:
        fmt = _check_header(path, im, max_pixels)
        try:
            if _is_16_bit(path, im, fmt):
                array, alpha, mode, bit_depth = _decode_16_bit(path, im, fmt)
                icc = im.info.get("icc_profile")
            else:
                array, alpha, mode, icc = _decode_8_bit(path, im)
                bit_depth = 8
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as exc:
            raise InputError(f"{path}: cannot decode the image ({_one_line(exc)})") from exc
        orientation = _orientation(im, fmt)
        exif = _exif_bytes(im)
        dpi = _dpi(im.info)
    return _assemble(array, alpha, bit_depth, mode, fmt, icc, exif, dpi, orientation)


def _check_readable_file(path: Path) -> None:
    """Missing, not a file, unreadable or empty: InputError with the reason."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied (the file is not readable)")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")


def _allow_pillow_up_to(max_pixels: int) -> None:
    """Raise (never lower) Pillow's decompression-bomb limit so that `max_pixels` is the one that applies."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _open_header(path: Path, max_pixels: int) -> Image.Image:
    """Image.open (reads the header only), with its failures turned into InputError."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
        raise ImageTooLargeError(_too_large_message(path, size, max_pixels)) from exc
    except PermissionError as exc:
        raise InputError(f"{path}: permission denied (the file is not readable)") from exc
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not a recognised image file") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise InputError(f"{path}: cannot read the image header ({_one_line(exc)})") from exc


def _check_header(path: Path, im: Image.Image, max_pixels: int) -> str:
    """Refuse formats we do not handle and sizes above `max_pixels`; return our format name."""
    fmt = _FORMAT_ALIASES.get(im.format, im.format)
    if fmt not in _SUPPORTED_FORMATS:
        supported = ", ".join(sorted(_SUPPORTED_FORMATS))
        raise UnsupportedFormatError(f"{path}: {im.format} images are not supported (supported: {supported})")
    width, height = im.size
    if width * height > max_pixels:
        raise ImageTooLargeError(_too_large_message(path, f"{width}x{height}", max_pixels))
    return fmt


def _too_large_message(path: Path, claimed: str, max_pixels: int) -> str:
    """One line: the claimed size, the limit, and how to raise it."""
    return (
        f"{path}: image header claims {claimed}, above the limit of {max_pixels:,} pixels; "
        f"refused before decoding (raise max_pixels to read it if you trust the file)"
    )


def _one_line(exc: BaseException) -> str:
    """An exception's text on a single line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_16_bit(path: Path, im: Image.Image, fmt: str) -> bool:
    """True for PNG and TIFF files storing 16 bits per sample."""
    if fmt == "PNG":
        with open(path, "rb") as fh:
            header = fh.read(26)
        return len(header) == 26 and header[24] == 16
    if fmt == "TIFF":
        bits = im.tag_v2.get(258, 1)
        return 16 in (bits if isinstance(bits, tuple) else (bits,))
    return False


def _decode_8_bit(path: Path, im: Image.Image) -> tuple[np.ndarray, np.ndarray | None, str, bytes | None]:
    """Decode with Pillow into uint8 HxWxC (C 1 or 3) plus alpha; return (array, alpha, mode, icc)."""
    im.load()
    source_mode = im.mode
    icc = im.info.get("icc_profile")
    target = _TARGET_MODE.get(source_mode)
    if target is None:
        raise UnsupportedFormatError(
            f"{path}: {source_mode} pixels (e.g. 32-bit or float samples) are not supported"
        )
    if "transparency" in im.info and source_mode in _WITH_TRANSPARENCY:
        target = _WITH_TRANSPARENCY[source_mode]
    if source_mode == "CMYK":
        converted, icc = _cmyk_to_rgb(im, icc)
    else:
        converted = im.convert(target) if im.mode != target else im
    array = np.asarray(converted)
    if array.ndim == 2:
        array = array[:, :, None]
    if target in ("LA", "RGBA"):
        return array[:, :, :-1], array[:, :, -1], source_mode, icc
    return array, None, source_mode, icc


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """CMYK -> RGB through the embedded profile to sRGB when possible; the CMYK profile is dropped."""
    if icc and ImageCms is not None:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(im, source, srgb, outputMode="RGB"), None
        except (OSError, ValueError, ImageCms.PyCMSError):
            pass  # an unusable profile: fall back to the plain conversion
    return im.convert("RGB"), None


def _decode_16_bit(path: Path, im: Image.Image, fmt: str) -> tuple[np.ndarray, np.ndarray | None, str, int]:
    """Decode 16-bit PNG/TIFF with OpenCV; return (array HxWxC RGB, alpha, mode, bit_depth)."""
    if fmt == "PNG":
        im.verify()  # walks every chunk and its CRC: refuses truncated files, fills im.info
    gray_source = _is_gray_source(path, im, fmt)
    data = np.fromfile(path, dtype=np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise OSError("OpenCV could not decode the 16-bit data (truncated or corrupt)")
    if array.dtype not in (np.uint8, np.uint16):
        raise UnsupportedFormatError(f"{path}: {array.dtype} samples are not supported")
    bit_depth = 16 if array.dtype == np.uint16 else 8
    color, alpha = _split_opencv_channels(array, gray_source)
    mode = ("L" if color.shape[2] == 1 else "RGB") + ("A" if alpha is not None else "") + f";{bit_depth}"
    return color, alpha, mode, bit_depth


def _is_gray_source(path: Path, im: Image.Image, fmt: str) -> bool:
    """Gray (with or without alpha) according to the header; CMYK TIFF at 16 bits is refused."""
    if fmt == "PNG":
        with open(path, "rb") as fh:
            header = fh.read(26)
        return header[25] in (0, 4)
    photometric = im.tag_v2.get(262, 1)
    if photometric not in (0, 1, 2):
        raise UnsupportedFormatError(f"{path}: 16-bit TIFF with photometric interpretation {photometric} "
                                     f"(e.g. CMYK or Lab) is not supported")
    return photometric in (0, 1)


def _split_opencv_channels(array: np.ndarray, gray_source: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """OpenCV's BGR/BGRA/gray layout -> (RGB or gray HxWxC, alpha or None)."""
    if array.ndim == 2:
        return array[:, :, None], None
    channels = array.shape[2]
    if channels == 2:
        return array[:, :, :1], array[:, :, 1]
    color = array[:, :, :3]
    alpha = array[:, :, 3] if channels == 4 else None
    if gray_source:
        return color[:, :, :1], alpha
    return color[:, :, ::-1], alpha


def _orientation(im: Image.Image, fmt: str) -> int:
    """The EXIF orientation (1..8); 1 when absent or invalid."""
    try:
        if fmt == "TIFF":
            value = im.tag_v2.get(ORIENTATION_TAG, 1)
        else:
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            value = exif.get(ORIENTATION_TAG, 1)
    except (SyntaxError, ValueError, struct.error, TypeError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _exif_bytes(im: Image.Image) -> bytes | None:
    """The raw EXIF block with the orientation reset to 1, or None."""
    raw = im.info.get("exif")
    return reset_exif_orientation(raw) if raw else None


def reset_exif_orientation(exif: bytes) -> bytes:
    """Set the IFD0 orientation tag to 1 in place, keeping every other byte (maker notes, thumbnail)."""
    prefix = _EXIF_HEADER if exif.startswith(_EXIF_HEADER) else b""
    tiff = bytearray(exif[len(prefix):])
    order = {b"II": "<", b"MM": ">"}.get(bytes(tiff[:2]))
    if order is None:
        return exif
    try:
        (ifd_offset,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd_offset)
        for index in range(count):
            entry = ifd_offset + 2 + 12 * index
            tag, kind = struct.unpack_from(order + "HH", tiff, entry)
            if tag == ORIENTATION_TAG and kind == 3:
                struct.pack_into(order + "H", tiff, entry + 8, 1)
                return prefix + bytes(tiff)
    except struct.error:
        pass
    return exif


def _dpi(info: dict) -> tuple[float, float] | None:
    """Resolution from Pillow's info, as floats, or None when absent or meaningless."""
    dpi = info.get("dpi")
    try:
        x, y = (float(v) for v in dpi)
    except (TypeError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _assemble(array, alpha, bit_depth, mode, fmt, icc, exif, dpi, orientation) -> Photo:
    """Apply the orientation, scale to float32 [0, 1], and build the Photo."""
    scale = np.float32(65535.0 if bit_depth == 16 else 255.0)
    pixels = np.ascontiguousarray(apply_orientation(array, orientation)).astype(np.float32) / scale
    if alpha is not None:
        alpha = np.ascontiguousarray(apply_orientation(alpha, orientation)).astype(np.float32) / scale
    if dpi is not None and orientation >= 5:
        dpi = (dpi[1], dpi[0])
    return Photo(pixels, alpha, bit_depth, mode, fmt, icc or None, exif, dpi)


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored HxW[xC] array into its displayed orientation (EXIF values 1..8)."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, -1)
    if orientation == 7:
        return array[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, 1)
    return array


# --------------------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    like: Photo,
    alpha: np.ndarray | None = None,
) -> None:
    """Write float [0, 1] `pixels` (HxW, HxWx1 or HxWx3, RGB) to exactly `path`, stored like `like`;
    uint8 `pixels` are taken as already rounded (``written_bit_depth`` says when the output is 8-bit).

    The format follows the extension of `path` (or `like.format` when the extension is not one
    of ours, e.g. a temporary name). 16-bit originals stay 16-bit in PNG/TIFF; gray originals stay
    gray; alpha is `alpha`, or `like.alpha` resized to fit when `alpha` is None; ICC profile, EXIF
    (orientation 1) and resolution are copied where the format holds them. JPEG: quality 95, 4:4:4.
    """
    fmt = _written_format(Path(path), like)
    color = _match_channels(_as_hwc(pixels), like.channels)
    alpha = _output_alpha(alpha, like, color.shape[:2])
    if fmt == "JPEG":
        alpha = None
    if _bit_depth(fmt, like) == 16:
        samples = _quantise(color if alpha is None else np.dstack([color, alpha]), 16)
        writer = _write_png_16 if fmt == "PNG" else _write_tiff_16
        writer(path, samples, like)
    else:
        _write_pillow(path, fmt, _quantise(color, 8), None if alpha is None else _quantise(alpha, 8), like)


def written_bit_depth(path: str | os.PathLike[str], like: Photo) -> int:
    """8 or 16: the sample depth ``write_image`` stores ``like`` at in ``path`` (16-bit originals stay
    16-bit in PNG and TIFF)."""
    return _bit_depth(_written_format(Path(path), like), like)


def _bit_depth(fmt: str, like: Photo) -> int:
    return 16 if like.bit_depth == 16 and fmt in ("PNG", "TIFF") else 8


def _written_format(path: Path, like: Photo) -> str:
    fmt = FORMAT_BY_EXTENSION.get(path.suffix.lower(), like.format)
    if fmt not in _SUPPORTED_FORMATS:
        raise UnsupportedFormatError(f"{path}: cannot write {fmt} images")
    return fmt


def resize_alpha(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an HxW alpha mask to `size` = (width, height); float32 in [0, 1]."""
    width, height = size
    source = np.asarray(alpha, dtype=np.float32)
    if source.shape[:2] == (height, width):
        return source.copy()
    shrinking = width * height < source.shape[0] * source.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    resized = cv2.resize(source, (width, height), interpolation=interpolation)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def _as_hwc(pixels: np.ndarray) -> np.ndarray:
    """HxW or HxWxC -> HxWxC: float as float32 (not copied when it is already float32; ``_quantise``
    clips), uint8 as it is (already rounded)."""
    array = np.asarray(pixels)
    if array.dtype != np.uint8:
        array = array.astype(np.float32, copy=False)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"pixels must be HxW, HxWx1 or HxWx3, got shape {array.shape}")
    return array


def _match_channels(color: np.ndarray, channels: int) -> np.ndarray:
    """Gray originals are written gray (ITU-R 601 luma, as Pillow's 'L'); gray results of colour become RGB."""
    if color.shape[2] != channels and color.dtype == np.uint8:
        color = color.astype(np.float32) / np.float32(255.0)  # the luma is computed in float
    if channels == 1 and color.shape[2] == 3:
        return (np.clip(color, 0.0, 1.0) @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    if channels == 3 and color.shape[2] == 1:
        return np.repeat(color, 3, axis=2)
    return color


def _output_alpha(alpha: np.ndarray | None, like: Photo, shape: tuple[int, int]) -> np.ndarray | None:
    """The alpha to write: the caller's, else the original's resized to the output size."""
    if alpha is None:
        if like.alpha is None:
            return None
        return resize_alpha(like.alpha, (shape[1], shape[0]))[:, :, None]
    alpha = np.clip(np.asarray(alpha, dtype=np.float32), 0.0, 1.0)
    if alpha.shape[:2] != shape:
        raise ValueError(f"alpha is {alpha.shape[:2]} but pixels are {shape}; use resize_alpha first")
    return alpha.reshape(shape + (1,))


QUANTISE_ROWS_BYTES = 64 << 20  # float rows clipped and rounded at a time: no full-size temporaries


def _quantise(array: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float -> clipped to [0, 1] and rounded to uint8 or uint16, a band of rows at a time (a 15360x8640
    picture is 1.6 GB of float: whole-array arithmetic would hold two more of it). uint8 (rounded
    already) -> as it is, or x 257 for 16 bits."""
    if array.dtype == np.uint8:  # rounded already
        return array if bit_depth == 8 else array.astype(np.uint16) * np.uint16(257)
    top, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    out = np.empty(array.shape, dtype)
    rows = max(1, QUANTISE_ROWS_BYTES // max(1, array[:1].nbytes))
    for start in range(0, array.shape[0], rows):
        band = np.clip(array[start:start + rows], 0.0, 1.0)
        band *= np.float32(top)
        band += np.float32(0.5)
        out[start:start + rows] = band  # truncated, as astype does
    return out


def _write_pillow(path: Path, fmt: str, color: np.ndarray, alpha: np.ndarray | None, like: Photo) -> None:
    """8-bit output through Pillow, with the metadata the format can carry."""
    samples = color if alpha is None else np.dstack([color, alpha])
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[samples.shape[2]]
    size = (samples.shape[1], samples.shape[0])
    image = Image.frombuffer(mode, size, np.ascontiguousarray(samples), "raw", mode, 0, 1)  # no bytes copy
    if fmt == "BMP" and mode == "LA":
        image = image.convert("RGBA")  # BMP has no gray+alpha layout
    with open(path, "wb") as fh:
        image.save(fh, format=fmt, **_pillow_options(fmt, like))


def _pillow_options(fmt: str, like: Photo) -> dict:
    """Encoder options and metadata for Pillow's writer of `fmt`."""
    options: dict = {}
    if fmt == "JPEG":
        options.update(quality=95, subsampling=0)
    elif fmt == "WEBP":
        options.update(quality=95, exact=True)
    elif fmt == "TIFF":
        options.update(compression="tiff_adobe_deflate")
    if fmt == "BMP":
        return options
    if like.icc_profile:
        options["icc_profile"] = like.icc_profile
    if like.exif and fmt in ("JPEG", "PNG", "WEBP"):
        options["exif"] = reset_exif_orientation(like.exif)
    if like.dpi:
        options["dpi"] = like.dpi
    return options


def _write_png_16(path: Path, samples: np.ndarray, like: Photo) -> None:
    """Write a 16-bit PNG (gray, gray+alpha, RGB or RGBA) with iCCP, pHYs and eXIf chunks."""
    height, width, channels = samples.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    chunks = [_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0))]
    if like.icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(like.icc_profile)))
    if like.dpi:
        per_metre = [round(value / 0.0254) for value in like.dpi]
        chunks.append(_png_chunk(b"pHYs", struct.pack(">IIB", per_metre[0], per_metre[1], 1)))
    if like.exif:
        exif = reset_exif_orientation(like.exif)
        body = exif[len(_EXIF_HEADER):] if exif.startswith(_EXIF_HEADER) else exif
        chunks.append(_png_chunk(b"eXIf", body))
    chunks.append(_png_chunk(b"IDAT", _png_16_data(samples)))
    chunks.append(_png_chunk(b"IEND", b""))
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        for chunk in chunks:
            fh.write(chunk)


def _png_16_data(samples: np.ndarray) -> bytes:
    """The compressed scanlines of 16-bit ``samples`` (H x W x C), "Sub"-filtered, a band of rows at a
    time: no full-size copies of the picture besides the compressed stream."""
    height, width, channels = samples.shape
    step, rows = 2 * channels, max(1, QUANTISE_ROWS_BYTES // max(1, 2 * width * channels))
    compressor, parts = zlib.compressobj(6), []
    for start in range(0, height, rows):
        band = np.ascontiguousarray(samples[start:start + rows].astype(">u2")).view(np.uint8).reshape(-1, width * step)
        filtered = band.copy()
        filtered[:, step:] -= band[:, :-step]  # PNG "Sub" filter, modulo 256
        parts.append(compressor.compress(np.hstack([np.ones((len(band), 1), np.uint8), filtered]).tobytes()))
    parts.append(compressor.flush())
    return b"".join(parts)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return b"".join((struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))))


_TIFF_SHORT, _TIFF_LONG, _TIFF_RATIONAL, _TIFF_UNDEFINED = 3, 4, 5, 7


def _write_tiff_16(path: Path, samples: np.ndarray, like: Photo) -> None:
    """Write a 16-bit little-endian TIFF (Deflate + horizontal predictor), with ICC and resolution.

    Gray+alpha is written as RGBA: neither OpenCV nor Pillow reads a 16-bit gray+alpha TIFF back.
    """
    if samples.shape[2] == 2:
        samples = samples[:, :, [0, 0, 0, 1]]
    height, width, channels = samples.shape
    strips = _tiff_strips(samples)
    rows_per_strip = max(1, -(-height // len(strips)))
    data_start = 8
    offsets, position = [], data_start
    for strip in strips:
        offsets.append(position)
        position += len(strip)
    tags = [
        (256, _TIFF_LONG, [width]),
        (257, _TIFF_LONG, [height]),
        (258, _TIFF_SHORT, [16] * channels),
        (259, _TIFF_SHORT, [8]),
        (262, _TIFF_SHORT, [1 if channels <= 2 else 2]),
        (273, _TIFF_LONG, offsets),
        (277, _TIFF_SHORT, [channels]),
        (278, _TIFF_LONG, [rows_per_strip]),
        (279, _TIFF_LONG, [len(strip) for strip in strips]),
        (284, _TIFF_SHORT, [1]),
        (317, _TIFF_SHORT, [2]),
    ]
    if like.dpi:
        tags += [(282, _TIFF_RATIONAL, _rational(like.dpi[0])), (283, _TIFF_RATIONAL, _rational(like.dpi[1])),
                 (296, _TIFF_SHORT, [2])]
    if channels in (2, 4):
        tags.append((338, _TIFF_SHORT, [2]))  # unassociated alpha
    if like.icc_profile:
        tags.append((34675, _TIFF_UNDEFINED, like.icc_profile))
    body = b"".join(strips)
    body += b"\x00" * (len(body) % 2)  # the IFD starts on a word boundary
    ifd_offset = data_start + len(body)
    with open(path, "wb") as fh:
        fh.write(b"II*\x00" + struct.pack("<I", ifd_offset) + body + _tiff_ifd(sorted(tags), ifd_offset))


def _tiff_strips(samples: np.ndarray) -> list[bytes]:
    """Horizontal-predictor differencing, then Deflate, in strips of about 256 KiB of samples."""
    height, width, channels = samples.shape
    predicted = samples.astype("<u2")
    predicted[:, 1:] -= samples[:, :-1].astype("<u2")  # modulo 65536, per channel
    rows_per_strip = max(1, (256 * 1024) // (width * channels * 2))
    return [
        zlib.compress(np.ascontiguousarray(predicted[top:top + rows_per_strip]).tobytes(), 6)
        for top in range(0, height, rows_per_strip)
    ]


def _rational(value: float) -> list[int]:
    """A TIFF RATIONAL (numerator, denominator) for a positive resolution."""
    return [max(1, round(value * 1000)), 1000]


def _tiff_ifd(tags: list[tuple[int, int, object]], ifd_offset: int) -> bytes:
    """Serialise one IFD at `ifd_offset`; values longer than 4 bytes follow the entry table."""
    entries, extra = [], b""
    extra_start = ifd_offset + 2 + 12 * len(tags) + 4
    for tag, kind, values in tags:
        if kind == _TIFF_UNDEFINED:
            payload, count = bytes(values), len(values)
        else:
            code = {_TIFF_SHORT: "H", _TIFF_LONG: "I", _TIFF_RATIONAL: "I"}[kind]
            payload = struct.pack(f"<{len(values)}{code}", *values)
            count = len(values) // 2 if kind == _TIFF_RATIONAL else len(values)
        if len(payload) <= 4:
            field = payload.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", extra_start + len(extra))
            extra += payload + b"\x00" * (len(payload) % 2)
        entries.append(struct.pack("<HHI", tag, kind, count) + field)
    return struct.pack("<H", len(tags)) + b"".join(entries) + struct.pack("<I", 0) + extra
