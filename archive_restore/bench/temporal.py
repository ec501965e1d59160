"""``archive-restore bench temporal CLIP...``: how much the restored video flickers, the whole frame.

Each frame restored on its own may not match the next one where the scene did not change: a GAN
upscaler invents texture that need not be the same twice. The measure follows the motion: optical flow
(OpenCV's DIS) between consecutive *input* frames, scaled to the output, warps output frame ``t+1``
back onto frame ``t``; the flicker is the mean absolute difference of the two on luma (0..255), over
the pixels where the forward and the backward flow agree (occlusions and flow failures left out), in
the middle of the picture (a margin of 4 % left out, where the flow leaves the frame). Bicubic
enlargement is as steady as the source, so each method's figure is given as a ratio to bicubic's.

Methods: ``bicubic``; ``upscaler`` (the upscaler alone, on the raw frames); ``stack`` (cleanup ->
upscaler -> CondSR blend with a blind code for the clip, as the video job renders a shot without faces);
``stack+temporal`` (the stack with the video job's temporal steadying, ``pipeline.temporal``).

A CLIP is a video file (its first ``frames`` frames, deinterlaced as the video job would) or a folder of
frames (sorted by the numbers in their names).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError
from ..media.folders import image_files, load_rgb
from ..pipeline.engine import Engine, combine
from ..pipeline.stack import upscale_alone
from ..pipeline.temporal import TemporalSteadier, consistent_flow, warp

METHODS = ("bicubic", "upscaler", "stack", "stack+temporal")
MARGIN = 0.04  # of each side left out of the measure


@dataclass
class ClipFlicker:
    name: str
    frames: int
    size: tuple[int, int]
    flicker: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def ratio(self, method: str) -> float:
        return self.flicker[method] / max(self.flicker["bicubic"], 1e-9)


def read_clip(path: Path, frames: int) -> list[np.ndarray]:
    """The first ``frames`` frames of a video (as the video job decodes it) or of a folder of frames, uint8 RGB."""
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise DataError(f"{path}: no image files")
        files.sort(key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.stem)])
        return [load_rgb(p) for p in files[:frames]]
    from ..media.fields import plan_fields
    from ..media.video import field_counts, open_backend, probe

    info = probe(path)
    plan = plan_fields("auto", info.field_order, field_counts(path, info))
    out = []
    for frame in open_backend("pyav").frames(path, info, fields=plan):
        out.append(frame.rgb)
        if len(out) >= frames:
            break
    return out


def flicker(outputs: Sequence[np.ndarray], flows: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over consecutive pairs of the motion-compensated |difference| on luma (0..255): ``flows[t]`` is
    the forward flow t -> t+1 at the input's size and where it is reliable (``consistent_flow``)."""
    values = []
    for (a, b), (flow, reliable) in zip(zip(outputs, outputs[1:]), flows):
        h, w = a.shape[:2]
        scale = w / flow.shape[1]
        big = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * scale
        keep = cv2.resize(reliable.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        my, mx = int(h * MARGIN), int(w * MARGIN)
        keep[:my], keep[h - my:], keep[:, :mx], keep[:, w - mx:] = False, False, False, False
        diff = np.abs(_luma(a) - _luma(warp(b, big)))
        values.append(float(diff[keep].mean()))
    return float(np.mean(values))


def _luma(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float32) * (255.0 if rgb.dtype != np.uint8 else 1.0)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def measure_clip(engine: Engine, path: Path, frames: int = 24, methods: Sequence[str] = METHODS,
                 clock: Callable[[], float] | None = None) -> ClipFlicker:
    """Each method's flicker on ``path``'s first ``frames`` frames (see the module)."""
    import time

    clock = clock or time.monotonic
    raw = read_clip(path, frames)
    if len(raw) < 2:
        raise DataError(f"{path}: fewer than 2 frames")
    lq = [f.astype(np.float32) / 255.0 for f in raw]
    flows = [consistent_flow(a, b) for a, b in zip(raw, raw[1:])]
    scale = engine.options.scale
    code = combine(np.stack([engine.image_blind_code(f) for f in lq[:: max(1, len(lq) // 3)][:3]]))
    result = ClipFlicker(path.name, len(raw), (raw[0].shape[1], raw[0].shape[0]))
    stack: list[np.ndarray] | None = None  # the stack's frames, steadied by stack+temporal
    for method in methods:
        started = clock()
        if method == "bicubic":
            out = [cv2.resize(f, (f.shape[1] * scale, f.shape[0] * scale), interpolation=cv2.INTER_CUBIC) for f in lq]
        elif method == "upscaler":
            if engine.upscaler is None:
                continue
            out = [upscale_alone(engine.upscaler, engine.upscaler.scale, f, scale) for f in lq]
        elif method == "stack":
            out = stack = engine.restore_frames(lq, code, batch=1)
        elif method == "stack+temporal":
            stack = stack if stack is not None else engine.restore_frames(lq, code, batch=1)
            steadier = TemporalSteadier()
            out = [steadier.push(f, r) for f, r in zip(raw, stack)]
        else:
            raise DataError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
        result.seconds[method] = clock() - started
        result.flicker[method] = flicker([np.clip(o, 0, 1) if o.dtype != np.uint8 else o for o in out], flows)
    return result


def format_table(clips: Sequence[ClipFlicker], upscaler: str) -> str:
    methods = [m for m in METHODS if all(m in c.flicker for c in clips)]
    lines = [f"flicker after motion compensation (mean |luma difference| 0..255), ratio to bicubic; "
             f"upscaler: {upscaler}",
             f"{'clip':<24}{'frames':>7}  " + "  ".join(f"{m:>22}" for m in methods)]
    for c in clips:
        cells = [f"{c.flicker[m]:7.3f} ({c.ratio(m):5.3f}x)" for m in methods]
        lines.append(f"{c.name[:24]:<24}{c.frames:>7}  " + "  ".join(f"{x:>22}" for x in cells))
    if len(clips) > 1:
        means = [float(np.mean([c.ratio(m) for c in clips])) for m in methods]
        lines.append(f"{'mean ratio':<24}{'':>7}  " + "  ".join(f"{'':>14}{r:6.3f}x" for r in means))
    return "\n".join(lines)
