"""Faces without GFPGAN (``faces_without_restorer``): pulled towards the faithful branch (``faithful``, new jobs),
restored by our own small face restorer (``ours``: sharper figures on small faces, blurrier larger ones; not the
default), or left as the stack made them (``as-is``).

The upscaler after the cleanup invents texture, which on a small face (a few dozen LQ pixels) reads as a
distorted face; with GFPGAN's file present the face restorer's faces are pasted over it, without one nothing
repaired it. With ``faces_without_restorer="faithful"`` (new jobs) each face found on the LQ is blended, through
the feathered face oval ``compose_face`` pastes through (``faces.compose.face_alpha``), towards CondSR's picture
of the same pixels (the stack's faithful branch, which invents little; run on the face's LQ pixels only, with
``CONTEXT`` around them): ``picture + STRENGTH * mask * (faithful - picture)``. ``as-is`` leaves the picture as
the stack made it, what jobs recorded before the option rendered (``from_identity``). Pictures without a face
cost a detection only; CondSR-alone jobs (``--upscaler condsr``) are their own faithful picture: left alone.

``STRENGTH``, from ``python -m archive_restore.demo`` (Real-ESRGAN x4plus, fidelity 0.1, the astronaut, the one
demo photo with a face; PSNR-Y in her face box grown 10 %): as-is 21.40 dB, strength 0.25 22.10, 0.5 22.61,
0.75 22.83, 1 22.72 (bicubic 23.24, CondSR alone 22.92: the faithful branch itself is below bicubic there).
0.75: at 1 the face is a featureless blur; at 0.75 her eyes and smile show faintly, without the upscaler's
invented ones. (Bicubic of the scan as the target instead: 22.94 at 0.75, its noise blotching the face.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from ..faces import AlignedFace, Face, FaceDetector, make_detector
from ..faces.compose import MASK_SIZE, face_alpha
from ..weights.folders import models_dirs as search_dirs

CHOICES = ("ours", "faithful", "as-is")
DEFAULT = "faithful"  # new jobs
OURS = "ours"         # our face restorer (``faces.restore.OwnFaceRestorer``): not the default, see models/MODELS.md
BEFORE = "as-is"      # jobs recorded before the option existed rendered this (``from_identity``)
NO_OP = "faithful"    # what jobs recorded without the option where it changed nothing (CondSR alone) rendered
STRENGTH = 0.75       # of the faithful picture inside the face oval (0: as-is)
CONTEXT = 16          # LQ pixels around a face that CondSR sees (its receptive field; the stack's tile overlap)
DETECT_SIDE = 1280    # the LQ is enlarged (x2 at most) for finding faces up to this long side (Haar's own limit)
ALIGN_SIZE = MASK_SIZE  # faces are aligned at the mask's size: only their geometry is used, not the crop
MIN_SCORE = 0.75      # faces found on the enlarged LQ below this score are left out (measured: see ``find_faces``)
GROW = 0.1            # the face-region measure: each detected box grown by this much of its size on every side


def recorded(stored: dict) -> str:
    """The option of a job from its stored identity (``from_identity``): as recorded, else what the job rendered:
    ``BEFORE`` for a job with an upscaler and not ``--face-restorer gfpgan`` (started before the option existed),
    ``NO_OP`` elsewhere (CondSR alone, where ``faithful`` and ``as-is`` change nothing and were not recorded)."""
    if "faces_without_restorer" in stored:
        return stored["faces_without_restorer"]
    had_it = stored.get("upscaler", "condsr") != "condsr" and stored.get("face_restorer") != "gfpgan"
    return BEFORE if had_it else NO_OP


def to_record(face_restorer: str, upscaler: bool, choice: str) -> bool:
    """Whether a job's identity records ``choice``: where it changes the result and differs from what
    ``recorded`` assumes without it (GFPGAN required: never; CondSR alone: only ``ours``)."""
    if face_restorer == "gfpgan":
        return False
    return choice != BEFORE if upscaler else choice == OURS


def find_faces(detector: FaceDetector, lq: np.ndarray, min_face: float = 0.0) -> list[Face]:
    """The faces of ``lq`` (float RGB in [0, 1]) in its pixels, found on ``lq`` enlarged (bicubic) by up to 2, to
    at most ``DETECT_SIDE`` on its long side: the small faces the upscaler distorts most (a few dozen LQ pixels)
    are below what Haar's 24-pixel window finds in the LQ itself. Left out: faces smaller than ``min_face`` and
    below ``MIN_SCORE`` (enlarged, Haar finds more that are none: grass in the demo's camera scan at 0.70, a
    patch on the astronaut's suit at 0.54, where her face scores 0.77 and 0.86)."""
    factor = min(2.0, DETECT_SIDE / max(lq.shape[:2]))
    if factor > 1.0:
        size = (round(lq.shape[1] * factor), round(lq.shape[0] * factor))
        big = np.clip(cv2.resize(np.ascontiguousarray(lq, np.float32), size, interpolation=cv2.INTER_CUBIC), 0, 1)
        faces = [f.scaled(lq.shape[1] / size[0]) for f in detector.detect(big)]
    else:
        faces = detector.detect(lq)
    return [f for f in faces if min(f.width, f.height) >= min_face and f.score >= MIN_SCORE]


def soften(picture: np.ndarray, lq: np.ndarray, faces: Sequence[AlignedFace],
           faithful: Callable[[np.ndarray], np.ndarray], scale: int, strength: float = STRENGTH) -> np.ndarray:
    """``picture`` (the restored ``lq`` at ``scale``; float in [0, 1] or uint8) with each face of ``faces``
    (aligned on ``lq``) pulled towards ``faithful(lq pixels)`` (float32 HxWx3 at ``scale``) by ``strength`` through
    its feathered oval: a new array of ``picture``'s dtype (the caller's is kept: the video's temporal steadier
    holds it), or ``picture`` itself when no face lies in it. Pixels outside the ovals are left as they are."""
    height, width = picture.shape[:2]
    out = None
    for face in faces:
        found = face_alpha(face, height, width, scale)
        if found is None:
            continue
        (x0, y0, x1, y1), alpha = found
        lx0, ly0 = max(0, x0 // scale - CONTEXT), max(0, y0 // scale - CONTEXT)
        lx1, ly1 = min(lq.shape[1], -(-x1 // scale) + CONTEXT), min(lq.shape[0], -(-y1 // scale) + CONTEXT)
        sharp = faithful(lq[ly0:ly1, lx0:lx1])
        sharp = sharp[y0 - ly0 * scale:y1 - ly0 * scale, x0 - lx0 * scale:x1 - lx0 * scale]
        out = picture.copy() if out is None else out
        region = out[y0:y1, x0:x1]
        own = region.astype(np.float32) / np.float32(255.0) if region.dtype == np.uint8 else region
        blended = own + np.float32(strength) * alpha[:, :, None] * (sharp - own)
        out[y0:y1, x0:x1] = np.round(np.clip(blended, 0, 1) * 255) if out.dtype == np.uint8 else blended
    return picture if out is None else out


def face_region(rgb: np.ndarray, detector: str = "auto", models_dirs: Sequence[Path | str] = (),
                grow: float = GROW) -> tuple[np.ndarray | None, str]:
    """Where the faces of ``rgb`` are, for measuring (the demo's face-region PSNR): found by ``detector`` (a
    job's ``--face-detector``, its files looked for as the engine does, ``models_dirs`` first), each box grown
    by ``grow`` of its size on every side, as a boolean HxW mask (None without a face); and the detector's name."""
    finder = make_detector(detector, [str(d) for d in search_dirs(list(models_dirs))])  # as the engine's
    faces = finder.detect(rgb)
    if not faces:
        return None, finder.name
    mask = np.zeros(rgb.shape[:2], bool)
    for face in faces:
        x0, y0, x1, y1 = face.box
        dx, dy = grow * (x1 - x0), grow * (y1 - y0)
        top, bottom = max(0, int(y0 - dy)), max(0, int(np.ceil(y1 + dy)))
        left, right = max(0, int(x0 - dx)), max(0, int(np.ceil(x1 + dx)))
        mask[top:bottom, left:right] = True
    return mask, finder.name
