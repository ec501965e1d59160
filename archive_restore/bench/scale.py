"""``archive-restore bench scale``: photos per second of the photo job on the local executor and on
Ray with 1, 2... workers, on the same photos.

Each configuration runs the real job (``run`` with its executor) from scratch, in its own jobs and
output folders. ``start s`` is the executor's own start (Ray: the connection and the workers' start
and storage checks); ``job s`` the job itself (the walk and face analysis on the driver, the
renders where the executor puts them, each worker loading its networks on its first photo), and
``items/s`` the photos over ``job s``. Outputs of every configuration must equal the local ones
byte for byte; a mismatch is reported in the table.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import DataError
from ..executors import ExecutorSettings, open_executor
from ..jobs.store import JobStore
from ..media.walk import find_photos
from ..pipeline.photo import PhotoJobOptions, open_photo_job
from .common import output_files


@dataclass
class ScaleConfig:
    photos: Path
    max_photos: int | None = 8
    workers: Sequence[int] = (1, 2)
    ray_address: str | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    options: PhotoJobOptions = field(default_factory=PhotoJobOptions)


def run_scale(cfg: ScaleConfig) -> dict:
    with tempfile.TemporaryDirectory(prefix="archive-restore-scale-") as tmp:
        work = Path(tmp)
        count = _gather(cfg.photos, cfg.max_photos, work / "in")
        settings = [("local", ExecutorSettings())] + [
            (f"ray x{n}", ExecutorSettings("ray", cfg.ray_address, n, cfg.gpus_per_worker, cfg.cpus_per_worker))
            for n in cfg.workers]
        rows = [_measure(name, s, cfg.options, work, i) for i, (name, s) in enumerate(settings)]
        reference = output_files(work / "out0")
        for i, row in enumerate(rows):
            row["same_as_local"] = output_files(work / f"out{i}") == reference
    return {"photos": count, "source": str(cfg.photos), "rows": rows,
            "options": {"scale": cfg.options.scale, "upscaler": cfg.options.upscaler, "device": cfg.options.device}}


def _gather(source: Path, limit: int | None, dest: Path) -> int:
    """The first ``limit`` photos under ``source`` copied to ``dest`` (the same input for every run)."""
    found = sorted(find_photos(source, []), key=lambda pr: str(pr[1]))[:limit]
    if not found:
        raise DataError(f"no photos under {source}")
    for path, rel in found:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)
    return len(found)


def _measure(name: str, settings: ExecutorSettings, options: PhotoJobOptions, work: Path, index: int) -> dict:
    with JobStore.open(work / f"jobs{index}") as store:
        job = open_photo_job(store, work / "in", work / f"out{index}", options, progress=False)
        started = time.monotonic()
        with open_executor(settings) as executor:
            work_on = executor.work_for(job)
            ready = time.monotonic()
            summary = job.run(work=work_on)
            finished = time.monotonic()
    seconds = finished - ready
    return {"executor": name, "start_s": round(ready - started, 2), "job_s": round(seconds, 2),
            "done": summary.done, "failed": summary.failed, "items_per_s": round(summary.done / max(seconds, 1e-9), 3)}


def format_table(result: dict) -> str:
    o = result["options"]
    lines = [f"bench scale: {result['photos']} photos from {result['source']} (x{o['scale']}, upscaler {o['upscaler']}, "
             f"device {o['device']})",
             f"{'executor':<10} {'start s':>8} {'job s':>8} {'items/s':>8} {'done':>5} {'failed':>6}  same files as local"]
    for r in result["rows"]:
        lines.append(f"{r['executor']:<10} {r['start_s']:>8.2f} {r['job_s']:>8.2f} {r['items_per_s']:>8.3f} "
                     f"{r['done']:>5} {r['failed']:>6}  {'yes' if r['same_as_local'] else 'NO'}")
    return "\n".join(lines)
