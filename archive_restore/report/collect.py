"""From the job store and the job's files to what the report shows: a summary, and per photo a card
or per video its shots (frame pairs, face tracks, chunk timings). Pictures come from ``Pictures``.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ArchiveRestoreError
from ..jobs.store import DONE, FAILED, PENDING, RUNNING, SKIPPED, Item, Job, JobStore
from ..media.image import read_image
from ..media.video import open_backend, probe
from ..pipeline.status import ANALYSIS, FINISH
from .pictures import Pair, Pictures, rgb8

PREVIEW_FRAMES = "preview_frames"        # a preview chunk's restored sample frames (report.preview)


@dataclass(frozen=True)
class Summary:
    job: Job
    counts: dict[str, int]
    item_seconds: float
    runs: list[dict]
    code_sources: dict[str, int]
    face_codes: dict[str, int]  # photos: how their faces' codes were read (paired / blind)
    note: str = ""              # e.g. that this is a preview


@dataclass(frozen=True)
class PhotoCard:
    key: str
    status: str
    reason: str | None
    code_source: str | None
    faces: int | None
    details: list[str]
    pair: Pair | None = None
    picture: tuple[str, int, int] | None = None  # the input alone, when there is no output


@dataclass(frozen=True)
class Chunk:
    key: str
    status: str
    start_frame: int
    frames: int
    render_seconds: float | None
    render_fps: float | None
    faces_pasted: int | None
    reason: str | None
    dirt_percent: float | None = None  # film dirt repaired (``video --defects on``), % of the chunk's pixels


@dataclass
class ShotView:
    index: int
    start_frame: int
    frames: int
    tracks: int
    code_source: str
    code_detail: str
    confidence: float
    chunks: list[Chunk] = field(default_factory=list)
    pairs: list[tuple[str, Pair]] = field(default_factory=list)  # (caption, pair)
    missing: str | None = None  # why a shot has no frame pair


@dataclass(frozen=True)
class VideoView:
    analysis: Item | None
    finish: Item | None
    shots: list[ShotView]
    analysis_reason: str | None
    finish_reason: str | None


# ------------------------------------------------------------------------------------ reasons
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Interrupt)): ")


def plain_reason(item: Item, source: Path | None = None) -> str | None:
    """Why an item is not done, in words: the exception's type and the input's path taken out."""
    if item.status == PENDING:
        return "not restored yet: the job has not reached it (run the same command again to carry on)"
    if item.status == RUNNING:
        return "being restored now, or the run stopped here (it is done again when the job runs again)"
    if not item.error:
        return None
    text = item.error
    kind = _EXCEPTION.match(text)
    text = text[kind.end():] if kind else text
    if source is not None:
        text = text.replace(f"{source}: ", "").replace(str(source), Path(item.key).name)
    if item.status == SKIPPED:
        return text
    unusable = kind is not None and kind.group(0)[:-2].endswith(("InputError", "FormatError", "TooLargeError"))
    cause = "the file could not be used" if unusable else "restoring it failed"
    return f"{cause}: {text}"


# ------------------------------------------------------------------------------------ summary
def summarise(store: JobStore, job: Job, runs: list[dict], note: str = "") -> Summary:
    items = store.items(job.id)
    sources = Counter(i.code_source for i in items if i.code_source)
    kinds = Counter(i.extra.get("face_codes") for i in items if i.extra.get("face_codes"))
    return Summary(job=job, counts=store.summary(job.id), item_seconds=round(sum(i.seconds or 0 for i in items), 1),
                   runs=runs, code_sources=dict(sources), face_codes=dict(kinds), note=note)


# ------------------------------------------------------------------------------------- photos
def photo_cards(store: JobStore, job: Job, pictures: Pictures, progress: bool = True) -> list[PhotoCard]:
    root, job_dir = Path(job.input), store.job_dir(job.id)
    items = store.items(job.id)
    return [photo_card(item, root, pictures, job_dir)
            for item in tqdm(items, desc="report", unit="photo", disable=not progress or not items)]


def photo_card(item: Item, root: Path, pictures: Pictures, job_dir: Path | None = None) -> PhotoCard:
    source = root / item.key if root.is_dir() else root
    x = item.extra
    details = []
    if item.faces is not None:
        kind = f", {x['face_codes']} codes" if x.get("face_codes") and item.faces else ""
        details.append(f"{item.faces} face{'s' if item.faces != 1 else ''} found by {x.get('detector', '?')}{kind}")
    if x.get("faces_restored"):
        details.append(f"{x['faces_restored']} restored by {x.get('face_restorer')} and pasted back")
    if "defect_percent" in x:
        details.append(f"scratches, cracks and dust repaired on {x['defect_percent']} % of it")
    for name, words in (("analysis_error", "face analysis failed"), ("paste_error", "face paste-back failed")):
        if x.get(name):
            details.append(f"{words}: {x[name]}")
    if item.seconds is not None and item.status == DONE:
        details.append(f"{item.seconds:.1f} s" + (f" for {x['megapixels']} MP" if "megapixels" in x else ""))
    pair = picture = None
    reason = plain_reason(item, source)
    if item.status == DONE:
        pair, reason = _restored_pair(source, Path(item.output or ""), pictures)
    elif item.status in (PENDING, RUNNING, FAILED) and source.is_file():
        picture = pictures.input_picture(source)
    if pair is not None and job_dir is not None:
        pair = with_repairs(pair, job_dir, x.get("defect_mask"), pictures)
    if pair is not None:
        details.append(f"{pair.source_size[0]}x{pair.source_size[1]} -> {pair.output_size[0]}x{pair.output_size[1]}")
    return PhotoCard(key=item.key, status=item.status, reason=reason, code_source=item.code_source,
                     faces=item.faces, details=details, pair=pair, picture=picture)


def _restored_pair(source: Path, output: Path, pictures: Pictures) -> tuple[Pair | None, str | None]:
    """A done photo's pictures, or why there are none (files moved, deleted or damaged since)."""
    if not output.is_file():
        return None, f"the restored file {output} is missing (moved or deleted since)"
    if not source.is_file():
        return None, f"the input {source} is gone (the restored file {output} is kept)"
    try:
        return pictures.photo_pair(source, output), None
    except (ArchiveRestoreError, OSError) as exc:
        return None, f"cannot show it: {exc}"


def with_repairs(pair: Pair, job_dir: Path, mask: str | None, pictures: Pictures) -> Pair:
    """``pair`` with the overlay of the repair mask the job kept (``mask``, relative to ``job_dir``: the
    item's ``defect_mask``); as it is when there is none, or it is gone or unreadable."""
    if not mask or not (job_dir / mask).is_file():
        return pair
    try:
        return replace(pair, repairs=pictures.repairs_overlay(job_dir / mask, (pair.width, pair.height)))
    except (OSError, ValueError):
        return pair


# -------------------------------------------------------------------------------------- video
def video_view(store: JobStore, job: Job, pictures: Pictures, progress: bool = True) -> VideoView:
    items = store.items(job.id)
    by_key = {i.key: i for i in items}
    analysis, finish = by_key.get(ANALYSIS), by_key.get(FINISH)
    source = Path(job.input)
    shots: dict[int, ShotView] = {}
    for item in items:
        if item.key in (ANALYSIS, FINISH):
            continue
        x = item.extra
        shot = shots.get(x["shot"])
        if shot is None:
            shot = shots[x["shot"]] = ShotView(
                index=x["shot"], start_frame=x["start_frame"], frames=x["shot_frames"], tracks=x["tracks"],
                code_source=x["code_source"], code_detail=x["code_detail"], confidence=x["confidence"])
        shot.chunks.append(Chunk(key=item.key, status=item.status, start_frame=x["start_frame"], frames=x["frames"],
                                 render_seconds=x.get("render_seconds"), render_fps=x.get("render_fps"),
                                 faces_pasted=x.get("faces_pasted"), reason=plain_reason(item, source),
                                 dirt_percent=x.get("dirt_percent")))
    frames = FrameSource(source, pictures, store.job_dir(job.id))
    chunk_items = [i for i in items if i.key not in (ANALYSIS, FINISH)]
    for shot in tqdm(list(shots.values()), desc="report", unit="shot", disable=not progress or not shots):
        try:
            shot.pairs, shot.missing = frames.pairs(shot, [i for i in chunk_items if i.extra["shot"] == shot.index])
        except (ArchiveRestoreError, OSError, ValueError) as exc:  # files changed or damaged since
            shot.pairs, shot.missing = [], f"cannot show its frames: {exc}"
    return VideoView(analysis=analysis, finish=finish, shots=list(shots.values()),
                     analysis_reason=plain_reason(analysis, source) if analysis else None,
                     finish_reason=plain_reason(finish, source) if finish else None)


class FrameSource:
    """Before/after frame pairs of a video job: the input's frame beside the same frame restored,
    taken from the chunk's rendered segment (the shot's middle frame), or, for a preview, the sample
    frames it restored; with the film dirt mask the render kept of that frame (``video --defects on``,
    ``pipeline.video.shown_offset``), when the chunk's ``job_dir`` holds one."""

    def __init__(self, source: Path, pictures: Pictures, job_dir: Path | None = None) -> None:
        self.source = source
        self.pictures = pictures
        self.job_dir = job_dir
        self._info = None

    def pairs(self, shot: ShotView, chunks: list[Item]) -> tuple[list[tuple[str, Pair]], str | None]:
        previews = [(c, f) for c in chunks for f in c.extra.get(PREVIEW_FRAMES, [])]
        if previews:
            return [self.pair(c, f["offset"], Path(f["file"]), 0) for c, f in previews], None
        middle = shot.start_frame + shot.frames // 2
        chunk = next((c for c in chunks if 0 <= middle - c.extra["start_frame"] < c.extra["frames"]), None)
        if chunk is None or chunk.status != DONE or not chunk.output or not Path(chunk.output).is_file():
            return [], "no restored frame to show: the shot's middle chunk is not rendered"
        offset = middle - chunk.extra["start_frame"]
        return [self.pair(chunk, offset, Path(chunk.output), offset)], None

    def pair(self, chunk: Item, offset: int, after_file: Path, index: int) -> tuple[str, Pair]:
        """(caption, pair) for frame ``offset`` of ``chunk``, restored as frame ``index`` of ``after_file``."""
        x = chunk.extra
        key = f"{self.pictures.digests.of(self.source)[:16]}-{x['start_pts']}-{offset}"
        pair = self.pictures.frame_pair(key, lambda: self.input_frame(x["start_pts"], x["end_pts"], offset),
                                        after_file, index, lambda: nth_frame(after_file, index))
        kept = x.get("dirt_mask")
        if self.job_dir is not None and kept and kept["offset"] == offset:
            pair = with_repairs(pair, self.job_dir, kept["file"], self.pictures)
        return f"frame {x['start_frame'] + offset} ({chunk.key})", pair

    def input_frame(self, start_pts: int, end_pts: int | None, offset: int) -> np.ndarray:
        if self._info is None:
            self._info = probe(self.source)
        frames = open_backend("pyav").frames(self.source, self._info, start_pts, end_pts)
        return _nth(frames, offset, self.source)


def nth_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` (0-based, presentation order) of a video, or the only picture of an image file."""
    if path.suffix.lower() == ".png":
        return rgb8(read_image(path).pixels)
    return _nth(open_backend("pyav").frames(path, probe(path)), index, path)


def _nth(frames, index: int, path: Path) -> np.ndarray:
    for i, frame in enumerate(frames):
        if i == index:
            return frame.rgb
    raise ValueError(f"{path} has fewer than {index + 1} frames")
