"""Shot boundaries from downscaled frames: HSV histogram differences with an adaptive threshold.

Like PySceneDetect's content and adaptive detectors, but streaming (no look-ahead) and our own:
each frame is shrunk to at most ``SIDE`` pixels, its hue, saturation and value histograms are
normalised, and the distance to the previous frame is half the L1 difference averaged over the three
channels (0: same colours, 1: nothing in common). A cut is declared where that distance is above
``threshold`` *and* ``ratio`` times the mean distance of the recent frames (so a steadily busy shot,
with large differences everywhere, is not cut at every frame), and the current shot has at least
``min_frames`` frames.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

SIDE = 64
_BINS = ((0, 32, 180), (1, 16, 256), (2, 16, 256))  # (channel, bins, range) of OpenCV's HSV


@dataclass(frozen=True)
class ShotOptions:
    threshold: float = 0.35
    ratio: float = 3.0
    window: int = 8
    min_frames: int = 4


def downscale(rgb: np.ndarray, side: int = SIDE) -> np.ndarray:
    """The frame as uint8 RGB with its longer side at most ``side`` pixels."""
    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    height, width = rgb.shape[:2]
    factor = side / max(height, width)
    if factor >= 1:
        return rgb
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def hsv_histogram(small_rgb: np.ndarray) -> np.ndarray:
    """Normalised hue, saturation and value histograms, concatenated."""
    hsv = cv2.cvtColor(small_rgb, cv2.COLOR_RGB2HSV)
    parts = []
    for channel, bins, top in _BINS:
        hist = cv2.calcHist([hsv], [channel], None, [bins], [0, top]).ravel()
        parts.append(hist / max(hist.sum(), 1.0))
    return np.concatenate(parts).astype(np.float32)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance, averaged over the three channels: in [0, 1]."""
    return float(np.abs(a - b).sum() / (2 * len(_BINS)))


class ShotDetector:
    """Feed frames in order with :meth:`push`; it answers True for the first frame of a new shot."""

    def __init__(self, options: ShotOptions = ShotOptions()) -> None:
        self.options = options
        self._previous: np.ndarray | None = None
        self._recent: deque[float] = deque(maxlen=options.window)
        self._length = 0

    def push(self, rgb: np.ndarray) -> bool:
        """Whether ``rgb`` (a frame, any size) starts a new shot. The first frame does not."""
        hist = hsv_histogram(downscale(rgb))
        cut = False
        if self._previous is not None:
            distance = histogram_distance(hist, self._previous)
            cut = self._is_cut(distance)
            self._recent.append(distance)
        self._previous = hist
        self._length = 1 if cut else self._length + 1
        if cut:
            self._recent.clear()
        return cut

    def _is_cut(self, distance: float) -> bool:
        o = self.options
        if distance < o.threshold or self._length < o.min_frames:
            return False
        baseline = float(np.mean(self._recent)) if self._recent else 0.0
        return distance >= o.ratio * baseline


def chunk_ranges(start: int, end: int, max_frames: int) -> list[tuple[int, int]]:
    """Split frames ``[start, end)`` into near-equal chunks of at most ``max_frames``."""
    count = end - start
    parts = max(1, -(-count // max(1, max_frames)))
    edges = [start + round(i * count / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]
