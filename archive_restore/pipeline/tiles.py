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
              overlap: int = 16, nhwc: bool = False,
              finish: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``fn`` maps a 1x3xhxw tile to 1x3x(h*scale)x(w*scale) (with ``nhwc``: to 1x(h*scale)x(w*scale)x3,
    and the result is NHWC too, contiguous: no full-size transpose after); the tiles' outputs are
    blended with linear weights in their overlaps, so no seam shows. An image within one tile runs
    whole. The blend runs on the image's device (no per-tile copy back to the host).

    The tiles run a row of tiles at a time, and the output rows that no later row of tiles touches are
    final: they go through ``finish`` (float32 in, whatever it returns out: ``_to_uint8`` gives uint8)
    into the result, so that only one row of tiles is ever held in float32 (a 3840x2160 picture at x4
    is 1.6 GB of float32, 0.4 GB of uint8). Without ``finish`` the result is float32."""
    finish = finish or (lambda band: band)
    _, c, h, w = image.shape
    if h <= tile and w <= tile:
        return finish(fn(image).float())
    axis = 1 if nhwc else 2  # the output's row axis
    # (start, length, weight ramp at the output scale) of each row and each column of tiles
    rows = [(y, min(tile, h - y)) for y in _starts(h, tile, tile - overlap)]
    rows = [(y, th, _ramp(th * scale, overlap * scale, y == 0, y + th >= h)) for y, th in rows]
    cols = [(x, min(tile, w - x)) for x in _starts(w, tile, tile - overlap)]
    cols = [(x, tw, _ramp(tw * scale, overlap * scale, x == 0, x + tw >= w)) for x, tw in cols]
    # the tiles form a grid and each one's weight is a row ramp times a column ramp, so the weights
    # summed over the grid are the row sums times the column sums: two vectors, no full-size plane
    row_sum = np.zeros(h * scale, np.float32)
    for y, th, wy in rows:
        row_sum[y * scale:(y + th) * scale] += wy
    col_sum = np.zeros(w * scale, np.float32)
    for x, tw, wx in cols:
        col_sum[x * scale:(x + tw) * scale] += wx
    cols_by = torch.from_numpy(col_sum).to(image.device)
    cols_by = cols_by[None, None, :, None] if nhwc else cols_by[None, None, None, :]
    out: torch.Tensor | None = None
    band: torch.Tensor | None = None  # float32 sums of the output rows from `top` on
    top = 0

    def flush(rows: int) -> None:
        """The band's first ``rows`` rows are final: weighted, finished, into ``out``."""
        nonlocal out, band, top
        rows_by = torch.from_numpy(row_sum[top:top + rows]).to(image.device)
        rows_by = rows_by[None, :, None, None] if nhwc else rows_by[None, None, :, None]
        done = finish(band.narrow(axis, 0, rows).div(rows_by).div_(cols_by))
        if out is None:
            shape = list(done.shape)
            shape[axis] = h * scale
            out = torch.empty(shape, dtype=done.dtype, device=done.device)
        out.narrow(axis, top, rows).copy_(done)
        band, top = band.narrow(axis, rows, band.shape[axis] - rows), top + rows

    for y, th, wy in rows:
        if band is not None and y * scale > top:
            flush(y * scale - top)
        shape = (1, th * scale, w * scale, c) if nhwc else (1, c, th * scale, w * scale)
        fresh = torch.zeros(shape, dtype=torch.float32, device=image.device)
        if band is not None:  # what the rows of tiles above left in the overlap
            fresh.narrow(axis, 0, band.shape[axis]).copy_(band)
        band = fresh
        for x, tw, wx in cols:
            result = fn(image[..., y : y + th, x : x + tw]).float()
            mask = torch.from_numpy(np.outer(wy, wx)).to(image.device)
            mask = mask[None, :, :, None] if nhwc else mask[None, None]
            span = slice(x * scale, (x + tw) * scale)
            (band[:, :, span] if nhwc else band[..., span]).addcmul_(result, mask)
    flush(band.shape[axis])
    return out
