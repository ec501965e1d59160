"""``archive-restore bench defects CLIP...``: how well one-frame film dirt is found and removed, and what it
costs on clean frames (``pipeline.film_dirt``).

For each clip (a video file or a folder of frames), each frame but the first and last gets synthetic dirt
(``degrade.film.film_dirt``: blotches and a hair, seeded) while its neighbours stay as they are; the dirt's
mask is the truth. Figures, over the clip: recall (of the truth's pixels, the share found), precision (of
the pixels found, the share within the truth grown by one pixel: the repair grows what it finds by as much;
and again with the pixels it also finds on the clip as it is left out: a real dusty film's own dirt is not a
false positive), PSNR inside the truth of the damaged frame and of the repaired one against the frame before
the dirt, and on the clip as it is (no synthetic dirt) the share of pixels changed: what false positives
cost, or, on a real dusty film, its own dirt found; and the clip's whole-frame flicker (``bench temporal``'s
measure, on the input's own flow) after the stage over before it, on the clip as it is.

Line scratches, in a second table: the same frames, all of them, get one to three synthetic vertical scratches
that last over the clip (``degrade.film.line_scratches``, seeded apart from the dirt, so the dirt's figures are
as they were), and each frame alone goes through the line test (``pipeline.film_dirt.remove_lines``). The same
figures: recall, precision against the truth grown by a pixel (and with the clip's own finds left out), PSNR
inside the truth, the share of the clip's pixels, as it is, that the test changes, and its flicker after over before.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..degrade.film import film_dirt, line_scratches
from ..errors import DataError
from ..pipeline.film_dirt import remove_dirt, remove_lines
from ..pipeline.temporal import consistent_flow
from .temporal import flicker, read_clip


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
    flicker_ratio: float  # the clip as it is: its whole-frame flicker after the stage over before it


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR of two sets of pixels (no shave, all channels): 99 when they are equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


def measure_clip(path: Path, frames: int = 12, seed: int = 7) -> DirtFigures:
    raw = read_clip(path, frames)
    if len(raw) < 3:
        raise DataError(f"{path}: fewer than 3 frames")
    rng = np.random.default_rng(seed)
    as_is = [remove_dirt(raw, t) for t in range(len(raw))]

    def cases():
        for t in range(1, len(raw) - 1):
            dirty, mask = film_dirt(raw[t], rng)
            run = list(raw)
            run[t] = dirty
            yield (raw[t], dirty, mask, *remove_dirt(run, t), as_is[t][1])

    return _figures(path.name, len(raw), cases(), flicker_ratio(raw, [out for out, _ in as_is]))


def flicker_ratio(raw: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> float:
    """The whole-frame flicker (``bench.temporal.flicker``) of ``out`` over that of ``raw``, the clip it was made
    from, both on the flow of ``raw``: below 1, steadier."""
    flows = [consistent_flow(a, b) for a, b in zip(raw, raw[1:])]
    return flicker(out, flows) / max(flicker(raw, flows), 1e-9)


def _figures(name: str, frames: int, cases, flicker_after_before: float) -> DirtFigures:
    """The figures of (clean frame, damaged frame, true mask, repaired frame, found mask, found on the clean
    frame) cases: a find within a pixel of the truth is right; what is found on the clean frame too, away from
    the truth, is the clip's own damage (the precision without it)."""
    found = truth = right = flagged = own = changed = pixels = 0
    damaged_in, repaired_in, clean_in = [], [], []
    for clean, dirty, mask, out, hit, on_clean in cases:
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        found += int((hit & mask).sum())
        truth += int(mask.sum())
        right += int((hit & grown).sum())
        flagged += int(hit.sum())
        own += int((hit & ~grown & on_clean).sum())
        damaged_in.append(dirty[mask])
        repaired_in.append(out[mask])
        clean_in.append(clean[mask])
        changed += int(on_clean.sum())
        pixels += on_clean.size
    reference = np.concatenate(clean_in)
    return DirtFigures(name, frames, found / max(truth, 1), right / max(flagged, 1), right / max(flagged - own, 1),
                       _psnr(np.concatenate(damaged_in), reference), _psnr(np.concatenate(repaired_in), reference),
                       100.0 * changed / max(pixels, 1), flicker_after_before)


def format_table(rows: Sequence[DirtFigures], title: str = "one-frame film dirt (synthetic, on every frame but "
                 "the first and last), found against the frames beside it", psnr: str = "PSNR in dirt: damaged") -> str:
    lines = [title,
             f"{'clip':<24}{'frames':>7}{'recall':>8}{'precision':>11}{'(own left out)':>16}"
             f"{psnr:>23}"
             f"{'repaired':>10}{'clean clip changed':>20}{'flicker after/before':>22}"]
    for r in rows:
        lines.append(f"{r.name[:24]:<24}{r.frames:>7}{r.recall:>8.3f}{r.precision:>11.3f}"
                     f"{r.precision_own_left_out:>16.3f}{r.psnr_damaged:>20.2f} dB"
                     f"{r.psnr_repaired:>7.2f} dB{r.clean_changed_percent:>18.3f} %{r.flicker_ratio:>22.4f}")
    return "\n".join(lines)


def measure_lines(path: Path, frames: int = 12, seed: int = 7) -> DirtFigures:
    """Line scratches on the clip's first ``frames`` frames found and filled, frame by frame (see above)."""
    raw = read_clip(path, frames)
    if not raw:
        raise DataError(f"{path}: no frames")
    damaged, masks = line_scratches(raw, np.random.default_rng([seed, 1]))
    as_is = [remove_lines(clean) for clean in raw]
    cases = ((clean, dirty, mask, *remove_lines(dirty), found[1])
             for clean, dirty, mask, found in zip(raw, damaged, masks, as_is))
    return _figures(path.name, len(raw), cases, flicker_ratio(raw, [out for out, _ in as_is]))


def format_lines(rows: Sequence[DirtFigures]) -> str:
    return format_table(rows, "line scratches (synthetic, on every frame, lasting over the clip), found on each "
                              "frame alone", "PSNR in line: damaged")


# ---------------------------------------------------------------------------------------------- photos
@dataclass
class PhotoFigures:
    images: int
    detector: dict      # precision, recall, f1, psnr_in_mask (repaired), psnr_whole
    threshold: dict     # the same for a simple detector: luma off its 7x7 median by 30 levels, inpainted alike
    damaged: dict       # psnr_in_mask and psnr_whole of the damaged picture
    clean_flagged_median: float  # percent of a clean picture's pixels flagged
    clean_flagged_p95: float
    clean_psnr_change: float     # a clean picture after the repair against before (dB; 99: unchanged)
    detector_threshold: float = 0.5  # the probability our detector's pixels were flagged at
    by_kind: dict | None = None  # per kind of mark (``degrade.defects.KINDS``): share of the damage, our recall and
                                 # PSNR inside it after our repair


def threshold_mask(rgb: np.ndarray) -> np.ndarray:
    """The simple detector beside ours: luma off its 7x7 median by more than 30 levels."""
    luma = (np.clip(rgb @ np.array([0.299, 0.587, 0.114], np.float32), 0, 1) * 255).astype(np.uint8)
    return np.abs(luma.astype(np.int16) - cv2.medianBlur(luma, 7).astype(np.int16)) > 30


def measure_photos(folder: Path, models_dirs: Sequence[Path], max_images: int = 38, seed: int = 7,
                   side: int = 512, threshold: float | None = None) -> PhotoFigures:
    """Held-out HQ photos (at most ``side`` px long), each damaged (``degrade.defects``) and passed through a
    light or medium degradation of our chain; the truth is the damage's mask; the reference for PSNR is the same
    photo through the same degradation, undamaged."""
    from ..degrade.defects import KINDS, damage_kinds, scan_degradation
    from ..media.folders import image_files, load_rgb
    from ..pipeline.defects import DefectRepair, inpaint

    files = image_files(folder)[:max_images]
    if not files:
        raise DataError(f"{folder}: no photos")
    repair = DefectRepair.load(list(models_dirs), threshold=threshold)
    rng = np.random.default_rng(seed)
    sums = {name: np.zeros(4) for name in ("ours", "threshold")}  # hits, flagged, truth, grown hits
    inside = {name: [] for name in ("ours", "threshold", "damaged")}
    whole = {name: [] for name in ("ours", "threshold", "damaged")}
    flagged, changes = [], []
    kinds = {name: {"truth": 0, "found": 0, "repaired": [], "clean": []} for name in KINDS}
    for path in files:
        img = load_rgb(path, side).astype(np.float32) / 255
        damaged, truth, labels = damage_kinds(img, rng, float(rng.uniform(0.5, 2.0)))
        chain = scan_degradation(rng)
        clean, seen = chain.apply(img), chain.apply(damaged)
        grown = cv2.dilate(truth.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        for name, mask in (("ours", repair.mask(seen)), ("threshold", threshold_mask(seen))):
            fixed = inpaint(seen, mask) if mask.any() else seen
            sums[name] += [(mask & truth).sum(), mask.sum(), truth.sum(), (mask & grown).sum()]
            inside[name].append((fixed[truth], clean[truth]))
            whole[name].append(_psnr(fixed, clean, 1.0))
            if name == "ours":
                for label, kind in enumerate(KINDS, start=1):
                    where = labels == label
                    k = kinds[kind]
                    k["truth"] += int(where.sum())
                    k["found"] += int((mask & where).sum())
                    k["repaired"].append(fixed[where])
                    k["clean"].append(clean[where])
        inside["damaged"].append((seen[truth], clean[truth]))
        whole["damaged"].append(_psnr(seen, clean, 1.0))
        on_clean, found = repair.repair(clean)
        flagged.append(100.0 * found.mean())
        changes.append(_psnr(on_clean, clean, 1.0))

    def rates(name: str) -> dict:
        hits, marked, truth, grown_hits = sums[name]
        precision, recall = grown_hits / max(marked, 1), hits / max(truth, 1)
        return {"precision": round(precision, 4), "recall": round(recall, 4),
                "f1": round(2 * precision * recall / max(precision + recall, 1e-9), 4),
                "psnr_in_mask": round(_psnr(*map(np.concatenate, zip(*inside[name])), peak=1.0), 3),
                "psnr_whole": round(float(np.mean(whole[name])), 3)}

    return PhotoFigures(len(files), rates("ours"), rates("threshold"),
                        {"psnr_in_mask": round(_psnr(*map(np.concatenate, zip(*inside["damaged"])), peak=1.0), 3),
                         "psnr_whole": round(float(np.mean(whole["damaged"])), 3)},
                        round(float(np.median(flagged)), 4), round(float(np.percentile(flagged, 95)), 4),
                        round(float(np.mean(changes)), 3), repair.threshold, _by_kind(kinds))


def _by_kind(kinds: dict) -> dict:
    total = max(sum(k["truth"] for k in kinds.values()), 1)
    return {name: {"share": round(k["truth"] / total, 4), "recall": round(k["found"] / max(k["truth"], 1), 4),
                   "psnr_in_mask": round(_psnr(np.concatenate(k["repaired"]), np.concatenate(k["clean"]), 1.0), 3)}
            for name, k in kinds.items() if k["truth"]}


def format_photos(f: PhotoFigures) -> str:
    lines = [f"photos: {f.images} held-out pictures with synthetic print damage, then a light or medium degradation",
             f"{'':<28}{'precision':>10}{'recall':>8}{'F1':>7}{'PSNR in damage':>16}{'PSNR whole':>12}"]
    for name, r in ((f"our detector (p >= {f.detector_threshold:g})", f.detector), ("threshold detector", f.threshold)):
        lines.append(f"{name:<28}{r['precision']:>10.3f}{r['recall']:>8.3f}{r['f1']:>7.3f}"
                     f"{r['psnr_in_mask']:>13.2f} dB{r['psnr_whole']:>9.2f} dB")
    inside, whole = f.damaged["psnr_in_mask"], f.damaged["psnr_whole"]
    lines.append(f"{'damaged, as it is':<28}{'':>25}{inside:>13.2f} dB{whole:>9.2f} dB")
    for kind, k in (f.by_kind or {}).items():
        lines.append(f"  {kind:<20}{k['share']:>9.1%} of the damage; our recall {k['recall']:.3f}, PSNR in "
                     f"it after our repair {k['psnr_in_mask']:.2f} dB")
    lines.append(f"clean pictures: flagged {f.clean_flagged_median:.3f} % (median), {f.clean_flagged_p95:.3f} % (95th "
                 f"percentile); after the repair {f.clean_psnr_change:.2f} dB from before (99: unchanged)")
    return "\n".join(lines)
