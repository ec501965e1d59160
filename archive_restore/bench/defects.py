"""``archive-restore bench defects CLIP...``: how well one-frame film dirt is found and removed, and what it
costs on clean frames (``pipeline.film_dirt``).

For each clip (a video file or a folder of frames), each frame but the first and last gets synthetic dirt
(``degrade.film.film_dirt``: blotches and a hair, seeded) while its neighbours stay as they are; the dirt's
mask is the truth. Figures, over the clip: recall (of the truth's pixels, the share found), precision (of
the pixels found, the share within the truth grown by one pixel: the repair grows what it finds by as
much; and again with the pixels it also finds on the clip as it is left out: a real dusty film's own
dirt is not a false positive), PSNR inside the truth of the damaged frame and of the repaired one against the frame before the
dirt, and on the clip as it is (no synthetic dirt) the share of pixels changed: what false positives cost,
or, on a real dusty film, its own dirt found.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..degrade.film import film_dirt
from ..errors import DataError
from ..pipeline.film_dirt import remove_dirt
from .temporal import read_clip


@dataclass
class DirtFigures:
    name: str
    frames: int
    recall: float
    precision: float
    precision_own_left_out: float  # the same, not counting what is found on the clip as it is (its own dirt)
    psnr_damaged: float
    psnr_repaired: float
    clean_changed_percent: float


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def measure_clip(path: Path, frames: int = 12, seed: int = 7) -> DirtFigures:
    raw = read_clip(path, frames)
    if len(raw) < 3:
        raise DataError(f"{path}: fewer than 3 frames")
    rng = np.random.default_rng(seed)
    found = truth = right = flagged = own = 0
    damaged_in, repaired_in, clean_in = [], [], []
    changed = pixels = 0
    for t in range(1, len(raw) - 1):
        dirty, mask = film_dirt(raw[t], rng)
        run = list(raw)
        run[t] = dirty
        out, hit = remove_dirt(run, t)
        _, on_clean = remove_dirt(raw, t)
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        found += int((hit & mask).sum())
        truth += int(mask.sum())
        right += int((hit & grown).sum())
        flagged += int(hit.sum())
        own += int((hit & ~grown & on_clean).sum())
        if mask.any():
            damaged_in.append(dirty[mask])
            repaired_in.append(out[mask])
            clean_in.append(raw[t][mask])
        changed += int(on_clean.sum())
        pixels += on_clean.size
    clean = np.concatenate(clean_in)
    return DirtFigures(path.name, len(raw), found / max(truth, 1), right / max(flagged, 1),
                       right / max(flagged - own, 1),
                       _psnr(np.concatenate(damaged_in), clean), _psnr(np.concatenate(repaired_in), clean),
                       100.0 * changed / max(pixels, 1))


def format_table(rows: Sequence[DirtFigures]) -> str:
    lines = ["one-frame film dirt (synthetic, on every frame but the first and last), found against the frames "
             "beside it",
             f"{'clip':<24}{'frames':>7}{'recall':>8}{'precision':>11}{'(own left out)':>16}{'PSNR in dirt: damaged':>23}"
             f"{'repaired':>10}{'clean clip changed':>20}"]
    for r in rows:
        lines.append(f"{r.name[:24]:<24}{r.frames:>7}{r.recall:>8.3f}{r.precision:>11.3f}"
                     f"{r.precision_own_left_out:>16.3f}{r.psnr_damaged:>20.2f} dB"
                     f"{r.psnr_repaired:>7.2f} dB{r.clean_changed_percent:>18.3f} %")
    return "\n".join(lines)
