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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .align import AlignedFace


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
    _previous: tuple[AlignedFace, np.ndarray] | None = field(default=None, repr=False)

    def reset(self) -> None:
        """Forget the track's history (a cut, or a track that was lost)."""
        self._marks, self._previous = None, None

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
        restored = np.asarray(restored, np.float32)
        size = restored.shape[0]
        if self._previous is not None:
            before, previous = self._previous
            scale = np.diag([size / aligned.size, size / aligned.size, 1.0])
            relative = (scale @ _homogeneous(crop_to_crop(before, aligned)) @ np.linalg.inv(scale))[:2]
            if previous.shape == restored.shape and corner_shift(relative, size) <= self.max_shift * size:
                warped = cv2.warpAffine(previous, relative, (size, size), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REPLICATE)
                restored = (self.face_alpha * restored + (1.0 - self.face_alpha) * warped).astype(np.float32)
        self._previous = (aligned, restored)
        return restored
