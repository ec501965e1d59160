"""Archive effects: halftone screens, fading, colour casts, dust and scratches, interlacing."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ._image import clip01, hwc, luminance, per_channel
from .stages import Stage, require

# Tint of a sepia-toned print, scaled so that it keeps luminance (0.299 r + 0.587 g + 0.114 b ~ 1).
SEPIA_TINT = (1.2, 0.95, 0.72)


def halftone_screen(height: int, width: int, period: float, angle: float) -> np.ndarray:
    """Threshold map of a dot screen: 0.5 + (cos(2 pi u / p) + cos(2 pi v / p)) / 4 on axes (u, v)
    rotated by `angle`. Built from outer products of 1-D cosines (cos(a + b) expansion): cheap."""
    k = 2.0 * math.pi / period
    x = np.arange(width, dtype=np.float32)
    y = np.arange(height, dtype=np.float32)
    c, s = math.cos(angle), math.sin(angle)
    screen = np.full((height, width), 0.5, dtype=np.float32)
    # u = c x + s y and v = -s x + c y; cos(ax + by) = cos(ax) cos(by) - sin(ax) sin(by).
    for ax, by in ((k * c, k * s), (-k * s, k * c)):
        screen += 0.25 * (np.outer(np.cos(by * y), np.cos(ax * x)) - np.outer(np.sin(by * y), np.sin(ax * x)))
    return screen


@dataclass(frozen=True)
class Halftone(Stage):
    """Printed-photo halftone: each channel thresholded (softly) against a rotated dot screen of
    `period` px, mixed with the original by `amount`; so every pixel moves by at most `amount`."""

    kind = "halftone"
    period: float
    angle: float
    amount: float

    def __post_init__(self) -> None:
        require(self.period >= 2, f"halftone period must be >= 2 px, got {self.period}")
        require(0 <= self.amount <= 1, f"halftone amount must be in [0, 1], got {self.amount}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        screen = halftone_screen(img.shape[0], img.shape[1], self.period, self.angle)
        dots = np.clip((img - screen[:, :, None]) * np.float32(4.0) + np.float32(0.5), 0.0, 1.0)
        return clip01(img + np.float32(self.amount) * (dots - img))


@dataclass(frozen=True)
class Fade(Stage):
    """Fading: contrast lost toward the paper `tone` (RGB), out = (1 - amount) img + amount tone."""

    kind = "fade"
    amount: float
    tone: tuple[float, float, float] = (0.93, 0.9, 0.82)

    def __post_init__(self) -> None:
        require(0 <= self.amount <= 1, f"fade amount must be in [0, 1], got {self.amount}")
        require(len(self.tone) == 3, "fade tone must be an RGB triple")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        tone = per_channel(self.tone, img.shape[2])
        return img * np.float32(1.0 - self.amount) + np.float32(self.amount) * tone


@dataclass(frozen=True)
class ColorCast(Stage):
    """Colour cast of aged prints and film: optional sepia toning (mix toward luminance x
    SEPIA_TINT by `sepia`), then a per-channel gain and offset. Gray images get the luma-weighted
    gain and offset (a tint cannot show in one channel)."""

    kind = "color_cast"
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    offsets: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sepia: float = 0.0

    def __post_init__(self) -> None:
        require(len(self.gains) == 3 and len(self.offsets) == 3, "gains and offsets are RGB triples")
        require(0 <= self.sepia <= 1, f"sepia must be in [0, 1], got {self.sepia}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        channels = img.shape[2]
        if self.sepia > 0 and channels == 3:
            toned = luminance(img)[:, :, None] * np.asarray(SEPIA_TINT, dtype=np.float32)
            img = img + np.float32(self.sepia) * (toned - img)
        gains, offsets = per_channel(self.gains, channels), per_channel(self.offsets, channels)
        return clip01(img * gains + offsets)


@dataclass(frozen=True)
class DustScratches(Stage):
    """Scan dust and film scratches.

    Specks: Poisson(`speck_density` x H x W / 10 000) discs of radius ~`speck_radius` px (x0.5..1.5).
    Scratches: `scratches` thin near-vertical lines `scratch_width` px wide, full or partial height.
    Each mark is light (dust on a negative, base scratches) with probability `light_fraction`,
    otherwise dark, and is blended with an opacity of `opacity` x U(0.6, 1). Positions come from rng.
    """

    kind = "dust_scratches"
    speck_density: float
    speck_radius: float
    scratches: int
    scratch_width: float = 1.0
    light_fraction: float = 0.5
    opacity: float = 0.8

    def __post_init__(self) -> None:
        require(self.speck_density >= 0 and self.scratches >= 0, "dust counts must be >= 0")
        require(self.speck_radius > 0 and self.scratch_width > 0, "dust sizes must be > 0")
        require(0 <= self.light_fraction <= 1 and 0 <= self.opacity <= 1,
                "light_fraction and opacity must be in [0, 1]")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w, _ = img.shape
        masks = {True: np.zeros((h, w), np.uint8), False: np.zeros((h, w), np.uint8)}
        self._draw_specks(masks, rng, h, w)
        self._draw_scratches(masks, rng, h, w)
        out = img.copy()
        flat = out.reshape(-1, out.shape[2])
        for light, mask in masks.items():
            idx = np.flatnonzero(mask)  # marks cover few pixels: blend only those
            alpha = (mask.ravel()[idx].astype(np.float32) * np.float32(1.0 / 255.0))[:, None]
            pixels = flat[idx]
            flat[idx] = pixels + (1.0 - pixels) * alpha if light else pixels * (1.0 - alpha)
        return out

    def _shade(self, rng: np.random.Generator) -> tuple[bool, int]:
        return bool(rng.random() < self.light_fraction), int(255 * self.opacity * rng.uniform(0.6, 1.0))

    def _draw_specks(self, masks: dict, rng: np.random.Generator, h: int, w: int) -> None:
        for _ in range(rng.poisson(self.speck_density * h * w / 10_000.0)):
            light, value = self._shade(rng)
            centre = (int(rng.uniform(0, w) * 16), int(rng.uniform(0, h) * 16))
            radius = int(self.speck_radius * rng.uniform(0.5, 1.5) * 16)
            cv2.circle(masks[light], centre, radius, value, -1, cv2.LINE_AA, shift=4)

    def _draw_scratches(self, masks: dict, rng: np.random.Generator, h: int, w: int) -> None:
        thickness = max(1, round(self.scratch_width))
        for _ in range(self.scratches):
            light, value = self._shade(rng)
            x0 = rng.uniform(0, w)
            x1 = x0 + rng.uniform(-0.03, 0.03) * h
            y0, y1 = (0.0, h) if rng.random() < 0.5 else sorted(rng.uniform(0, h, 2))
            points = [(int(x * 16), int(y * 16)) for x, y in ((x0, y0), (x1, y1))]
            cv2.line(masks[light], points[0], points[1], value, thickness, cv2.LINE_AA, shift=4)


@dataclass(frozen=True)
class Interlace(Stage):
    """Interlaced video: the odd field (rows 1, 3, 5, ...) displaced horizontally by `shift` px
    (motion between the two fields) and scaled by `field_gain`; even rows are untouched."""

    kind = "interlace"
    shift: float
    field_gain: float = 1.0

    def __post_init__(self) -> None:
        require(self.field_gain > 0, f"field gain must be > 0, got {self.field_gain}")

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = img.copy()
        odd = np.ascontiguousarray(img[1::2])
        if odd.shape[0] == 0:
            return out
        warp = np.float32([[1, 0, self.shift], [0, 1, 0]])
        moved = hwc(cv2.warpAffine(odd, warp, (odd.shape[1], odd.shape[0]), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101))
        out[1::2] = clip01(moved * np.float32(self.field_gain))
        return out
