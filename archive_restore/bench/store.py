"""``archive-restore bench scale --store N``: what the job store costs at N photos, so that a job of a
hundred thousand photos opens, advances and answers as one of a thousand does.

For each N, tiny generated photos (8x8 PNGs, in folders of ``PER_FOLDER``) make a real photo job in a
fresh jobs folder:

- ``open s``: ``open_photo_job`` and its walk (every photo becomes a pending item), as ``run`` does
  before its face analysis; ``reopen s``: the same on the existing job (the walk again, every item's
  file compared with what the job recorded: what a resumed or repeated ``run`` does);
- ``ms/item``: the runner's own loop (``run_job``: claim, process, record done, the progress bar and
  its counts) over every item, with a process that does no work: the store's overhead per photo; the
  first and the last tenth are also timed apart, to show whether it grows as items are done;
- ``status s`` and ``jobs s``: those commands run as a user runs them (a new process), the job done;
- ``db MB``: the database with its write-ahead log.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..jobs.runner import ItemResult, run_job
from ..jobs.store import JobStore
from ..pipeline.photo import PhotoJobOptions, open_photo_job

PER_FOLDER = 1000  # photos per generated folder, as a scanned collection is kept


def make_photos(root: Path, count: int, seed: int = 0) -> None:
    """``count`` different 8x8 PNGs under ``root``, ``PER_FOLDER`` to a folder."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = root / f"roll{index // PER_FOLDER:04d}"
        if index % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"p{index:06d}.png"), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))


def measure_store(count: int, work: Path, progress: bool = True) -> dict:
    """The figures of one job of ``count`` generated photos, made under ``work``."""
    photos, jobs = work / "in", work / "jobs"
    make_photos(photos, count)
    opened = _open_seconds(jobs, photos, work / "out")
    reopened = _open_seconds(jobs, photos, work / "out")
    with JobStore.open(jobs) as store:
        job = open_photo_job(store, photos, work / "out", PhotoJobOptions(), progress=progress).job
        tenth, marks = max(1, count // 10), []

        def process(item) -> ItemResult:  # no work: the store's own cost per item is what is left
            if item.id % tenth == 0 or len(marks) == 0:
                marks.append((store.summary(job.id)["done"], time.perf_counter()))
            return ItemResult()

        started = time.perf_counter()
        summary = run_job(store, job, process, progress)
        loop_s = time.perf_counter() - started
        db_bytes = sum(p.stat().st_size for p in jobs.glob(store.path.name + "*"))
    first, last = _per_item(marks[:2]), _per_item(marks[-2:])
    return {"photos": count, "open_s": round(opened, 3), "reopen_s": round(reopened, 3),
            "ms_per_item": round(1000 * loop_s / count, 3), "first_tenth_ms": first, "last_tenth_ms": last,
            "done": summary.done, "status_s": _command_seconds(["status", job.id[:12]], jobs),
            "jobs_s": _command_seconds(["jobs"], jobs), "db_mb": round(db_bytes / 1e6, 3)}


def _open_seconds(jobs: Path, photos: Path, out: Path) -> float:
    started = time.perf_counter()
    with JobStore.open(jobs) as store:
        open_photo_job(store, photos, out, PhotoJobOptions(), progress=False).add_items()
    return time.perf_counter() - started


def _per_item(marks: Sequence[tuple[int, float]]) -> float | None:
    """Milliseconds per item between two (items done, time) marks."""
    if len(marks) < 2 or marks[1][0] <= marks[0][0]:
        return None
    (done0, t0), (done1, t1) = marks
    return round(1000 * (t1 - t0) / (done1 - done0), 3)


def _command_seconds(args: list[str], jobs: Path) -> float:
    """Wall seconds of ``archive-restore ARGS`` in a new process (its start included, as a user waits)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "archive_restore", *args, "--jobs-dir", str(jobs)], check=True,
                   stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - started, 2)


def run_store(counts: Sequence[int], progress: bool = True) -> dict:
    rows = []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="archive-restore-store-") as tmp:
            rows.append(measure_store(count, Path(tmp), progress))
    return {"rows": rows}


def format_store(result: dict) -> str:
    lines = ["bench scale --store: the job store at N tiny photos (claim and mark: the runner's loop with no work)",
             f"{'photos':>8} {'open s':>7} {'reopen s':>8} {'ms/item':>8} {'first 10%':>9} {'last 10%':>8} "
             f"{'status s':>8} {'jobs s':>7} {'db MB':>6}"]
    for r in result["rows"]:
        lines.append(f"{r['photos']:>8} {r['open_s']:>7.2f} {r['reopen_s']:>8.2f} {r['ms_per_item']:>8.3f} "
                     f"{_ms(r['first_tenth_ms']):>9} {_ms(r['last_tenth_ms']):>8} {r['status_s']:>8.2f} "
                     f"{r['jobs_s']:>7.2f} {r['db_mb']:>6.1f}")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
