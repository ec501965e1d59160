"""The restoration engine shared by photos and video: faces -> codes -> the restoration stack, on one
device. The stack (``pipeline.stack``) is the code-steered Cleanup, then the job's upscaler file,
blended towards CondSR by ``fidelity``; with ``upscaler="condsr"`` it is CondSR alone.

Networks, the face detector and the face restorer are loaded once per engine. With a face restorer
(GFPGAN, found in the models folders), a face's code is ReDegNet's paired code
``DegEncoder(lq_face, restored_face)`` and restored faces are pasted into the restored picture;
without one, the code comes from BlindDegEncoder on the aligned LQ face, and ``notices`` says so.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..codes import blind_code, image_to_tensor, paired_face_code, robust_mean
from ..compute.device import resolve_device, tune_for
from ..compute.threads import governor_for
from ..errors import ModelNotFoundError, UsageError
from ..faces import AlignedFace, Face, align_face, make_detector
from ..faces.compose import compose_face, is_gray, to_gray
from ..faces.parse import FaceParser, find_parser, load_face_parser
from ..faces.parse import missing_notice as parse_missing_notice
from ..faces.restore import (
    CHOICES,
    FaceRestorer,
    OwnFaceRestorer,
    find_gfpgan,
    load_face_restorer,
    load_own_face_restorer,
    missing_notice,
)
from ..faces.steady import SteadyFaces, TrackSmoother
from ..nets import load_checkpoint
from ..upscalers.runtime import precision_choice
from ..upscalers.upscaler import CONDSR, Upscaler, UpscalerRef, load_upscaler
from ..weights.folders import MODEL_FILES, find_model, models_dirs
from . import soften
from .adapt import face_pair
from .forward import FastCondSR, FrameRestorer, restore_nhwc
from .stack import DEFAULT_FIDELITY, DEFAULT_SCALE_METHOD, StackRestorer, faithful_dtype

ALIGNED_SIZE = 512
DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # precisions by name


@dataclass(frozen=True)
class RestoredFaces:
    """Faces of one picture (in its pixel coordinates) and the face restorer's crops of them."""

    faces: tuple[Face, ...]
    crops: np.ndarray  # (N, 512, 512, 3) float32 in [0, 1]


@dataclass(frozen=True)
class FaceCodes:
    """Codes of the usable faces of one image, with their weights (face size x detector score)."""

    codes: np.ndarray    # (N, D)
    weights: np.ndarray  # (N,)
    detector: str
    source: str = "blind"  # "paired" (DegEncoder with the restored face) or "blind"
    restored: RestoredFaces | None = None  # the faces and their restored crops, with a face restorer

    @property
    def count(self) -> int:
        return len(self.codes)


@dataclass(frozen=True)
class EngineOptions:
    scale: int = 4
    device: str = "auto"
    face_detector: str = "auto"
    models_dirs: Sequence[Path] = ()
    tile: int | None = None  # LQ tile; None: sized to the device's free memory (``FrameRestorer.plan``)
    min_face: int = 16  # faces smaller than this many LQ pixels carry too little to read a code from
    face_restorer: str = "auto"  # auto (GFPGAN when its file is present), gfpgan (required), ours (FaceNet), none
    face_fidelity: float = 0.0   # pasted faces: 0 the restored face, 1 the picture's own
    upscaler: str = CONDSR       # the upscaler file after the cleanup, or "condsr" (CondSR alone, no cleanup)
    upscaler_sha256: str | None = None  # the file's sha256 when the job started (checked when loading)
    fidelity: float = DEFAULT_FIDELITY  # blend of the upscaler's picture towards CondSR's
    scale_method: str = DEFAULT_SCALE_METHOD  # below the upscaler's scale: ``stack.upscale_to``
    # On the CPU (a GPU runs as before: the upscaler in fp16, the rest under the device's autocast):
    precision: str = "auto"         # auto: reduced precision where admitted (``upscalers.runtime``); fp32: never
    upscaler_runtime: str = "auto"  # the upscaler's runtime: auto (measured), or one by name (a job's pinned one)
    runtime_recorded: bool = False  # upscaler_runtime is the job's own, recorded on this kind of machine: not re-timed
    faithful: str = "auto"          # the faithful branch: auto (``stack.faithful_dtype``), or fp32, fp16, bf16
    faces_without_restorer: str = soften.DEFAULT  # ``pipeline.soften``: ours, faithful (towards CondSR) or as-is

    @classmethod
    def of(cls, options: object) -> "EngineOptions":
        """The engine options among a job's options (those with the same names; the rest keep defaults)."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)})


class Engine:
    def __init__(self, options: EngineOptions):
        self.options = options
        self.notices: list[str] = []
        self.device = resolve_device(options.device, notify=self.notices.append)
        tune_for(self.device)
        self.threads = governor_for(self.device)  # the CPU's thread count, re-decided from the work done
        self._restorer: tuple[tuple, FrameRestorer] | None = None
        dirs = list(options.models_dirs)
        self.sr = load_checkpoint(find_model("condsr_compact", dirs), self.device, expect="CondSR").model
        self.cleanup, self.upscaler = self._load_upscaler(dirs)
        self.blind = load_checkpoint(find_model("blind_encoder", dirs), self.device, expect="BlindDegEncoder").model
        self.detector = make_detector(options.face_detector, [str(d) for d in models_dirs(dirs)], str(self.device))
        self.restorer, self.paired = self._load_restorer(dirs)
        self.parser = self._load_parser(dirs) if self.restorer is not None else None

    def _load_restorer(self, dirs: list[Path]) -> tuple[FaceRestorer | None, torch.nn.Module | None]:
        """GFPGAN and the paired DegEncoder; without GFPGAN (``auto`` finding no file, or ``none``) and with
        ``faces_without_restorer`` ours, our face restorer without the paired encoder (its faces are smoother than
        the restored faces the encoder learnt from, so codes stay blind); else (None, None). ``auto`` says which,
        once."""
        choice, faces = self.options.face_restorer, self.options.faces_without_restorer
        if choice not in CHOICES:
            raise UsageError(f"unknown face restorer {choice!r}; choose one of {', '.join(CHOICES)}")
        if faces not in soften.CHOICES:
            raise UsageError(f"unknown faces_without_restorer {faces!r}; choose one of {', '.join(soften.CHOICES)}")
        self.faces_without_restorer = faces
        path = None if choice == "none" else find_gfpgan(dirs)
        if path is None:
            if choice == "gfpgan":
                raise ModelNotFoundError(missing_notice().replace("no face restorer: ", "--face-restorer gfpgan: ", 1))
            own = self._load_own(dirs) if faces == soften.OURS else None
            if faces == soften.OURS and own is None:  # its file is in no models folder: faces go faithful
                self.faces_without_restorer = soften.NO_OP
            if choice == "auto":
                said = missing_notice(ours=own is not None)
                if self.faces_without_restorer != faces:
                    said += (f" Our own face restorer's {MODEL_FILES['face_net']} is in no models folder either: faces "
                             "are pulled towards CondSR instead (faithful).")
                self.notices.append(said)
            return own, None
        paired = load_checkpoint(find_model("deg_encoder", dirs), self.device, expect="DegEncoder").model
        return load_face_restorer(path, self.device), paired

    def _load_own(self, dirs: list[Path]) -> OwnFaceRestorer | None:
        """Our face restorer; None where its file is in no models folder."""
        try:
            return load_own_face_restorer(dirs, self.device)
        except ModelNotFoundError:
            return None

    def _load_upscaler(self, dirs: list[Path]) -> tuple[torch.nn.Module | None, Upscaler | None]:
        """The cleanup and the upscaler after it, or (None, None) for CondSR alone."""
        if self.options.upscaler == CONDSR:
            return None, None
        path = Path(self.options.upscaler)
        ref = UpscalerRef(name=path.stem, path=str(path), sha256=self.options.upscaler_sha256, source="the job's upscaler")
        upscaler = load_upscaler(ref, self.device, runtime=self.options.upscaler_runtime,
                                 recorded=self.options.runtime_recorded,
                                 precision=self.options.precision)
        if self.device.type == "cuda":  # fp16, as Real-ESRGAN runs its models on a GPU
            upscaler.model.half()
        cleanup = load_checkpoint(find_model("cleanup_compact", dirs), self.device, expect="Cleanup").model
        return cleanup, upscaler

    @functools.cached_property
    def faithful_dtype(self) -> torch.dtype | None:
        """What the stack's faithful branch computes in: ``options.faithful`` when named, fp32 at precision
        fp32 on the CPU, else ``stack.faithful_dtype``."""
        if self.options.faithful != "auto":
            if self.options.faithful not in DTYPES:
                raise UsageError(f"unknown precision {self.options.faithful!r}; choose one of {', '.join(DTYPES)}")
            return DTYPES[self.options.faithful]
        if self.device.type == "cpu" and precision_choice(self.options.precision) == "fp32":
            return None
        return faithful_dtype(self.device)

    def precisions(self) -> dict[str, str | None]:
        """What the restoration stack computes in, by name: the upscaler's runtime (None without one) and the
        faithful branch's precision; what a job pins (``pipeline.precision``)."""
        names = {dtype: name for name, dtype in DTYPES.items()}
        return {"upscaler_runtime": None if self.upscaler is None else self.upscaler.runtime.name,
                "faithful": names[self.faithful_dtype]}

    def _load_parser(self, dirs: list[Path]) -> FaceParser | None:
        """The face parsing model for paste-back masks, or None with a notice (a feathered ellipse)."""
        found = find_parser(dirs, str(self.device))
        if found is None:
            self.notices.append(parse_missing_notice())
            return None
        return load_face_parser(*found, self.device)

    @property
    def code_dim(self) -> int:
        return self.sr.code_dim

    def detect_faces(self, rgb: np.ndarray) -> list[Face]:
        """The faces of an RGB float image large enough to read. With our face restorer, looked for as
        ``faithful`` looks for them (``soften.find_faces``: on the picture enlarged, so that the faces of a few
        dozen pixels it is made for are found; GFPGAN's jobs keep the plain search they were recorded with)."""
        if isinstance(self.restorer, OwnFaceRestorer):
            return soften.find_faces(self.detector, rgb, self.options.min_face)
        return [f for f in self.detector.detect(rgb) if min(f.width, f.height) >= self.options.min_face]

    def usable_faces(self, rgb: np.ndarray) -> list[AlignedFace]:
        """The faces of an RGB float image large enough to read, aligned to the 512 template."""
        return [align_face(rgb, f, ALIGNED_SIZE) for f in self.detect_faces(rgb)]

    def face_codes(self, rgb: np.ndarray) -> FaceCodes:
        """Detect, align and encode every usable face of an RGB float image (paired codes when a face
        restorer is loaded, blind codes otherwise); with a restorer, the restored faces come along so
        that they can be pasted without restoring them again."""
        aligned = self.usable_faces(rgb)
        if not aligned:
            return FaceCodes(np.zeros((0, self.code_dim), np.float32), np.zeros(0, np.float32), self.detector.name)
        gray, crops = is_gray(rgb), [a.crop for a in aligned]
        faces = tuple(a.face for a in aligned)
        restored = None if self.restorer is None else RestoredFaces(faces, self.restored_faces(crops, gray))
        codes, source = self.encode_faces(aligned, gray, None if restored is None else restored.crops)
        weights = np.array([np.sqrt(f.width * f.height) * f.score for f in faces], np.float32)
        return FaceCodes(codes, weights, self.detector.name, source, restored)

    def encode_faces(self, aligned: Sequence[AlignedFace], gray: bool = False,
                     restored: np.ndarray | None = None) -> tuple[np.ndarray, str]:
        """Codes (N x D) of aligned LQ faces and their source: ``paired`` (DegEncoder with the
        restorer's face, read at the face's own scale; ``restored`` when the caller has them
        already) when a face restorer is loaded, else ``blind``."""
        crops = [a.crop for a in aligned]
        lq = torch.cat([image_to_tensor(c) for c in crops]).to(self.device)
        with torch.inference_mode():
            if self.paired is None:
                return self.blind(lq).float().cpu().numpy(), "blind"
            restored = self.restored_faces(crops, gray) if restored is None else restored
            hq = torch.from_numpy(np.ascontiguousarray(restored, np.float32)).permute(0, 3, 1, 2).to(self.device)
            codes = [paired_face_code(self.paired, lq[i : i + 1], hq[i : i + 1], a.source_pixels)
                     for i, a in enumerate(aligned)]
            return torch.cat(codes).float().cpu().numpy(), "paired"

    def face_pairs(self, rgb: np.ndarray, restored: RestoredFaces) -> list:
        """Each restored face of ``rgb`` with its LQ face, both at the face's own size in the picture
        (``adapt.face_pair``; faces too small to learn from are left out)."""
        pairs = []
        for face, crop in zip(restored.faces, restored.crops):
            aligned = align_face(rgb, face, ALIGNED_SIZE)
            pair = face_pair(aligned.crop, crop, aligned.source_pixels)
            if pair is not None:
                pairs.append(pair)
        return pairs

    def restored_faces(self, crops: Sequence[np.ndarray], gray: bool = False) -> np.ndarray:
        """The face restorer's output for aligned face crops (N x 512 x 512 x 3), gray for a gray photo."""
        restored = self.restorer.restore(crops)
        return np.stack([to_gray(f) for f in restored]) if gray else restored

    def paste_faces(self, lq: np.ndarray, picture: np.ndarray, restored: RestoredFaces | None = None,
                    steady: SteadyFaces | None = None, code: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """``picture`` (the restored ``lq``, at the engine's scale) with every usable face of ``lq``
        restored and pasted back, and the number of faces pasted. Without a restorer, faces are pulled towards
        the faithful branch instead (``soften_faces``, given the ``code`` ``picture`` was restored with: the
        number is then of faces softened); unchanged without a ``code``.

        ``restored``: the faces of ``lq`` restored already (by the analysis), pasted as they are.
        ``picture`` may be uint8 (a photo rendered straight to 8 bits): it becomes float32 when a face
        is pasted, and stays as it is otherwise.
        ``steady``: the video frames' faces followed along tracks (smoothed landmarks, so a steady
        crop and mask; each restored face and its parsed mask blended with its track's previous ones
        while still).
        """
        if self.restorer is None:
            return self.soften_faces(lq, picture, code, steady)
        if lq.dtype == np.uint8:  # video frames are decoded as uint8 (a quarter of the bytes to the device)
            lq = lq.astype(np.float32) / 255.0
        gray = is_gray(lq)
        if restored is None:
            followed = self._follow(lq, steady)
            smoothers = [s for _, s in followed]
            aligned = [align_face(lq, f, ALIGNED_SIZE) for f, _ in followed]
            crops = self.restored_faces([a.crop for a in aligned], gray) if aligned else []
            # at the precision the photo job keeps restored faces in (float16, ``face_cache``): a photo
            # whose kept faces are gone (a crash after its write, before it was marked done) is
            # rendered again to the same bytes
            crops = [np.asarray(c, np.float16).astype(np.float32) for c in crops]
        else:
            aligned, crops = [align_face(lq, f, ALIGNED_SIZE) for f in restored.faces], list(restored.crops)
            smoothers = [None] * len(aligned)
        crops = [c if s is None else s.face(a, c) for s, a, c in zip(smoothers, aligned, crops)]
        masks = self.face_masks(crops)
        masks = [m if m is None or s is None else s.mask(a, m) for s, a, m in zip(smoothers, aligned, masks)]
        if aligned and picture.dtype == np.uint8:  # a photo rendered straight to 8 bits: faces blend in float
            picture = picture.astype(np.float32) / np.float32(255.0)
        for face, crop, mask in zip(aligned, crops, masks):
            picture = compose_face(picture, crop, face, self.options.scale, self.options.face_fidelity, gray, mask)
        return picture, len(aligned)

    @property
    def teaches(self) -> bool:
        """Whether ``--adapt`` learns from this engine's restored faces: GFPGAN's. Our face restorer's are too soft to
        learn from: adapted to them, the five real photos with faces of ``real/photos/redegnet_lqs`` came out softer
        and less natural (NIQE over the 15 photos 6.06 -> 6.95; models/MODELS.md)."""
        return self.restorer is not None and not isinstance(self.restorer, OwnFaceRestorer)

    @property
    def softens(self) -> bool:
        """Whether ``soften_faces`` changes a picture: no face restorer, ``faces_without_restorer`` faithful, and
        a stack whose picture is not the faithful one already (an upscaler, ``fidelity`` below 1)."""
        return (self.restorer is None and self.upscaler is not None and self.options.fidelity < 1
                and self.faces_without_restorer == "faithful")

    def soften_faces(self, lq: np.ndarray, picture: np.ndarray, code: np.ndarray | None,
                     steady: SteadyFaces | None = None) -> tuple[np.ndarray, int]:
        """Without a face restorer (``softens``): ``picture`` (``lq`` restored with ``code``; float or uint8) with
        the faces of ``lq`` pulled towards CondSR's picture of them through a feathered oval (``pipeline.soften``),
        a new array (the caller's is left as it is), and the number of faces; ``picture`` itself and 0 when
        nothing is to be done (no ``code``, no face). ``steady``: a video's faces followed along their tracks."""
        if code is None or not self.softens:
            return picture, 0
        if lq.dtype == np.uint8:
            lq = lq.astype(np.float32) / 255.0
        faces = soften.find_faces(self.detector, lq, self.options.min_face)
        if steady is not None:
            faces = [f for f, _ in steady.follow(faces)]
        if not faces:
            return picture, 0
        aligned = [align_face(lq, f, soften.ALIGN_SIZE) for f in faces]
        return soften.soften(picture, lq, aligned, lambda crop: self.faithful_picture(crop, code),
                             self.options.scale), len(aligned)

    @functools.cached_property
    def _faithful(self) -> FastCondSR:
        return FastCondSR(self.sr, self.device, dtype=self.faithful_dtype)  # as the stack's (``frame_restorer``)

    def faithful_picture(self, lq: np.ndarray, code: np.ndarray) -> np.ndarray:
        """The stack's faithful branch alone (CondSR with ``code``, in its precision) on an HxWx3 float picture,
        at the engine's scale: float32 HxWx3 in [0, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(lq, np.float32)).permute(2, 0, 1)[None].to(self.device)
        z = torch.from_numpy(np.asarray(code, np.float32)).reshape(1, -1).to(self.device)
        with torch.inference_mode():
            return restore_nhwc(self._faithful, x, z, self.options.scale)[0].float().cpu().numpy()

    def face_masks(self, crops: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Parsed paste-back masks of restored face crops; None (the ellipse) per face without a parser
        or where the parse is not trusted."""
        if self.parser is None or not len(crops):
            return [None] * len(crops)
        return self.parser.masks(crops)

    def _follow(self, lq: np.ndarray, steady: SteadyFaces | None) -> list[tuple[Face, TrackSmoother | None]]:
        faces = self.detect_faces(lq)
        return steady.follow(faces) if steady is not None else [(f, None) for f in faces]

    def image_blind_code(self, rgb: np.ndarray) -> np.ndarray:
        """A code from the LQ image alone (no face to read one from)."""
        return blind_code(self.blind, image_to_tensor(rgb, self.device)).float().cpu().numpy()[0]

    def did(self, units: float, seconds: float) -> None:
        """``units`` of work (frames, or output megapixels) done in ``seconds``: the thread governor's measure."""
        if self.threads is not None:
            self.threads.record(units, seconds)

    def restore(self, rgb: np.ndarray, code: np.ndarray, as_uint8: bool = False,
                cleanup: torch.nn.Module | None = None) -> np.ndarray:
        """The picture restored with ``code`` at the engine's output scale (``restore_frames``)."""
        return self.restore_frames([rgb], code, as_uint8=as_uint8, cleanup=cleanup)[0]

    def restore_frames(self, frames: Sequence[np.ndarray], code: np.ndarray, batch: int = 1,
                       as_uint8: bool = False, cleanup: torch.nn.Module | None = None) -> list[np.ndarray]:
        """HxWx3 frames restored with ``code`` at the engine's scale: through the stack (cleanup ->
        upscaler, blended towards CondSR by ``fidelity``; ``pipeline.stack``) when there is an
        upscaler, else CondSR alone. CondSR runs through the fast forward (``pipeline.forward``):
        up to ``batch`` whole frames per pass when they fit the device's memory (or the fixed tile), tiled
        otherwise, smaller batches and then smaller tiles after an out-of-memory error (said once).
        ``as_uint8``: rounded to uint8 on the device, as the encoder takes them. ``cleanup``: another cleanup
        than the shipped one (``--adapt``: fine-tuned to ``code``, ``pipeline.adapt``)."""
        restorer = self.frame_restorer(batch)
        if self.upscaler is not None:
            restorer.net.use_cleanup(cleanup if cleanup is not None else self.cleanup)
        return restorer.restore(frames, code, as_uint8)

    def frame_restorer(self, batch: int = 1) -> FrameRestorer:
        """The restorer ``restore_frames`` uses (made once per network and batch: it keeps what an
        out-of-memory error taught it)."""
        key = (id(self.sr), batch)
        if self._restorer is None or self._restorer[0] != key:
            o = self.options
            if self.upscaler is None:
                restorer = FrameRestorer(FastCondSR(self.sr, self.device), o.scale, batch, o.tile)
            else:  # the faithful branch, blended in at `fidelity`, in half precision where the CPU has AMX
                faithful = FastCondSR(self.sr, self.device, dtype=self.faithful_dtype)
                restorer = StackRestorer(self.cleanup, self.upscaler, self.upscaler.scale, faithful, o.fidelity,
                                         o.scale, self.device, batch, o.tile, method=o.scale_method)
            self._restorer = (key, restorer)
        return self._restorer[1]


def combine(codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Robust weighted mean of codes (N x D) -> D."""
    w = None if weights is None else torch.from_numpy(np.asarray(weights, np.float32))
    return robust_mean(torch.from_numpy(np.asarray(codes, np.float32)), w).numpy()[0]

