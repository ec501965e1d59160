"""Film dirt found and removed: what is on one frame only, filled from the frames beside it.

Dust, dirt and hair on a film print sit on one frame; the scene does not. So a pixel is dirt when it
is darker by more than ``THRESHOLD`` luma levels than everything within ``REACH`` pixels of it in both of
its neighbours in time (the frames before and after, each moved onto this one by OpenCV's DIS optical
flow, found on the frames at half their size), or lighter by as much than everything there, while the
two neighbours agree with each other (within ``AGREE``). Where the two moved neighbours agree closely
(within ``STEADY``) at every pixel within ``REACH``, the flow is right there, and the pixel need only
stand out by as much from the two neighbours' own pixels (a dark mark beside a dark edge is found). Real
motion fails one of those tests: a moving edge is matched by the flow, and where
the flow is a few pixels off the edge is still within reach; an occluded or uncovered area is seen by
one neighbour and not the other (they disagree); a change that lasts is shared by a neighbour. The
flow's forward-backward consistency is not asked for: the flow is computed against the dirty frame, and
it is exactly on the dirt that the two directions disagree (with it, 16 % of synthetic dirt on
old_movie_2 was found; models/MODELS.md). The flagged pixels, grown by ``GROW`` pixels, are filled with
the mean of the two moved neighbours, brought to this frame's exposure around the mark; every other
pixel is left exactly as it was.

At a shot's first frame the two frames after it stand in for the pair (and at its last, the two
before); a shot of fewer than three frames has no dirt removed.

Line scratches that last over many frames are shared by the neighbours, so the test above misses them;
they are found on each frame alone (``find_lines``, after the dirt is filled). A thin line is 1 to
``MAX_WIDTH`` columns whose luma is lighter (or darker) than the ``SIDE`` columns just left of it and
the ``SIDE`` just right of it, both by comparable amounts (``BALANCE``): a real edge differs on one side
only, or, sharpened, on both by very different amounts; anything wider than ``MAX_WIDTH`` has itself on
one side. The frame's height is cut into ``BANDS`` bands; a band's column means (film grain averaged
out, a vertical line kept) are tested with ``BAND_CONTRAST``, and a column is a line where it, or a
column beside it (a line leans a little), passes in ``MIN_BANDS`` bands of the same sign: counted band
by band, so a scratch over part of the height is found, and a thin thing in one band is not. On those
columns the pixels that pass the same test row by row (``PIXEL_CONTRAST``, on the median over
``PIXEL_ROWS`` rows) are the line, grown sideways by ``LINE_GROW``, and filled row by row with the
straight line between the unflagged pixels just left and right of them. A thin pole or cable that spans
most of the frame is, to this test, a scratch. Nothing here compares frames, so a frame's result
depends only on it and on the two frames its dirt is found against.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np

from .defects import tidy_mask
from .temporal import MEASURE_PRESET, optical_flow, pixel_grid, warp

THRESHOLD = 14.0  # luma levels (0..255) by which dirt is darker or lighter than its neighbours around it
REACH = 2         # pixels around: what the flow may be off by
AGREE = 40.0      # the neighbours, moved onto the frame, agree within this: old film's exposure flickers between
                  # frames, and a mark pulls the flow (old_movie_2's recall 0.868 at 20, 0.917 at 40 and at 60;
                  # old_movie_1's clean changes 0.038 -> 0.044 %)
STEADY = 10.0     # ... and where they agree within this everywhere within ``REACH``, the flow is right there: dirt
                  # is what stands out from them at the pixel itself (a dark mark beside a dark edge: recall on
                  # old_movie_2 0.816 -> 0.853, old_movie_1 0.925 -> 0.978; clean clips' changes as before)
GROW = 1          # pixels added around what is found (the soft edge of a mark)
MIN_AREA = 2      # a flagged spot of fewer pixels is noise, not dirt
EXPOSURE_WINDOW = 15  # pixels over which a fill takes the frame's own brightness
FLOW_SCALE = 2    # the flow is found on the frames at half their size: a mark pulls it less, so its fill is the
                  # scene under it (PSNR in the repaired dirt on the anime clip 26.2 -> 34.7 dB, old_movie_2's
                  # recall 0.853 -> 0.868), at half the time a frame; 3 and 4 lost precision (0.76 and 0.58 there)
MIN_FLOW_SIDE = 64  # ... where the frame's shorter side is at least this many pixels at that size

# line scratches
MAX_WIDTH = 3        # columns: the widest scratch found; a pole or a frame's edge wider than this is not one
SIDE = 2             # columns each side a line is compared with: its soft edge may spill onto the first
BALANCE = 0.5        # a band's weaker side stands out at least this share of its stronger side: the halo of a
                     # sharpened edge stands out far more from the dark side than from the bright one
BANDS = 12           # the height is judged in this many bands, so a scratch over part of it still counts
MIN_BANDS = 5        # bands (over 40 % of the height) a line must pass in, in the same sign; 4 took what the
                     # clean anime clip had changed from 0.07 % to 0.66 % (drawn seams of wooden planks)
BAND_CONTRAST = 8.0  # luma levels a band's column mean stands out by: under the 12 a scratch must change a pixel
                     # by to be damage (``degrade.film.VISIBLE``), over the grain left after averaging
PIXEL_ROWS = 5       # rows whose median the pixel test takes: one pixel's grain is as strong as a faint scratch
PIXEL_CONTRAST = 6.0  # luma levels a pixel of a found line's column stands out by to be repaired
PIXEL_BALANCE = 0.2  # looser than ``BALANCE``: the column is known to be a line; where it crosses an edge of the
                     # scene it stands out less from the bright side (recall on old_movie_1 0.79 -> 0.87)
MIN_RUN = 4          # a flagged piece of a line shorter than this (pixels) is grain, not scratch
LINE_GROW = 1        # columns added each side of what is found (the line's soft edge)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def _moved(frame: np.ndarray, onto: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frame`` moved onto ``onto`` by optical flow (found at 1/``FLOW_SCALE`` of the size), and where what it
    moved there came from inside it (HxW bool: what enters the picture at an edge has no true source, only the
    edge repeated)."""
    h, w = onto.shape[:2]
    k = FLOW_SCALE if min(h, w) >= FLOW_SCALE * MIN_FLOW_SIDE else 1
    if k == 1:
        flow = optical_flow(onto, frame, MEASURE_PRESET)
    else:
        small = (w // k, h // k)
        coarse = optical_flow(cv2.resize(onto, small, interpolation=cv2.INTER_AREA),
                              cv2.resize(frame, small, interpolation=cv2.INTER_AREA), MEASURE_PRESET)
        flow = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR) * np.float32(k)
    xs, ys = pixel_grid(h, w)
    x, y = xs + flow[..., 0], ys + flow[..., 1]
    return warp(frame, flow, (xs, ys)), (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


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
    (moved_a, inside_a), (moved_b, inside_b) = _moved(a, frame), _moved(b, frame)
    here, la, lb = _luma(frame), _luma(moved_a), _luma(moved_b)
    near_around = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * REACH + 1, 2 * REACH + 1))
    far_around = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * far * REACH + 1, 2 * far * REACH + 1))
    darkest = np.minimum(cv2.erode(la, near_around), cv2.erode(lb, far_around))
    lightest = np.maximum(cv2.dilate(la, near_around), cv2.dilate(lb, far_around))
    disagree = np.abs(la - lb)
    dirt = ((here < darkest - THRESHOLD) | (here > lightest + THRESHOLD)) & (disagree < AGREE)
    # where the moved neighbours agree closely all around, the flow holds: the pixel is compared with them alone
    steady = (cv2.dilate(disagree, near_around) < STEADY) & inside_a & inside_b
    dirt |= steady & ((here < np.minimum(la, lb) - THRESHOLD) | (here > np.maximum(la, lb) + THRESHOLD))
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


def find_lines(frame: np.ndarray) -> np.ndarray:
    """Where ``frame`` (uint8 RGB) holds thin vertical line scratches: HxW bool, grown by ``LINE_GROW``."""
    luma = _luma(frame)
    h, w = luma.shape
    found = np.zeros((h, w), bool)
    if h < BANDS or w < 2 * SIDE + MAX_WIDTH:
        return found
    starts = np.linspace(0, h, BANDS + 1).astype(int)[:-1]
    bands = np.add.reduceat(luma, starts, axis=0) / np.diff(np.append(starts, h))[:, None]
    band_contrast, band_width = line_contrast(bands, BALANCE)
    columns = {sign: _line_columns(sign * band_contrast >= BAND_CONTRAST, band_width) for sign in (1, -1)}
    wanted = np.flatnonzero(columns[1] | columns[-1])
    if not wanted.size:
        return found
    # the pixel test only around the line columns (it costs as much as finding the dirt, on a whole frame)
    x0, x1 = max(wanted[0] - MAX_WIDTH - SIDE, 0), min(wanted[-1] + MAX_WIDTH + SIDE + 1, w)
    pixel_contrast, pixel_width = line_contrast(_vertical_median(luma[:, x0:x1], PIXEL_ROWS), PIXEL_BALANCE)
    for sign in (1, -1):
        found[:, x0:x1] |= _covered(sign * pixel_contrast >= PIXEL_CONTRAST, pixel_width) & columns[sign][x0:x1]
    if not found.any():
        return found
    found = _runs_at_least(found, MIN_RUN)
    return cv2.dilate(found.astype(np.uint8), np.ones((1, 2 * LINE_GROW + 1), np.uint8)).astype(bool)


def _line_columns(lit_starts: np.ndarray, width: np.ndarray) -> np.ndarray:
    """The columns (W bool) that are a line of one sign: given where, band by band, a line of that sign starts
    (bands x W bool) and how wide it is, those covered, or beside one covered (a line leans a little), in at
    least ``MIN_BANDS`` bands."""
    lit = _covered(lit_starts, width)
    lit[:, 1:] |= lit[:, :-1].copy()
    lit[:, :-1] |= lit[:, 1:].copy()
    return lit.sum(axis=0) >= MIN_BANDS


def _vertical_median(luma: np.ndarray, rows: int) -> np.ndarray:
    """Each pixel's median over ``rows`` rows around it (the column's ends repeated): grain is cut down, and a
    scratch's end or break stays where it is (a mean would smear the line into it)."""
    half = rows // 2
    padded = np.pad(luma, ((half, half), (0, 0)), mode="edge")
    return np.partition(np.stack([padded[k:k + luma.shape[0]] for k in range(rows)]), half, axis=0)[half]


def line_contrast(rows: np.ndarray, balance: float) -> tuple[np.ndarray, np.ndarray]:
    """For each start column of ``rows`` (R x W luma): by how much the thin line best starting there (1 to
    ``MAX_WIDTH`` columns) is lighter (> 0) or darker (< 0) than the ``SIDE`` columns on each side of it, and
    that line's width (R x W). Its column and each side's column nearest to the other in value count, so every
    column of the line stands out from every column beside it; 0 where the two sides' contrasts differ in sign,
    or where the weaker is under ``balance`` of the stronger."""
    r, w = rows.shape
    padded = np.pad(rows, ((0, 0), (SIDE, MAX_WIDTH + SIDE)), mode="edge")

    def column(offset: int) -> np.ndarray:  # rows[:, x + offset] for every x
        return padded[:, SIDE + offset:SIDE + offset + w]

    best = np.zeros((r, w), np.float32)
    width = np.zeros((r, w), np.int8)
    for size in range(1, MAX_WIDTH + 1):
        line = [column(k) for k in range(size)]
        left = [column(-1 - k) for k in range(SIDE)]
        right = [column(size + k) for k in range(SIDE)]
        dimmest, brightest = np.minimum.reduce(line), np.maximum.reduce(line)
        light = _balanced(dimmest - np.maximum.reduce(left), dimmest - np.maximum.reduce(right), balance)
        dark = _balanced(np.minimum.reduce(left) - brightest, np.minimum.reduce(right) - brightest, balance)
        contrast = np.where(light > 0, light, -dark)
        contrast[:, max(w - size - SIDE + 1, 0):] = 0  # no room for the right side
        contrast[:, :SIDE] = 0                        # nor for the left
        better = np.abs(contrast) > np.abs(best)
        best[better], width[better] = contrast[better], size
    return best, width


def _balanced(left: np.ndarray, right: np.ndarray, balance: float) -> np.ndarray:
    """The weaker of two same-sign contrasts, where both are positive and the weaker is at least ``balance``
    of the stronger; else 0."""
    weak, strong = np.minimum(left, right), np.maximum(left, right)
    return np.where((weak > 0) & (weak >= balance * strong), weak, 0).astype(np.float32)


def _covered(starts: np.ndarray, width: np.ndarray) -> np.ndarray:
    """The columns covered by the lines starting where ``starts`` is True, each ``width`` columns wide."""
    covered = starts.copy()
    for k in range(1, MAX_WIDTH):
        covered[:, k:] |= (starts & (width > k))[:, :-k]
    return covered


def _runs_at_least(mask: np.ndarray, rows: int) -> np.ndarray:
    """``mask`` without its pieces (8-connected) fewer than ``rows`` tall."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    tall = stats[:, cv2.CC_STAT_HEIGHT] >= rows
    tall[0] = False
    return tall[labels]


def fill_across(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``frame`` (HxWx3 uint8) with the ``mask``'s pixels filled, row by row, on the straight line between the
    nearest unmasked pixels left and right of them (the one there is at the frame's border); others unchanged."""
    h, w = mask.shape
    columns = np.broadcast_to(np.arange(w), (h, w))
    left = np.maximum.accumulate(np.where(mask, -1, columns), axis=1)
    right = np.fliplr(np.minimum.accumulate(np.fliplr(np.where(mask, w, columns)), axis=1))
    ys, xs = np.nonzero(mask)
    lo, hi = left[ys, xs], right[ys, xs]
    lo, hi = np.where(lo < 0, hi, lo), np.where(hi >= w, lo, hi)
    keep = hi < w  # both sides missing (a whole row masked): nothing to fill from
    ys, xs, lo, hi = ys[keep], xs[keep], lo[keep], hi[keep]
    t = np.where(hi > lo, (xs - lo) / np.maximum(hi - lo, 1), 0.0)[:, None]
    value = frame[ys, lo].astype(np.float32) * (1 - t) + frame[ys, hi].astype(np.float32) * t
    out = frame.copy()
    out[ys, xs] = np.clip(value + 0.5, 0, 255).astype(np.uint8)
    return out


def remove_lines(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``frame`` (uint8 RGB) with its line scratches filled from beside them, and the mask of what was filled."""
    mask = find_lines(frame)
    return (fill_across(frame, mask) if mask.any() else frame), mask


def remove_damage(frames: Sequence[np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of ``frames`` (a run within one shot) with its dirt (``remove_dirt``) and then its line
    scratches (``remove_lines``) filled, and the mask of all that was filled: what ``clean_run`` gives."""
    out, dirt = remove_dirt(frames, index)
    return _lines_too(out, dirt)


def _lines_too(frame: np.ndarray, dirt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out, lines = remove_lines(frame)
    return out, dirt | lines


def clean_run(frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each frame of a run within one shot (uint8 RGB, in order) with its dirt and line scratches removed, and
    the mask of what was filled, as ``remove_damage`` gives them for the whole run, holding at most four
    frames: frame ``i`` is done once frame ``i + 1`` is there (the first once the third is), the last at the
    end."""
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
        yield _cleaned_at(held, base, done, count) if count >= 3 else _lines_too(held[done - base],
                                                                                 np.zeros(held[0].shape[:2], bool))
        done += 1


def _cleaned_at(held: list[np.ndarray], base: int, index: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``remove_damage`` for frame ``index`` of a run of at least ``count`` frames held from ``base`` on (a frame
    before the last known is interior, or the first: ``neighbours`` says the same for it in the whole run)."""
    a, b = neighbours(index, count)
    return _lines_too(*_repaired(held, index - base, (a - base, b - base)))
