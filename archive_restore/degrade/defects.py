"""Damage of old prints, drawn with its mask, for training and measuring the defect detector: thin curved
scratches of either polarity, branching cracks, dust and specks, creases (a pale ridge with a shadow
side) and tears or missing corners (paper white with a ragged edge). Everything drawn is in the mask
where it changed the picture visibly (``VISIBLE`` luma levels); a faint mark that changes nothing is not
damage to find."""
from __future__ import annotations

import cv2
import numpy as np

from .chain import Degradation

VISIBLE = 12.0 / 255  # luma change that makes a pixel damaged


KINDS = ("scratches", "cracks", "specks", "creases", "tears")  # ``damage_kinds``' labels 1..5 (0: none)


def print_damage(image: np.ndarray, rng: np.random.Generator, amount: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (HxWx3 float in [0, 1]) with damage drawn on it, and the damage's mask (HxW bool). ``amount``
    scales how many marks of each kind are drawn (their counts are Poisson, per 256x256 of picture)."""
    damaged, mask, _ = _draw(image, rng, amount, label=False)
    return damaged, mask


def damage_kinds(image: np.ndarray, rng: np.random.Generator,
                 amount: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``print_damage`` (the same draws from ``rng``), and which kind of mark each pixel shows (HxW uint8: the
    index in ``KINDS`` plus one, 0 where none)."""
    return _draw(image, rng, amount, label=True)


def _draw(image: np.ndarray, rng: np.random.Generator, amount: float,
          label: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    h, w = image.shape[:2]
    area = h * w / 65536.0
    cover = np.zeros((h, w), np.float32)   # how much each pixel is covered, 0..1
    value = np.zeros((h, w), np.float32)   # the grey the damage shows there
    kinds = np.zeros((h, w), np.uint8) if label else None
    for index, (kind, per_tile) in enumerate(((_scratch, 1.2), (_crack, 0.5), (_specks, 0.8), (_crease, 0.25),
                                              (_tear, 0.12)), start=1):
        for _ in range(rng.poisson(per_tile * amount * area)):
            before = cover.copy() if label else None
            kind(cover, value, rng, h, w)
            if label:
                kinds[cover > before] = index
    out = image * (1 - cover[..., None]) + value[..., None] * cover[..., None]
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    changed = np.abs((out - image) @ luma) >= VISIBLE
    mask = changed & (cover > 0.3)
    labels = None if kinds is None else np.where(mask, kinds, 0).astype(np.uint8)
    return np.clip(out, 0, 1).astype(np.float32), mask, labels


def scan_degradation(rng: np.random.Generator) -> Degradation:
    """What the damage is seen through, for training and measuring the detector: a light or medium
    degradation of our chain at the picture's own size, without its own dust and scratches (unlabelled
    damage)."""
    chain = Degradation.sample(rng, scale=1, severity="light" if rng.random() < 0.5 else "medium")
    return Degradation(tuple(s for s in chain.stages if s.kind != "dust_scratches"), 1, chain.seed)


def _shade(rng: np.random.Generator) -> float:
    """A scratch's or speck's grey: the paper's white (emulsion gone) or dark (dirt), 2:1."""
    return float(rng.uniform(0.82, 1.0) if rng.random() < 0.67 else rng.uniform(0.0, 0.15))


def _paint(cover: np.ndarray, value: np.ndarray, layer: np.ndarray, grey: float | np.ndarray, opacity: float) -> None:
    a = layer.astype(np.float32) / 255 * opacity
    value[:] = np.where(a > cover, grey, value)
    np.maximum(cover, a, out=cover)


def _walk(rng: np.random.Generator, start: np.ndarray, steps: int, step: float, wiggle: float) -> np.ndarray:
    heading = rng.uniform(0, 2 * np.pi)
    points = [start]
    for _ in range(steps):
        heading += rng.normal(0, wiggle)
        points.append(points[-1] + step * np.array([np.cos(heading), np.sin(heading)]))
    return np.array(points)


def _polyline(shape, points: np.ndarray, width: int) -> np.ndarray:
    layer = np.zeros(shape, np.uint8)
    cv2.polylines(layer, [np.round(points * 16).astype(np.int32)], False, 255, width, cv2.LINE_AA, shift=4)
    return layer


def _scratch(cover, value, rng, h, w) -> None:
    """A thin curved scratch, long and gently bending, 1-3 px."""
    length = rng.uniform(0.15, 0.8) * max(h, w)
    points = _walk(rng, np.array([rng.uniform(0, w), rng.uniform(0, h)]), 24, length / 24, 0.08)
    _paint(cover, value, _polyline((h, w), points, int(rng.integers(1, 4))), _shade(rng), rng.uniform(0.6, 1.0))


def _crack(cover, value, rng, h, w) -> None:
    """A crack in the emulsion: a jagged line that branches, 1-2 px, usually light."""
    start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    grey = float(rng.uniform(0.75, 1.0)) if rng.random() < 0.8 else float(rng.uniform(0.0, 0.2))
    opacity = rng.uniform(0.6, 1.0)
    branches = [start]
    for _ in range(int(rng.integers(2, 6))):
        origin = branches[int(rng.integers(len(branches)))]
        points = _walk(rng, origin, int(rng.integers(6, 20)), rng.uniform(3, 7), 0.6)
        branches += list(points[1:])
        _paint(cover, value, _polyline((h, w), points, int(rng.integers(1, 3))), grey, opacity)


def _specks(cover, value, rng, h, w) -> None:
    """A cluster of dust specks, 1-4 px across."""
    layer = np.zeros((h, w), np.uint8)
    centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    for _ in range(int(rng.integers(3, 15))):
        x, y = centre + rng.normal(0, 25, 2)
        cv2.circle(layer, (int(x * 16), int(y * 16)), int(rng.uniform(0.6, 2.2) * 16), 255, -1, cv2.LINE_AA, shift=4)
    _paint(cover, value, layer, _shade(rng), rng.uniform(0.6, 1.0))


def _crease(cover, value, rng, h, w) -> None:
    """A fold: a pale ridge 2-4 px wide with a shadow line beside it, across much of the print."""
    a = np.array([rng.uniform(0, w), rng.uniform(0, h)])
    direction = rng.normal(0, 1, 2)
    direction /= np.linalg.norm(direction) + 1e-9
    length = rng.uniform(0.4, 1.0) * max(h, w)
    points = np.array([a - direction * length / 2, a + direction * length / 2])
    normal = np.array([-direction[1], direction[0]])
    width = int(rng.integers(2, 5))
    _paint(cover, value, _polyline((h, w), points, width), float(rng.uniform(0.8, 0.95)), rng.uniform(0.5, 0.8))
    _paint(cover, value, _polyline((h, w), points + normal * (width + 1), 1), float(rng.uniform(0.1, 0.3)),
           rng.uniform(0.4, 0.7))


def _tear(cover, value, rng, h, w) -> None:
    """A torn or missing piece at an edge or a corner: paper white (or the mount's dark) with a ragged edge."""
    corner = np.array([[0, 0], [w, 0], [w, h], [0, h]][int(rng.integers(4))], np.float64)
    size = rng.uniform(0.08, 0.25) * min(h, w)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    radii = size * rng.uniform(0.6, 1.4, 24)
    points = corner + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
    layer = np.zeros((h, w), np.uint8)
    cv2.fillPoly(layer, [np.round(points * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    grey = float(rng.uniform(0.85, 1.0)) if rng.random() < 0.75 else float(rng.uniform(0.02, 0.12))
    _paint(cover, value, layer, grey, 1.0)
