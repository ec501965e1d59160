"""``archive-restore bench memory``: does the video job's peak memory stay flat as videos get longer,
and how much does one large picture take?

For each duration a synthetic clip of the same frame size is made and restored by the real video job
(``archive-restore video``) in a child process; the child's peak resident set size is read from the
kernel when it exits (``wait4``), so each figure is that one job's own peak, analysis and render
included. ``--photo WxH`` also restores one synthetic photo of that size with the photo job (``run``),
e.g. a 3840x2160 frame through Real-ESRGAN x4plus in tiles. ``--upscaler`` is handed to the jobs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import ArchiveRestoreError
from .common import CLIP_FPS, synth_clip


@dataclass
class MemoryConfig:
    durations: Sequence[float] = (10.0, 60.0)  # seconds of video at CLIP_FPS frames/s
    width: int = 128
    height: int = 96
    scale: int = 4
    models: Sequence[Path] = field(default_factory=tuple)
    progress: bool = True
    upscaler: str | None = None           # --upscaler for the jobs (default: theirs)
    photo: tuple[int, int] | None = None  # (width, height) of one photo through the photo job


def run_child(args: list[str]) -> tuple[int, float, float, str]:
    """Run ``archive-restore ARGS`` in a child process: (exit status, peak RSS in MB, wall seconds, stderr)."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "-m", "archive_restore", *args], stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        message = err.read().decode(errors="replace")
    return child.returncode, round(usage.ru_maxrss / 1024, 1), round(time.monotonic() - start, 1), message


def _job_args(cfg: MemoryConfig) -> list[str]:
    args = [] if cfg.upscaler is None else ["--upscaler", cfg.upscaler]
    for folder in cfg.models:
        args += ["--models-dir", str(folder)]
    return args


def _photo(path: Path, width: int, height: int) -> Path:
    """A smooth synthetic photo (random colours enlarged, with film-like noise) saved as PNG."""
    rng = np.random.default_rng(0)
    small = rng.random((max(2, height // 32), max(2, width // 32), 3)).astype(np.float32)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    cv2.imwrite(str(path), (np.clip(img, 0, 1) * 255).astype(np.uint8))
    return path


def photo_peak(cfg: MemoryConfig, work: Path) -> dict:
    """Peak RSS of the photo job restoring one ``cfg.photo``-sized photo."""
    width, height = cfg.photo
    folder = work / "photo"
    folder.mkdir()
    _photo(folder / f"photo_{width}x{height}.png", width, height)
    code, peak, wall, message = run_child(["run", str(folder), "-o", str(work / "photo_out"), "--scale",
                                           str(cfg.scale), "--jobs-dir", str(work / "jobs_photo"), *_job_args(cfg)])
    if code != 0:
        last = message.strip().splitlines()[-1:] or ["(no message)"]
        raise ArchiveRestoreError(f"bench memory: the photo job on the {width}x{height} photo failed: {last[0]}")
    return {"width": width, "height": height, "peak_rss_mb": peak, "wall_s": wall}


def run_memory(cfg: MemoryConfig) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="archive-restore-memory-") as tmp:
        work = Path(tmp)
        photo = photo_peak(cfg, work) if cfg.photo else None
        for seconds in tqdm(cfg.durations, desc="bench memory", unit="clip", disable=not cfg.progress):
            frames = max(1, round(seconds * CLIP_FPS))
            clip = synth_clip(work / f"clip_{frames}.mp4", frames, cfg.width, cfg.height)
            args = ["video", str(clip), "-o", str(work / f"out_{frames}.mp4"), "--scale", str(cfg.scale),
                    "--jobs-dir", str(work / f"jobs_{frames}"), *_job_args(cfg)]
            code, peak, wall, message = run_child(args)
            if code != 0:
                last = message.strip().splitlines()[-1:] or ["(no message)"]
                raise ArchiveRestoreError(f"bench memory: the video job on the {seconds:g} s clip failed: {last[0]}")
            rows.append({"seconds": seconds, "frames": frames, "peak_rss_mb": peak, "wall_s": wall})
    peaks = [r["peak_rss_mb"] for r in rows]
    return {
        "clips": rows,
        "width": cfg.width,
        "height": cfg.height,
        "scale": cfg.scale,
        "fps": CLIP_FPS,
        "longest_over_shortest": round(peaks[-1] / peaks[0], 3) if peaks and peaks[0] else None,
        "upscaler": cfg.upscaler or "the jobs' default",
        "photo": photo,
    }


def format_table(result: dict) -> str:
    lines = [f"{'seconds':>8} {'frames':>7} {'peak RSS (MB)':>14} {'wall (s)':>9}"]
    for r in result["clips"]:
        lines.append(f"{r['seconds']:>8g} {r['frames']:>7} {r['peak_rss_mb']:>14.1f} {r['wall_s']:>9.1f}")
    lines.append(
        f"{result['width']}x{result['height']} at {result['fps']} frames/s, x{result['scale']}; "
        f"peak RSS of the last clip / the first: {result['longest_over_shortest']}; upscaler: {result['upscaler']}"
    )
    if result["photo"]:
        p = result["photo"]
        lines.append(f"one {p['width']}x{p['height']} photo through the photo job: peak RSS {p['peak_rss_mb']:.1f} MB, "
                     f"{p['wall_s']:.1f} s")
    return "\n".join(lines)
