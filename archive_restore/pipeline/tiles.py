"""Running an image-to-image network over a large image in overlapping tiles, blended seamlessly."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def _starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1 inside, a linear ramp over ``overlap`` pixels at edges shared with a neighbouring tile."""
    w = np.ones(length, np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not at_start:
            w[:overlap] = ramp
        if not at_end:
            w[-overlap:] = ramp[::-1]
    return w


def run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scale: int, tile: int = 256,
              overlap: int = 16) -> torch.Tensor:
    """``fn`` maps a 1x3xhxw tile to 1x3x(h*scale)x(w*scale); the tiles' outputs are blended with
    linear weights in their overlaps, so no seam shows. An image within one tile runs whole."""
    _, c, h, w = image.shape
    if h <= tile and w <= tile:
        return fn(image)
    step = tile - overlap
    out = torch.zeros(1, c, h * scale, w * scale, dtype=torch.float32)
    weight = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float32)
    ys, xs = _starts(h, tile, step), _starts(w, tile, step)
    for y in ys:
        for x in xs:
            th, tw = min(tile, h - y), min(tile, w - x)
            result = fn(image[..., y : y + th, x : x + tw]).float().cpu()
            wy = _ramp(th * scale, overlap * scale, y == 0, y + th >= h)
            wx = _ramp(tw * scale, overlap * scale, x == 0, x + tw >= w)
            mask = torch.from_numpy(np.outer(wy, wx))[None, None]
            out[..., y * scale : (y + th) * scale, x * scale : (x + tw) * scale] += result * mask
            weight[..., y * scale : (y + th) * scale, x * scale : (x + tw) * scale] += mask
    return out / weight
