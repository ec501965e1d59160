"""Video input and output: probe, decode with exact timestamps, encode segments, join them.

Decoding sits behind one small interface, :class:`VideoBackend`, with two implementations chosen by
name (:func:`open_backend`): ``pyav`` (PyAV, the default) and ``decord`` (optional; installed with
``pip install archive-restore[decord]``). Everything else here uses PyAV.

What is exact, and how:

* Timestamps are the stream's own integer ``pts`` in its ``time_base``; times are ``Fraction``s.
  Nothing is computed as ``index / fps``. Decoded frames come in presentation order; packets the
  container marks as discarded (edit lists) are not frames of the video.
* Frame counts are counted while decoding, never read from a header (``VideoInfo.header_frames`` is
  what the header claims, kept only to be reported).
* Encoded segments carry the input pts less the segment's first (its ``origin``), so each starts at
  0, plus the input's colour metadata; the encoder makes no B-frames, so decode and presentation
  order agree and segments join with increasing dts. (mp4 stores a later start as an edit list in
  milliseconds: a segment starting at 96000/19184 s came back 3 ticks early. Starting at 0 needs no
  edit list; the join adds each origin back exactly.)
* :func:`join_segments` copies the segments' video packets and the input's audio and subtitle
  packets unchanged (a remux: no re-encode) into one file, interleaved by time.

Damaged files: PyAV decodes packet by packet; a packet the decoder refuses, or a frame without a
usable timestamp (none, or not after the previous one), is dropped and counted, and decoding goes
on, so every frame that decodes is kept with its own pts. A :class:`DecodeTally` passed to
``frames`` records what a pass met (FFmpeg's own messages included, collected, never printed) and
estimates the frames lost (:meth:`DecodeTally.lost`).

Frames are ``HxWx3`` RGB, ``uint8`` or ``float32`` in [0, 1].
"""
from __future__ import annotations

import heapq
import math
import os
import statistics
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import numpy as np

from ..errors import InputError, UnsupportedFormatError, UsageError
from .fields import (
    CONTEXT_FRAMES,
    CYCLE,
    DETECT_FRAMES,
    FieldCounts,
    FieldPlan,
    count_fields,
    field_order_of,
)
from .quiet import collecting_ffmpeg_messages, ffmpeg_messages

BACKENDS = ("pyav", "decord")
DEFAULT_CODEC = "libx264"
#: Encoders that take ``crf`` and ``preset`` options.
_CRF_CODECS = ("libx264", "libx265")
#: Encoders that can only store even frame sizes in the pixel format used.
_PIX_FMTS = {"libx264": "yuv420p", "libx265": "yuv420p", "ffv1": "yuv444p", "mpeg4": "yuv420p"}
_BATCH = 8  # frames per decord request


@dataclass(frozen=True)
class Colour:
    """Colour description of a stream, as FFmpeg's enum values (``None``: unspecified)."""

    primaries: int | None = None
    transfer: int | None = None
    matrix: int | None = None
    range: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {"primaries": self.primaries, "transfer": self.transfer, "matrix": self.matrix,
                "range": self.range}


@dataclass(frozen=True)
class StreamInfo:
    """An audio, subtitle or other stream that is copied, not decoded."""

    index: int
    type: str
    codec: str


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` finds in a file."""

    path: Path
    format: str
    video_index: int
    codec: str
    width: int
    height: int
    time_base: Fraction
    rotation: int
    colour: Colour
    average_rate: Fraction | None
    header_frames: int | None
    audio: tuple[StreamInfo, ...] = ()
    subtitles: tuple[StreamInfo, ...] = ()
    duration: Fraction | None = None  # the video stream's stated duration in seconds, when stated
    field_order: str | None = None  # progressive, tff or bff as the codec flags it; None: not said
    first_pts: int | None = None  # the first decoded frame's pts

    def summary(self) -> str:
        """One line for logs and ``status``."""
        extra = f", {len(self.audio)} audio" if self.audio else ", no audio"
        rotated = f", rotated {self.rotation}°" if self.rotation else ""
        return f"{self.codec} {self.width}x{self.height}, time base {self.time_base}{extra}{rotated}"


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its pts in the stream's time base and its pixels."""

    pts: int
    time_base: Fraction
    rgb: np.ndarray

    @property
    def time(self) -> Fraction:
        return self.pts * self.time_base


# ------------------------------------------------------------------------------------------- probe
def _open(path: Path) -> av.container.InputContainer:
    """Open ``path`` for reading, turning every failure into a one-line InputError."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    try:
        return av.open(str(path), "r")
    except av.FFmpegError as exc:
        raise InputError(f"{path}: not a readable video file ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    streams = [s for s in container.streams.video
               if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not streams:
        found = ", ".join(f"{s.type} ({s.codec_context.name})" for s in container.streams) or "none"
        raise InputError(f"{path}: no video stream (streams found: {found})")
    return streams[0]


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe a video file (see :func:`_probe`); FFmpeg's complaints end in the error's message."""
    with ffmpeg_messages() as said:
        try:
            return _probe(path)
        except InputError as exc:
            failure = exc
    raise type(failure)(with_ffmpeg_said(str(failure), said)) from failure


def with_ffmpeg_said(message: str, said: list[str], shown: int = 3) -> str:
    """``message`` with FFmpeg's first messages appended, each on the error's one line."""
    if not said:
        return message
    return f"{message} (FFmpeg said: {'; '.join(' '.join(text.split()) for text in said[:shown])})"


def _probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe a video file; decodes its first frame to prove it decodes and to read rotation.

    Raises InputError (missing, empty, not a video, no video stream, nothing decodes) or
    UnsupportedFormatError (no decoder for its codec).
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        first = _first_frame(container, stream, path)
        cc = stream.codec_context
        return VideoInfo(
            path=path, format=container.format.name, video_index=stream.index, codec=cc.name,
            width=cc.width or first.width, height=cc.height or first.height,
            time_base=Fraction(stream.time_base), rotation=int(round(first.rotation or 0)) % 360,
            colour=_colour(first), average_rate=stream.average_rate and Fraction(stream.average_rate),
            header_frames=stream.frames or None,
            audio=_others(container, "audio"), subtitles=_others(container, "subtitle"),
            duration=_stream_duration(stream), field_order=field_order_of(stream), first_pts=first.pts)


def _stream_duration(stream) -> Fraction | None:
    """The video stream's own stated duration in seconds: its header's (mp4), else its ``DURATION``
    tag (mkv: ``HH:MM:SS.fraction``), else None (the container's may be the audio's)."""
    if stream.duration:
        return stream.duration * Fraction(stream.time_base)
    tag = stream.metadata.get("DURATION", "")
    try:
        hours, minutes, seconds = tag.split(":")
        return Fraction(int(hours) * 3600 + int(minutes) * 60) + Fraction(seconds)
    except ValueError:
        return None


def _first_frame(container, stream, path: Path) -> av.VideoFrame:
    if stream.codec_context is None or not stream.codec_context.name:
        raise UnsupportedFormatError(f"{path}: no decoder for the video codec")
    tally = DecodeTally()
    for frame in _decoded(container, stream, tally):
        return frame
    why = f" ({tally.stopped})" if tally.stopped else f" ({tally.refused} packets refused)" if tally.refused else ""
    raise InputError(f"{path}: the video stream holds no decodable frame{why}")


def _colour(frame: av.VideoFrame) -> Colour:
    def known(value: int, unspecified: int = 2) -> int | None:
        return None if value in (None, unspecified) else int(value)

    return Colour(primaries=known(frame.color_primaries), transfer=known(frame.color_trc),
                  matrix=known(frame.colorspace), range=known(frame.color_range, unspecified=0))


def _others(container, kind: str) -> tuple[StreamInfo, ...]:
    return tuple(StreamInfo(s.index, s.type, s.codec_context.name if s.codec_context else "?")
                 for s in container.streams if s.type == kind)


# ------------------------------------------------------------------------------------------ decode
@dataclass
class DecodeTally:
    """What one decoding pass met: packets read, frames kept (their pts), packets the decoder
    refused, frames dropped for want of a usable timestamp, why reading stopped early, and FFmpeg's
    messages."""

    packets: int = 0
    refused: int = 0
    untimed: int = 0
    stopped: str | None = None
    kept: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.kept)

    @property
    def damaged(self) -> bool:
        """Whether anything went wrong: a refused packet, a dropped frame, an early stop, or an
        error FFmpeg logged (it conceals some damage by itself, or skips damaged blocks of a file)."""
        return bool(self.refused or self.untimed or self.stopped or self.messages)

    def lost(self, info: VideoInfo) -> int:
        """Frames of the video that did not survive the pass, counted where the file says so and
        estimated from the timeline where it cannot: packets refused and frames dropped; when the
        pass met damage, gaps in the kept timestamps of more than 2.5 typical frame intervals; the
        frames missing at the end against the stream's stated duration (a cut file need not log
        anything); frames the header lists beyond those kept."""
        steps = [b - a for a, b in zip(self.kept, self.kept[1:])]
        typical = statistics.median(steps) if steps else 0
        if typical <= 0:
            return max(self.refused + self.untimed, (info.header_frames or 0) - self.frames, 0)
        gaps = sum(round(step / typical) - 1 for step in steps if step > 2.5 * typical) if self.damaged else 0
        tail = 0
        if info.duration is not None:
            missing = (info.duration - (self.kept[-1] + typical) * info.time_base) / (typical * info.time_base)
            tail = round(missing) if missing > 1.5 else 0
        return max(self.refused + self.untimed, gaps + tail, (info.header_frames or 0) - self.frames, 0)

    def summary(self, info: VideoInfo) -> dict:
        """The figures for the job's record."""
        return {"frames_lost": self.lost(info), "packets_refused": self.refused,
                "frames_untimed": self.untimed, "stopped": self.stopped, "ffmpeg_said": self.messages[:10]}


class VideoBackend(Protocol):
    """Decoding, the part a backend provides."""

    name: str

    def frames(self, path: Path, info: VideoInfo, start_pts: int | None = None,
               end_pts: int | None = None, as_float: bool = False,
               tally: DecodeTally | None = None, fields: FieldPlan | None = None) -> Iterator[VideoFrame]:
        """Frames with ``start_pts <= pts < end_pts`` (None: unbounded) in presentation order; what
        the pass met goes into ``tally`` when given. With an active ``fields`` plan the frames are the
        plan's (deinterlaced, or film frames), their pts and the range in its time base
        (``fields.view(info)``)."""
        ...


def _to_pixels(rgb: np.ndarray, as_float: bool) -> np.ndarray:
    return rgb.astype(np.float32) / 255.0 if as_float else rgb


class PyAVBackend:
    """Decoding with PyAV: seek to the keyframe before ``start_pts``, decode packet by packet
    (dropping what does not decode, see the module's note), keep the range."""

    name = "pyav"

    def frames(self, path: Path, info: VideoInfo, start_pts: int | None = None,
               end_pts: int | None = None, as_float: bool = False,
               tally: DecodeTally | None = None, fields: FieldPlan | None = None) -> Iterator[VideoFrame]:
        fields = fields if fields is not None and fields.active else None
        if tally is None:  # frame threads, fastest, unless PyAV logs (see media.quiet); messages dropped
            threads = "SLICE" if collecting_ffmpeg_messages() else "AUTO"
            yield from self._decode(Path(path), info, start_pts, end_pts, as_float, DecodeTally(), threads, fields)
            return
        with ffmpeg_messages() as said:  # slice threads only while PyAV logs (see media.quiet)
            try:
                yield from self._decode(Path(path), info, start_pts, end_pts, as_float, tally, "SLICE", fields)
            finally:
                tally.messages += said

    def _decode(self, path: Path, info: VideoInfo, start_pts, end_pts, as_float, tally: DecodeTally,
                threads: str, fields: FieldPlan | None) -> Iterator[VideoFrame]:
        with _open(path) as container:
            stream = container.streams[info.video_index]
            stream.thread_type = threads
            seek_to = start_pts if fields is None or start_pts is None else _context_start(fields, info, start_pts)
            if seek_to is not None and not _seek(container, stream, seek_to):
                container.seek(0, stream=stream, backward=True)  # no good keyframe: from the start
            decoded = _placed(container, stream, tally)
            if fields is None:
                timed = ((frame.pts, frame) for frame in decoded)
                tb = Fraction(stream.time_base)
            else:  # the damage tally counts the input's frames
                timed, tb = fields.frames(_kept(decoded, tally), stream, info), fields.time_base(info)
            for pts, frame in timed:
                if start_pts is not None and pts < start_pts:
                    continue
                if end_pts is not None and pts >= end_pts:
                    return
                if fields is None:
                    tally.kept.append(pts)
                yield VideoFrame(pts, tb, _to_pixels(frame.to_ndarray(format="rgb24"), as_float))


def _context_start(fields: FieldPlan, info: VideoInfo, start_pts: int) -> int:
    """Where decoding starts for a plan's frames from ``start_pts`` on: ``CONTEXT_FRAMES`` input frames
    earlier (the filters' neighbours), and for film frames also the start of their cycle of five."""
    step = 1 / (Fraction(info.average_rate) * info.time_base) if info.average_rate else Fraction(1)
    back = CONTEXT_FRAMES + (CYCLE if fields.mode == "ivtc" else 0)
    return math.floor(fields.input_pts(start_pts, info) - back * step)


def _kept(frames: Iterator[av.VideoFrame], tally: DecodeTally) -> Iterator[av.VideoFrame]:
    for frame in frames:
        tally.kept.append(frame.pts)
        yield frame


def _placed(container, stream, tally: DecodeTally) -> Iterator[av.VideoFrame]:
    """The decoded frames that can be placed on the timeline: a frame without pts, or not after the
    previous one, is dropped and counted."""
    previous = None
    for frame in _decoded(container, stream, tally):
        if frame.pts is None or (previous is not None and frame.pts <= previous):
            tally.untimed += 1  # cannot be placed on the timeline
            continue
        previous = frame.pts
        yield frame


def _decoded(container, stream, tally: DecodeTally) -> Iterator[av.VideoFrame]:
    """Every frame the decoder gives, packet by packet: a refused packet is counted and skipped; a
    demuxer that gives up stops the pass (recorded), after the decoder's last frames."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as exc:
            tally.stopped = f"reading stopped: {_reason(exc)}"
            packet = None  # flush what the decoder holds
        if packet is not None and packet.size:
            tally.packets += 1
        try:
            frames = stream.decode(packet)
        except av.FFmpegError:
            tally.refused += 1
            frames = []
        yield from frames
        if packet is None:
            return


def _seek(container, stream, start_pts: int) -> bool:
    """Seek to the keyframe at or before ``start_pts``; False when the first frame lands after it."""
    container.seek(start_pts, stream=stream, backward=True, any_frame=False)
    try:
        first = next(container.decode(stream))
    except (StopIteration, av.FFmpegError):
        return False
    container.seek(start_pts, stream=stream, backward=True, any_frame=False)
    return first.pts is not None and first.pts <= start_pts


class DecordBackend:
    """Decoding with decord. Its own timestamps are float32 seconds (inexact for long videos) and
    ignore edit lists, so the exact pts come from the container's packets, demuxed with PyAV
    without decoding: decord's frame ``i`` is the ``i``-th packet in presentation order. Files it
    cannot index that way are refused with a pointer to ``--backend pyav``: rotated videos (decord
    mis-sizes their frames) and files whose edit list hides frames (decord counts the hidden
    frames but returns the shown ones first, with wrong timestamps)."""

    name = "decord"

    def __init__(self) -> None:
        try:
            import decord
        except ImportError as exc:
            raise UsageError("the decord backend needs the decord package "
                             f"(pip install decord): {exc}") from None
        self._decord = decord

    def frames(self, path: Path, info: VideoInfo, start_pts: int | None = None,
               end_pts: int | None = None, as_float: bool = False,
               tally: DecodeTally | None = None, fields: FieldPlan | None = None) -> Iterator[VideoFrame]:
        """As the protocol says; decord raises on damage rather than skipping (``tally`` counts the
        frames kept only)."""
        tally = tally if tally is not None else DecodeTally()
        if fields is not None and fields.active:
            raise UsageError(f"{path}: {fields.found}; deinterlacing needs --backend pyav (or --deinterlace off)")
        if info.rotation:
            raise UnsupportedFormatError(f"{path}: decord mis-sizes rotated videos (rotation "
                                         f"{info.rotation}°); use --backend pyav for this file")
        table = packet_table(Path(path), info.video_index)
        try:
            reader = self._decord.VideoReader(str(path), num_threads=1)
        except Exception as exc:  # decord raises its own DECORDError
            raise InputError(f"{path}: decord cannot read it ({_reason(exc)})") from None
        if len(reader) != len(table):
            raise UnsupportedFormatError(
                f"{path}: decord sees {len(reader)} frames where the container holds {len(table)} "
                "video packets; use --backend pyav for this file")
        if any(discard for _, discard in table):
            raise UnsupportedFormatError(
                f"{path}: its edit list hides {sum(d for _, d in table)} frames, which decord indexes "
                "inconsistently; use --backend pyav for this file")
        wanted = [(i, pts) for i, (pts, _) in enumerate(table)
                  if (start_pts is None or pts >= start_pts) and (end_pts is None or pts < end_pts)]
        for at in range(0, len(wanted), _BATCH):
            batch = wanted[at:at + _BATCH]
            pixels = reader.get_batch([i for i, _ in batch]).asnumpy()
            for (_, pts), rgb in zip(batch, pixels):
                tally.kept.append(pts)
                yield VideoFrame(pts, info.time_base, _to_pixels(rgb, as_float))


def packet_table(path: Path, video_index: int) -> list[tuple[int, bool]]:
    """(pts, discarded) of every video packet, in presentation order (demuxing only)."""
    rows = []
    with _open(path) as container:
        for packet in container.demux(container.streams[video_index]):
            if packet.size and packet.pts is not None:
                rows.append((packet.pts, bool(packet.is_discard)))
    rows.sort()
    return rows


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """An RGB frame as the encoder takes it: uint8 as it is, float in [0, 1] rounded."""
    return rgb if rgb.dtype == np.uint8 else (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def open_backend(name: str) -> VideoBackend:
    """The decoding backend called ``name`` (``pyav`` or ``decord``)."""
    if name == "pyav":
        return PyAVBackend()
    if name == "decord":
        return DecordBackend()
    raise UsageError(f"unknown video backend {name!r}; choose one of {', '.join(BACKENDS)}")


# ------------------------------------------------------------------------------------------ encode
# libx264's own rc-lookahead for each preset (x264's preset table); the frames it holds while it looks
# ahead cost about 3.5 bytes a pixel each (417 MB at medium's 40 for 1920x1408: measured here)
X264_PRESET_LOOKAHEAD = {"ultrafast": 0, "superfast": 0, "veryfast": 10, "faster": 20, "fast": 30, "medium": 40,
                         "slow": 50, "slower": 60, "veryslow": 60, "placebo": 60}
LOOKAHEAD_BYTES = 192 * 2**20  # what the lookahead may hold; shorter lookahead, slightly larger files
LOOKAHEAD_BYTES_PER_PIXEL = 3.5
MIN_LOOKAHEAD = 10


def x264_lookahead(preset: str, width: int, height: int) -> int | None:
    """libx264's rc-lookahead for ``preset`` at this frame size: the preset's own, or fewer frames when
    those would hold more than ``LOOKAHEAD_BYTES`` (never under ``MIN_LOOKAHEAD``); None to leave the
    preset's (small enough, or a preset this table does not know)."""
    own = X264_PRESET_LOOKAHEAD.get(preset)
    if own is None:
        return None
    fits = max(MIN_LOOKAHEAD, int(LOOKAHEAD_BYTES / (LOOKAHEAD_BYTES_PER_PIXEL * width * height)))
    return fits if fits < own else None

@dataclass(frozen=True)
class EncodeSettings:
    """How segments are encoded. ``crf``/``preset`` apply to libx264 and libx265 only."""

    codec: str = DEFAULT_CODEC
    crf: int = 18
    preset: str = "medium"

    def options(self, width: int, height: int) -> dict[str, str]:
        """The encoder's options for frames of ``width`` x ``height``."""
        opts = {"bf": "0"}  # no B-frames: segments join with increasing dts
        if self.codec in _CRF_CODECS:
            opts.update(crf=str(self.crf), preset=self.preset)
        if self.codec == "libx264":
            frames = x264_lookahead(self.preset, width, height)
            if frames is not None:
                opts["rc-lookahead"] = str(frames)
        return opts

    @property
    def pix_fmt(self) -> str:
        return _PIX_FMTS.get(self.codec, "yuv420p")


def check_encoder(codec: str) -> None:
    """Raise UsageError unless this FFmpeg build can encode video with ``codec``."""
    try:
        found = av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError):
        found = None
    if found is None or found.type != "video":
        raise UsageError(f"no video encoder called {codec!r} in this FFmpeg build "
                         "(try libx264, libx265, ffv1 or mpeg4)")


_CONTAINERS = {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".m4v": "mp4", ".mp4": "mp4"}
CHECK_SIZE = 64  # the side of the frames the output check encodes


def container_format(path: Path) -> str | None:
    """The muxer for a video written to ``path`` (its temporary name ends differently): named for the
    suffixes FFmpeg would not guess from a temporary name, else None (FFmpeg guesses from the suffix)."""
    return _CONTAINERS.get(Path(path).suffix.lower())


def check_output(output: Path, settings: EncodeSettings) -> None:
    """Raise UsageError unless a video encoded with ``settings`` can be written as ``output``: a container
    FFmpeg knows from the name, which can hold the codec, in a folder that can be written. Two small frames
    are encoded and muxed into a temporary folder (nothing is written beside the output), so a job learns
    this before its first frame instead of at its end."""
    output = Path(output)
    hint = "give -o a file name ending in .mp4, .mkv or .mov"
    if not output.suffix:
        raise UsageError(f"cannot write the video {output}: the name has no suffix to choose a container by; {hint}")
    folder = next((p for p in (output.parent, *output.parent.parents) if p.exists()), None)
    if folder is None or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the video {output}: {folder or output.parent} cannot be written to; "
                         "choose another -o")
    with tempfile.TemporaryDirectory(prefix="archive-restore-check-") as tmp:
        try:
            with av.open(str(Path(tmp) / f"check{output.suffix}"), "w", format=container_format(output)) as out:
                stream = out.add_stream(settings.codec, rate=25, options=settings.options(CHECK_SIZE, CHECK_SIZE))
                stream.width, stream.height, stream.pix_fmt = CHECK_SIZE, CHECK_SIZE, settings.pix_fmt
                for i in range(2):
                    frame = av.VideoFrame.from_ndarray(np.full((CHECK_SIZE, CHECK_SIZE, 3), 128, np.uint8), "rgb24")
                    frame.pts = i
                    out.mux(stream.encode(frame.reformat(format=settings.pix_fmt)))
                out.mux(stream.encode(None))
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise UsageError(f"cannot write the video {output} with {settings.codec}: {_reason(exc)}; {hint}, "
                             "or choose another --codec") from None


def even_size(width: int, height: int) -> tuple[int, int]:
    """The encoded size for a frame of ``width x height``: each odd side grows by one pixel."""
    return width + width % 2, height + height % 2


def pad_even(rgb: np.ndarray) -> np.ndarray:
    """Pad an odd-sized frame to even by repeating its last row and/or column.

    yuv420p stores colour at half resolution and needs even sizes. Padding (rather than cropping)
    keeps every restored pixel; the encoded frame is one pixel taller or wider than the restored
    one, and that one edge line repeats its neighbour.
    """
    height, width = rgb.shape[:2]
    pad_h, pad_w = height % 2, width % 2
    if not pad_h and not pad_w:
        return rgb
    return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


@dataclass(frozen=True)
class Segment:
    """An encoded segment file and its ``origin``: the input pts its pts 0 stands for."""

    path: Path
    origin: int = 0


class SegmentWriter:
    """Encode frames with given pts into one video file (use as a context manager).

    The stream's codec time base is the input's; a frame is stored at its pts less ``origin`` (the
    segment's first pts), and :func:`join_segments` adds ``origin`` back, so each pts is kept exactly.
    Colour metadata and rotation are set on the stream.
    """

    def __init__(self, path: Path, info: VideoInfo, width: int, height: int,
                 settings: EncodeSettings = EncodeSettings(), origin: int = 0) -> None:
        self.info, self.origin = info, origin
        self.width, self.height = even_size(width, height)
        try:
            self._out = av.open(str(path), "w")
            self._stream = self._add_stream(settings)
        except (av.FFmpegError, ValueError) as exc:
            raise UnsupportedFormatError(f"cannot encode {settings.codec} into {path.name}: "
                                         f"{_reason(exc)}") from None
        self.frames = 0

    def _add_stream(self, settings: EncodeSettings):
        rate = self.info.average_rate if self.info.average_rate else Fraction(25)
        stream = self._out.add_stream(settings.codec, rate=rate, options=settings.options(self.width, self.height))
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, settings.pix_fmt
        cc = stream.codec_context
        cc.time_base = self.info.time_base
        colour = self.info.colour
        for attr, value in (("color_primaries", colour.primaries), ("color_trc", colour.transfer),
                            ("colorspace", colour.matrix), ("color_range", colour.range)):
            if value is not None:
                setattr(cc, attr, value)
        if self.info.rotation:
            stream.set_display_rotation(self.info.rotation)
        return stream

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one RGB frame (uint8, or float in [0, 1]) at ``pts`` (input time base)."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pad_even(to_uint8(rgb))), format="rgb24")
        frame = self._reformat(frame)
        frame.pts, frame.time_base = pts - self.origin, self.info.time_base
        self._mux(self._stream.encode(frame))
        self.frames += 1

    def _reformat(self, frame: av.VideoFrame) -> av.VideoFrame:
        colour = self.info.colour
        kwargs = {}
        if colour.matrix is not None:
            kwargs["dst_colorspace"] = colour.matrix
        if colour.range is not None:
            kwargs["dst_color_range"] = colour.range
        return frame.reformat(format=self._stream.pix_fmt, **kwargs)

    def _mux(self, packets) -> None:
        for packet in packets:
            self._out.mux(packet)

    def close(self) -> None:
        self._mux(self._stream.encode(None))
        self._out.close()

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._out.close()


# -------------------------------------------------------------------------------------------- join
@dataclass(order=True)
class _Queued:
    time: Fraction
    order: int
    packet: av.Packet = field(compare=False)


def join_segments(segments: Sequence[Segment], source: Path, info: VideoInfo, output: Path,
                  container_format: str | None = None) -> int:
    """Write ``output``: the segments' video packets in order, each with its origin added back, plus
    every audio and subtitle packet of ``source`` copied unchanged, interleaved by decode time.
    Returns the number of video packets.

    The caller writes to a temporary name and renames (``runner.atomic_output``).
    """
    if not segments:
        raise InputError(f"{source}: no rendered segments to join")
    with _open(Path(segments[0].path)) as first, _open(source) as src:
        options = _muxer_options(output, container_format, Fraction(first.streams.video[0].time_base))
        with av.open(str(output), "w", format=container_format, options=options) as out:
            return _join(out, first, src, segments, info)


_MOV_FAMILY = frozenset({"mp4", "mov", "m4v", "3gp", "3g2", "ipod"})
_MATROSKA_FAMILY = frozenset({"mkv", "matroska", "webm"})


def _muxer_options(output: Path, container_format: str | None, time_base: Fraction) -> dict[str, str]:
    """mp4 and mov keep a stream's late start (an edit list) in the movie time scale, 1/1000 s
    unless set, which rounds a start that is not a whole millisecond (and rounds it down again on
    every remux). The movie time scale is set to the video's, so the start is kept exactly.
    Matroska: AAC's first packet (the encoder's priming) starts before 0, at -64 ms for 1024 samples
    at 16 kHz; FFmpeg's default then shifts every stream by as much, the video's frames included, so
    negative times are kept as they are (a block's time is signed, relative to its cluster's)."""
    name = (container_format or Path(output).suffix.lstrip(".")).lower()
    if name in _MOV_FAMILY:
        return {"movie_timescale": str(time_base.denominator)}
    return {"avoid_negative_ts": "disabled"} if name in _MATROSKA_FAMILY else {}


def _join(out, first, src, segments: Sequence[Segment], info: VideoInfo) -> int:
    out.metadata.update(dict(src.metadata))
    video = out.add_stream_from_template(first.streams.video[0])
    if info.rotation:
        video.set_display_rotation(info.rotation)
    copied = {s.index: out.add_stream_from_template(src.streams[s.index]) for s in (*info.audio, *info.subtitles)}
    video_packets = _retarget(_segment_packets(segments, info.time_base), video)
    other = _retarget(_source_packets(src, copied), None, copied)
    count = 0
    for queued in heapq.merge(_timed(video_packets, 0), _timed(other, 1)):
        out.mux(queued.packet)
        count += queued.packet.stream is video
    return count


def _segment_packets(segments: Sequence[Segment], time_base: Fraction) -> Iterator[av.Packet]:
    """The video packets of each segment in turn, shifted by its origin (given in ``time_base``),
    one segment file open at a time."""
    for segment in segments:
        with _open(Path(segment.path)) as container:
            stream = container.streams.video[0]
            shift = round(segment.origin * time_base / Fraction(stream.time_base))
            for packet in container.demux(stream):
                if packet.size:
                    packet.pts = None if packet.pts is None else packet.pts + shift
                    packet.dts = None if packet.dts is None else packet.dts + shift
                    yield packet


def _source_packets(src, copied) -> Iterator[av.Packet]:
    if not copied:
        return
    for packet in src.demux([src.streams[i] for i in copied]):
        if packet.size:
            yield packet


def _retarget(packets: Iterable[av.Packet], stream, by_index: dict | None = None) -> Iterator[av.Packet]:
    for packet in packets:
        packet.stream = stream if by_index is None else by_index[packet.stream.index]
        yield packet


def _timed(packets: Iterable[av.Packet], order: int) -> Iterator[_Queued]:
    for packet in packets:
        stamp = packet.dts if packet.dts is not None else packet.pts
        yield _Queued(Fraction(stamp or 0) * Fraction(packet.time_base), order, packet)


# ------------------------------------------------------------------------------------------ fields
def field_counts(path: str | os.PathLike[str], info: VideoInfo, frames: int = DETECT_FRAMES) -> FieldCounts:
    """FFmpeg's ``idet`` over the first ``frames`` decoded frames of the video (``media.fields``)."""
    with _open(Path(path)) as container:
        stream = container.streams[info.video_index]
        return count_fields(_placed(container, stream, DecodeTally()), stream, frames)
