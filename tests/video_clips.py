"""Tiny video clips made by the tests with PyAV: irregular pts, audio, colour tags, rotation, shots."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

TB = Fraction(1, 1000)
SHOT_COLOURS = ((200, 60, 40), (40, 160, 220), (90, 200, 90), (230, 210, 60))


def vfr_pts(count: int, seed: int = 0) -> list[int]:
    """Strictly increasing, irregular pts in milliseconds (a variable-frame-rate clip)."""
    steps = np.random.default_rng(seed).choice([20, 33, 41, 67, 100], size=count)
    return [int(x) for x in np.concatenate([[40], 40 + np.cumsum(steps[:-1])])]


def frame_pixels(index: int, width: int, height: int, shot: int = 0) -> np.ndarray:
    """A distinct frame: a shot's colour, a gradient and a square that moves with ``index``."""
    base = np.array(SHOT_COLOURS[shot % len(SHOT_COLOURS)], np.float32)
    ramp = np.linspace(0.6, 1.0, width, dtype=np.float32)[None, :, None]
    img = np.broadcast_to(base * ramp, (height, width, 3)).copy()
    side = max(4, min(width, height) // 4)
    x = (index * 5) % max(1, width - side)
    y = (index * 3) % max(1, height - side)
    img[y:y + side, x:x + side] = (255 - base) * 0.9
    return img.clip(0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Clip:
    path: Path
    pts: list[int]
    frames: list[np.ndarray]


def make_clip(path: Path, count: int = 12, width: int = 64, height: int = 48, *, pts: list[int] | None = None,
              shots: tuple[int, ...] = (), audio: bool = True, rotation: int = 0, colour: dict | None = None,
              subtitle: bool = False, time_base: Fraction = TB) -> Clip:
    """Write an mp4 (h264, time base ``time_base``, 1/1000 unless given; or the container ``path``'s
    suffix names) and return its pts (in ``time_base``) and source frames.

    ``shots`` lists the frame indices where a new shot starts (a hard cut to another colour);
    ``subtitle`` adds a text subtitle stream (mov_text in mp4/mov, subrip otherwise; see
    :data:`SUBTITLES`).
    """
    pts = pts if pts is not None else vfr_pts(count)
    frames = [frame_pixels(i, width, height, shot=sum(i >= s for s in shots)) for i in range(len(pts))]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "10", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width + width % 2, height + height % 2, "yuv420p"
        if width % 2 or height % 2:
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv444p"
        stream.codec_context.time_base = time_base
        for name, value in (colour or {}).items():
            setattr(stream.codec_context, name, value)
        if rotation:
            stream.set_display_rotation(rotation)
        sound = _audio_stream(out) if audio else None
        text = _subtitle_stream(out, path) if subtitle else None
        tags = {k: v for k, v in (("dst_colorspace", (colour or {}).get("colorspace")),
                                  ("dst_color_range", (colour or {}).get("color_range"))) if v is not None}
        for p, rgb in zip(pts, frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=stream.pix_fmt, **tags)
            frame.pts, frame.time_base = p, time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if sound is not None:
            _write_audio(out, sound, seconds=float(pts[-1] * time_base) + 0.1)
        if text is not None:
            _write_subtitles(out, text, path)
    return Clip(path, pts, frames)


#: (start ms, duration ms, text) of the subtitles ``make_clip(subtitle=True)`` writes.
SUBTITLES = ((0, 80, "hello"), (120, 60, "wörld"), (200, 100, "archive-restore"))
_ASS_HEADER = (  # what ffmpeg's mov_text encoder needs before it opens (the styles of the text)
    "[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, "
    "Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, "
    "MarginR, MarginV, Encoding\nStyle: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,"
    "10,10,10,0\n\n[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n")


def _mov_text(path: Path) -> bool:
    return path.suffix.lower() in (".mp4", ".mov", ".m4v")


def _subtitle_stream(out, path: Path):
    stream = out.add_stream("mov_text" if _mov_text(path) else "subrip")
    stream.codec_context.subtitle_header = _ASS_HEADER.encode()
    return stream


def _write_subtitles(out, stream, path: Path) -> None:
    """Subtitle packets muxed as they are (mov_text: a 16-bit length, then the UTF-8 text)."""
    for start, duration, text in SUBTITLES:
        data = text.encode()
        packet = av.Packet(len(data).to_bytes(2, "big") + data if _mov_text(path) else data)
        packet.stream, packet.time_base = stream, TB
        packet.pts = packet.dts = start
        packet.duration = duration
        out.mux(packet)


def _audio_stream(out):
    return out.add_stream("aac", rate=16000, layout="mono")


def _write_audio(out, stream, seconds: float) -> None:
    rng = np.random.default_rng(5)
    total = int(seconds * 16000)
    for start in range(0, total, 1024):
        samples = (0.1 * rng.standard_normal((1, 1024))).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 16000, start, Fraction(1, 16000)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def decoded(path: Path) -> tuple[list[int], Fraction, list[np.ndarray]]:
    """(pts, time base, RGB frames) of a file's video stream, decoded with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(f.pts, f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
        return [p for p, _ in frames], Fraction(stream.time_base), [f for _, f in frames]


def packet_hashes(path: Path, kind: str = "audio") -> list[tuple[Fraction, str]]:
    """(pts in seconds, sha1 of the bytes) of every packet of the first stream of ``kind``."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        if not streams:
            return []
        stream = streams[0]
        return [(Fraction(p.pts) * Fraction(stream.time_base), hashlib.sha1(bytes(p)).hexdigest())
                for p in container.demux(stream) if p.size]


def stream_start(path: Path, kind: str) -> Fraction | None:
    """The first stream of ``kind``'s start time in seconds."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return None if stream.start_time is None else stream.start_time * Fraction(stream.time_base)


def make_audio_only(path: Path, streams: int = 1) -> None:
    """An mp4 with ``streams`` AAC streams and no video stream (a bad input for the video job)."""
    with av.open(str(path), "w") as out:
        for stream in [out.add_stream("aac", rate=16000, layout="mono") for _ in range(streams)]:
            for i in range(4):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 16000, i * 1024
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
