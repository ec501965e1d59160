"""Native decoder chatter kept off the terminal and folded into the item's reason.

OpenCV, libtiff, libpng and FFmpeg print their warnings and errors straight to file descriptor 2,
between our progress bars, where nobody can tell which file they were about. ``native_stderr()``
points descriptor 2 at a temporary file for the length of a decode call and hands back what was
written, so the caller can put it into the failure reason (or the item's record). Python's own
``sys.stderr`` is flushed first and is the same descriptor, so nothing of ours is lost, only held
back for the block. Use it around short calls on the main thread (descriptor 2 is process-wide).

FFmpeg's messages come through PyAV instead, which drops them by default: ``ffmpeg_messages()``
turns PyAV's logging on for the block and collects what FFmpeg logs (its slice threads included),
never printed. PyAV's log callback takes the GIL, so a *frame*-threaded decoder logging while its
context is freed deadlocks: decode with slice threads (PyAV's default) inside the block.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

MAX_CHARS = 600


@dataclass
class Captured:
    """What the native libraries wrote to descriptor 2 during the block (one line, cut)."""

    text: str = ""

    def folded(self, message: str) -> str:
        """``message`` with the captured text appended, when there is any."""
        return f"{message} (decoder said: {self.text})" if self.text else message


@contextmanager
def native_stderr() -> Iterator[Captured]:
    """Capture descriptor 2 for the block; the result's ``text`` is filled when the block ends."""
    captured = Captured()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon): nothing can reach a terminal anyway
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = _one_line(sink.read().decode(errors="replace"))


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_CHARS else flat[: MAX_CHARS - 1] + "…"


# ----------------------------------------------------------------------------------- FFmpeg (PyAV)
class _FFmpegMessages(logging.Handler):
    """Hands FFmpeg's warnings and errors (PyAV routes them to the ``libav`` logger) to the lists
    of the ``ffmpeg_messages()`` blocks open at the time; with none open they are dropped, as PyAV
    drops them by default."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.sinks: list[list[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        source = record.name.removeprefix("libav.")
        for sink in list(self.sinks):
            if len(sink) < MAX_MESSAGES:
                sink.append(f"{source}: {record.getMessage().strip()}")


MAX_MESSAGES = 50
_FFMPEG = _FFmpegMessages()


_LOCK = threading.Lock()


def collecting_ffmpeg_messages() -> bool:
    """Whether an ``ffmpeg_messages()`` block is open (PyAV's logging is on): decode with slice threads."""
    return bool(_FFMPEG.sinks)


@contextmanager
def ffmpeg_messages() -> Iterator[list[str]]:
    """FFmpeg's warnings and errors logged during the block (from any thread), in order, at most
    ``MAX_MESSAGES``. PyAV's logging is on while any such block is open, off (its default) after."""
    import av.logging

    logger = logging.getLogger("libav")
    sink: list[str] = []
    with _LOCK:
        if _FFMPEG not in logger.handlers:
            logger.addHandler(_FFMPEG)
            logger.propagate = False  # never printed: only collected
        if not _FFMPEG.sinks:
            av.logging.set_level(av.logging.WARNING)
            av.logging.set_skip_repeated(False)  # a second file failing alike must say so too
        _FFMPEG.sinks.append(sink)
    try:
        yield sink
    finally:
        with _LOCK:
            _FFMPEG.sinks.remove(sink)
            if not _FFMPEG.sinks:
                av.logging.set_level(None)
