"""Damaged videos through ``archive-restore video``: a corpus made here from a real old film clip
(``../shared/data/real/video/old_movie_1.mp4``, cut to 1.5 s at 96 px wide, as MP4, MP4 with its index
first, and MKV), truncated at seeded random offsets, with bytes flipped in the middle, and with
scrambled headers. The job never hangs and never shows a traceback: a clip ends with a one-line
reason, or with every frame that still decodes kept at its own timestamp and the number lost said.
"""
from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from video_clips import decoded

from archive_restore.cli import cli
from archive_restore.jobs.store import JobStore
from archive_restore.media import video as media_video
from archive_restore.media.video import DecodeTally, PyAVBackend, _placed, probe
from archive_restore.pipeline import video as video_pipeline

SHARED_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "video" / "old_movie_1.mp4"
SECONDS = 1.5
JOB_LIMIT_S = 120  # one clip's whole job; a hang would blow far past it


def _excerpt(src: Path, dst: Path, options: dict | None = None) -> int:
    """The first SECONDS of ``src`` at 96 px wide, h264 with a keyframe every 6 frames, timestamps kept."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=options or {}) as out:
        vs = inp.streams.video[0]
        tb = Fraction(vs.time_base)
        stream = out.add_stream("libx264", rate=vs.average_rate or 25,
                                options={"crf": "23", "preset": "ultrafast", "g": "6", "bf": "0"})
        height = round(vs.codec_context.height * 96 / vs.codec_context.width / 2) * 2
        stream.width, stream.height, stream.pix_fmt = 96, height, "yuv420p"
        stream.codec_context.time_base = tb
        count = 0
        for frame in inp.decode(vs):
            if frame.pts * tb > SECONDS:
                break
            small = frame.reformat(width=96, height=height, format="yuv420p")
            small.pts, small.time_base = frame.pts, tb
            for packet in stream.encode(small):
                out.mux(packet)
            count += 1
        for packet in stream.encode(None):
            out.mux(packet)
    return count


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, tuple[Path, int]]:
    """name -> (undamaged clip, its frame count): mp4, mp4 with the index first (faststart), mkv."""
    src = SHARED_CLIP
    if not src.is_file():
        pytest.skip(f"needs {src} (a real old film clip in the read-only ../shared folder); it is absent here")
    folder = tmp_path_factory.mktemp("clips")
    made = {}
    for name, suffix, options in (("mp4", ".mp4", None), ("faststart", ".mp4", {"movflags": "faststart"}),
                                  ("mkv", ".mkv", None)):
        path = folder / f"film_{name}{suffix}"
        made[name] = (path, _excerpt(src, path, options))
    return made


def _damaged(clean: Path, kind: str, folder: Path, seed: int) -> Path:
    data = bytearray(clean.read_bytes())
    rng = np.random.default_rng(seed)
    if kind == "truncated":
        data = data[: int(rng.integers(len(data) // 3, len(data) * 9 // 10))]
    elif kind == "flipped":
        for offset in rng.integers(int(len(data) * 0.4), int(len(data) * 0.6), 12):
            data[offset] ^= 0xFF
    else:  # scrambled header
        data[:64] = bytes(np.asarray(data[:64])[rng.permutation(64)])
    path = folder / f"{clean.stem}_{kind}{seed}{clean.suffix}"
    path.write_bytes(bytes(data))
    return path


def _restore(path: Path, tmp_path: Path, models: Path):
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["video", str(path), "-o", str(tmp_path / f"out_{path.name}"), "--scale", "1",
                                      "--preset", "ultrafast", "--face-detector", "haar", "--models-dir", str(models),
                                      "--jobs-dir", str(tmp_path / "jobs")])
    assert time.monotonic() - started < JOB_LIMIT_S
    assert "Traceback" not in result.output and not isinstance(result.exception, Exception), result.output
    return result, tmp_path / f"out_{path.name}"


def _survivors(path: Path) -> list[int]:
    """The pts of the frames the damaged file still decodes (our tolerant decoder, as the job reads it)."""
    return [f.pts for f in PyAVBackend().frames(path, probe(path), tally=DecodeTally())]


@pytest.mark.parametrize("name,kind,seed", [
    ("mp4", "truncated", 1), ("faststart", "truncated", 2), ("mkv", "truncated", 3),
    ("mp4", "flipped", 3), ("mkv", "flipped", 9), ("mp4", "scrambled", 6), ("mkv", "scrambled", 7),
])
def test_a_damaged_clip_ends_with_a_reason_or_its_surviving_frames(clips, tmp_path, tiny_models, name, kind, seed):
    clean, frames = clips[name]
    path = _damaged(clean, kind, tmp_path, seed)
    result, out = _restore(path, tmp_path, tiny_models)
    if result.exit_code:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 1 and len(errors) == 1 and str(path) in errors[0], result.output
        assert not out.exists()
        assert kind == "scrambled" or (name, kind) == ("mp4", "truncated")  # the others keep their survivors
        return
    kept = _survivors(path)
    out_pts, out_tb, _ = decoded(out)
    src_tb = probe(path).time_base
    assert [p * out_tb for p in out_pts] == [p * src_tb for p in kept]     # every survivor, at its own time
    lost = frames - len(kept)
    if lost:
        assert f"note: {lost} frame(s) could not be decoded (the file is damaged); the {len(kept)} that decoded" \
               in result.stderr
    else:
        assert "could not be decoded" not in result.stderr


def test_the_corpus_covers_each_outcome(clips, tmp_path):
    """The damage above is not all of one kind: the index-last mp4 truncated is unreadable, the mkv
    loses frames in the middle and at its end, a scrambled header is unreadable."""
    cases = {(n, k, s): _damaged(clips[n][0], k, tmp_path, s)
             for n, k, s in (("mp4", "truncated", 1), ("mkv", "flipped", 9), ("mkv", "truncated", 3), ("mp4", "scrambled", 6))}
    with pytest.raises(media_video.InputError, match="moov atom not found"):
        probe(cases["mp4", "truncated", 1])
    with pytest.raises(media_video.InputError, match="FFmpeg said"):
        probe(cases["mp4", "scrambled", 6])
    for key in (("mkv", "flipped", 9), ("mkv", "truncated", 3)):
        path, tally = cases[key], DecodeTally()
        info = probe(path)
        kept = list(PyAVBackend().frames(path, info, tally=tally))
        assert 0 < len(kept) < clips["mkv"][1]
        assert tally.lost(info) == clips["mkv"][1] - len(kept)             # counted from the timeline, exactly here


def test_an_undamaged_clip_reports_nothing_lost(clips):
    for path, frames in clips.values():
        tally = DecodeTally()
        info = probe(path)
        assert len(list(PyAVBackend().frames(path, info, tally=tally))) == frames
        assert tally.lost(info) == 0 and not tally.damaged


def test_a_decoder_that_hangs_fails_its_item_instead_of_the_job_hanging(clips, tmp_path, tiny_models, monkeypatch):
    path, _ = clips["mkv"]
    real = PyAVBackend.frames

    def hangs_after_two(self, *args, **kwargs):
        for index, frame in enumerate(real(self, *args, **kwargs)):
            if index == 2:
                time.sleep(3600)
            yield frame

    monkeypatch.setattr(PyAVBackend, "frames", hangs_after_two)
    monkeypatch.setattr(video_pipeline, "DECODE_STALL_S", 1.0)
    started = time.monotonic()
    result, out = _restore(path, tmp_path, tiny_models)
    assert time.monotonic() - started < 30
    assert result.exit_code == 1 and "no frame decoded for 1 s; the file is probably damaged" in result.stderr
    with JobStore.open(tmp_path / "jobs") as store:
        (job,) = store.jobs()
        assert [i.status for i in store.items(job.id)] == ["failed"]
    assert not out.exists()


@pytest.mark.parametrize("pts,untimed", [((0, 40, None, 30, 80), 2), ((0, 40, 40, 80), 1)])
def test_frames_without_a_usable_timestamp_are_dropped_and_counted(pts, untimed):
    """A frame with no pts, or one not after the previous frame's (earlier, or at the same time), cannot
    be placed on the timeline: it is dropped and counted, and the frames around it are kept (a stand-in
    demuxer and decoder)."""

    class Frame:
        def __init__(self, pts):
            self.pts = pts

        def to_ndarray(self, format):
            return np.zeros((2, 2, 3), np.uint8)

    class Packet:
        def __init__(self, pts):
            self.pts, self.size = pts, 1

    class Stream:
        time_base = Fraction(1, 1000)

        def decode(self, packet):
            return [] if packet is None else [Frame(packet.pts)]

    class Container:
        def demux(self, stream):
            return iter([Packet(p) for p in pts])

    tally = DecodeTally()
    kept = list(_placed(Container(), Stream(), tally))
    assert [f.pts for f in kept] == [0, 40, 80] and tally.untimed == untimed and tally.packets == len(pts)
    assert tally.damaged
