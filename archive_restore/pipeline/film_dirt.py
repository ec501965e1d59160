"""Film dirt found and removed: what is on one frame only, filled from the frames beside it.

Dust, dirt and hair on a film print sit on one frame; the scene does not. So a pixel is dirt when it
is darker by more than ``THRESHOLD`` luma levels than everything within ``REACH`` pixels of it in both of
its neighbours in time (the frames before and after, each moved onto this one by OpenCV's DIS optical
flow), or lighter by as much than everything there, while the two neighbours agree with each other
(within ``AGREE``). Real motion fails one of those tests: a moving edge is matched by the flow, and where
the flow is a few pixels off the edge is still within reach; an occluded or uncovered area is seen by
one neighbour and not the other (they disagree); a change that lasts is shared by a neighbour. The
flow's forward-backward consistency is not asked for: the flow is computed against the dirty frame, and
it is exactly on the dirt that the two directions disagree (with it, 16 % of synthetic dirt on
old_movie_2 was found; models/MODELS.md). The flagged pixels, grown by ``GROW`` pixels, are filled with
the mean of the two moved neighbours, brought to this frame's exposure around the mark; every other
pixel is left exactly as it was.

At a shot's first frame the two frames after it stand in for the pair (and at its last, the two
before); a shot of fewer than three frames is left alone. Line scratches that last over many frames
are shared by the neighbours, so they are not found here.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np

from .defects import tidy_mask
from .temporal import MEASURE_PRESET, optical_flow, warp

THRESHOLD = 14.0  # luma levels (0..255) by which dirt is darker or lighter than its neighbours around it
REACH = 2         # pixels around: what the flow may be off by
AGREE = 20.0      # the neighbours, moved onto the frame, agree within this
GROW = 1          # pixels added around what is found (the soft edge of a mark)
MIN_AREA = 2      # a flagged spot of fewer pixels is noise, not dirt
EXPOSURE_WINDOW = 15  # pixels over which a fill takes the frame's own brightness


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _moved(frame: np.ndarray, onto: np.ndarray) -> np.ndarray:
    """``frame`` moved onto ``onto`` by optical flow."""
    return warp(frame, optical_flow(onto, frame, MEASURE_PRESET))


def neighbours(index: int, count: int) -> tuple[int, int] | None:
    """The two frames compared with frame ``index`` of a run of ``count``: before and after, else the two
    after (the run's first frame) or the two before (its last); None for a run of fewer than three."""
    if count < 3:
        return None
    if 0 < index < count - 1:
        return index - 1, index + 1
    return (1, 2) if index == 0 else (count - 3, count - 2)


def find_dirt(frame: np.ndarray, a: np.ndarray, b: np.ndarray, far: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Where ``frame`` (uint8 RGB) holds dirt against its neighbours ``a`` and ``b``, and the fill for those
    pixels: (mask HxW bool, the mean of the moved neighbours HxWx3 uint8). ``far``: how many frames away
    ``b`` is (2 at a run's first or last frame); its flow may be off by as much more, so ``REACH`` grows too."""
    moved_a, moved_b = _moved(a, frame), _moved(b, frame)
    here, la, lb = _luma(frame), _luma(moved_a), _luma(moved_b)
    near_around = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * REACH + 1, 2 * REACH + 1))
    far_around = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * far * REACH + 1, 2 * far * REACH + 1))
    darkest = np.minimum(cv2.erode(la, near_around), cv2.erode(lb, far_around))
    lightest = np.maximum(cv2.dilate(la, near_around), cv2.dilate(lb, far_around))
    dirt = ((here < darkest - THRESHOLD) | (here > lightest + THRESHOLD)) & (np.abs(la - lb) < AGREE)
    mask = tidy_mask(dirt, MIN_AREA, GROW)
    fill = (moved_a.astype(np.float32) + moved_b.astype(np.float32)) / 2
    return mask, _exposed_like(fill, frame, mask)


def _exposed_like(fill: np.ndarray, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``fill`` brought to ``frame``'s exposure around each mark: old film's brightness flickers from frame to
    frame, and a fill of the neighbours' brightness shows as a pale or dark patch. The local difference of
    the unmarked pixels (a normalised box blur over ``EXPOSURE_WINDOW`` pixels) is added."""
    if not mask.any():
        return np.clip(fill + 0.5, 0, 255).astype(np.uint8)
    keep = (~mask).astype(np.float32)
    size = (EXPOSURE_WINDOW, EXPOSURE_WINDOW)
    weight = cv2.blur(keep, size)[..., None]
    offset = cv2.blur((frame.astype(np.float32) - fill) * keep[..., None], size) / np.maximum(weight, 1e-3)
    return np.clip(fill + offset + 0.5, 0, 255).astype(np.uint8)


def remove_dirt(frames: Sequence[np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of ``frames`` (a run within one shot, uint8 RGB) with its dirt filled, and the mask of
    what was filled (all False when the run is too short)."""
    pair = neighbours(index, len(frames))
    if pair is None:
        return frames[index], np.zeros(frames[index].shape[:2], bool)
    return _repaired(frames, index, pair)


def _repaired(frames: Sequence[np.ndarray], index: int, pair: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` with the dirt found against the frames ``pair`` (the nearer one first to
    ``find_dirt``, with how far the other is) filled, and the mask."""
    a, b = sorted(pair, key=lambda i: abs(i - index))
    frame = frames[index]
    mask, fill = find_dirt(frame, frames[a], frames[b], abs(b - index))
    if not mask.any():
        return frame, mask
    out = frame.copy()
    out[mask] = fill[mask]
    return out, mask


def clean_run(frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each frame of a run within one shot (uint8 RGB, in order) with its dirt removed, and the mask of what
    was filled, as ``remove_dirt`` gives them for the whole run, holding at most four frames: frame ``i`` is
    done once frame ``i + 1`` is there (the first once the third is), the last at the end."""
    held: list[np.ndarray] = []  # the original frames from index ``base`` on
    base = done = 0
    for index, frame in enumerate(frames):
        held.append(frame)
        if index < 2:
            continue
        while done < index:  # frame ``index`` exists: every earlier one is interior, or the first
            yield _cleaned_at(held, base, done, index + 1)
            done += 1
        if done - 2 > base:  # keep what the next frames may still need: done - 1 on, and two for the end
            del held[: done - 2 - base]
            base = done - 2
    count = base + len(held)
    while done < count:
        yield _cleaned_at(held, base, done, count) if count >= 3 else (held[done - base],
                                                                       np.zeros(held[0].shape[:2], bool))
        done += 1


def _cleaned_at(held: list[np.ndarray], base: int, index: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``remove_dirt`` for frame ``index`` of a run of at least ``count`` frames held from ``base`` on (a frame
    before the last known is interior, or the first: ``neighbours`` says the same for it in the whole run)."""
    a, b = neighbours(index, count)
    return _repaired(held, index - base, (a - base, b - base))
