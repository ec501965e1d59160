"""Interlaced and telecined video: what a stream is, found out, and progressive frames made from it.

Most archive video is interlaced (VHS, Video8, U-matic and DV captures are 480i/576i) and film
transferred to NTSC video carries 3:2 pulldown. Restoring such frames as they are sharpens the combs
and shows the face tracker two half-pictures a frame, so a video job settles a :class:`FieldPlan`
first (:func:`plan_fields`):

* the stream's own field order (``VideoInfo.field_order``), and FFmpeg's ``idet`` over the first
  ``DETECT_FRAMES`` frames (:func:`detect_fields`), which also sees interlacing a stream does not flag,
  a flag that lies (progressive pictures flagged interlaced) and the repeated fields of pulldown;
* from them, one of ``off`` (progressive: frames as they are), ``field`` (FFmpeg's ``bwdif``, one frame
  per field: 25i becomes 50p, what keeps motion), ``frame`` (``bwdif``, one frame per frame) or
  ``ivtc`` (film frames back from 3:2 pulldown: ``fieldmatch`` pairs each frame's fields with the right
  neighbours, then one frame in each cycle of five, the one closest to its predecessor, is dropped).

All filters run in PyAV's filter graph on the decoded frames (no RGB round trip, no shell-out).
Timestamps stay exact: ``field`` frames are at the fields' own times in half the stream's time base
(``bwdif``'s own arithmetic), ``frame`` keeps the input's pts, and ``ivtc`` puts film frame ``k`` at
``first + k * 5/4`` of a video frame, in a time base where each of those is a whole number of ticks
(30000/1001 becomes 24000/1001).

Every output frame depends only on its neighbours (``bwdif``: one frame either side; ``ivtc``: its
cycle of five, counted from the stream's first frame, and the frame before it), so a chunk decoded
from a point a few frames earlier gives the same frames as one pass over the whole video. That is why
the pulldown's duplicate is chosen here rather than by FFmpeg's ``decimate``, whose cycles start
wherever decoding starts.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction

import av
import numpy as np

MODES = ("auto", "field", "frame", "ivtc", "off")
DETECT_FRAMES = 300     # frames idet looks at
MIN_DECIDED = 20        # frames idet must have judged (not undetermined) for its verdict to count
INTERLACED_SHARE = 0.5  # interlaced judgements among the judged frames above which the video is interlaced
PULLDOWN_SHARE = 0.2    # repeated fields per frame above which it is telecined (3:2 pulldown: 0.4)
CYCLE = 5               # 3:2 pulldown: five video frames carry four film frames
CONTEXT_FRAMES = 3      # frames decoded before a chunk's first, for the filters' neighbours

# FFmpeg's AVFieldOrder: which field is shown first, by the codec's own flag
_FIELD_ORDERS = {1: "progressive", 2: "tff", 3: "bff", 4: "bff", 5: "tff"}


def field_order_of(stream) -> str | None:
    """``progressive``, ``tff`` or ``bff`` as the stream's codec says, None when it does not say."""
    return _FIELD_ORDERS.get(int(stream.codec_context.field_order or 0))


@dataclass(frozen=True)
class FieldCounts:
    """What ``idet`` found over the first frames: its multi-frame verdicts and the repeated fields."""

    frames: int = 0
    tff: int = 0
    bff: int = 0
    progressive: int = 0
    undetermined: int = 0
    repeated: int = 0  # frames with a top or bottom field repeated from the previous frame

    @property
    def judged(self) -> int:
        return self.tff + self.bff + self.progressive

    def text(self) -> str:
        return (f"idet over {self.frames} frames: tff {self.tff}, bff {self.bff}, progressive {self.progressive}, "
                f"undetermined {self.undetermined}, repeated fields {self.repeated}")


@dataclass(frozen=True)
class FieldPlan:
    """What a video job does with fields: ``mode`` (``off``, ``field``, ``frame``, ``ivtc``), the field
    ``parity`` the filters assume, what was ``found`` and why this mode (``reason``)."""

    mode: str = "off"
    parity: str = "tff"
    found: str = "progressive"
    reason: str = ""

    @property
    def active(self) -> bool:
        return self.mode != "off"

    @property
    def worth_saying(self) -> bool:
        """Whether the job says it: the frames change, a flag lied, or a default stood in for detection
        where the stream does not say it is progressive."""
        guessed = self.reason.startswith("too few") and self.found != "progressive"
        return self.active or "flagged" in self.found or guessed

    def as_dict(self) -> dict:
        return {"mode": self.mode, "parity": self.parity, "found": self.found, "reason": self.reason}

    @classmethod
    def from_dict(cls, stored: dict | None) -> FieldPlan:
        """The plan an analysis recorded; none recorded (a job analysed before plans existed): ``off``."""
        return cls(**stored) if stored else cls(reason="none recorded")

    def summary(self) -> str:
        done = {"off": "frames kept as they are", "field": f"deinterlaced one frame per field ({self.parity})",
                "frame": f"deinterlaced one frame per frame ({self.parity})",
                "ivtc": f"pulldown removed, film frames restored ({self.parity})"}[self.mode]
        return f"{self.found}: {done}" + (f" ({self.reason})" if self.reason else "")

    # ------------------------------------------------------------------------ timing
    def count(self, frames: int | None) -> int | None:
        """About how many frames this plan makes of ``frames`` input frames."""
        if frames is None:
            return None
        return {"field": 2 * frames, "ivtc": frames * (CYCLE - 1) // CYCLE}.get(self.mode, frames)

    def view(self, info):
        """``info`` (a ``VideoInfo``) as the frames this plan gives: their time base and rate; the
        header's frame count and stated duration no longer describe them."""
        if not self.active:
            return info
        return replace(info, time_base=self.time_base(info), average_rate=self.rate(info), header_frames=None,
                       duration=None)

    def time_base(self, info) -> Fraction:
        if self.mode == "field":
            return info.time_base / 2  # bwdif's: the second field at (cur + next) of the doubled base
        if self.mode == "ivtc":
            return _rational_gcd(_first_time(info), _film_frame(info))
        return info.time_base

    def rate(self, info) -> Fraction | None:
        rate = info.average_rate
        if rate is None:
            return None
        return {"field": rate * 2, "ivtc": rate * Fraction(CYCLE - 1, CYCLE)}.get(self.mode, rate)

    def input_pts(self, pts: int, info) -> int:
        """The input pts at or just before output ``pts`` (where decoding for it must start)."""
        time = pts * self.time_base(info)
        return math.floor(time / info.time_base)

    # ------------------------------------------------------------------------ filters
    def graph(self, stream) -> av.filter.Graph:
        return _one_filter(stream, *{"field": ("bwdif", f"mode=send_field:parity={self.parity}:deint=all"),
                                     "frame": ("bwdif", f"mode=send_frame:parity={self.parity}:deint=all"),
                                     "ivtc": ("fieldmatch", f"order={self.parity}:combmatch=full")}[self.mode])

    def frames(self, decoded: Iterator[av.VideoFrame], stream, info) -> Iterator[tuple[int, av.VideoFrame]]:
        """(pts in ``time_base(info)``, frame) of the frames this plan makes from ``decoded`` (decoded
        frames of the stream, in order, with usable pts)."""
        graph = self.graph(stream)
        out_base = self.time_base(info)
        filtered = _through(graph, decoded)
        if self.mode == "ivtc":
            yield from _film_frames(filtered, info, out_base)
            return
        for frame in filtered:
            yield _exact(frame.pts * Fraction(frame.time_base) / out_base), frame


def _one_filter(stream, name: str, args: str | None = None) -> av.filter.Graph:
    """A configured filter graph: the decoded frames of ``stream`` -> FFmpeg's filter ``name`` -> out."""
    graph = av.filter.Graph()
    source, node, sink = graph.add_buffer(template=stream), graph.add(name, args), graph.add("buffersink")
    source.link_to(node)
    node.link_to(sink)
    graph.configure()
    return graph


def _through(graph: av.filter.Graph, frames: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    def drained() -> Iterator[av.VideoFrame]:
        while True:
            try:
                yield graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return

    for frame in frames:
        graph.push(frame)
        yield from drained()
    graph.push(None)
    yield from drained()


def _film_frames(frames: Iterator[av.VideoFrame], info, out_base: Fraction) -> Iterator[tuple[int, av.VideoFrame]]:
    """Field-matched frames -> film frames: per cycle of five (counted from the stream's first frame),
    the frame least different from its predecessor is dropped, the other four are timed as film frames
    ``4 * cycle + rank`` at 5/4 of a video frame each. A cycle whose frames are not all there (the start
    of a decode, the end of the video) drops only if it holds five."""
    first, rate, film = _first_time(info), _rate(info), _film_frame(info)
    previous: np.ndarray | None = None
    cycle, held = None, []  # held: (position in cycle, difference to predecessor, frame)
    for frame in frames:
        index = round((frame.pts * Fraction(frame.time_base) - first) * rate)
        luma = _luma(frame)
        difference = math.inf if previous is None else float(np.mean(np.abs(luma - previous)))
        previous = luma
        if cycle is not None and index // CYCLE != cycle:
            yield from _cycle_out(cycle, held, first, film, out_base)
            held = []
        cycle = index // CYCLE
        held.append((index % CYCLE, difference, frame))
    if held:
        yield from _cycle_out(cycle, held, first, film, out_base)


def _cycle_out(cycle: int, held: list, first: Fraction, film: Fraction, out_base: Fraction):
    if len(held) == CYCLE:
        dropped = min(range(CYCLE), key=lambda i: (held[i][1], i))
        kept = [h for i, h in enumerate(held) if i != dropped]
    else:  # an incomplete cycle: its duplicate cannot be told; the first four positions are the film frames
        kept = [h for h in held if h[0] < CYCLE - 1]
    for rank, (_, _, frame) in enumerate(kept):
        yield _exact((first + ((CYCLE - 1) * cycle + rank) * film) / out_base), frame


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """The frame's luma, every fourth pixel each way, as float32 (what the duplicate is judged on)."""
    plane = frame.reformat(format="gray").to_ndarray()
    return plane[::4, ::4].astype(np.float32)


def _first_time(info) -> Fraction:
    return (info.first_pts or 0) * info.time_base


def _film_frame(info) -> Fraction:
    """A film frame's duration in seconds: 5/4 of a video frame."""
    return Fraction(CYCLE, CYCLE - 1) / _rate(info)


def _rate(info) -> Fraction:
    if not info.average_rate:
        raise ValueError("the stream states no frame rate")
    return Fraction(info.average_rate)


def _rational_gcd(a: Fraction, b: Fraction) -> Fraction:
    """The largest rational of which both ``a`` and ``b`` are whole multiples (``b`` > 0)."""
    a, b = Fraction(a), Fraction(b)
    denominator = a.denominator * b.denominator
    return Fraction(math.gcd(a.numerator * b.denominator, b.numerator * a.denominator), denominator)


def _exact(value: Fraction) -> int:
    if value.denominator != 1:
        raise ValueError(f"a frame time that is not a whole number of ticks: {value}")
    return int(value)


# ------------------------------------------------------------------------------------- detection
def count_fields(decoded: Iterator[av.VideoFrame], stream, frames: int = DETECT_FRAMES) -> FieldCounts:
    """``idet``'s counts over the first ``frames`` of ``decoded``."""
    graph = _one_filter(stream, "idet")
    last, seen = None, 0

    def limited() -> Iterator[av.VideoFrame]:
        nonlocal seen
        for frame in decoded:
            yield frame
            seen += 1
            if seen >= frames:
                return

    for out in _through(graph, limited()):
        last = out
    if last is None:
        return FieldCounts()
    said = last.metadata

    def count(key: str) -> int:
        return int(float(said.get(f"lavfi.idet.{key}", 0)))

    return FieldCounts(frames=seen, tff=count("multiple.tff"), bff=count("multiple.bff"),
                       progressive=count("multiple.progressive"), undetermined=count("multiple.undetermined"),
                       repeated=count("repeated.top") + count("repeated.bottom"))


def plan_fields(requested: str, flag: str | None, counts: FieldCounts) -> FieldPlan:
    """The plan for ``--deinterlace requested`` given the stream's flag and ``idet``'s counts.

    ``auto``: telecined when fields repeat often enough (``ivtc``), interlaced when most judged frames are
    (``field``), else progressive (``off``), a flag that says otherwise notwithstanding; when ``idet`` judged
    too few frames (a short or still clip), the flag decides and the plan says it was a default. A forced
    mode keeps the parity found (the flag's, else ``idet``'s, else tff)."""
    parity, parity_from = _parity(flag, counts)
    if counts.judged < MIN_DECIDED:
        found = flag or "unknown"
        default = "field" if flag in ("tff", "bff") else "off"
        mode = default if requested == "auto" else requested
        why = (f"too few frames to detect ({counts.judged} judged of {counts.frames}); the stream's flag "
               f"({flag or 'none'}) decided: {default}") if requested == "auto" else f"--deinterlace {requested}"
        return FieldPlan(mode, parity, found, why)
    interlaced = (counts.tff + counts.bff) / counts.judged
    if counts.frames and counts.repeated / counts.frames >= PULLDOWN_SHARE:
        found = "telecined (3:2 pulldown)"
    elif interlaced >= INTERLACED_SHARE:
        found = f"interlaced {parity}"
    else:
        found = "progressive"
        if flag in ("tff", "bff"):
            found += f" (flagged {flag}, but idet sees progressive pictures)"
    if requested != "auto":
        return FieldPlan(requested, parity, found, f"--deinterlace {requested}; {counts.text()}")
    mode = "ivtc" if found.startswith("telecined") else "field" if found.startswith("interlaced") else "off"
    return FieldPlan(mode, parity, found, f"{counts.text()}; parity from {parity_from}")


def _parity(flag: str | None, counts: FieldCounts) -> tuple[str, str]:
    if flag in ("tff", "bff"):
        return flag, "the stream's flag"
    if counts.tff + counts.bff:
        return ("tff" if counts.tff >= counts.bff else "bff"), "idet"
    return "tff", "the default (nothing said it)"
