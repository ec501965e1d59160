"""``archive-restore bench niqe``: mean NIQE (lower is more natural) of the images in each folder, and the
fit of the pristine model it compares against (``--fit DIR --out FILE``); see ``quality.niqe``.

With ``--bicubic-x4`` each image is also scored after an x4 round trip (area down by 4, bicubic back
up): the ranking check, since an HQ photo should score lower than its bicubic x4 version."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import InputError, UsageError
from ..quality.niqe import (
    DEFAULT_MODEL,
    MIN_SIDE,
    PristineModel,
    fit_pristine,
    load_pristine,
    niqe,
)


def bicubic_x4(img: np.ndarray) -> np.ndarray:
    """The image cropped to a multiple of 4, area-downscaled by 4 and bicubic-upscaled back (uint8)."""
    h, w = img.shape[0] // 4 * 4, img.shape[1] // 4 * 4
    img = img[:h, :w]
    small = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _mean(scores: dict[str, float]) -> float | None:
    return float(np.mean(list(scores.values()))) if scores else None


View = Callable[[np.ndarray], np.ndarray]  # uint8 RGB image -> the version scored beside it


def upscale_view(method: str) -> tuple[str, View]:
    """``bicubic`` or an upscaler (a name or file ``--upscaler`` takes): the image enlarged x4 by it,
    to score the upscaler alone on real photos without a reference."""
    if method == "bicubic":
        return "x4 bicubic", lambda img: cv2.resize(img, (img.shape[1] * 4, img.shape[0] * 4),
                                                    interpolation=cv2.INTER_CUBIC)
    from ..pipeline.stack import upscale_alone
    from ..upscalers.upscaler import load_upscaler, resolve_upscaler

    ref = resolve_upscaler(method)
    if ref.path is None:
        raise UsageError("--upscale takes bicubic or an upscaler file or name, not condsr")
    upscaler = load_upscaler(ref)

    def view(img: np.ndarray) -> np.ndarray:
        enlarged = upscale_alone(upscaler, upscaler.scale, img.astype(np.float32) / 255)
        return np.round(enlarged * 255).astype(np.uint8)

    return f"x4 {ref.name}", view


def score_folder(folder: Path, model: PristineModel, views: dict[str, View] | None = None,
                 progress: bool = True) -> dict:
    """NIQE of every image under ``folder`` (recursive), and of each ``views`` version of it (the x4
    bicubic round trip, or the image enlarged by bicubic or an upscaler); images too small or
    without texture are skipped and counted by reason. ``seconds_per_image``: reading and scoring
    (every view included), per file."""
    from ..media.folders import image_files, load_rgb

    views = views or {}
    scores: dict[str, float] = {}
    by_view: dict[str, dict[str, float]] = {name: {} for name in views}
    skipped: dict[str, int] = {}
    files = image_files(folder)
    start = time.perf_counter()
    for path in tqdm(files, desc=folder.name, unit="image", disable=not progress, file=sys.stderr):
        img = load_rgb(path)
        name = path.relative_to(folder).as_posix()
        if min(img.shape[:2]) < MIN_SIDE:
            skipped["too small"] = skipped.get("too small", 0) + 1
            continue
        try:
            score = niqe(img, model)
            seen = {view: niqe(fn(img), model) for view, fn in views.items()}
        except InputError:  # not one patch with any texture
            skipped["no texture"] = skipped.get("no texture", 0) + 1
            continue
        scores[name] = score
        for view, value in seen.items():
            by_view[view][name] = value
    result = {"folder": str(folder), "images": len(scores), "mean": _mean(scores), "skipped": skipped,
              "seconds_per_image": (time.perf_counter() - start) / max(1, len(files)), "per_image": scores,
              "views": {view: {"mean": _mean(values), "per_image": values,
                               "images_lower": sum(scores[k] < values[k] for k in scores)}
                        for view, values in by_view.items()}}
    return result


def run_niqe(folders: Sequence[Path], model_path: Path | None = None, bicubic: bool = False,
             upscale: Sequence[str] = (), progress: bool = True) -> dict:
    """Mean NIQE per folder (and per view: ``bicubic``, the x4 round trip; ``upscale``, each image
    enlarged x4 by these methods), with the model used and its provenance."""
    model = load_pristine(model_path)
    views = dict([("bicubic x4 round trip", bicubic_x4)] if bicubic else [])
    views.update(upscale_view(method) for method in upscale)
    return {"model": str(model_path or DEFAULT_MODEL), "model_provenance": model.provenance,
            "folders": [score_folder(Path(f), model, views, progress) for f in folders]}


def format_lines(result: dict) -> str:
    """One line per folder: its mean NIQE, then each view's (and on how many images the folder's own
    image scored lower)."""
    lines = []
    for f in result["folders"]:
        mean = "n/a" if f["mean"] is None else f"{f['mean']:.3f}"
        line = f"{f['folder']}: NIQE {mean} over {f['images']} images"
        for view, v in f["views"].items():
            line += (f"; {view} {'n/a' if v['mean'] is None else format(v['mean'], '.3f')} "
                     f"(the image itself lower on {v['images_lower']}/{f['images']})")
        if f["skipped"]:
            line += "; skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(f["skipped"].items()))
        lines.append(line + f" [{f['seconds_per_image'] * 1000:.0f} ms/image]")
    return "\n".join(lines)


def fit_model(folder: Path, out: Path, command: str, progress: bool = True) -> PristineModel:
    """Fit the pristine model on the images under ``folder`` and save it to ``out`` with its provenance."""
    from ..media.folders import image_files

    files = image_files(folder)
    counts: dict[str, int] = {}
    for path in files:
        top = path.relative_to(folder).parts[0] if len(path.relative_to(folder).parts) > 1 else "."
        counts[top] = counts.get(top, 0) + 1
    model = fit_pristine(files, progress=progress,
                         provenance={"folder": str(folder), "files": len(files), "files_per_subfolder": counts,
                                     "command": command})
    model.save(out)
    return model
