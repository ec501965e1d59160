"""Interlaced and telecined clips made by the tests: progressive pictures with moving vertical edges,
woven into fields (top or bottom first), flagged or not, or put through 3:2 pulldown; and a measure of
combing."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

WIDTH, HEIGHT = 96, 64
NTSC = Fraction(30000, 1001)


def picture(t: float) -> np.ndarray:
    """A progressive picture at time ``t`` (in field periods): vertical bars that move right, full height
    (so every edge is vertical and a woven frame combs on each of them)."""
    x = np.arange(WIDTH, dtype=np.float32)
    bars = ((x - 3.0 * t) % 24) < 12
    shade = np.where(bars, 210, 50).astype(np.uint8)
    rgb = np.repeat(np.broadcast_to(shade[None, :], (HEIGHT, WIDTH))[..., None], 3, axis=2).copy()
    rgb[..., 1] = (rgb[..., 1] * 0.8).astype(np.uint8)
    return rgb


def weave(first: np.ndarray, second: np.ndarray, tff: bool) -> np.ndarray:
    """A frame whose first field (shown first) comes from ``first`` and the other from ``second``."""
    out = first.copy()
    if tff:
        out[1::2] = second[1::2]
    else:
        out[0::2] = second[0::2]
    return out


def write(path: Path, frames: list[np.ndarray], rate: Fraction, field_order: str | None, intra: bool = False) -> Path:
    """An H.264 mp4 of ``frames``; ``field_order`` ``tff``/``bff`` flags it interlaced, None leaves it
    progressive (as a capture that does not say so); ``intra``: every frame a keyframe (a seek lands on
    the frame asked for)."""
    options = {"bf": "0", "crf": "12", "preset": "ultrafast", **({"g": "1"} if intra else {})}
    if field_order:
        options["x264-params"] = f"{field_order}=1"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def interlaced(path: Path, count: int = 30, tff: bool = True, flagged: bool = True, rate: Fraction = Fraction(25),
               intra: bool = False) -> Path:
    """``count`` frames, each two fields half a frame apart in time."""
    frames = [weave(picture(2 * i), picture(2 * i + 1), tff) for i in range(count)]
    return write(path, frames, rate, ("tff" if tff else "bff") if flagged else None, intra)


def progressive(path: Path, count: int = 30, flagged_as: str | None = None) -> Path:
    """Progressive pictures; ``flagged_as`` ``tff`` makes the flag lie."""
    return write(path, [picture(2 * i) for i in range(count)], Fraction(25), flagged_as)


def telecined(path: Path, film_frames: int = 20, flagged: bool = False,
              intra: bool = False) -> tuple[Path, list[np.ndarray]]:
    """Film frames at 24000/1001 through 3:2 pulldown into 30000/1001 video (top fields A A B C D,
    bottom fields A B C C D per four film frames); returns the file and the film frames."""
    film = [picture(2.5 * i) for i in range(film_frames)]
    frames = []
    for at in range(0, film_frames, 4):
        a, b, c, d = film[at:at + 4]
        frames += [a, weave(a, b, True), weave(b, c, True), c, d]
    return write(path, frames, NTSC, "tff" if flagged else None, intra), film


def combing(rgb: np.ndarray, size: tuple[int, int] = (WIDTH, HEIGHT)) -> float:
    """The mean of |2 row(i) - row(i-1) - row(i+1)| of the luma, after scaling back to ``size``: high
    where two moments are woven into one frame, near 0 on progressive pictures of vertical edges."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)
    if grey.shape[::-1] != size:
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return float(np.mean(np.abs(2 * grey[1:-1] - grey[:-2] - grey[2:])))
