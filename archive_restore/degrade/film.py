"""Film damage for measuring and testing its removal, each with the mask of where it is: one-frame dirt
(``film_dirt``: blotches, dust or dirt on the print, dark or light, irregular, soft-edged, and hairs, thin
curved strands, each on one frame only) and line scratches (``line_scratches``: thin vertical lines that
last over every frame of a clip, drifting slowly, with breaks)."""
from __future__ import annotations

from collections.abc import Sequence

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


def line_scratches(frames: Sequence[np.ndarray], rng: np.random.Generator, lines: tuple[int, int] = (1, 3),
                   width: tuple[float, float] = (1.0, 3.0), opacity: tuple[float, float] = (0.3, 1.0)
                   ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``frames`` (a clip, HxWx3 uint8 each) with the same ``lines`` (lowest, highest count) vertical line
    scratches drawn on every frame, and each frame's mask (HxW bool: where a scratch changed the luma by
    ``VISIBLE`` levels or more, its soft edge included). A scratch is ``width`` px wide (anti-aliased at
    sub-pixel positions), light or dark with equal chance, at an ``opacity`` that varies along it and
    flickers from frame to frame; it crosses 55-100 % of the height, leans by up to a pixel over it, drifts
    by a fraction of a pixel a frame and has a few breaks on each frame."""
    h, w = frames[0].shape[:2]
    scratches = [_scratch(rng, h, w, width, opacity) for _ in range(int(rng.integers(lines[0], lines[1] + 1)))]
    damaged, masks = [], []
    for t, frame in enumerate(frames):
        cover = np.zeros((h, w), np.float32)
        shade = np.zeros((h, w), np.float32)
        for s in scratches:
            a = _scratch_alpha(s, t, h, w, rng)
            shade[:] = np.where(a > 0, s["value"], shade)
            np.maximum(cover, a, out=cover)
        alpha = cover[..., None]
        out = np.clip(frame.astype(np.float32) * (1 - alpha) + shade[..., None] * alpha + 0.5, 0, 255).astype(np.uint8)
        damaged.append(out)
        masks.append(np.abs(_luma(out) - _luma(frame)) >= VISIBLE)
    return damaged, masks


def _scratch(rng: np.random.Generator, h: int, w: int, width: tuple[float, float],
             opacity: tuple[float, float]) -> dict:
    """One scratch's lasting properties: where it is, how it moves and looks, which rows it crosses."""
    length = rng.uniform(0.55, 1.0) * h
    top = rng.uniform(0, h - length)
    return {"x": rng.uniform(0.1, 0.9) * w, "drift": rng.normal(0, 0.3), "lean": rng.uniform(-1, 1),
            "width": rng.uniform(*width), "opacity": rng.uniform(*opacity),
            "value": rng.uniform(215, 255) if rng.random() < 0.5 else rng.uniform(0, 40),
            "rows": (int(top), int(top + length)), "phase": rng.uniform(0, 2 * np.pi), "wobble": rng.normal(0, 0.4)}


def _scratch_alpha(s: dict, t: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Scratch ``s`` on frame ``t``: each pixel's opacity (the share of it the line covers, times the line's
    opacity there), HxW."""
    y = np.arange(h, dtype=np.float32)
    centre = s["x"] + s["drift"] * t + s["wobble"] * np.sin(0.3 * t) + s["lean"] * (y / h - 0.5)
    centre = np.clip(centre, 4, w - 5)
    left, right = centre - s["width"] / 2, centre + s["width"] / 2
    columns = np.arange(w, dtype=np.float32)
    share = np.clip(np.minimum(right[:, None], columns + 1) - np.maximum(left[:, None], columns), 0, 1)
    strength = s["opacity"] * rng.uniform(0.85, 1.0) * (0.8 + 0.2 * np.sin(y / h * 6 + s["phase"]))
    on = np.zeros(h, bool)
    on[s["rows"][0]:s["rows"][1]] = True
    for _ in range(int(rng.integers(0, 4))):  # breaks: where the scratch misses on this frame
        start, length = rng.uniform(0, h), rng.uniform(0.02, 0.08) * h
        on[int(start):int(start + length)] = False
    return share * (strength * on)[:, None]
