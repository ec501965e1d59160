"""External model files: what they are, where they come from, how they are fetched and verified.

The manifest lists every third-party model the product can use. A file is found by name in the
models search order (:func:`archive_restore.weights.folders.models_dirs`); ``fetch`` downloads it from its
official URL into one folder of that order, with a progress bar, resuming a partial ``.part`` file
through an HTTP Range request, checking its sha256, and renaming it into place only once verified.

Checksums are pinned only where they could be taken from a source at hand (see each entry's
``sha256_source``); the project's maintainers never invent one. A file without a pinned checksum is
installed only when the user says so (``trust_unverified``), and its computed sha256 is reported so
that it can be pinned.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from ..errors import DownloadError, ModelNotFoundError, UsageError
from .folders import ENV_VAR, models_dirs

CONNECT_TIMEOUT = 15.0  # seconds; also the longest silence tolerated while reading
BLOCK = 1 << 20
USER_CACHE = Path.home() / ".cache" / "archive-restore"


@dataclass(frozen=True)
class ModelEntry:
    """One downloadable file. ``sha256`` is None where no trustworthy checksum is known.

    ``accepted`` maps the sha256 of other known-good files published under the same file name (for
    instance a compatible re-release) to where they come from.
    """

    name: str
    filename: str
    url: str
    licence: str
    used_by: str
    sha256: str | None = None
    size: int | None = None
    sha256_source: str = "not pinned: no official checksum available offline"
    accepted: dict[str, str] = field(default_factory=dict)

    def is_known(self, digest: str) -> bool:
        return digest == self.sha256 or digest in self.accepted


_GFPGAN_LICENCE = "Apache-2.0 (TencentARC/GFPGAN; weights trained on FFHQ, whose own terms apply)"
_FACEXLIB_LICENCE = "MIT (xinntao/facexlib)"
_FACEXLIB_SHA_SOURCE = "Git LFS pointers of the official files"
_REALESRGAN_LICENCE = "BSD-3-Clause (xinntao/Real-ESRGAN)"
_REALESRGAN_URL = "https://github.com/xinntao/Real-ESRGAN/releases/download/"
_REALESRGAN_SHA_SOURCE = "Git LFS pointers of the official files and the OpenModelDB database"
_UPSCALER = "upscaler (--upscaler)"

MANIFEST: dict[str, ModelEntry] = {
    e.name: e
    for e in (
        ModelEntry(
            "gfpgan-v1.4", "GFPGANv1.4.pth",
            "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",
            _GFPGAN_LICENCE, "face restorer: HQ counterpart of each face (paired codes, paste-back)",
            sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
            sha256_source="TencentARC publishes no checksum; the value two independent public model "
                          "manifests give for this release file (cross-checked 2026-11-27)",
        ),
        ModelEntry(
            "gfpgan-v1.3", "GFPGANv1.3.pth",
            "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth",
            _GFPGAN_LICENCE, "face restorer (used when v1.4 is absent)",
        ),
        ModelEntry(
            "retinaface-resnet50", "detection_Resnet50_Final.pth",
            "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
            _FACEXLIB_LICENCE, "face detector (--face-detector retinaface; preferred on a GPU)",
            sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d", size=109497761,
            sha256_source=_FACEXLIB_SHA_SOURCE,
        ),
        ModelEntry(
            "retinaface-mobilenet0.25", "detection_mobilenet0.25_Final.pth",
            "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
            _FACEXLIB_LICENCE, "face detector (--face-detector retinaface; preferred on the CPU)",
            accepted={
                "ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1":
                    "biubug6/Face-Detector-1MB-with-landmark @ 2b07565 : weights/mobilenet0.25_Final.pth "
                    "(MIT; 1789735 bytes; pinned in ../shared/weights/README.md). A different training "
                    "from facexlib's release, loaded as a variant (see faces/detect.py)",
            },
        ),
        ModelEntry(
            "bisenet", "parsing_bisenet.pth",
            "https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth",
            _FACEXLIB_LICENCE, "face parsing: paste-back masks (preferred on the CPU)",
        ),
        ModelEntry(
            "parsenet", "parsing_parsenet.pth",
            "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
            _FACEXLIB_LICENCE, "face parsing: paste-back masks (preferred on a GPU)",
            sha256="3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2", size=85331193,
            sha256_source=_FACEXLIB_SHA_SOURCE,
        ),
        ModelEntry(
            "yunet-2023mar", "face_detection_yunet_2023mar.onnx",
            "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
            "face_detection_yunet_2023mar.onnx",
            "MIT (opencv/opencv_zoo face_detection_yunet)", "face detector (--face-detector yunet)",
        ),
        ModelEntry(
            "yunet-s", "face_detection_yunet_s_640_640.onnx",
            "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/0047ac2/onnx/yunet_s_640_640.onnx",
            "Apache-2.0 (ShiqiYu/libfacedetection.train)", "face detector (--face-detector yunet)",
            sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", size=232589,
            sha256_source="../shared/weights/README.md (libfacedetection.train @ 0047ac2 : onnx/yunet_s_640_640.onnx)",
        ),
        ModelEntry(
            "realesrgan-x4plus", "RealESRGAN_x4plus.pth", _REALESRGAN_URL + "v0.1.0/RealESRGAN_x4plus.pth",
            _REALESRGAN_LICENCE, _UPSCALER + ": photos, the default (RRDBNet, 23 blocks)",
            sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", size=67040989,
            sha256_source=_REALESRGAN_SHA_SOURCE,
        ),
        ModelEntry(
            "realesr-general-x4v3", "realesr-general-x4v3.pth", _REALESRGAN_URL + "v0.2.5.0/realesr-general-x4v3.pth",
            _REALESRGAN_LICENCE, _UPSCALER + ": photos, small and fast (SRVGGNetCompact)",
            sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292", size=4885111,
            sha256_source=_REALESRGAN_SHA_SOURCE,
        ),
        ModelEntry(
            "realesr-general-wdn-x4v3", "realesr-general-wdn-x4v3.pth",
            _REALESRGAN_URL + "v0.2.5.0/realesr-general-wdn-x4v3.pth",
            _REALESRGAN_LICENCE, _UPSCALER + ": photos, stronger denoising (SRVGGNetCompact)",
            sha256="1641f8c4464b9f097c9fdda5589273713f67cf59f3d909e0bd688f0cee269dca", size=4885111,
            sha256_source=_REALESRGAN_SHA_SOURCE,
        ),
        ModelEntry(
            "realesr-animevideov3", "realesr-animevideov3.pth", _REALESRGAN_URL + "v0.2.5.0/realesr-animevideov3.pth",
            _REALESRGAN_LICENCE, _UPSCALER + ": anime video (SRVGGNetCompact)",
            sha256="b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d", size=2504012,
            sha256_source=_REALESRGAN_SHA_SOURCE,
        ),
        ModelEntry(
            "realesrgan-x4plus-anime-6b", "RealESRGAN_x4plus_anime_6B.pth",
            _REALESRGAN_URL + "v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
            _REALESRGAN_LICENCE, _UPSCALER + ": anime and drawings (RRDBNet, 6 blocks)",
            sha256="f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da", size=17938799,
            sha256_source=_REALESRGAN_SHA_SOURCE,
        ),
    )
}


def entry(name: str) -> ModelEntry:
    """The manifest entry called ``name``, or a UsageError listing the known names."""
    if name not in MANIFEST:
        raise UsageError(f"unknown model {name!r}; known: {', '.join(MANIFEST)}")
    return MANIFEST[name]


def locate(item: ModelEntry, extra: Sequence[str | Path] = ()) -> list[Path]:
    """Every copy of ``item``'s file in the search order, first (the one used) first."""
    return [d / item.filename for d in models_dirs(extra) if (d / item.filename).is_file()]


def find(item: ModelEntry, extra: Sequence[str | Path] = ()) -> Path:
    """The copy of ``item``'s file that is used, or a ModelNotFoundError saying how to get it."""
    found = locate(item, extra)
    if found:
        return found[0]
    dirs = ", ".join(str(d) for d in models_dirs(extra))
    raise ModelNotFoundError(
        f"{item.filename} ({item.name}) not found in: {dirs}. "
        f"Fetch it with `archive-restore models fetch {item.name}`, or download {item.url} into one of those folders."
    )


def download_dir(extra: Sequence[str | Path] = ()) -> Path:
    """Where ``fetch`` writes: the first folder given, else the first of ``$ARCHIVE_RESTORE_MODELS``,
    else the user cache (never the repository's ``models/``, which holds the shipped networks)."""
    if extra:
        return Path(extra[0]).expanduser()
    env = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    return Path(env[0]).expanduser() if env else USER_CACHE


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Verification:
    """The state of one file: ``ok`` (pinned checksum), ``accepted`` (a known alternative file),
    ``unpinned`` (no checksum to compare with) or ``mismatch``."""

    path: Path
    sha256: str
    status: str
    note: str = ""


def verify(item: ModelEntry, path: Path) -> Verification:
    """Compare ``path``'s sha256 with the manifest."""
    digest = sha256_file(path)
    if digest == item.sha256:
        return Verification(path, digest, "ok")
    if digest in item.accepted:
        return Verification(path, digest, "accepted", item.accepted[digest])
    if item.sha256 is None:
        return Verification(path, digest, "unpinned", "no pinned checksum to compare with")
    return Verification(path, digest, "mismatch", f"expected {item.sha256}")


# ------------------------------------------------------------------------------------------ fetch


def fetch(
    item: ModelEntry,
    dest: Path,
    trust_unverified: bool = False,
    progress: bool = True,
    timeout: float = CONNECT_TIMEOUT,
) -> Verification:
    """Download ``item`` into ``dest`` unless a usable copy is there already; its verification.

    A copy already in ``dest`` is kept unless its checksum contradicts the pinned one.

    A partial download is kept as ``<file>.part`` and resumed next time. The file is renamed into
    place only when its sha256 is the pinned one (or a known alternative), or, for an entry without
    one, when ``trust_unverified`` is set; otherwise a DownloadError reports the computed sha256.
    A checksum mismatch deletes the download.
    """
    dest = Path(dest)
    final = dest / item.filename
    if final.is_file():
        present = verify(item, final)
        if present.status != "mismatch":
            return present  # a verified copy, or an unpinned one put there by hand or trusted before
    dest.mkdir(parents=True, exist_ok=True)
    part = dest / (item.filename + ".part")
    _download(item.url, part, item.filename, progress, timeout)
    result = verify(item, part)
    if result.status == "mismatch":
        part.unlink()
        raise DownloadError(
            f"{item.filename} downloaded from {item.url} has sha256 {result.sha256}, but {item.sha256} "
            "was expected; the download was deleted. Try again later; if it persists, report it."
        )
    if result.status == "unpinned" and not trust_unverified:
        raise DownloadError(
            f"{item.filename} has no pinned sha256, so it was not installed; its sha256 is {result.sha256}. "
            f"Compare it with a source you trust, then run `archive-restore models fetch {item.name} "
            f"--trust-unverified` (the download is kept in {part} and reused)."
        )
    _install(part, final)
    return Verification(final, result.sha256, result.status, result.note)


def _install(part: Path, final: Path) -> None:
    """Flush ``part`` to disk and rename it to ``final`` in one step."""
    with open(part, "rb+") as stream:
        os.fsync(stream.fileno())
    os.replace(part, final)


def _download(url: str, part: Path, label: str, progress: bool, timeout: float) -> None:
    """Fetch ``url`` into ``part``, continuing from its current length when the server allows."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "archive-restore"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            total = _total_size(response, have if resumed else 0)
            with open(part, "ab" if resumed else "wb") as stream, tqdm(
                total=total, initial=have if resumed else 0, unit="B", unit_scale=True, unit_divisor=1024,
                desc=label, disable=not progress, leave=False,
            ) as bar:
                for block in iter(lambda: response.read(BLOCK), b""):
                    stream.write(block)
                    bar.update(len(block))
            if total is not None and part.stat().st_size != total:
                raise DownloadError(
                    f"download of {url} stopped at {part.stat().st_size} of {total} bytes; "
                    "run the same command again to resume it"
                )
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have and _range_complete(exc, have):
            return  # the partial file is already whole
        raise DownloadError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except OSError as exc:  # URLError, timeouts, refused or reset connections, a full disk
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url}: {reason}. Offline? Download it elsewhere and put {label} in a models "
            "folder (see `archive-restore models list`); a partial download is resumed next time."
        ) from exc


def _total_size(response, offset: int) -> int | None:
    """The full file size from Content-Length (plus what is already there when resuming)."""
    length = response.headers.get("Content-Length")
    return None if length is None else offset + int(length)


def _range_complete(error: urllib.error.HTTPError, have: int) -> bool:
    """A 416 answer whose ``Content-Range: bytes */N`` says the file is exactly ``have`` bytes."""
    content_range = error.headers.get("Content-Range", "") if error.headers else ""
    return content_range.strip() == f"bytes */{have}"
