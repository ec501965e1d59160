"""``archive-restore bench eta CLIP``: how true the render bar's remaining time is, on a real video job.

The job runs as ``video`` runs it (its own defaults, or ``--upscaler``) on the clip's first ``--frames``
frames. After every batch the bar's remaining time (tqdm's, from its smoothed rate: what the user reads) is
recorded with the clock; at the end the truth is known, so for every moment at least ``from_done`` (10 %) of
the frames were done the figure is the bar's remaining time over the true remaining time. The issue's bar:
every such ratio within 0.75-1.25.
"""
from __future__ import annotations

import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .common import first_frames


class RecordingBar(tqdm):
    """A render bar that writes nowhere and keeps (clock, frames done, remaining seconds it shows)."""

    def __init__(self, *args, **kwargs):
        kwargs.update(file=io.StringIO(), disable=False, mininterval=0)
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[float, int, float | None]] = []

    def update(self, n=1):
        shown = super().update(n)
        info = self.format_dict
        rate = info.get("rate") or (info["n"] - self.initial) / max(info["elapsed"], 1e-9)
        left = (info["total"] - info["n"]) / rate if rate else None
        self.seen.append((time.monotonic(), info["n"], left))
        return shown


@dataclass
class EtaResult:
    frames: int
    seconds: float
    points: list[tuple[float, float, float]]  # (fraction done, bar's remaining s, true remaining s)

    def ratios(self) -> list[float]:
        return [shown / truth for _, shown, truth in self.points if truth > 0]

    def lines(self) -> list[str]:
        out = [f"{'done':>6}  {'bar says':>10}  {'truth':>10}  ratio"]
        for done, shown, truth in self.points:
            out.append(f"{done:6.1%}  {shown:9.1f}s  {truth:9.1f}s  {shown / truth if truth else float('nan'):.3f}")
        ratios = self.ratios()
        if ratios:
            worst = max(ratios, key=lambda r: abs(r - 1))
            out.append(f"{self.frames} frames rendered in {self.seconds:.1f} s; from 10 % done the bar's remaining "
                       f"time was {min(ratios):.3f}-{max(ratios):.3f} x the truth (worst {worst:.3f}; the bar is "
                       f"{'met' if all(0.75 <= r <= 1.25 for r in ratios) else 'NOT met'}: within 0.75-1.25)")
        return out


def measure_eta(clip: Path, frames: int, settings: dict, models_dirs=(), device: str = "auto",
                from_done: float = 0.10, progress: bool = True) -> EtaResult:
    """The video job on ``clip``'s first ``frames`` frames with the upscaler ``settings`` (the CLI's
    ``upscaler_settings``), its render bar recorded (see the module)."""
    from ..jobs.store import JobStore
    from ..pipeline.video import VideoJobOptions, open_video_job

    with tempfile.TemporaryDirectory(prefix="bench-eta-") as tmp:
        work = Path(tmp)
        short = first_frames(clip, work / "clip.mp4", frames)
        options = VideoJobOptions(device=device, models_dirs=tuple(models_dirs), **settings)
        with JobStore.open(work / "jobs") as store:
            job = open_video_job(store, short, work / "restored.mp4", options, progress=progress)
            job.bar_class = RecordingBar
            summary = job.run()
            if summary.failed:
                raise RuntimeError(f"the video job failed: {store.items(job.job.id, status='failed')[0].error}")
            seen = job._bar.seen
    end, total = seen[-1][0], seen[-1][1]
    points = [(n / total, left, end - at) for at, n, left in seen if n >= from_done * total and n < total
              and left is not None]
    return EtaResult(total, end - seen[0][0], points)
