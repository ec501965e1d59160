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
    shape = (1, h * scale, w * scale, c) if nhwc else (1, c, h * scale, w * scale)
    out = torch.zeros(shape, dtype=torch.float32, device=image.device)
    ys, xs = _starts(h, tile, step), _starts(w, tile, step)
    # the tiles form a grid and each one's weight is a row ramp times a column ramp, so the weights
    # summed over the grid are the row sums times the column sums: two vectors, no full-size plane
    row_sum = np.zeros(h * scale, np.float32)
    col_sum = np.zeros(w * scale, np.float32)
    for y in ys:
        th = min(tile, h - y)
        wy = _ramp(th * scale, overlap * scale, y == 0, y + th >= h)
        row_sum[y * scale:(y + th) * scale] += wy
        for x in xs:
            tw = min(tile, w - x)
            result = fn(image[..., y : y + th, x : x + tw]).float()
            wx = _ramp(tw * scale, overlap * scale, x == 0, x + tw >= w)
            if y == ys[0]:
                col_sum[x * scale:(x + tw) * scale] += wx
            mask = torch.from_numpy(np.outer(wy, wx)).to(image.device)
            mask = mask[None, :, :, None] if nhwc else mask[None, None]
            rows, cols = slice(y * scale, (y + th) * scale), slice(x * scale, (x + tw) * scale)
            (out[:, rows, cols] if nhwc else out[..., rows, cols]).addcmul_(result, mask)
    rows_by, cols_by = torch.from_numpy(row_sum).to(image.device), torch.from_numpy(col_sum).to(image.device)
    if nhwc:
        return out.div_(rows_by[None, :, None, None]).div_(cols_by[None, None, :, None])
    return out.div_(rows_by[None, None, :, None]).div_(cols_by[None, None, None, :])
