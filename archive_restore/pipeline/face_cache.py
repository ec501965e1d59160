"""Restored faces kept from a photo's analysis for its render, so that each face is restored once.

The analysis pass restores every face of a photo (its code is ``DegEncoder(LQ face, restored
face)``); the render pastes those same restored faces. Between the two they wait in the job's
working folder, one file per photo: ``faces/<sha1 of the item key>.npz`` holding the faces (boxes,
scores, landmarks, detector), the restored crops as float16, and what they were made from (the item
key, the photo's size and mtime, the face restorer's file). The render uses the file only when all
of that still holds, and otherwise detects and restores again: a missing, stale or unreadable file
costs time, never a wrong face. Files are written atomically and removed once the photo is written.
A file holds about 1.5 MB per face.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..faces import Face
from ..jobs.runner import atomic_output
from .engine import RestoredFaces

FOLDER = "faces"


def cache_path(job_dir: Path, key: str) -> Path:
    """Where the restored faces of the photo with item key ``key`` are kept."""
    return job_dir / FOLDER / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.npz"


def stamp(key: str, photo: Path, restorer: Path) -> dict:
    """What a file must have been made from to be used: the item, the photo as it is, the restorer."""
    st, rs = photo.stat(), Path(restorer).stat()
    return {"key": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "restorer": str(restorer), "restorer_size": rs.st_size, "restorer_mtime_ns": rs.st_mtime_ns}


def save(path: Path, restored: RestoredFaces, made_from: dict) -> None:
    faces = restored.faces
    marks = np.stack([np.full((5, 2), np.nan, np.float32) if f.landmarks is None else f.landmarks for f in faces])
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, crops=np.asarray(restored.crops, np.float16),
                 boxes=np.array([f.box for f in faces], np.float64), scores=np.array([f.score for f in faces]),
                 landmarks=marks, detectors=np.array([f.detector for f in faces]),
                 stamp=np.array(json.dumps(made_from, sort_keys=True)))


def load(path: Path, made_from: dict) -> RestoredFaces | None:
    """The restored faces kept in ``path`` when they were made from ``made_from``, else None."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["stamp"])) != made_from:
                return None
            faces = tuple(Face(tuple(float(v) for v in box), float(score), None if np.isnan(marks).any() else marks,
                               str(name))  # type: ignore[arg-type]
                          for box, score, marks, name in zip(data["boxes"], data["scores"], data["landmarks"],
                                                             data["detectors"]))
            crops = data["crops"].astype(np.float32)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return RestoredFaces(faces, crops) if len(faces) == len(crops) else None
