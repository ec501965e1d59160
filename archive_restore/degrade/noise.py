"""Noise stages: additive Gaussian, Poisson (shot) noise, and film grain.

Amplitudes are standard deviations on the [0, 1] scale. Results are clipped to [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ._image import clip01, luminance
from .stages import Stage, require


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


@dataclass(frozen=True)
class GaussianNoise(Stage):
    """Additive white Gaussian noise of std `std`; independent per channel if `color`, else shared."""

    kind = "gaussian_noise"
    std: float
    color: bool = True

    def __post_init__(self) -> None:
        require(self.std >= 0, f"noise std must be >= 0, got {self.std}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w, c = img.shape
        noise = _normal(rng, (h, w, c if self.color else 1))
        return clip01(img + noise * np.float32(self.std))


@dataclass(frozen=True)
class PoissonNoise(Stage):
    """Shot noise of a sensor or film that collected `peak` photons at full white.

    The Poisson count is approximated by its Gaussian limit (variance = mean), which is accurate
    for the photon counts used here and much faster: std at intensity x is sqrt(x / peak), so at
    mid-grey it is sqrt(0.5 / peak). With `color` off the noise follows luminance and is shared
    by the channels.
    """

    kind = "poisson_noise"
    peak: float
    color: bool = True

    def __post_init__(self) -> None:
        require(self.peak > 0, f"Poisson peak must be > 0, got {self.peak}")

    def mid_grey_std(self) -> float:
        return math.sqrt(0.5 / self.peak)

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w, c = img.shape
        scale = np.float32(1.0 / self.peak)
        if self.color:
            std = np.sqrt(np.maximum(img, 0.0) * scale)
            return clip01(img + _normal(rng, (h, w, c)) * std)
        std = np.sqrt(np.maximum(luminance(img), 0.0) * scale)
        return clip01(img + (_normal(rng, (h, w)) * std)[:, :, None])


def grain_field(rng: np.random.Generator, height: int, width: int, size: float) -> np.ndarray:
    """Unit-std, spatially correlated noise: white noise low-pass filtered by a Gaussian of std
    `size` px. Coarse grain is drawn on a grid `step` times coarser (keeping the filter at >= 1
    px there) and enlarged bilinearly, which costs step^2 times less and looks the same. The white
    noise is uniform (5x cheaper to draw than normal); the filter makes it near-Gaussian."""
    step = max(1, int(size))
    gh, gw = -(-height // step), -(-width // step)
    white = rng.random((gh, gw), dtype=np.float32)
    field = cv2.GaussianBlur(white, (0, 0), size / step, borderType=cv2.BORDER_REFLECT_101)
    field -= np.float32(field.mean())
    if step > 1:
        field = cv2.resize(field, (gw * step, gh * step), interpolation=cv2.INTER_LINEAR)[:height, :width]
    std = float(field.std())
    return field * np.float32(1.0 / std) if std > 1e-6 else np.zeros_like(field)


def grain_weight(lum: np.ndarray) -> np.ndarray:
    """Grain visibility against luminance: 1 at mid-grey, 0.1 at black and white.

    Prints show grain most in the mid-tones; it is lost in the shadows and in the paper white.
    """
    return 0.1 + 3.6 * lum * (1.0 - lum)


@dataclass(frozen=True)
class FilmGrain(Stage):
    """Monochrome film grain: a unit-std `grain_field` of correlation size `size` px, scaled by
    `strength` (its std at mid-grey) and by `grain_weight` of the local luminance. Neighbouring
    pixels are therefore correlated, unlike sensor noise.
    """

    kind = "film_grain"
    strength: float
    size: float

    def __post_init__(self) -> None:
        require(self.strength >= 0, f"grain strength must be >= 0, got {self.strength}")
        require(self.size >= 0.3, f"grain size must be >= 0.3 px, got {self.size}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        grain = grain_field(rng, img.shape[0], img.shape[1], self.size)
        amplitude = grain_weight(np.clip(luminance(img), 0.0, 1.0))
        amplitude *= np.float32(self.strength)
        return clip01(img + (grain * amplitude)[:, :, None])
