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
              overlap: int = 16, nhwc: bool = False) -> torch.Tensor:
    """``fn`` maps a 1x3xhxw tile to 1x3x(h*scale)x(w*scale) (with ``nhwc``: to 1x(h*scale)x(w*scale)x3,
    and the result is NHWC too, contiguous: no full-size transpose after); the tiles' outputs are
    blended with linear weights in their overlaps, so no seam shows. An image within one tile runs
    whole. The result is float32 on the image's device either way (the blend runs there too: no
    per-tile copy back to the host)."""
    _, c, h, w = image.shape
    if h <= tile and w <= tile:
        return fn(image).float()
    step = tile - overlap
    shape, weight_shape = ((1, h * scale, w * scale, c), (1, h * scale, w * scale, 1)) if nhwc else \
        ((1, c, h * scale, w * scale), (1, 1, h * scale, w * scale))
    out = torch.zeros(shape, dtype=torch.float32, device=image.device)
    weight = torch.zeros(weight_shape, dtype=torch.float32, device=image.device)
    ys, xs = _starts(h, tile, step), _starts(w, tile, step)
    for y in ys:
        for x in xs:
            th, tw = min(tile, h - y), min(tile, w - x)
            result = fn(image[..., y : y + th, x : x + tw]).float()
            wy = _ramp(th * scale, overlap * scale, y == 0, y + th >= h)
            wx = _ramp(tw * scale, overlap * scale, x == 0, x + tw >= w)
            mask = torch.from_numpy(np.outer(wy, wx)).to(image.device)
            mask = mask[None, :, :, None] if nhwc else mask[None, None]
            rows, cols = slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale)
            region = (out[:, rows, cols] if nhwc else out[..., rows, cols])
            region.addcmul_(result, mask)
            (weight[:, rows, cols] if nhwc else weight[..., rows, cols]).add_(mask)
    return out.div_(weight)
