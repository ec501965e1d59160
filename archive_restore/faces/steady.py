"""Steady faces along a video track: less landmark jitter, less flicker of the restored face.

Per-frame face restoration flickers: the detector's landmarks jitter by a pixel or two on nearly
identical frames, so the aligned crop (and the paste-back mask) shifts, and the restorer answers
each frame's noise differently. A :class:`TrackSmoother`, one per face track, fixes both while the
face is still and steps aside when it moves:

- ``landmarks``: an exponential moving average whose weight grows with the motion, so jitter much
  smaller than ``still`` (a fraction of the eye distance) is averaged away and real motion is followed
  at once. Aligning (and pasting, whose mask follows the alignment) with the smoothed landmarks keeps
  the crop and the mask steady.
- ``face``: the restored face blended with the previous frame's result, warped into the current
  crop, while the two alignments are close; after a larger move the new face is taken as it is.
- ``mask``: the same for a parsed paste-back mask (``faces.parse``), so its edge does not flicker.

:class:`SteadyFaces` is what a video render holds for one run of consecutive frames (a chunk of a
shot): the faces detected on each frame are linked into tracks by the project's IoU + Kalman
tracker (``faces.track``), each track gets its own smoother, and a face the detector misses for a
frame or two while its track lives is still pasted where its track predicts it (no face popping in
and out of the restored video).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from .align import AlignedFace, face_landmarks
from .detect import Face
from .track import FaceTracker


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def crop_to_crop(previous: AlignedFace, current: AlignedFace) -> np.ndarray:
    """2x3 map from ``previous``'s crop pixels to ``current``'s (through the frame)."""
    return (_homogeneous(current.matrix) @ _homogeneous(previous.inverse))[:2]


def corner_shift(matrix: np.ndarray, size: int) -> float:
    """Mean distance the crop's corners move under ``matrix``, in pixels."""
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    moved = corners @ matrix[:, :2].T + matrix[:, 2]
    return float(np.linalg.norm(moved - corners, axis=1).mean())


@dataclass
class TrackSmoother:
    """Temporal smoothing for one face track; feed it the track's frames in order.

    ``landmark_alpha`` and ``face_alpha`` are the weights of the new frame while the face is still
    (smaller: steadier, more lag); ``still`` is the landmark motion, as a fraction of the eye
    distance, above which the new landmarks are taken as they are; ``max_shift`` the crop motion, as
    a fraction of the crop size, above which the previous restored face is not reused.
    """

    landmark_alpha: float = 0.25
    face_alpha: float = 0.4
    still: float = 0.15
    max_shift: float = 0.05
    _marks: np.ndarray | None = field(default=None, repr=False)
    _previous: dict[str, tuple[AlignedFace, np.ndarray]] = field(default_factory=dict, repr=False)

    def reset(self) -> None:
        """Forget the track's history (a cut, or a track that was lost)."""
        self._marks, self._previous = None, {}

    def landmarks(self, marks: np.ndarray) -> np.ndarray:
        """Smoothed (5, 2) landmarks for this frame's detected ones."""
        marks = np.asarray(marks, np.float64).reshape(5, 2)
        if self._marks is None:
            self._marks = marks
        else:
            eyes = max(float(np.linalg.norm(self._marks[1] - self._marks[0])), 1.0)
            motion = float(np.linalg.norm(marks - self._marks, axis=1).mean()) / eyes
            weight = float(np.clip(motion / self.still, self.landmark_alpha, 1.0))
            self._marks = self._marks + weight * (marks - self._marks)
        return self._marks.astype(np.float32)

    def face(self, aligned: AlignedFace, restored: np.ndarray) -> np.ndarray:
        """This frame's restored face (crop of ``aligned``), blended with the previous one when close."""
        return self._steady("face", aligned, restored)

    def mask(self, aligned: AlignedFace, mask: np.ndarray) -> np.ndarray:
        """This frame's paste-back mask (crop of ``aligned``), blended with the previous one when close."""
        return self._steady("mask", aligned, mask)

    def _steady(self, kind: str, aligned: AlignedFace, current: np.ndarray) -> np.ndarray:
        current = np.asarray(current, np.float32)
        size = current.shape[0]
        if kind in self._previous:
            before, previous = self._previous[kind]
            scale = np.diag([size / aligned.size, size / aligned.size, 1.0])
            relative = (scale @ _homogeneous(crop_to_crop(before, aligned)) @ np.linalg.inv(scale))[:2]
            if previous.shape == current.shape and corner_shift(relative, size) <= self.max_shift * size:
                warped = cv2.warpAffine(previous, relative, (size, size), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REPLICATE)
                current = (self.face_alpha * current + (1.0 - self.face_alpha) * warped).astype(np.float32)
        self._previous[kind] = (aligned, current)
        return current


@dataclass
class _Followed:
    smoother: TrackSmoother
    face: Face          # the last face pasted for this track (smoothed landmarks)
    centre: np.ndarray  # its track's box centre then


@dataclass
class SteadyFaces:
    """Faces of consecutive frames followed along tracks, each track with its own smoother.

    Call :meth:`follow` once per frame, in order; ``max_misses`` frames without a detection end a
    track (and its smoother). Frames are assumed to belong to one shot: make a new one at a cut.
    """

    max_misses: int = 2
    _tracker: FaceTracker | None = field(default=None, repr=False)
    _tracks: dict[int, _Followed] = field(default_factory=dict, repr=False)
    _frame: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self._tracker = FaceTracker(max_misses=self.max_misses, keep=0)

    def follow(self, faces: list[Face]) -> list[tuple[Face, TrackSmoother]]:
        """This frame's faces, with smoothed landmarks, each with its track's smoother; plus, for a
        live track the detector missed on this frame, its last face moved as the track predicts."""
        linked = self._tracker.update(faces, self._frame)
        self._frame += 1
        seen, out = set(), []
        for track, face in linked:
            known = self._tracks.get(track.id)
            smoother = known.smoother if known else TrackSmoother()
            marks = smoother.landmarks(face_landmarks(face))
            followed = _Followed(smoother, replace(face, landmarks=marks), _centre(track.filter.box))
            self._tracks[track.id] = followed
            seen.add(track.id)
            out.append((followed.face, smoother))
        for track in self._tracker.active:
            if track.id not in seen and track.id in self._tracks:
                out.append(self._coast(self._tracks[track.id], _centre(track.filter.box)))
        self._tracks = {t.id: self._tracks[t.id] for t in self._tracker.active if t.id in self._tracks}
        self._tracker.ended.clear()
        return out

    @staticmethod
    def _coast(followed: _Followed, centre: np.ndarray) -> tuple[Face, TrackSmoother]:
        shift = centre - followed.centre
        face = followed.face
        box = tuple(float(v) for v in np.asarray(face.box) + np.tile(shift, 2))
        marks = (face_landmarks(face) + shift).astype(np.float32)
        return replace(face, box=box, landmarks=marks), followed.smoother


def _centre(box: tuple[float, ...]) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float64)
