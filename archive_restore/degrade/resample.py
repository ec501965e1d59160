"""Resizing with a choice of interpolation (what scanners, capture cards and editors do).

A `Resize` stores a factor relative to the image it receives (> 1 shrinks). Inside a chain the
`Degradation` computes exact target sizes itself (see `chain.py`), so that rounding never drifts
and the chain's last resize lands on exactly floor(H / scale) x floor(W / scale).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._image import hwc
from .stages import Stage, require

INTERPOLATIONS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def size_for(height: int, width: int, factor: float) -> tuple[int, int]:
    """floor(side / factor) for both sides (at least 1), tolerant to float round-off."""
    return max(1, int(height / factor + 1e-6)), max(1, int(width / factor + 1e-6))


@dataclass(frozen=True)
class Resize(Stage):
    """Shrink (factor > 1) or enlarge (factor < 1) with `interp` in area / bilinear / bicubic."""

    kind = "resize"
    factor: float
    interp: str = "bicubic"

    def __post_init__(self) -> None:
        require(self.factor > 0, f"resize factor must be > 0, got {self.factor}")
        require(self.interp in INTERPOLATIONS,
                f"unknown interpolation {self.interp!r}; use one of {sorted(INTERPOLATIONS)}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.resize_to(img, size_for(img.shape[0], img.shape[1], self.factor))

    def resize_to(self, img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Resize to (height, width) with this stage's interpolation; a no-op at the same size."""
        if (img.shape[0], img.shape[1]) == size:
            return img.copy()
        out = cv2.resize(img, (size[1], size[0]), interpolation=INTERPOLATIONS[self.interp])
        return hwc(out)
