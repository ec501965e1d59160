"""The report's pictures: web-sized before/after pairs, 1:1 detail crops and face boxes, made once.

Every file the report makes is named after the sha256 of the files it comes from (``Digests``), so
generating the report again reuses what is already there and remakes only what changed: a restored
photo written again has another sha256 and gets new pictures. Files no longer used are pruned.

* before/after: the input enlarged by bicubic interpolation and the restored output reduced (area)
  to the same web size (``WEB_SIDE`` on the longer side), as JPEGs; never the full files.
* detail crop: the ``CROP_SIDE`` square of the output with the most detail (mean gradient energy,
  found on a reduced copy), at 1:1, beside the same region of the input enlarged by bicubic; PNG.
* face boxes: the faces the job's detector finds in the input, as fractions of the picture.
* repairs: the mask of the damage a job filled (``--defects on``, kept in the job's folder at the input's size)
  at the slider's size, as a PNG whose marks are translucent magenta and the rest transparent: laid over the
  slider when its "show repairs" box is ticked.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import ArchiveRestoreError
from ..media.image import read_image
from ..weights.downloads import sha256_file

WEB_SIDE = 1024    # longer side of the slider pictures, in pixels
CROP_SIDE = 256    # side of the 1:1 detail crop, in output pixels
SEARCH_SIDE = 512  # the output is reduced to this longer side to find its most detailed region
JPEG_QUALITY = 85
REPAIRS_RGBA = (255, 0, 200, 170)  # the overlay's colour where a mask says repaired
IMAGES = "img"
DIGESTS = "digests.json"
OURS = re.compile(r"^[0-9a-f]{16}-[\w.-]+\.(?:jpg|png|json)$")  # the names this module gives; nothing else is pruned

Detect = Callable[[np.ndarray], "list[tuple[float, float, float, float]] | None"]  # None: no detector


class Digests:
    """sha256 of files, remembered by (size, mtime) in ``<report>/img/digests.json`` so that an
    unchanged file is not read again; files not asked about in a run are forgotten when it saves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._known: dict[str, list] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._known = {}
        self._seen: set[str] = set()

    def of(self, file: Path) -> str:
        st = file.stat()
        key = os.fspath(file.resolve())
        self._seen.add(key)
        known = self._known.get(key)
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return known[2]
        digest = sha256_file(file)
        self._known[key] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def save(self) -> None:
        kept = {k: v for k, v in self._known.items() if k in self._seen}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(kept, sort_keys=True))
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class Pair:
    """A before/after pair as files relative to the report folder, with what is drawn over it."""

    before: str
    after: str
    width: int                       # web size of both pictures
    height: int
    source_size: tuple[int, int]     # input (width, height)
    output_size: tuple[int, int]     # output (width, height)
    crop_before: str | None = None
    crop_after: str | None = None
    crop_box: tuple[int, int, int] | None = None  # (x, y, side) in output pixels
    faces: tuple[tuple[float, float, float, float], ...] = ()  # (x, y, w, h) as fractions of the picture
    repairs: str | None = None       # the repair mask's overlay at the web size, when the job kept one


class Pictures:
    """Makes and remembers the report's pictures under ``<report>/img``."""

    def __init__(self, report_dir: Path, detect: Detect = lambda rgb: None, detector: str = "") -> None:
        self.root = report_dir
        self.folder = report_dir / IMAGES
        self.folder.mkdir(parents=True, exist_ok=True)
        self.digests = Digests(self.folder / DIGESTS)
        self.detect = detect
        self.detector = detector
        self.used: set[str] = {DIGESTS}
        self.made = 0  # pictures written by this run (the rest came from earlier runs)

    # ---------------------------------------------------------------------------------- photos
    def photo_pair(self, source: Path, output: Path) -> Pair:
        """Slider pictures, detail crops and face boxes for one restored photo."""
        src, out = self.digests.of(source)[:16], self.digests.of(output)[:16]
        names = {"after": f"{out}-after.jpg", "crop-after": f"{out}-crop-after.png",
                 "before": f"{out}-{src}-before.jpg", "crop-before": f"{out}-{src}-crop-before.png"}
        meta = self._meta(f"{out}-{src}.json", names.values(), lambda: self._make_photo(source, output, names))
        return Pair(before=self._rel(names["before"]), after=self._rel(names["after"]), width=meta["web"][0],
                    height=meta["web"][1], source_size=tuple(meta["source"]), output_size=tuple(meta["output"]),
                    crop_before=self._rel(names["crop-before"]), crop_after=self._rel(names["crop-after"]),
                    crop_box=tuple(meta["crop"]),
                    faces=self._faces_of(src, meta["source"], once(lambda: rgb8(read_image(source).pixels))))

    def _make_photo(self, source: Path, output: Path, names: dict[str, str]) -> dict:
        before, after = rgb8(read_image(source).pixels), rgb8(read_image(output).pixels)
        web = web_size(after.shape[1], after.shape[0])
        self._save(names["after"], cv2.resize(after, web, interpolation=cv2.INTER_AREA))
        self._save(names["before"], resized(before, web))
        x, y, side = detail_box(after)
        self._save(names["crop-after"], after[y:y + side, x:x + side])
        self._save(names["crop-before"], enlarged_region(before, after.shape[:2], (x, y, side)))
        return {"web": list(web), "source": [before.shape[1], before.shape[0]],
                "output": [after.shape[1], after.shape[0]], "crop": [x, y, side]}

    def input_picture(self, source: Path) -> tuple[str, int, int] | None:
        """A web-sized copy of an input that has no output (yet): (file, width, height), or None
        when the input cannot be read."""
        try:
            src = self.digests.of(source)[:16]
        except OSError:
            return None
        name = f"{src}-input.jpg"

        def make() -> dict:
            pixels = rgb8(read_image(source).pixels)
            web = web_size(pixels.shape[1], pixels.shape[0])
            self._save(name, cv2.resize(pixels, web, interpolation=cv2.INTER_AREA))
            return {"web": list(web)}

        try:
            meta = self._meta(f"{src}-input.json", [name], make)
        except (ArchiveRestoreError, OSError, ValueError):  # unreadable: its card says why, with no picture
            return None
        return self._rel(name), meta["web"][0], meta["web"][1]

    def repairs_overlay(self, mask: Path, size: tuple[int, int]) -> str:
        """The repair mask ``mask`` (a PNG of the input's size, ``pipeline.defects.keep_mask``) as a picture to
        lay over a slider of ``size`` (width, height): ``overlay_rgba``; named by the mask's sha256 and size."""
        name = f"{self.digests.of(mask)[:16]}-{size[0]}x{size[1]}-repairs.png"
        self.used.add(name)
        if not (self.folder / name).is_file():
            with Image.open(mask) as picture:
                marks = np.asarray(picture.convert("L")) > 0
            self._save(name, overlay_rgba(marks, size))
        return self._rel(name)

    # ----------------------------------------------------------------------------------- video
    def frame_pair(self, before_key: str, before: Callable[[], np.ndarray], after_file: Path, index: int,
                   after: Callable[[], np.ndarray]) -> Pair:
        """A before/after pair of one video frame: ``before()`` decodes the input frame (``before_key``
        names it: the input's sha256 and the frame's pts), ``after()`` the restored one, frame ``index``
        of ``after_file``. Both return uint8 RGB."""
        out = f"{self.digests.of(after_file)[:16]}-{index}"
        names = {"after": f"{out}-after.jpg", "before": f"{out}-{before_key}-before.jpg"}
        before = once(before)

        def make() -> dict:
            source, restored = before(), after()
            web = web_size(restored.shape[1], restored.shape[0])
            self._save(names["after"], cv2.resize(restored, web, interpolation=cv2.INTER_AREA))
            self._save(names["before"], resized(source, web))
            return {"web": list(web), "source": [source.shape[1], source.shape[0]],
                    "output": [restored.shape[1], restored.shape[0]]}

        meta = self._meta(f"{out}-{before_key}.json", names.values(), make)
        return Pair(before=self._rel(names["before"]), after=self._rel(names["after"]), width=meta["web"][0],
                    height=meta["web"][1], source_size=tuple(meta["source"]), output_size=tuple(meta["output"]),
                    faces=self._faces_of(before_key, meta["source"], before))

    # ----------------------------------------------------------------------------------- faces
    def _faces_of(self, key: str, size: Sequence[int], pixels: Callable[[], np.ndarray]) -> tuple:
        """The faces the detector finds in a picture (``key`` names its content; ``pixels()`` decodes
        it, uint8 RGB), as (x, y, w, h) fractions of it; remembered per detector."""
        name = f"{key}-faces-{self.detector}.json"
        self.used.add(name)
        try:
            boxes = json.loads((self.folder / name).read_text())["boxes"]
        except (OSError, ValueError, KeyError):
            boxes = self.detect(pixels().astype(np.float32) / 255)
            if boxes is None:  # no detector here now: nothing to draw, nothing remembered
                return ()
            self._write_json(name, {"boxes": [list(b) for b in boxes]})
        w, h = size
        return tuple((x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h) for x0, y0, x1, y1 in boxes)

    # ------------------------------------------------------------------------------------ files
    def _meta(self, name: str, files: Iterable[str], make: Callable[[], dict]) -> dict:
        """The JSON description ``name``; it and the pictures ``files`` are made by ``make()`` when
        one of them is missing, else reused."""
        path, files = self.folder / name, list(files)
        self.used.update([name, *files])
        if path.is_file() and all((self.folder / f).is_file() for f in files):
            try:
                return json.loads(path.read_text())
            except ValueError:
                pass
        meta = make()
        self._write_json(name, meta)
        return meta

    def _write_json(self, name: str, data: dict) -> None:
        path = self.folder / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def _save(self, name: str, rgb: np.ndarray) -> None:
        """Write an RGB (or, as PNG, RGBA) uint8 picture (JPEG or PNG by its name) under a temporary name,
        then rename."""
        path = self.folder / name
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        options = {"quality": JPEG_QUALITY, "optimize": True} if path.suffix == ".jpg" else {"optimize": False}
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, **options)
        os.replace(tmp, path)
        self.made += 1

    def _rel(self, name: str) -> str:
        return f"{IMAGES}/{name}"

    def finish(self) -> int:
        """Remember the digests and remove the pictures (of ours) no item uses any more; returns how many went."""
        self.digests.save()
        removed = 0
        for entry in os.scandir(self.folder):
            if entry.is_file() and entry.name not in self.used and OURS.match(entry.name):
                os.unlink(entry.path)
                removed += 1
        return removed


# ------------------------------------------------------------------------------------ helpers
def once(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """``fn`` called at most once; later calls return its first result."""
    kept: list[np.ndarray] = []

    def call() -> np.ndarray:
        if not kept:
            kept.append(fn())
        return kept[0]

    return call


def rgb8(pixels: np.ndarray, rows: int = 256) -> np.ndarray:
    """float [0, 1] HxWxC (gray or RGB) -> uint8 HxWx3, converted ``rows`` rows at a time (a 40 MP
    output holds 480 MB as float32: no full-size float temporaries beside it)."""
    if pixels.dtype != np.uint8:
        out = np.empty(pixels.shape, np.uint8)
        for top in range(0, pixels.shape[0], rows):
            out[top:top + rows] = (np.clip(pixels[top:top + rows], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        pixels = out
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else np.ascontiguousarray(pixels[:, :, :3])


def web_size(width: int, height: int, side: int = WEB_SIDE) -> tuple[int, int]:
    """(width, height) reduced, ratio kept, so that the longer side is at most ``side``."""
    factor = min(1.0, side / max(width, height))
    return max(1, round(width * factor)), max(1, round(height * factor))


def resized(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgb`` at ``size`` (width, height): bicubic when enlarging (the "before" of a slider), area
    when reducing."""
    larger = size[0] * size[1] > rgb.shape[0] * rgb.shape[1]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC if larger else cv2.INTER_AREA)


def detail_box(rgb: np.ndarray, side: int = CROP_SIDE) -> tuple[int, int, int]:
    """(x, y, side) of the square of ``rgb`` with the most detail: the largest mean gradient energy,
    searched on a copy reduced to ``SEARCH_SIDE``."""
    h, w = rgb.shape[:2]
    side = min(side, h, w)
    factor = min(1.0, SEARCH_SIDE / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = cv2.Sobel(gray, cv2.CV_32F, 1, 0) ** 2 + cv2.Sobel(gray, cv2.CV_32F, 0, 1) ** 2
    win = max(1, round(side * factor))
    mean = cv2.boxFilter(energy, -1, (win, win), normalize=True, borderType=cv2.BORDER_CONSTANT)
    half = win // 2  # the filter's anchor is the window's centre; keep the window inside
    valid = mean[half:mean.shape[0] - (win - half) + 1, half:mean.shape[1] - (win - half) + 1]
    if valid.size == 0:
        return 0, 0, side
    cy, cx = np.unravel_index(int(np.argmax(valid)), valid.shape)
    x = min(max(0, round(cx / factor)), w - side)
    y = min(max(0, round(cy / factor)), h - side)
    return int(x), int(y), int(side)


def overlay_rgba(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An HxW bool mask at ``size`` (width, height) as RGBA uint8: ``REPAIRS_RGBA`` wherever a marked pixel
    falls (so that a thin scratch stays visible when reduced), transparent elsewhere."""
    covered = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA
                         if size[0] * size[1] < mask.shape[0] * mask.shape[1] else cv2.INTER_NEAREST)
    out = np.zeros((size[1], size[0], 4), np.uint8)
    out[covered > 1e-3] = REPAIRS_RGBA
    return out


def enlarged_region(source: np.ndarray, output_hw: tuple[int, int], box: tuple[int, int, int]) -> np.ndarray:
    """The region ``box`` (output pixels) of ``source`` enlarged by bicubic to the output's scale."""
    (oh, ow), (sh, sw) = output_hw, source.shape[:2]
    x, y, side = box
    fx, fy = sw / ow, sh / oh
    # the affine map from output pixel centres to source pixel centres, restricted to the box
    matrix = np.array([[fx, 0, (x + 0.5) * fx - 0.5], [0, fy, (y + 0.5) * fy - 0.5]], np.float32)
    return cv2.warpAffine(source, matrix, (side, side), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)
