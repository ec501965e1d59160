"""``archive-restore report JOB_ID``: a job as a static web page to judge it by eye.

``write_report`` writes ``<folder>/index.html`` (styles and script inline, no network) and the
pictures it shows under ``<folder>/img/``, named by the sha256 of the files they come from, so that
writing the report again is quick and remakes only what changed (``pictures``). What the page shows
comes from the job store and the job's files (``collect``): a summary (counts, time, device, the
networks and their sha256, where the codes came from), then per photo a card (before/after slider,
a 1:1 detail crop, face boxes, the code's source, or why it failed or was skipped), or per video its
shots (a before/after frame pair each, face tracks, chunk timings). ``page`` writes the HTML.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ArchiveRestoreError, UsageError
from ..jobs.store import Job, JobStore
from ..weights.folders import models_dirs
from .collect import photo_cards, summarise, video_view
from .page import GENERATOR, page, photos_html, video_html
from .pictures import Detect, Pictures
from .provenance import read_runs, record_engine, run_recorded

__all__ = ["default_report_dir", "record_engine", "run_recorded", "write_report"]

REPORT_DIR = "report"
INDEX = "index.html"


def default_report_dir(store: JobStore, job: Job) -> Path:
    """``<jobs dir>/<job id>/report``."""
    return store.job_dir(job.id) / REPORT_DIR


def write_report(store: JobStore, job: Job, folder: Path | None = None, *, note: str = "",
                 progress: bool = True) -> Path:
    """Write the job's report into ``folder`` (default: the job's folder ``report/``); returns its
    ``index.html``."""
    job = store.job(job.id)  # as it is now
    folder = Path(os.path.abspath(folder)) if folder is not None else default_report_dir(store, job)
    _check_ours(folder / INDEX)
    runs = read_runs(store.job_dir(job.id))
    detector, detect = face_detection(job, runs)
    pictures = Pictures(folder, detect, detector)
    summary = summarise(store, job, runs, note)
    if job.kind == "video":
        body = video_html(video_view(store, job, pictures, progress))
    else:
        body = photos_html(photo_cards(store, job, pictures, progress))
    index = folder / INDEX
    tmp = index.with_name(f".{INDEX}.{os.getpid()}.tmp")
    tmp.write_text(page(f"archive-restore report: {Path(job.input).name} ({job.kind}, job {job.id})", summary, body),
                   encoding="utf-8")
    os.replace(tmp, index)
    pictures.finish()
    return index


def _check_ours(index: Path) -> None:
    """Refuse to write over an ``index.html`` that is not a report (``-o`` pointed at another site)."""
    try:
        with open(index, encoding="utf-8", errors="replace") as stream:
            head = stream.read(2048)
    except FileNotFoundError:
        return
    if GENERATOR not in head:
        raise UsageError(f"{index} exists and is not an archive-restore report; choose another folder with -o")


def face_detection(job: Job, runs: list[dict]) -> tuple[str, Detect]:
    """(name, detect) for the face boxes: the detector the job's last run used (else the job's
    option), from the folders it searched, loaded on first use (a report whose boxes are all known
    loads none); faces smaller than the engine reads are left out, as the job does. Without that
    detector's file now, ``detect`` returns None (no boxes drawn, nothing remembered)."""
    name = runs[-1]["detector"] if runs else job.options.get("face_detector", "auto")
    dirs = [str(d) for d in models_dirs(runs[-1].get("models_dirs", []) if runs else [])]
    loaded: list = []

    def detect(rgb):
        from ..faces import (
            make_detector,  # torch and the detectors: imported only when boxes are to be found
        )
        from ..pipeline.engine import EngineOptions

        if not loaded:
            try:
                loaded.append(make_detector(name, dirs, "cpu"))
            except ArchiveRestoreError:
                loaded.append(None)
        if loaded[0] is None:
            return None
        return [f.box for f in loaded[0].detect(rgb) if min(f.width, f.height) >= EngineOptions.min_face]

    return name, detect
