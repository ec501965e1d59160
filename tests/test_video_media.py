"""media.video: one suite over every decoding backend (exact pts, ranges by pts), plus probing,
segment encoding (timing, colour, rotation, odd sizes) and joining with the audio copied bit for bit."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from video_clips import TB, decoded, make_audio_only, make_clip, packet_hashes, stream_start

from archive_restore.errors import InputError, UnsupportedFormatError, UsageError
from archive_restore.media.video import (EncodeSettings, Segment, SegmentWriter, check_encoder, join_segments,
                                         open_backend, pad_even, probe)

BT709 = {"color_primaries": 1, "color_trc": 1, "colorspace": 1, "color_range": 1}
FAST = EncodeSettings(preset="ultrafast")


def _decord_or_skip() -> None:
    try:
        import decord  # noqa: F401
    except Exception as exc:  # ImportError, or a numpy ABI failure
        pytest.skip(f"decord is not usable here ({type(exc).__name__}: {exc}); the pyav backend covers this test")


@pytest.fixture(params=["pyav", "decord"])
def backend(request):
    if request.param == "decord":
        _decord_or_skip()
    return open_backend(request.param)


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip") / "vfr.mp4", count=20)


def _seconds(pts, time_base) -> list[Fraction]:
    return [Fraction(p) * Fraction(time_base) for p in pts]


# ---------------------------------------------------------------------------------------- backends
def test_every_frame_once_with_exact_pts(backend, vfr_clip):
    info = probe(vfr_clip.path)
    frames = list(backend.frames(vfr_clip.path, info))
    assert [f.time for f in frames] == _seconds(vfr_clip.pts, TB)  # irregular steps, exact
    assert len({f.pts for f in frames}) == 20
    for frame, source in zip(frames, vfr_clip.frames):
        assert frame.rgb.dtype == np.uint8 and frame.rgb.shape == (48, 64, 3)
        assert np.abs(frame.rgb.astype(int) - source).mean() < 4


def test_ranges_by_pts_partition_the_video(backend, vfr_clip):
    info = probe(vfr_clip.path)
    pts = [f.pts for f in backend.frames(vfr_clip.path, info)]
    edges = [None, pts[3], pts[4], pts[11], pts[19], None]
    parts = [[f.pts for f in backend.frames(vfr_clip.path, info, a, b)] for a, b in zip(edges, edges[1:])]
    assert parts == [pts[:3], pts[3:4], pts[4:11], pts[11:19], pts[19:]]


def test_float_frames(backend, vfr_clip):
    info = probe(vfr_clip.path)
    frame = next(iter(backend.frames(vfr_clip.path, info, as_float=True)))
    assert frame.rgb.dtype == np.float32 and 0.0 <= frame.rgb.min() and frame.rgb.max() <= 1.0


def test_backends_agree(vfr_clip):
    _decord_or_skip()
    info = probe(vfr_clip.path)
    a = [f.rgb.astype(int) for f in open_backend("pyav").frames(vfr_clip.path, info)]
    b = [f.rgb.astype(int) for f in open_backend("decord").frames(vfr_clip.path, info)]
    assert len(a) == len(b) and max(np.abs(x - y).mean() for x, y in zip(a, b)) < 2


def test_decord_refuses_rotated_video(tmp_path):
    _decord_or_skip()
    clip = make_clip(tmp_path / "rot.mp4", count=3, rotation=90, audio=False)
    with pytest.raises(UnsupportedFormatError, match="--backend pyav"):
        list(open_backend("decord").frames(clip.path, probe(clip.path)))


def test_unknown_backend_and_encoder():
    with pytest.raises(UsageError, match="pyav, decord"):
        open_backend("opencv")
    with pytest.raises(UsageError, match="libx264"):
        check_encoder("no-such-codec")
    check_encoder("libx264")


# -------------------------------------------------------------------------------------------- probe
def test_probe_reads_colour_rotation_and_streams(tmp_path):
    clip = make_clip(tmp_path / "tagged.mp4", count=4, rotation=90, colour=BT709)
    info = probe(clip.path)
    assert (info.width, info.height, info.codec, info.rotation) == (64, 48, "h264", 90)
    assert info.colour.as_dict() == {"primaries": 1, "transfer": 1, "matrix": 1, "range": 1}
    assert [s.codec for s in info.audio] == ["aac"] and info.subtitles == ()


@pytest.mark.parametrize("kind, message", [
    ("zero", "empty"), ("truncated", "not a readable video"), ("text", "not a readable video"),
    ("audio_only", "no video stream"), ("missing", "no such file")])
def test_probe_refuses_bad_inputs(tmp_path, vfr_clip, kind, message):
    path = tmp_path / f"{kind}.mp4"
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(vfr_clip.path.read_bytes()[:2000])  # mdat without its moov
    elif kind == "text":
        path.write_text("not a video\n")
    elif kind == "audio_only":
        make_audio_only(path)
    with pytest.raises(InputError, match=message) as caught:
        probe(path)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------ encode + join
def _round_trip(src: Path, out: Path, cuts: list[int], scale: int = 1) -> Path:
    """Decode ``src`` in chunks split at frame indices ``cuts``, encode segments, join them."""
    info = probe(src)
    pyav = open_backend("pyav")
    pts = [f.pts for f in pyav.frames(src, info)]
    edges = [None] + [pts[c] for c in cuts] + [None]
    segments = []
    for n, (a, b) in enumerate(zip(edges, edges[1:])):
        segment = out.with_name(f"seg{n}.mp4")
        origin = pts[0] if a is None else a
        with SegmentWriter(segment, info, info.width * scale, info.height * scale, FAST, origin=origin) as writer:
            for frame in pyav.frames(src, info, a, b):
                rgb = np.repeat(np.repeat(frame.rgb, scale, 0), scale, 1)
                writer.write(rgb, frame.pts)
        segments.append(Segment(segment, origin))
    assert join_segments(segments, src, info, out) == len(pts)
    return out


def test_join_keeps_timing_audio_colour_rotation(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", count=15, rotation=270, colour=BT709)
    out = _round_trip(clip.path, tmp_path / "out.mp4", cuts=[4, 9], scale=2)
    pts, time_base, frames = decoded(out)
    assert _seconds(pts, time_base) == _seconds(clip.pts, TB)
    assert packet_hashes(out) == packet_hashes(clip.path) and len(packet_hashes(out)) > 5
    assert stream_start(out, "audio") == stream_start(clip.path, "audio")
    assert stream_start(out, "video") == stream_start(clip.path, "video")
    info = probe(out)
    assert (info.width, info.height, info.rotation) == (128, 96, 270)
    assert info.colour == probe(clip.path).colour
    for frame, source in zip(frames, clip.frames):
        assert np.abs(frame[::2, ::2].astype(int) - source).mean() < 6


def test_segments_after_the_first_keep_exact_pts_in_a_time_base_mp4_rounds(tmp_path):
    """mp4 writes a stream's late start as an edit list in milliseconds: with time base 1/19184 (a
    real clip's), a segment starting at 96000 came back at 95997. Segments start at 0 instead."""
    time_base = Fraction(1, 19184)
    pts = [800 * i for i in range(10)]
    clip = make_clip(tmp_path / "in.mp4", pts=pts, time_base=time_base)
    out = _round_trip(clip.path, tmp_path / "out.mp4", cuts=[3, 7])
    got, got_base, _ = decoded(out)
    assert _seconds(got, got_base) == _seconds(pts, time_base)
    assert packet_hashes(out) == packet_hashes(clip.path)


def test_a_start_between_two_milliseconds_is_kept_exactly(tmp_path):
    """A stream starting late, at a time that is not a whole millisecond: the source's first frame at
    760 ticks of 1/19184 s comes back from its own mp4 as 748 (38.99 ms). mp4 keeps the start as an
    edit list in the movie time scale, 1/1000 s unless the join sets it to the video's; in
    milliseconds the join would round it again, to 729 ticks (38 ms; measured)."""
    time_base = Fraction(1, 19184)
    clip = make_clip(tmp_path / "in.mp4", pts=[760 + 800 * i for i in range(8)], time_base=time_base)
    src_pts, src_base, _ = decoded(clip.path)
    out = _round_trip(clip.path, tmp_path / "out.mp4", cuts=[3])
    got, got_base, _ = decoded(out)
    assert _seconds(got, got_base) == _seconds(src_pts, src_base)
    assert stream_start(out, "video") == stream_start(clip.path, "video") != 0


def test_frames_reach_the_encoder_as_rounded_8_bit():
    from archive_restore.media.video import to_uint8

    assert to_uint8(np.array([[[0.0, 0.5, 1.2], [-0.1, 0.998, 0.002]]])).tolist() == [[[0, 128, 255], [0, 254, 1]]]
    frame = np.zeros((2, 2, 3), np.uint8)
    assert to_uint8(frame) is frame  # decoded frames pass as they are


def test_odd_sizes_are_padded_by_one_pixel(tmp_path):
    clip = make_clip(tmp_path / "odd.mp4", count=5, width=63, height=47, audio=False)
    out = _round_trip(clip.path, tmp_path / "out.mp4", cuts=[2])
    _, _, frames = decoded(out)
    assert frames[0].shape == (48, 64, 3)
    assert np.abs(frames[0][:47, :63].astype(int) - clip.frames[0]).mean() < 6
    padded = pad_even(np.arange(3 * 5 * 3).reshape(3, 5, 3))
    assert padded.shape == (4, 6, 3) and (padded[3] == padded[2]).all() and (padded[:, 5] == padded[:, 4]).all()


def test_real_clip_round_trip(shared_data, tmp_path):
    """old_movie_2.mp4: 63 packets of which 15 are cut by its edit list -> 48 frames; pts and audio kept."""
    src = shared_data / "real" / "video" / "old_movie_2.mp4"
    if not src.exists():
        pytest.skip(f"{src} is absent")
    info = probe(src)
    assert info.header_frames == 63  # what the header claims; not what is shown
    out = _round_trip(src, tmp_path / "out.mp4", cuts=[20])
    src_pts, src_tb, _ = decoded(src)
    out_pts, out_tb, _ = decoded(out)
    assert len(src_pts) == len(out_pts) == 48
    assert _seconds(out_pts, out_tb) == _seconds(src_pts, src_tb)
    assert packet_hashes(out) == packet_hashes(src) and len(packet_hashes(src)) == 84
    assert stream_start(out, "audio") == stream_start(src, "audio")
    assert probe(out).colour == info.colour


def test_real_clips_decode_alike_in_both_backends(shared_data, backend):
    """old_movie_1.mp4: 27 frames, same pts and pixels from either backend; old_movie_2.mp4's edit
    list is refused by decord with a pointer to pyav."""
    folder = shared_data / "real" / "video"
    if not (folder / "old_movie_1.mp4").exists():
        pytest.skip(f"{folder / 'old_movie_1.mp4'} is absent")
    info = probe(folder / "old_movie_1.mp4")
    frames = list(backend.frames(folder / "old_movie_1.mp4", info))
    reference = list(open_backend("pyav").frames(folder / "old_movie_1.mp4", info))
    assert len(frames) == 27 and [f.pts for f in frames] == [f.pts for f in reference]
    assert max(np.abs(a.rgb.astype(int) - b.rgb).mean() for a, b in zip(frames, reference)) < 2
    edited = folder / "old_movie_2.mp4"
    if backend.name == "decord" and edited.exists():
        with pytest.raises(UnsupportedFormatError, match="edit list hides 15 frames"):
            next(iter(backend.frames(edited, probe(edited))))


def test_real_clip_with_an_odd_time_base_joins_exactly(shared_data, tmp_path):
    """onepiece_demo.mp4 (time base 1/19184, 800 ticks a frame): split where a real job split it
    (frame 120), the second segment used to come back 3 ticks early."""
    src = shared_data / "real" / "video" / "onepiece_demo.mp4"
    if not src.exists():
        pytest.skip(f"{src} is absent")
    out = _round_trip(src, tmp_path / "out.mp4", cuts=[120])
    src_pts, src_tb, _ = decoded(src)
    out_pts, out_tb, _ = decoded(out)
    assert src_tb == Fraction(1, 19184) and len(src_pts) == len(out_pts) == 181
    assert _seconds(out_pts, out_tb) == _seconds(src_pts, src_tb)
    assert packet_hashes(out) == packet_hashes(src)
