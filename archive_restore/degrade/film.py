"""One-frame film dirt for measuring and testing its removal: blotches (dust or dirt on the print, dark or
light, irregular, soft-edged) and hairs (thin curved strands), each on one frame only, with the mask of
where they are."""
from __future__ import annotations

import cv2
import numpy as np

VISIBLE = 12.0  # luma levels (0..255) a mark must change a pixel by to count as dirt there


def film_dirt(frame: np.ndarray, rng: np.random.Generator, blotches: int = 6, hairs: int = 1,
              radius: tuple[float, float] = (2.0, 7.0)) -> tuple[np.ndarray, np.ndarray]:
    """``frame`` (HxWx3 uint8) with dirt drawn on it, and the dirt's mask (HxW bool: where the dirt covers at
    least half of a pixel and changed its luma by ``VISIBLE`` levels or more: a light speck on a light wall
    that changes nothing is not dirt to find). Each mark is dark (dirt on the print) or light (dust on the
    negative) with equal chance, at an opacity of 0.7-1."""
    h, w = frame.shape[:2]
    cover = np.zeros((h, w), np.float32)
    shade = np.zeros((h, w), np.float32)
    for _ in range(blotches):
        layer = np.zeros((h, w), np.uint8)
        centre = np.array([rng.uniform(0.05, 0.95) * w, rng.uniform(0.05, 0.95) * h])
        r = rng.uniform(*radius)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        points = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * r * rng.uniform(0.6, 1.3, (9, 1))
        cv2.fillPoly(layer, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        _add(cover, shade, layer, rng)
    for _ in range(hairs):
        layer = np.zeros((h, w), np.uint8)
        start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        heading = rng.uniform(0, 2 * np.pi)
        points = [start]
        for _ in range(12):
            heading += rng.normal(0, 0.35)
            points.append(points[-1] + 4.0 * np.array([np.cos(heading), np.sin(heading)]))
        cv2.polylines(layer, [np.round(np.array(points) * 16).astype(np.int32)], False, 255, 1, cv2.LINE_AA, shift=4)
        _add(cover, shade, layer, rng)
    alpha = cover[..., None]
    out = frame.astype(np.float32) * (1 - alpha) + shade[..., None] * alpha
    dirty = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    change = np.abs(_luma(dirty) - _luma(frame))
    return dirty, (cover >= 0.5) & (change >= VISIBLE)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _add(cover: np.ndarray, shade: np.ndarray, layer: np.ndarray, rng: np.random.Generator) -> None:
    opacity = rng.uniform(0.7, 1.0)
    value = rng.uniform(0, 35) if rng.random() < 0.5 else rng.uniform(220, 255)
    a = layer.astype(np.float32) / 255 * opacity
    shade[:] = np.where(a > 0, value, shade)
    np.maximum(cover, a, out=cover)
