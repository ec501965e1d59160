"""``run ... --preview N`` and ``video ... --preview N``: restore N representative samples and report
them, before committing hours to the whole job.

A preview never creates or touches the real job: it computes the real job's id (``job_identity``,
nothing written) and works in its own folder, ``<jobs dir>/previews/<that id>-<N>/``, with its own
job store (``jobs/``), outputs (``restored/``) and report (``report/``). Running it again resumes it.

* photos: N photos spread over the folders (each folder gets one before any gets two; within a
  folder they are evenly spaced), linked into ``samples/`` under their own relative paths; that
  folder is restored by the ordinary photo job.
* video: the ordinary video job's analysis (shots, tracked faces, a code per shot), then N frames
  spread over the shots the same way are restored with their shot's code, faces pasted (frame by
  frame: no steadying along tracks), and saved as PNG files; nothing is encoded or joined.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..errors import InputError
from ..jobs.runner import ItemResult, Summary, atomic_output
from ..jobs.store import Item, JobStore, job_identity
from ..media.fields import FieldPlan
from ..media.video import open_backend
from ..media.walk import default_output_dir, find_photos
from ..pipeline.estimate import engine_terms, estimate_line
from ..pipeline.photo import KIND as PHOTOS
from ..pipeline.photo import PhotoJobOptions, open_photo_job
from ..pipeline.video import ANALYSIS, FINISH, VideoJob, VideoJobOptions, open_video_job
from ..pipeline.video import KIND as VIDEO
from . import write_report
from .collect import PREVIEW_FRAMES
from .pictures import rgb8
from .provenance import run_recorded

PREVIEWS = "previews"
SELECTION = "selection.json"


@dataclass(frozen=True)
class Preview:
    index: Path       # the report's index.html
    summary: Summary  # the preview job's counts
    samples: int      # photos or frames chosen
    estimate: str | None = None  # the whole job's time at the preview's rate (``pipeline.estimate``)


def spread(n: int, sizes: Sequence[int]) -> list[list[int]]:
    """``n`` picks spread over groups of ``sizes`` items: per group, the indices picked. Every group
    gets one before any gets two; with fewer picks than groups, the groups are evenly spaced; within
    a group the picks are evenly spaced (centred)."""
    counts, left = [0] * len(sizes), min(n, sum(sizes))
    while left:
        open_groups = [g for g, size in enumerate(sizes) if counts[g] < size]
        chosen = open_groups if left >= len(open_groups) else [open_groups[_even(i, left, len(open_groups))]
                                                               for i in range(left)]
        for g in chosen:
            counts[g] += 1
        left -= len(chosen)
    return [[_even(i, k, size) for i in range(k)] for k, size in zip(counts, sizes)]


def _even(i: int, k: int, m: int) -> int:
    """The ``i``-th of ``k`` evenly spaced (centred) positions among ``m``."""
    return int((i + 0.5) * m / k)


def preview_folder(jobs_dir: Path, kind: str, input_path: Path, output: Path, identity: dict, n: int) -> Path:
    """``<jobs dir>/previews/<the real job's id>-<n>``; the real job is not created."""
    return jobs_dir / PREVIEWS / f"{job_identity(kind, input_path, output, identity)}-{n}"


# ------------------------------------------------------------------------------------- photos
def preview_photos(jobs_dir: Path, input_path: Path, output: Path | None, options: PhotoJobOptions, n: int,
                   progress: bool = True) -> Preview:
    """Restore ``n`` photos of ``input_path`` spread over its folders, in a preview folder, and
    report them."""
    input_path = Path(os.path.abspath(input_path))
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or folder")
    output = Path(os.path.abspath(output)) if output else default_output_dir(input_path)
    folder = preview_folder(jobs_dir, PHOTOS, input_path, output, options.identity(), n)
    chosen, total = choose_photos(input_path, n)
    samples = link_samples(folder, chosen)
    with JobStore.open(folder / "jobs") as store:
        photo_job = open_photo_job(store, samples, folder / "restored", options, progress)
        summary = run_recorded(store, photo_job)
        note = (f"A preview of {len(chosen)} photos of {input_path}, spread over its folders; the real job "
                f"(output {output}) is not started.")
        index = write_report(store, photo_job.job, folder / "report", note=note, progress=progress)
        engine = photo_job._engine
        estimate = None if engine is None or not summary.done else estimate_line(
            "photo", summary.done, summary.seconds, total, *engine_terms(engine), whole=True)
    return Preview(index, summary, len(chosen), estimate)


def choose_photos(root: Path, n: int) -> tuple[dict[str, Path], int]:
    """Up to ``n`` photos of ``root`` (relative key -> file) spread over its folders, and how many photos
    there are in all."""
    folders: dict[str, list[tuple[str, Path]]] = {}
    for path, rel in find_photos(root):
        key = PurePosixPath(rel).as_posix()
        folders.setdefault(str(PurePosixPath(key).parent), []).append((key, path))
    if not folders:
        raise InputError(f"{root}: no photos to preview")
    picks = spread(n, [len(v) for v in folders.values()])
    chosen = dict(photos[i] for photos, chosen in zip(folders.values(), picks) for i in chosen)
    return chosen, sum(len(v) for v in folders.values())


def link_samples(folder: Path, chosen: dict[str, Path]) -> Path:
    """``folder/samples`` holding links to the chosen photos under their keys; a preview folder made
    for another choice (the input folder changed) is started again."""
    samples, record = folder / "samples", folder / SELECTION
    wanted = {key: os.fspath(path.resolve()) for key, path in chosen.items()}
    try:
        same = json.loads(record.read_text()) == wanted
    except (OSError, ValueError):
        same = False
    if same and samples.is_dir():
        return samples
    if folder.is_dir():
        shutil.rmtree(folder)  # the preview's own folder: its links, store, outputs and report
    for key, target in wanted.items():
        link = samples / key
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(target, link)
        except OSError:  # a file system without symbolic links: a copy (the input is only read)
            shutil.copy2(target, link)
    record.write_text(json.dumps(wanted, indent=1, sort_keys=True))
    return samples


# -------------------------------------------------------------------------------------- video
def preview_video(jobs_dir: Path, input_path: Path, output: Path, options: VideoJobOptions, n: int,
                  progress: bool = True) -> Preview:
    """Analyse the video as its job does, restore ``n`` frames spread over its shots, report them."""
    input_path = Path(os.path.abspath(input_path))
    output = Path(os.path.abspath(output))
    folder = preview_folder(jobs_dir, VIDEO, input_path, output, options.identity(), n)
    with JobStore.open(folder / "jobs") as store:
        opened = open_video_job(store, input_path, folder / "restored" / input_path.name, options, progress)
        preview = PreviewVideoJob(store, opened.job, options, progress, samples=n)
        summary = run_recorded(store, preview)
        items = store.items(preview.job.id)
        frames = sum(len(i.extra.get(PREVIEW_FRAMES, [])) for i in items)
        note = (f"A preview of {frames} frames of {input_path}, spread over its shots (restored frame by frame, "
                f"faces not steadied along their tracks); the real job (output {output}) is not started.")
        index = write_report(store, preview.job, folder / "report", note=note, progress=progress)
        estimate = _video_estimate(preview, items, frames)
    return Preview(index, summary, frames, estimate)


def _video_estimate(preview: PreviewVideoJob, items: list[Item], frames: int) -> str | None:
    """The whole video's render time at the preview's seconds a frame (its sample frames' render time)."""
    analysis = next((i for i in items if i.key == ANALYSIS), None)
    seconds = sum(i.extra.get("render_seconds", 0.0) for i in items if i.extra.get(PREVIEW_FRAMES))
    engine = preview._engine
    if not frames or analysis is None or engine is None or "frames" not in analysis.extra:
        return None
    return estimate_line("frame", frames, seconds, analysis.extra["frames"], *engine_terms(engine), whole=True)


@dataclass
class PreviewVideoJob(VideoJob):
    """The video job with its render replaced: a chunk restores only its sample frames, as PNG files
    in the job's folder (``preview/``); the finish is skipped."""

    samples: int = 1
    _picks: dict[str, list[int]] | None = field(default=None, repr=False)

    def process(self, item: Item) -> ItemResult:
        if item.key == ANALYSIS:
            return self.analyse()
        if item.key == FINISH:
            return ItemResult(skipped="a preview: the video is not put together")
        offsets = self.picks().get(item.key)
        if not offsets:
            return ItemResult(skipped="a preview: no sample frame in this chunk")
        return self.restore_samples(item, offsets)

    def picks(self) -> dict[str, list[int]]:
        """Chunk key -> offsets of its sample frames: ``samples`` frames spread over the shots."""
        if self._picks is None:
            chunks = [i for i in self.store.items(self.job.id) if i.key not in (ANALYSIS, FINISH)]
            shots: dict[int, list[Item]] = {}
            for chunk in chunks:
                shots.setdefault(chunk.extra["shot"], []).append(chunk)
            sizes = [sum(c.extra["frames"] for c in parts) for parts in shots.values()]
            self._picks = {}
            for parts, frames in zip(shots.values(), spread(self.samples, sizes)):
                start = parts[0].extra["start_frame"]
                for frame in frames:
                    chunk = next(c for c in parts if c.extra["start_frame"] + c.extra["frames"] > start + frame)
                    self._picks.setdefault(chunk.key, []).append(start + frame - chunk.extra["start_frame"])
        return self._picks

    def restore_samples(self, item: Item, offsets: list[int]) -> ItemResult:
        started = time.monotonic()
        self.check_unchanged()
        x = item.extra
        frames = open_backend(self.options.backend).frames(self.source, self.info, x["start_pts"], x["end_pts"],
                                                           as_float=True, fields=FieldPlan.from_dict(x.get("fields")))
        picked = [f for i, f in zip(range(max(offsets) + 1), frames) if i in offsets]
        if len(picked) != len(offsets):
            raise InputError(f"{self.source}: {item.key} decoded fewer frames than the analysis counted")
        code = np.asarray(item.code, np.float32)
        cleanup, _ = self.adapted(item)  # as the job renders the chunk: its adapted cleanup, its faces softened
        restored = self.engine.restore_frames([f.rgb for f in picked], code, self.options.batch, cleanup=cleanup)
        written = []
        for offset, frame, picture in zip(offsets, picked, restored):
            picture, pasted = self.engine.paste_faces(frame.rgb, picture, code=code)
            path = self.store.job_dir(self.job.id) / "preview" / f"{item.key}-{offset:04d}.png"
            with atomic_output(path) as tmp:
                Image.fromarray(rgb8(picture)).save(tmp)
            written.append({"offset": offset, "pts": frame.pts, "file": os.fspath(path), "faces_pasted": pasted})
        seconds = time.monotonic() - started
        return ItemResult(code=item.code, code_source=item.code_source, faces=item.faces,
                          extra={PREVIEW_FRAMES: written, "render_seconds": round(seconds, 3),
                                 "render_fps": round(len(written) / max(seconds, 1e-6), 2)})
