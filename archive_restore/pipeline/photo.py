"""The photo-collection job: ``archive-restore run DIR``.

prepare (under the job lock, resumable):
  walk the folder -> one item per photo (non-images recorded as skipped, with the reason)
  analysis pass   -> per photo: faces detected, aligned, encoded; the photo's code = robust mean
                     over its faces (weighted by size x score); stored in the job store
render (one item at a time, via the runner):
  the photo's code, else its folder's (photos of one scan batch share scanner and print process),
  else the whole job's, else BlindDegEncoder on the photo itself
  -> CondSR in overlapping tiles -> faces restored (GFPGAN, when present) and pasted back
  -> written beside the mirror path atomically, metadata kept.

Each face is restored once: the analysis keeps the restored faces it read the codes from in the
job's working folder (``face_cache``) and the render pastes them; when they are missing or stale
(the photo or the restorer file changed since) the render detects and restores the faces again.

Files that change: every run compares each photo with what its item recorded when it was read (size
and mtime; the content's sha256 only when those differ): a photo replaced or edited since is done
again, a photo touched but unchanged is not, and a photo done and then gone from the folder is
reported (its output is kept; one not done yet fails with "no such file" when its turn comes).

With ``face_restorer="auto"`` and no GFPGAN file, the job says so once (``notify``) and carries on
with blind face codes and no separate face restoration: the results are those of ``"none"``.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from tqdm import tqdm

from ..errors import InputError, UsageError
from ..jobs.runner import ItemResult, Summary, Work, atomic_output, run_job
from ..jobs.store import DONE, PENDING, Item, ItemSpec, Job, JobStore
from ..media.image import DEFAULT_MAX_PIXELS, read_image, write_image, written_bit_depth
from ..media.walk import (
    FileStamp,
    Skipped,
    check_output_dir,
    content_sha256,
    default_output_dir,
    file_stamp,
    find_photos,
)
from . import face_cache, soften
from .adapt import NOT_LEARNT, Adapter, job_adapter
from .defects import DefectRepair, keep_mask
from .engine import CONDSR, Engine, EngineOptions, RestoredFaces, combine
from .estimate import Estimate, engine_terms
from .precision import job_engine
from .stack import DEFAULT_FIDELITY, DEFAULT_SCALE_METHOD

KIND = "photos"
FACES, FOLDER, JOB, BLIND = "faces", "folder", "job", "blind"


@dataclass(frozen=True)
class PhotoJobOptions:
    scale: int = 4
    face_detector: str = "auto"
    tile: int | None = None             # LQ tile; None: sized to the device's free memory
    device: str = "auto"
    models_dirs: tuple[Path, ...] = ()
    max_pixels: int = DEFAULT_MAX_PIXELS
    face_restorer: str = "auto"
    face_fidelity: float = 0.0
    upscaler: str = CONDSR              # the upscaler file (resolved from --upscaler), or "condsr"
    upscaler_sha256: str | None = None
    fidelity: float = DEFAULT_FIDELITY
    scale_method: str = DEFAULT_SCALE_METHOD  # below the upscaler's scale (``stack.upscale_to``)
    faces_without_restorer: str = soften.DEFAULT  # ``pipeline.soften``: ours, faithful (towards CondSR) or as-is
    precision: str = "auto"             # on the CPU: auto (reduced where admitted) or fp32; not the identity
    defects: str = "off"                # ``pipeline.defects``: on (scratches, cracks, dust... found and filled) or off
    adapt: str = "off"                  # ``pipeline.adapt``: on (the cleanup fine-tuned on each photo's faces) or off

    def __post_init__(self) -> None:
        if self.adapt == "on" and self.upscaler == CONDSR:
            raise UsageError("--adapt fine-tunes the cleanup, which --upscaler condsr does not use: choose an "
                             "upscaler, or leave --adapt out")

    def identity(self) -> dict:
        """The options that change the result, and so a job's identity (the device does not). The
        face-restorer options count only when they differ from their defaults, so that jobs started
        before they existed keep their identity."""
        ident = {"scale": self.scale, "face_detector": self.face_detector, "max_pixels": self.max_pixels}
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
        if self.defects != "off":
            ident["defects"] = self.defects
        if self.adapt != "off":
            ident["adapt"] = self.adapt
        return ident

    @classmethod
    def from_identity(cls, stored: dict, **runtime) -> "PhotoJobOptions":
        # none recorded: what jobs before the option did
        return cls(**{"scale_method": DEFAULT_SCALE_METHOD, **stored,
                      "faces_without_restorer": soften.recorded(stored)}, **runtime)


@dataclass
class PhotoJob:
    """One photo job being worked on: its store, options and (lazily) the engine."""

    store: JobStore
    job: Job
    options: PhotoJobOptions
    progress: bool = True
    skipped: list[Skipped] = field(default_factory=list)
    notify: Callable[[str], None] = field(default=lambda message: tqdm.write(f"note: {message}", file=sys.stderr))
    _engine: Engine | None = None
    _codes: dict[str, np.ndarray] | None = None
    _repair: DefectRepair | None = None
    _adapter: Adapter | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = job_engine(EngineOptions.of(self.options), self.store.job_dir(self.job.id), self.notify)
            for message in self._engine.notices:
                self.notify(message)
        return self._engine

    def repaired(self, rgb: np.ndarray, item: Item | None = None) -> tuple[np.ndarray, dict]:
        """The photo with its scratches, cracks and dust filled (``--defects on``), and what to record; as it
        is otherwise. The analysis and the render both see the repaired photo; the render (given its ``item``)
        also keeps the mask of what was filled for the report (``defects.keep_mask``)."""
        if self.options.defects != "on":
            return rgb, {}
        if self._repair is None:
            self._repair = DefectRepair.load(list(self.options.models_dirs), self.engine.device)
        fixed, mask = self._repair.repair(rgb)
        record = {"defect_percent": round(100.0 * float(mask.mean()), 4)}
        if item is not None:
            record["defect_mask"] = keep_mask(self.store.job_dir(self.job.id), item.key, mask)
        return fixed, record

    def adapted(self, item: Item, rgb: np.ndarray, code_source: str) -> tuple[torch.nn.Module | None, dict]:
        """The cleanup fine-tuned on the photo's own faces with its own code (``--adapt on``; ``pipeline.adapt``)
        and what to record; else (None, {}): the shipped cleanup. A photo restored with a folder's, the job's or
        a blind code, or whose faces are too small, keeps the shipped cleanup (said in what is recorded)."""
        if self.options.adapt != "on":
            return None, {}
        if self._adapter is None:
            self._adapter = job_adapter(self.engine, self.options, self.store.job_dir(self.job.id), self.notify)
        restored = self.own_faces(item, rgb) if code_source == FACES and self.engine.teaches else None
        pairs = self.engine.face_pairs(rgb, restored) if restored is not None else []
        if not pairs:
            why = ("no face of its own restored" if code_source != FACES or self.engine.restorer is None
                   else NOT_LEARNT if restored is None
                   else "its faces too small")
            return None, {"adapted": None, "adapt_skipped": why}
        return self._adapter.adapted(np.asarray(item.code, np.float32), pairs, self.progress)

    def own_faces(self, item: Item, rgb: np.ndarray) -> RestoredFaces | None:
        """The photo's restored faces: those the analysis kept, else restored again (a render after a crash that
        came after the kept ones were removed), at the precision they are kept in (float16, ``face_cache``), so
        that the faces an adaptation learns from are the same either way."""
        kept = self.kept_faces(item)
        if kept is not None:
            return kept
        again = self.engine.face_codes(rgb).restored
        if again is None:
            return None
        return RestoredFaces(again.faces, np.asarray(again.crops, np.float16).astype(np.float32))

    # ------------------------------------------------------------------------------------ prepare
    def prepare(self, job: Job) -> None:
        self.add_items()
        self.analyse()

    def add_items(self) -> None:
        """Walk the input; new photos become pending items, non-images are recorded as skipped."""
        root = Path(self.job.input)
        walked = {PurePosixPath(rel).as_posix(): path for path, rel in find_photos(root, self.skipped)}
        self.recheck_inputs(walked)
        specs = [_spec(path, key) for key, path in walked.items()]
        specs += [ItemSpec(key=_key(s.path, root), extra={"walk_skip": s.reason}) for s in self.skipped]
        self.store.add_items(self.job.id, specs)
        for item in self.store.items(self.job.id, status=PENDING):
            if "walk_skip" in item.extra:
                self.store.mark_skipped(item.id, item.extra["walk_skip"])

    def recheck_inputs(self, walked: dict[str, Path]) -> None:
        """Compare the photos the job knows with the files now there: changed ones go back to work,
        gone ones are reported (outputs kept), and the job says so once."""
        changed, gone = [], []
        for item in self.store.items(self.job.id):
            if "walk_skip" in item.extra:
                continue
            path = walked.get(item.key)
            if path is None:  # (an item not done yet fails with "no such file" when its turn comes)
                gone += [item.key] if item.status == DONE and self.mark_gone(item) else []
            elif self.recheck(item, path):
                changed.append(item.key)
        if changed:
            self.notify(f"{len(changed)} photo(s) changed since they were read, done again: {_names(changed)}")
        if gone:
            self.notify(f"{len(gone)} photo(s) gone from {self.job.input} since the job saw them (outputs "
                        f"already written are kept): {_names(gone)}")

    def recheck(self, item: Item, path: Path) -> bool:
        """Whether ``path`` holds other content than the item was made from (then it is put back to
        work). The content is hashed only when size or mtime differ, or the photo had gone."""
        stamp, was_gone = file_stamp(path), bool(item.extra.get("gone"))
        if stamp is None or (stamp.size == item.size and stamp.mtime == item.mtime and not was_gone):
            return False  # unchanged (or unreadable: the render fails it with the reason)
        try:
            digest = content_sha256(path)
        except OSError:
            return False
        if digest == item.sha256 and (item.status == DONE or not was_gone):  # touched, or back as it was
            self.store.set_source(item.id, size=stamp.size, mtime=stamp.mtime, sha256=digest)
            if was_gone:
                self.store.update_item(item.id, extra={"gone": None})
            return False
        if not was_gone and item.status == PENDING and item.faces is None:  # not read yet: nothing to redo
            self.store.set_source(item.id, size=stamp.size, mtime=stamp.mtime, sha256=None)
            return False
        self.store.source_changed(item.id, size=stamp.size, mtime=stamp.mtime, sha256=None)
        return True

    def mark_gone(self, item: Item) -> bool:
        """Record that a done item's photo is no longer in the input (its output is kept); True the
        first time."""
        if item.extra.get("gone"):
            return False
        self.store.update_item(item.id, extra={"gone": True})
        return True

    def analyse(self) -> None:
        """Faces and codes for every photo not analysed yet (``faces`` is null until then)."""
        todo = self.to_analyse()
        for item in tqdm(todo, desc="analysing faces", unit="photo", disable=not self.progress or not todo):
            self.analyse_one(item)

    def to_analyse(self) -> list[Item]:
        return [i for i in self.store.items(self.job.id, status=PENDING) if i.faces is None]

    def analyse_one(self, item: Item) -> None:
        """One photo's faces and face code, recorded with ``update_item`` (on a cluster, by a worker: the
        driver replays the writes). The engine is made first, whatever the photo: the first photo analysed
        chooses the job's precision and records it (``precision.job_engine``)."""
        engine = self.engine  # outside any try: a missing network stops the job with its message
        try:
            photo = read_image(self.source(item), self.options.max_pixels)
        except InputError:
            return  # the render pass fails this item with the reason
        rgb, _ = self.repaired(_rgb(photo.pixels))
        try:
            found = engine.face_codes(rgb)
        except Exception as exc:  # a face-analysis failure costs this photo its face code, not the job
            self.store.update_item(item.id, faces=0, extra={"analysis_error": f"{type(exc).__name__}: {exc}"})
            return
        if found.restored is not None:
            self.keep_faces(item, found.restored)
        if found.count:
            self.store.update_item(item.id, faces=found.count, code=combine(found.codes, found.weights).tolist(),
                                   code_source=FACES, extra={"detector": found.detector, "face_codes": found.source})
        else:
            self.store.update_item(item.id, faces=0, extra={"detector": found.detector})

    def keep_faces(self, item: Item, restored: RestoredFaces) -> None:
        """Keep the photo's restored faces for its render (on failure the render restores them again)."""
        try:
            face_cache.save(self.kept_path(item), restored, self.kept_stamp(item))
        except OSError as exc:
            self.store.update_item(item.id, extra={"kept_faces_error": f"{type(exc).__name__}: {exc}"})

    def kept_faces(self, item: Item) -> RestoredFaces | None:
        """The restored faces the analysis kept for this photo, when still valid."""
        if self.engine.restorer is None or not self.kept_path(item).is_file():
            return None
        return face_cache.load(self.kept_path(item), self.kept_stamp(item))

    def kept_path(self, item: Item) -> Path:
        return face_cache.cache_path(self.store.job_dir(self.job.id), item.key)

    def kept_stamp(self, item: Item) -> dict:
        return face_cache.stamp(item.key, self.source(item), self.engine.restorer.path)

    # ------------------------------------------------------------------------------------- render
    def source(self, item: Item) -> Path:
        return Path(self.job.input) / item.key if Path(self.job.input).is_dir() else Path(self.job.input)

    def destination(self, item: Item) -> Path:
        return Path(self.job.output) / item.key

    def code_for(self, item: Item, rgb: np.ndarray) -> tuple[np.ndarray, str]:
        """The photo's own face code, else its folder's, else the job's, else a blind code."""
        if item.code_source == FACES and item.code is not None:
            return np.asarray(item.code, np.float32), FACES
        codes = self.shared_codes()
        folder = str(PurePosixPath(item.key).parent)
        if folder in codes:
            return codes[folder], FOLDER
        if "" in codes:
            return codes[""], JOB
        return self.engine.image_blind_code(rgb), BLIND

    def shared_codes(self) -> dict[str, np.ndarray]:
        """Folder codes (robust mean of the face codes of photos in each folder) and the job's (key "")."""
        if self._codes is None:
            by_folder: dict[str, list[np.ndarray]] = {}
            for it in self.store.items(self.job.id):
                if it.code_source == FACES and it.code is not None:
                    by_folder.setdefault(str(PurePosixPath(it.key).parent), []).append(np.asarray(it.code, np.float32))
            self._codes = {k: combine(np.stack(v)) for k, v in by_folder.items()}
            if by_folder:
                self._codes[""] = combine(np.concatenate([np.stack(v) for v in by_folder.values()]))
        return self._codes

    def process(self, item: Item) -> ItemResult:
        started = time.monotonic()
        self.record_source(item)
        photo = read_image(self.source(item), self.options.max_pixels)
        rgb, repair = self.repaired(_rgb(photo.pixels), item)
        code, source = self.code_for(item, rgb)
        out = self.destination(item)
        # an 8-bit output without faces to paste is rounded to 8 bits as the picture is made: a 3840x2160
        # photo at x4 is then 0.4 GB instead of 1.6 GB of float32 (its tiles finish a row at a time,
        # ``run_tiled``); faces are pasted into the float picture, which is rounded once, after them
        pastes = self.engine.restorer is not None and bool(item.faces)
        eight_bit = written_bit_depth(out, photo) == 8 and not pastes
        cleanup, adapted = self.adapted(item, rgb, source)
        restored, extra = self.restore_faces(rgb, self.engine.restore(rgb, code, as_uint8=eight_bit, cleanup=cleanup),
                                             item)
        with atomic_output(out) as tmp:
            write_image(tmp, restored, like=photo)
        self.kept_path(item).unlink(missing_ok=True)
        megapixels, seconds = photo.width * photo.height / 1e6, time.monotonic() - started
        self.engine.did(megapixels, seconds)  # photos differ in size: their pixels are the work
        extra.update(seconds=round(seconds, 3), megapixels=round(megapixels, 4), **repair, **adapted)
        if photo.decoder_said:  # decoded, with warnings: kept with the item, not printed
            extra["decoder_said"] = photo.decoder_said
        return ItemResult(output=str(out), code=code.tolist(), code_source=source, faces=item.faces or 0, extra=extra)

    def record_source(self, item: Item) -> None:
        """Record the photo as it is read now (size, mtime, sha256): the next run compares with it."""
        path = self.source(item)
        stamp = file_stamp(path) or FileStamp(item.size, item.mtime)
        try:
            digest = content_sha256(path)
        except OSError:
            return  # missing or unreadable: read_image fails the item with the reason
        self.store.set_source(item.id, size=stamp.size, mtime=stamp.mtime, sha256=digest)

    def restore_faces(self, rgb: np.ndarray, restored: np.ndarray, item: Item) -> tuple[np.ndarray, dict]:
        """``restored`` with the restorer's faces pasted in (when there is a restorer): those the
        analysis kept, else restored now; without one, its faces pulled towards the faithful branch
        (``faces_without_restorer``, ``pipeline.soften``); and what to record."""
        try:
            kept = self.kept_faces(item)
            code = self.code_for(item, rgb)[0] if self.engine.softens else None  # the code ``restored`` was made with
            restored, pasted = self.engine.paste_faces(rgb, restored, kept, code=code)
        except Exception as exc:  # a face-restoration failure costs the photo its pasted faces, not its result
            return restored, {"paste_error": f"{type(exc).__name__}: {exc}"}
        if not pasted:
            return restored, {}
        if self.engine.restorer is None:
            return restored, {"faces_softened": pasted}
        return restored, {"faces_restored": pasted, "face_restorer": self.engine.restorer.name,
                          "faces_from": "analysis" if kept is not None else "render"}

    def run(self, restart: bool = False, retry_failed: bool = False, work: Work | None = None) -> Summary:
        """``work``: another executor's loop (``executors.ray_cluster``: its workers also analyse the photos,
        ``analyse_one``), else the runner's (which says the estimate for the photos left after the first,
        ``pipeline.estimate``)."""
        if work is None:
            process, prepare = self._estimated(Estimate(self.notify, "photo", after=1)), self.prepare
        else:
            process, prepare = self.process, lambda job: self.add_items()
        return run_job(self.store, self.job, process, self.progress, restart=restart,
                       retry_failed=retry_failed, prepare=prepare, work=work)

    def _estimated(self, estimate: Estimate) -> Callable[[Item], ItemResult]:
        """``process``, timed: this run's photos and seconds so far give ``estimate`` its rate."""
        done, seconds = 0, 0.0

        def process(item: Item) -> ItemResult:
            nonlocal done, seconds
            started = time.monotonic()
            try:
                return self.process(item)
            finally:
                done, seconds = done + 1, seconds + time.monotonic() - started
                if not estimate.said:
                    estimate.update(done, seconds, self.store.summary(self.job.id)[PENDING],
                                    *engine_terms(self.engine))

        return process


def open_photo_job(store: JobStore, input_path: Path, output: Path | None, options: PhotoJobOptions,
                   progress: bool = True) -> PhotoJob:
    """The job for (input, output, options): created the first time, found again afterwards."""
    input_path = Path(os.path.abspath(input_path))
    if not input_path.exists():
        raise InputError(f"{input_path}: no such file or folder")
    output = Path(os.path.abspath(output)) if output else default_output_dir(input_path)
    check_output_dir(input_path, output)
    job = store.get_or_create_job(KIND, str(input_path), str(output), options.identity())
    return PhotoJob(store, job, options, progress)


def _rgb(pixels: np.ndarray) -> np.ndarray:
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def _key(path: Path, root: Path) -> str:
    return PurePosixPath(os.path.relpath(path, root)).as_posix() if root.is_dir() else path.name


def _spec(path: Path, key: str) -> ItemSpec:
    stamp = file_stamp(path)
    return ItemSpec(key=key, size=stamp and stamp.size, mtime=stamp and stamp.mtime)


def _names(keys: list[str], shown: int = 5) -> str:
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more

