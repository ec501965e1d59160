"""The video job: ``archive-restore video FILE``.

One job per video file. Its items, in claim order:

``analysis``
    decode once -> shot boundaries (``shots.ShotDetector``) -> faces detected every k frames of a
    shot and tracked (``faces.track``) -> per track its best crops, aligned to 512 -> codes -> per
    shot the robust mean of its crops' codes (paired codes with GFPGAN when present, else blind).
    Shots without faces take the code of the nearest shot with faces ("neighbour"), else the whole
    video's ("job"), else a blind code read from a few of their own frames ("blind"). Each shot is
    split into chunks of at most ``chunk_frames`` frames; every chunk becomes a render item whose
    ``extra`` holds its frame range, pts range, shot, faces, code source and confidence. Counted
    frames, never a header's count.
``shotNNNN.PPP`` (one per chunk)
    decode the chunk's frames by pts -> CondSR with the shot's code -> faces restored and pasted
    back when a face restorer (GFPGAN) is present, steadied along their tracks within the chunk
    (``faces.steady.SteadyFaces``) -> encode a segment file in the job's working folder, written
    under a temporary name and renamed; the item is then done.
``finish``
    join the segments and copy the input's audio and subtitle packets unchanged into the output,
    written to a temporary name and renamed into place.

The analysis is an item (not a step outside the job) so that a bad input is recorded like any
failure: the job fails with a one-line reason and nothing is written at the output path.
A crash loses at most the item in progress; a rerun resumes with the next pending item.

Damaged files never hang the job nor stop it with a traceback: decoding runs in its own thread and
an item whose decoder gives no frame for ``DECODE_STALL_S`` seconds (probing included) fails with
that reason; frames that do not decode are dropped and the others kept with their own timestamps
(``media.video``); the analysis records how many were lost (``frames_lost``) and the job's summary
says so (:func:`damage_note`).
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm import tqdm

from ..compute.cpu import release_freed_heap
from ..errors import InputError, JobError, UsageError
from ..faces import align_face, face_quality
from ..faces.steady import SteadyFaces
from ..faces.track import Crop, FaceTracker
from ..jobs.runner import ItemResult, Summary, Work, atomic_output, run_job
from ..jobs.store import DONE, Item, ItemSpec, Job, JobStore
from ..media.fields import FieldPlan, plan_fields
from ..media.video import (
    DecodeTally,
    EncodeSettings,
    Segment,
    SegmentWriter,
    VideoFrame,
    VideoInfo,
    container_format,
    field_counts,
    join_segments,
    open_backend,
    probe,
    to_uint8,
    with_ffmpeg_said,
)
from . import soften
from .adapt import KEPT, NOT_LEARNT, Adapter, face_pair, job_adapter, keep_pairs, kept_pairs
from .defects import keep_mask
from .engine import ALIGNED_SIZE, CONDSR, Engine, EngineOptions, combine
from .estimate import Estimate, engine_terms
from .film_dirt import clean_run
from .precision import job_engine
from .shots import ShotDetector
from .stack import DEFAULT_FIDELITY, DEFAULT_SCALE_METHOD
from .status import ANALYSIS, FINISH
from .temporal import TemporalSteadier

KIND = "video"
FACES, NEIGHBOUR, WHOLE, BLIND = "faces", "neighbour", "job", "blind"
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
NEAR_SHOTS = 2  # a shot without faces borrows from a shot with faces at most this far away
BLIND_FRAMES = 3  # frames of a shot read for its blind code
QUEUE_FRAMES = 16  # decoded frames waiting for the network, at most
# restored frames waiting for the encoder, at most: each is a full output frame (8.1 MB at 1920x1408), and
# the encoder keeps up with the network, so a short queue is enough to overlap them
ENCODE_QUEUE_FRAMES = 4
# the heap's freed memory handed back every this many rendered frames (and after each chunk): the network's
# and the encoder's large buffers, freed and reused in a different order, otherwise leave more and more of the
# heap resident (a 150-frame 480x352 -> x4 job through the SRVGG stack, two chunks: 1539 MB without, 1336 MB
# every 16 frames, at no measurable cost in speed; see models/MODELS.md)
HEAP_TRIM_FRAMES = 16
DECODE_STALL_S = 60.0  # an item whose decoder gives nothing for this long fails (a damaged file hangs it)


@dataclass(frozen=True)
class VideoJobOptions:
    scale: int = 4
    codec: str = "libx264"
    crf: int = 18
    preset: str = "medium"
    backend: str = "pyav"
    face_detector: str = "auto"
    detect_every: int = 5
    chunk_frames: int = 120
    tile: int | None = None             # LQ tile; None: sized to the device's free memory
    device: str = "auto"
    batch: int = 4
    models_dirs: tuple[Path, ...] = ()
    face_restorer: str = "auto"
    face_fidelity: float = 0.0
    upscaler: str = CONDSR              # the upscaler file (resolved from --upscaler), or "condsr"
    upscaler_sha256: str | None = None
    fidelity: float = DEFAULT_FIDELITY
    scale_method: str = DEFAULT_SCALE_METHOD  # below the upscaler's scale (``stack.upscale_to``)
    precision: str = "auto"             # on the CPU: auto (reduced where admitted) or fp32; not the identity
    deinterlace: str = "auto"           # ``media.fields``: auto, field, frame, ivtc or off
    temporal: str = "steady"            # ``pipeline.temporal``: steady (frames pulled towards the last) or off
    faces_without_restorer: str = soften.DEFAULT  # ``pipeline.soften``: ours, faithful (towards CondSR) or as-is
    defects: str = "off"                # ``pipeline.film_dirt``: on (one-frame dirt and line scratches removed) or off
    adapt: str = "off"                  # ``pipeline.adapt``: on (the cleanup fine-tuned on each shot's faces) or off

    def __post_init__(self) -> None:
        if self.adapt == "on" and self.upscaler == CONDSR:
            raise UsageError("--adapt fine-tunes the cleanup, which --upscaler condsr does not use: choose an "
                             "upscaler, or leave --adapt out")

    def identity(self) -> dict:
        """The options that change the result, and so the job's identity (not device, batch). The
        face-restorer options count only when they differ from their defaults, so that jobs started
        before they existed keep their identity."""
        ident = {"scale": self.scale, "codec": self.codec, "crf": self.crf, "preset": self.preset,
                 "backend": self.backend, "face_detector": self.face_detector,
                 "detect_every": self.detect_every, "chunk_frames": self.chunk_frames}
        if self.tile is not None:  # a fixed tile; the default sizes tiles to the device's memory
            ident["tile"] = self.tile
        if self.face_restorer != "auto":
            ident["face_restorer"] = self.face_restorer
        if self.face_fidelity:
            ident["face_fidelity"] = self.face_fidelity
        if self.upscaler != CONDSR:  # the upscaler file, by its content, and the blend
            ident.update(upscaler=self.upscaler, upscaler_sha256=self.upscaler_sha256, fidelity=self.fidelity)
            if self.scale < 4 and self.scale_method != DEFAULT_SCALE_METHOD:  # what jobs before the choice ran
                ident["scale_method"] = self.scale_method
        if soften.to_record(self.face_restorer, self.upscaler != CONDSR, self.faces_without_restorer):
            ident["faces_without_restorer"] = self.faces_without_restorer  # ``from_identity``: ``soften.recorded``
        if self.deinterlace != "auto":  # auto decides from the input; jobs before the choice keep their identity
            ident["deinterlace"] = self.deinterlace
        if self.temporal != "off":  # jobs before temporal steadying rendered without it (``from_identity``)
            ident["temporal"] = self.temporal
        if self.defects != "off":
            ident["defects"] = self.defects
        if self.adapt != "off":
            ident["adapt"] = self.adapt
        return ident

    @classmethod
    def from_identity(cls, stored: dict, **runtime) -> VideoJobOptions:
        # none recorded: what jobs before the option did
        return cls(**{"scale_method": DEFAULT_SCALE_METHOD, "temporal": "off", **stored,
                      "faces_without_restorer": soften.recorded(stored)}, **runtime)

    @property
    def encode(self) -> EncodeSettings:
        return EncodeSettings(codec=self.codec, crf=self.crf, preset=self.preset)


# ------------------------------------------------------------------------------------- analysis
@dataclass
class Shot:
    """A shot being analysed: where it starts, its render chunks, its face tracks and codes."""

    index: int
    start_frame: int
    start_pts: int
    chunks: list[dict] = field(default_factory=list)
    frames: int = 0
    tracks: int = 0
    blind: list[np.ndarray] = field(default_factory=list)
    code: np.ndarray | None = None
    source: str | None = None
    confidence: float = 0.0
    detail: str = ""
    pairs: list = field(default_factory=list)  # ``--adapt on``: its faces (LQ, restored) at their own size


class Analysis:
    """The streaming analysis pass over one video (memory: one shot's best crops, not the video)."""

    def __init__(self, engine: Engine, options: VideoJobOptions, fields: FieldPlan = FieldPlan()) -> None:
        self.engine = engine
        self.options = options
        self.fields = fields
        self.shots: list[Shot] = []
        self.frames = 0
        self.tracks = 0
        self._detector = ShotDetector()
        self._tracker = FaceTracker()
        self._context = DirtContext(options.defects == "on")

    def run(self, frames: Iterable[VideoFrame]) -> list[Shot]:
        for frame in frames:
            self._push(frame)
        if self.shots:
            self._context.cut(None, self.shots[-1].chunks[-1])
            self._close_shot()
        self._fill_codes()
        return self.shots

    def _push(self, frame: VideoFrame) -> None:
        if self._detector.push(frame.rgb) or not self.shots:
            if self.shots:
                self.shots[-1].chunks[-1]["end_pts"] = frame.pts
                self._context.cut(frame.pts, self.shots[-1].chunks[-1])
                self._close_shot()
            self.shots.append(Shot(len(self.shots), self.frames, frame.pts))
        else:
            self._context.step(frame.pts)
        shot = self.shots[-1]
        self._chunk_frame(shot, frame)
        self._context.seen(frame.pts)
        offset = self.frames - shot.start_frame
        if offset % self.options.detect_every == 0:
            rgb = frame.rgb.astype(np.float32) / 255.0
            self._faces(shot, rgb, self.frames)
            if len(shot.blind) < BLIND_FRAMES:
                shot.blind.append(self.engine.image_blind_code(rgb))
        shot.frames += 1
        self.frames += 1

    def _chunk_frame(self, shot: Shot, frame: VideoFrame) -> None:
        if not shot.chunks or shot.chunks[-1]["frames"] >= self.options.chunk_frames:
            if shot.chunks:
                shot.chunks[-1]["end_pts"] = frame.pts
                self._context.close(shot.chunks[-1])
            shot.chunks.append({"start_frame": self.frames, "start_pts": frame.pts, "frames": 0,
                                "end_pts": None, **({"fields": self.fields.as_dict()} if self.fields.active else {})})
            self._context.open(shot.chunks[-1], frame.pts)
        shot.chunks[-1]["frames"] += 1

    def _faces(self, shot: Shot, rgb: np.ndarray, index: int) -> None:
        faces = [f for f in self.engine.detector.detect(rgb)
                 if min(f.width, f.height) >= self.engine.options.min_face]
        for track, face in self._tracker.update(faces, index):
            quality = face_quality(face, rgb)
            if track.would_keep(quality):
                track.offer(Crop(quality, index, face, align_face(rgb, face, ALIGNED_SIZE)))

    def _close_shot(self) -> None:
        shot = self.shots[-1]
        tracks = self._tracker.finish()
        shot.tracks = len(tracks)
        self.tracks += len(tracks)
        crops = [c for t in tracks for c in t.crops()]
        if crops:
            aligned = [c.payload for c in crops]
            restored = (self.engine.restored_faces([a.crop for a in aligned])
                        if self.options.adapt == "on" and self.engine.teaches else None)
            codes, kind = self.engine.encode_faces(aligned, restored=restored)
            if restored is not None:  # the shot's own faces, for the cleanup adapted to its code
                pairs = [face_pair(a.crop, r, a.source_pixels) for a, r in zip(aligned, restored)]
                shot.pairs = [p for p in pairs if p is not None]
            weights = np.array([max(c.quality, 1e-3) for c in crops], np.float32)
            shot.code, shot.source = combine(codes, weights), FACES
            shot.confidence = round(float(np.mean([c.quality for c in crops])), 4)
            shot.detail = f"{kind} codes of {len(crops)} crops of {len(tracks)} tracks"

    def _fill_codes(self) -> None:
        """Codes for shots without faces: a shot with faces at most ``NEAR_SHOTS`` away, else the
        whole video's (all its face shots), else a blind code from the shot's own frames."""
        with_faces = [s for s in self.shots if s.source == FACES]
        whole = combine(np.stack([s.code for s in with_faces])) if with_faces else None
        for shot in self.shots:
            if shot.source == FACES:
                continue
            near = min(with_faces, key=lambda s: (abs(s.index - shot.index), s.index), default=None)
            if near is not None and abs(near.index - shot.index) <= NEAR_SHOTS:
                shot.code, shot.source = near.code, NEIGHBOUR
                shot.confidence = round(near.confidence * 0.5, 4)
                shot.detail = f"from shot {near.index}"
            elif whole is not None:
                shot.code, shot.source = whole, WHOLE
                shot.confidence = round(float(np.mean([s.confidence for s in with_faces])) * 0.25, 4)
                shot.detail = f"whole video ({len(with_faces)} shots with faces)"
            else:
                shot.code, shot.source, shot.confidence = combine(np.stack(shot.blind)), BLIND, 0.0
                shot.detail = f"blind code from {len(shot.blind)} frames"


class DirtContext:
    """The frames a render chunk decodes beside its own when film dirt is removed (``film_dirt`` compares a
    frame with its neighbours): up to ``FRAMES`` before and after it within its shot, recorded in the chunk
    as ``dirt_from_pts`` and ``dirt_to_pts`` (exclusive; None: to the end of the video). Off: nothing."""

    FRAMES = 2

    def __init__(self, on: bool):
        self.on = on
        self._recent: list[int] = []              # the shot's last pts, at most FRAMES
        self._waiting: list[list] = []            # [chunk, frames seen after it] until FRAMES + 1 are

    def open(self, chunk: dict, pts: int) -> None:
        if self.on:
            chunk["dirt_from_pts"] = self._recent[0] if self._recent else pts

    def close(self, chunk: dict) -> None:
        """``chunk`` ended before this frame (within the shot): this frame is the first after it."""
        if self.on:
            self._waiting.append([chunk, 1])

    def step(self, pts: int) -> None:
        """A frame of the same shot: the chunks waiting for their frames after count it."""
        for entry in list(self._waiting):
            entry[1] += 1
            if entry[1] > self.FRAMES:
                entry[0]["dirt_to_pts"] = pts
                self._waiting.remove(entry)

    def seen(self, pts: int) -> None:
        self._recent = (self._recent + [pts])[-self.FRAMES:]

    def cut(self, pts: int | None, last: dict) -> None:
        """The shot ends before ``pts`` (None: the video ends): its waiting chunks and its ``last`` end there."""
        if self.on:
            for chunk, _ in self._waiting:
                chunk["dirt_to_pts"] = pts
            last["dirt_to_pts"] = pts
        self._waiting, self._recent = [], []


# -------------------------------------------------------------------------------------- the job
@dataclass
class VideoJob:
    """One video job being worked on."""

    store: JobStore
    job: Job
    options: VideoJobOptions
    progress: bool = True
    notify: Callable[[str], None] = field(default=lambda message: tqdm.write(f"note: {message}", file=sys.stderr))
    _engine: Engine | None = None
    _info: VideoInfo | None = None
    _bar: tqdm | None = None
    bar_class: ClassVar[type] = tqdm  # the render bar's class (``bench eta`` records what it shows)
    _estimate: Estimate | None = None  # this run's, on the local executor: said once its first frames are done
    _rate_from: tuple[float, int, int] | None = None  # the first batch's end, frames left then, done since
    _adapter: Adapter | None = None

    @property
    def source(self) -> Path:
        return Path(self.job.input)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = job_engine(EngineOptions.of(self.options), self.store.job_dir(self.job.id), self.notify)
            for message in self._engine.notices:  # once per job: the engine is made once per job
                self.notify(message)
        return self._engine

    @property
    def info(self) -> VideoInfo:
        if self._info is None:
            self._info = _within(DECODE_STALL_S, probe, self.source)
        return self._info

    def prepare(self, job: Job) -> None:
        """The first item is the analysis; it adds the render items and the finish item."""
        st = self.source.stat() if self.source.exists() else None
        self.store.add_items(job.id, [ItemSpec(ANALYSIS, size=st and st.st_size, mtime=st and st.st_mtime)])

    def process(self, item: Item) -> ItemResult:
        if item.key == ANALYSIS:
            return self.analyse()
        if item.key == FINISH:
            return self.finish()
        return self.render(item)

    def run(self, restart: bool = False, retry_failed: bool = False, work: Work | None = None) -> Summary:
        """``work``: another executor's loop (``executors.ray_cluster``), else the runner's."""
        if work is None:  # on a cluster the workers' rates differ: no estimate from one of them
            self._estimate = Estimate(self.notify, "frame")
        try:
            return run_job(self.store, self.job, self.process, False, restart=restart,
                           retry_failed=retry_failed, prepare=self.prepare, work=work)
        finally:
            if self._bar is not None:
                self._bar.close()

    # -------------------------------------------------------------------------------- analyse
    def analyse(self) -> ItemResult:
        shots, result = self.analyse_shots()
        self.add_shot_items(shots)
        return result

    def analyse_shots(self) -> tuple[list[Shot], ItemResult]:
        """The analysis pass (what a cluster worker runs): the shots and the item's result, which
        ``add_shot_items`` then records in the job store."""
        started = time.monotonic()
        stamp = _stamp(self.source)
        info = self.info
        fields = self.plan_fields()
        backend = open_backend(self.options.backend)
        analysis, tally = Analysis(self.engine, self.options, fields), DecodeTally()
        frames = _prefetch(backend.frames(self.source, info, tally=tally, fields=fields), QUEUE_FRAMES,
                           str(self.source))
        estimated = fields.count(info.header_frames)  # the header's count, as the plan changes it: an estimate
        with tqdm(desc=f"analysis {self.source.name}", unit="frame", total=estimated,
                  disable=not self.progress) as bar:
            shots = analysis.run(_counted(frames, bar))
        if not analysis.frames:
            raise InputError(with_ffmpeg_said(f"{self.source}: no frame decodes", tally.messages))
        seconds = time.monotonic() - started
        return shots, ItemResult(faces=analysis.tracks, extra={
            "input": stamp, "frames": analysis.frames, "shots": len(shots), "tracks": analysis.tracks,
            "seconds": round(seconds, 3), "fps": round(analysis.frames / max(seconds, 1e-6), 2),
            "video": info.summary(), "header_frames": info.header_frames,
            "code_sources": _count(s.source for s in shots), "fields": fields.as_dict(), **tally.summary(info)})

    def plan_fields(self) -> FieldPlan:
        """What this job does with fields (``media.fields``): ``--deinterlace`` and, unless it is ``off``,
        what the stream's flag and ``idet`` say; said once when it changes the frames or had to guess."""
        requested = self.options.deinterlace
        if requested == "off":
            return FieldPlan("off", found="not looked at", reason="--deinterlace off")
        info = self.info
        counts = _within(DECODE_STALL_S, lambda path: field_counts(path, info), self.source)
        plan = plan_fields(requested, info.field_order, counts)
        if plan.worth_saying:
            self.notify(f"{self.source.name}: {plan.summary()}")
        return plan

    def add_shot_items(self, shots: list[Shot]) -> None:
        specs, results = [], []
        for shot in shots:
            for part, chunk in enumerate(shot.chunks):
                key = f"shot{shot.index:04d}.{part:03d}"
                extra = {**chunk, "shot": shot.index, "part": part, "shot_frames": shot.frames,
                         "tracks": shot.tracks, "code_source": shot.source,
                         "confidence": shot.confidence, "code_detail": shot.detail}
                if shot.pairs:
                    extra["adapt_pairs"] = self.keep_pairs(shot)
                specs.append(ItemSpec(key, extra=extra))
                results.append((key, shot))
        specs.append(ItemSpec(FINISH))
        self.store.add_items(self.job.id, specs)
        by_key = {i.key: i for i in self.store.items(self.job.id)}
        for key, shot in results:
            self.store.update_item(by_key[key].id, code=shot.code.tolist(), faces=shot.tracks,
                                   code_source=shot.source)

    def keep_pairs(self, shot: Shot) -> str:
        """The shot's face pairs (``--adapt on``) kept in the job's folder; their file's name there."""
        name = f"{KEPT}/shot{shot.index:04d}.pairs.npz"
        path = self.store.job_dir(self.job.id) / name
        if not path.is_file():
            keep_pairs(path, shot.pairs)
        return name

    def adapted(self, item: Item) -> tuple[torch.nn.Module | None, dict]:
        """The cleanup fine-tuned on the chunk's shot's own faces with its code (``--adapt on``; ``pipeline.adapt``),
        and what to record; else (None, {}). A shot restored with another shot's, the video's or a blind code keeps
        the shipped cleanup (said in what is recorded)."""
        if self.options.adapt != "on":
            return None, {}
        if self._adapter is None:  # said once: what it cannot learn from
            self._adapter = job_adapter(self.engine, self.options, self.store.job_dir(self.job.id), self.notify)
        if "adapt_pairs" not in item.extra:
            ours = self.engine.restorer is not None and not self.engine.teaches
            why = NOT_LEARNT if item.code_source == FACES and ours else "no face of its own restored in the shot"
            return None, {"adapted": None, "adapt_skipped": why}
        pairs = kept_pairs(self.store.job_dir(self.job.id) / item.extra["adapt_pairs"])
        return self._adapter.adapted(np.asarray(item.code, np.float32), pairs, self.progress)

    # --------------------------------------------------------------------------------- render
    def segment_path(self, item: Item) -> Path:
        return self.store.job_dir(self.job.id) / f"{item.key}.mp4"

    def check_unchanged(self) -> None:
        """Raise InputError when the input is not the file the analysis read (size or mtime)."""
        analysis = next(i for i in self.store.items(self.job.id) if i.key == ANALYSIS)
        if _stamp(self.source) != analysis.extra.get("input"):
            raise InputError(f"{self.source} changed or vanished since its analysis; "
                             "run again with --restart to start over")

    def render(self, item: Item) -> ItemResult:
        started = time.monotonic()
        self.check_unchanged()
        bar = self.render_bar()  # made before the first frame: its rate counts the first batch's time too
        x = item.extra
        code = np.asarray(item.code, np.float32)
        fields = FieldPlan.from_dict(x.get("fields"))
        backend, dirt = open_backend(self.options.backend), DirtTally(keep=shown_offset(x, self.options.chunk_frames))
        if self.options.defects == "on":  # the chunk's frames and their neighbours, dirt removed while decoding
            decoded = dirt.removed(backend.frames(self.source, self.info, x["dirt_from_pts"], x["dirt_to_pts"],
                                                  fields=fields), x["start_pts"], x["end_pts"])
        else:
            decoded = backend.frames(self.source, self.info, x["start_pts"], x["end_pts"], fields=fields)
        cleanup, adapted = self.adapted(item)  # before decoding starts: the stalled-decoder clock must not run meanwhile
        frames = _prefetch(decoded, QUEUE_FRAMES, str(self.source))  # uint8: a quarter of the bytes
        out = self.segment_path(item)
        scale = self.options.scale
        with atomic_output(out) as tmp:
            with SegmentWriter(tmp, fields.view(self.info), self.info.width * scale, self.info.height * scale,
                               self.options.encode, origin=x["start_pts"]) as writer:
                steady, pasted = SteadyFaces(), 0  # a chunk lies within one shot; it starts without history
                still = TemporalSteadier() if self.options.temporal == "steady" else None
                since_trim = 0
                with _Background(writer.write, ENCODE_QUEUE_FRAMES, "encode") as encode:
                    since = time.monotonic()
                    for batch in _batches(frames, self.options.batch):
                        for frame, restored in zip(batch, self.restore(batch, code, cleanup)):
                            if still is not None:
                                restored = still.push(frame.rgb, restored)
                            picture, faces = self.engine.paste_faces(frame.rgb, restored, steady=steady, code=code)
                            encode.put(to_uint8(picture), frame.pts)  # the queue holds 8-bit frames
                            pasted += faces
                        now = time.monotonic()
                        self.engine.did(len(batch), now - since)
                        since = now
                        bar.update(len(batch))
                        self._tell_estimate(len(batch))
                        since_trim += len(batch)
                        if since_trim >= HEAP_TRIM_FRAMES:
                            since_trim = 0
                            release_freed_heap()
                if writer.frames != x["frames"]:
                    raise InputError(f"{self.source}: decoded {writer.frames} frames for {item.key}, "
                                     f"the analysis counted {x['frames']}")
        release_freed_heap()  # this chunk's encoder and decoder buffers, before the next chunk's
        seconds = time.monotonic() - started
        faces = {"faces_pasted": pasted, "face_restorer": self.engine.restorer.name} if self.engine.restorer else {}
        if self.engine.softens:  # faces pulled towards the faithful branch (``pipeline.soften``), counted per frame
            faces["faces_softened"] = pasted
        if self.engine.threads is not None:  # the count at the chunk's end (``compute.threads``)
            faces["threads"] = self.engine.threads.threads
        if self.options.defects == "on":
            faces["dirt_percent"] = dirt.percent
            faces["dirt_mask"] = dirt.kept_mask(self.store.job_dir(self.job.id), item.key)
        return ItemResult(output=str(out), code=item.code, code_source=item.code_source, faces=item.faces,
                          extra={"segment_origin": x["start_pts"], "render_seconds": round(seconds, 3),
                                 "render_fps": round(x["frames"] / max(seconds, 1e-6), 2), **faces, **adapted})

    def restore(self, batch: list[VideoFrame], code: np.ndarray,
                cleanup: torch.nn.Module | None = None) -> list[np.ndarray]:
        """A batch of frames through the engine's restoration (the stack, or CondSR alone): one pass for
        the batch when the frames fit the device's memory (or the fixed tile), else tiled; smaller
        batches, then tiles, after an out-of-memory error. Rounded to uint8 on the device unless faces
        are to be pasted into them. ``cleanup``: the one adapted to the shot (``adapted``), else the shipped one."""
        return self.engine.restore_frames([f.rgb for f in batch], code, self.options.batch, cleanup=cleanup,
                                          as_uint8=self.engine.restorer is None)  # float only to paste faces into

    def _tell_estimate(self, frames: int) -> None:
        """``frames`` more rendered in this run: say the estimate for the frames left once it is known
        (``pipeline.estimate``). The rate is counted from the end of the run's first batch: that one pays
        for every network's first call (about 4 s more a frame than the rest on a 854x480 clip here)."""
        if self._estimate is None:
            return
        now = time.monotonic()
        if self._rate_from is None:
            total, done = self._chunk_frames()
            self._rate_from = (now, total - done - frames, 0)
            return
        since, left, done = self._rate_from
        self._rate_from = (since, left, done + frames)
        self._estimate.update(done + frames, now - since, left - done - frames, *engine_terms(self.engine))

    def _chunk_frames(self) -> tuple[int, int]:
        """The frames of the job's render chunks: in all, and in those done."""
        chunks = [i for i in self.store.items(self.job.id) if i.key not in (ANALYSIS, FINISH)]
        return (sum(i.extra.get("frames", 0) for i in chunks),
                sum(i.extra.get("frames", 0) for i in chunks if i.status == DONE))

    def render_bar(self) -> tqdm:
        if self._bar is None:
            total, done = self._chunk_frames()
            self._bar = self.bar_class(total=total, initial=done, desc=f"render {self.source.name}", unit="frame",
                                       disable=not self.progress)
        return self._bar

    # --------------------------------------------------------------------------------- finish
    def finish(self) -> ItemResult:
        self.check_unchanged()
        chunks = [i for i in self.store.items(self.job.id) if i.key not in (ANALYSIS, FINISH)]
        missing = [i.key for i in chunks if i.status != DONE]
        if missing or not chunks:
            raise JobError(f"{len(missing)} of {len(chunks)} chunks are not rendered ({', '.join(missing[:5])}); "
                           "rerun with --retry-failed")
        expected = sum(i.extra["frames"] for i in chunks)
        with atomic_output(self.job.output) as tmp:
            # segments rendered before origins were recorded hold absolute pts: origin 0 for them
            segments = [Segment(Path(i.output), i.extra.get("segment_origin", 0)) for i in chunks]
            fields = FieldPlan.from_dict(chunks[0].extra.get("fields"))  # one plan for the job's chunks
            written = join_segments(segments, self.source, fields.view(self.info), tmp,
                                    container_format=container_format(Path(self.job.output)))
            if written != expected:
                raise JobError(f"joined {written} frames, expected {expected}")
        return ItemResult(output=self.job.output, extra={"frames": written})


@dataclass
class DirtTally:
    """Film dirt removed from a chunk's frames (``film_dirt.clean_run``), and how much of them it covered; and
    the mask of the frame at offset ``keep`` in the chunk (the one the report shows, ``shown_offset``)."""

    pixels: int = 0
    repaired: int = 0
    keep: int | None = None
    kept: np.ndarray | None = None
    frames: int = 0

    def removed(self, frames: Iterator[VideoFrame], start_pts: int, end_pts: int | None) -> Iterator[VideoFrame]:
        """The frames of ``start_pts <= pts < end_pts`` among ``frames`` (a chunk with its neighbours in the
        shot), each with its dirt filled from its neighbours."""
        held: list[VideoFrame] = []

        def pictures() -> Iterator[np.ndarray]:
            for frame in frames:
                held.append(frame)
                yield frame.rgb

        for rgb, mask in clean_run(pictures()):
            frame = held.pop(0)
            if frame.pts >= start_pts and (end_pts is None or frame.pts < end_pts):
                self.pixels += mask.size
                self.repaired += int(mask.sum())
                self.kept = mask if self.frames == self.keep else self.kept
                self.frames += 1
                yield VideoFrame(frame.pts, frame.time_base, rgb)

    @property
    def percent(self) -> float:
        return round(100.0 * self.repaired / max(self.pixels, 1), 4)

    def kept_mask(self, job_dir: Path, key: str) -> dict | None:
        """The kept frame's mask, written for the report (``defects.keep_mask``, as the chunk ``key``'s frame):
        {"offset": in the chunk, "file": relative to ``job_dir``}; None when no dirt was found on it or the
        chunk does not hold the frame the report shows."""
        if self.keep is None or self.kept is None:
            return None
        file = keep_mask(job_dir, f"{key}@{self.keep}", self.kept)
        return {"offset": self.keep, "file": file} if file else None


def shown_offset(chunk: dict, chunk_frames: int) -> int | None:
    """The offset in a render chunk (its item's extra) of the frame the report shows of its shot, the shot's
    middle frame (``report.collect.FrameSource``); None when another chunk holds it. A shot's chunks are all
    ``chunk_frames`` long but its last, so the shot starts ``part`` of them before the chunk."""
    shot_start = chunk["start_frame"] - chunk["part"] * chunk_frames
    offset = shot_start + chunk["shot_frames"] // 2 - chunk["start_frame"]
    return offset if 0 <= offset < chunk["frames"] else None


def _stamp(path: Path) -> list | None:
    """[size, mtime in ns] of a file, or None when it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _counted(frames: Iterator[VideoFrame], bar: tqdm) -> Iterator[VideoFrame]:
    for frame in frames:
        yield frame
        bar.update(1)


def _count(values: Iterable[str | None]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts


def _batches(frames: Iterable[VideoFrame], size: int) -> Iterator[list[VideoFrame]]:
    batch: list[VideoFrame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= max(1, size):
            yield batch
            batch = []
    if batch:
        yield batch


_END = object()


def _prefetch(frames: Iterator[VideoFrame], size: int, what: str) -> Iterator[VideoFrame]:
    """Decode in a thread, at most ``size`` frames ahead: decoding overlaps the network. A decoder
    that gives nothing for ``DECODE_STALL_S`` raises InputError naming ``what``. The thread is then told
    to stop: it decodes nothing more and closes the decoder (``frames``, its container) as soon as the
    call it is stuck in returns. A call stuck inside FFmpeg cannot be interrupted from Python (PyAV's
    ``timeout`` does not reach a blocked file read), so until then the thread waits there, a daemon."""
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def work() -> None:
        try:
            for frame in frames:
                while not stop.is_set():
                    try:
                        buffer.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            buffer.put(exc)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:  # the decoder and its file closed here, however decoding ended
                close()

    thread = threading.Thread(target=work, daemon=True, name="decode")
    thread.start()
    stalled = False
    try:
        while (got := _next_decoded(buffer, what)) is not _END:
            if isinstance(got, BaseException):
                raise got
            yield got
    except InputError:
        stalled = thread.is_alive()
        raise
    finally:
        stop.set()
        thread.join(timeout=0 if stalled else 5)


def _next_decoded(buffer: queue.Queue, what: str):
    try:
        return buffer.get(timeout=DECODE_STALL_S)
    except queue.Empty:
        raise InputError(f"{what}: no frame decoded for {DECODE_STALL_S:.0f} s; the file is probably "
                         "damaged (decoding stopped)") from None


def _within(seconds: float, fn, path: Path):
    """``fn(path)`` run on a daemon thread; InputError when it has not returned within ``seconds``."""
    outcome: queue.Queue = queue.Queue(maxsize=1)

    def work() -> None:
        try:
            outcome.put((True, fn(path)))
        except BaseException as exc:  # handed to the caller
            outcome.put((False, exc))

    threading.Thread(target=work, daemon=True, name="probe").start()
    try:
        ok, value = outcome.get(timeout=seconds)
    except queue.Empty:
        raise InputError(f"{path}: no answer from the decoder in {seconds:.0f} s; the file is probably "
                         "damaged") from None
    if not ok:
        raise value
    return value


class _Background:
    """Calls ``fn(*args)`` on a worker thread, in order, with at most ``size`` calls waiting:
    encoding overlaps the network. The worker's error is raised by the next ``put`` or on leaving
    the ``with`` block; leaving waits for the queued calls."""

    def __init__(self, fn, size: int, name: str) -> None:
        self._fn = fn
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, daemon=True, name=name)
        self._thread.start()

    def _work(self) -> None:
        while (args := self._queue.get()) is not _END:
            if self._error is None:
                try:
                    self._fn(*args)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def put(self, *args) -> None:
        self._raise()
        self._queue.put(args)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> _Background:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self._queue.put(_END)
        self._thread.join()
        if exc_type is None:
            self._raise()


# ------------------------------------------------------------------------------------- status
def damage_note(items: list[Item]) -> str | None:
    """One line for the job's summary when the analysis lost frames to damage, else None."""
    analysis = next((i for i in items if i.key == ANALYSIS), None)
    lost = analysis.extra.get("frames_lost", 0) if analysis is not None else 0
    if not lost:
        return None
    said = analysis.extra.get("ffmpeg_said") or []
    detail = f" (FFmpeg said: {'; '.join(said[:2])})" if said else ""
    return (f"{lost} frame(s) could not be decoded (the file is damaged); the {analysis.extra['frames']} "
            f"that decoded are kept with their timestamps{detail}")


# ------------------------------------------------------------------------------------ opening
def default_output(path: Path) -> Path:
    """``<name>_restored.<ext>`` beside the input."""
    return path.with_name(f"{path.stem}_restored{path.suffix}")


def find_videos(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders expanded to the video files in them (recursively, sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                            and not p.stem.endswith("_restored") and not p.name.startswith("."))
        else:
            found.append(path)
    return found


def output_for(path: Path, output: Path | None, several: bool) -> Path:
    """The output file: ``output`` itself for one input, ``output/<name>`` for several, else the default."""
    if output is None:
        return default_output(path)
    if several or output.is_dir():
        return output / path.name
    return output


def open_video_job(store: JobStore, input_path: Path, output: Path, options: VideoJobOptions,
                   progress: bool = True) -> VideoJob:
    """The job for (input, output, options): created the first time, found again afterwards."""
    input_path = Path(os.path.abspath(input_path))
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file")
    output = Path(os.path.abspath(output))
    if output == input_path:
        raise UsageError(f"the output {output} is the input itself; choose another -o")
    if output.is_dir():
        raise UsageError(f"the output {output} is a folder; give a file name")
    job = store.get_or_create_job(KIND, str(input_path), str(output), options.identity())
    return VideoJob(store, job, options, progress)
