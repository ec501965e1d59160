"""media.video in detail, on tiny clips made here (no ../shared, so these also run under mutmut): what
probe says about a file's streams, duration and failures; counted decoding passes over clean and
damaged clips; ranges and keyframes; frames an edit list hides; how many frames a damaged pass lost
(DecodeTally.lost), figure by figure; segments without B-frames; the join's container format."""
from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from video_clips import TB, frame_pixels, make_audio_only, make_clip, packet_hashes

from archive_restore.errors import InputError, UnsupportedFormatError, UsageError
from archive_restore.media.quiet import ffmpeg_messages
from archive_restore.media.video import (
    Colour,
    DecodeTally,
    EncodeSettings,
    Segment,
    SegmentWriter,
    StreamInfo,
    VideoInfo,
    check_encoder,
    check_output,
    container_format,
    join_segments,
    open_backend,
    packet_table,
    pad_even,
    with_ffmpeg_said,
    x264_lookahead,
    probe,
)


def _keyframed_clip(path: Path, count: int = 12, every: int = 4) -> list[int]:
    """A 64x48 h264 clip, a frame every 40 ms, a keyframe every ``every`` frames; returns the pts."""
    pts = [40 * i for i in range(count)]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "10", "preset": "ultrafast", "g": str(every),
                                                             "keyint_min": str(every), "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = TB
        for index, at in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(frame_pixels(index, 64, 48), format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = at, TB
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return pts


def _decord_or_skip() -> None:
    try:
        import decord  # noqa: F401
    except Exception as exc:  # ImportError, or a numpy ABI failure
        pytest.skip(f"decord is not usable here ({type(exc).__name__}: {exc}); the pyav backend covers the rest")


# -------------------------------------------------------------------------------------------- probe
def test_probe_names_the_audio_and_subtitle_streams_it_will_copy(tmp_path):
    clip = make_clip(tmp_path / "talk.mp4", count=4, subtitle=True)
    info = probe(clip.path)
    assert info.audio == (StreamInfo(1, "audio", "aac"),)
    assert info.subtitles == (StreamInfo(2, "subtitle", "mov_text"),)
    assert info.summary() == "h264 64x48, time base 1/16000, 1 audio"
    assert info.colour == Colour()  # no tags: every field unspecified, the range included (0 in FFmpeg)
    rotated = probe(make_clip(tmp_path / "turned.mp4", pts=[0, 40, 80, 120], rotation=90, audio=False).path)
    assert rotated.summary() == "h264 64x48, time base 1/16000, no audio, rotated 90°"
    assert rotated.average_rate == 25  # a frame every 40 ms


def test_the_stated_duration_comes_from_the_mp4_header_or_the_mkv_tag(tmp_path):
    """20 frames, then 5 more an hour and a minute in, each shown 40 ms (25 fps): 3660.2 s, from
    mp4's stream header and from mkv's per-stream ``DURATION`` tag (``01:01:00.200000000``; mkv
    states no duration in the stream header). A raw h264 stream states none at all."""
    pts = [40 * i for i in range(20)] + [3_660_000 + 40 * i for i in range(5)]
    for name in ("clip.mp4", "clip.mkv"):
        clip = make_clip(tmp_path / name, pts=pts, width=32, height=32, audio=False)
        assert probe(clip.path).duration == Fraction(36602, 10), name
    with av.open(str(tmp_path / "clip.mkv")) as container:
        assert not container.streams.video[0].duration  # the tag is what probe read
        assert container.streams.video[0].metadata["DURATION"] == "01:01:00.200000000"
    raw = make_clip(tmp_path / "clip.h264", pts=[40 * i for i in range(6)], audio=False)
    assert probe(raw.path).duration is None


def test_the_frame_count_a_header_claims_is_kept_for_the_record(tmp_path):
    """mp4 lists its frames (6 here); mkv and a raw h264 stream do not (None, never 0)."""
    for name, claimed in (("clip.mp4", 6), ("clip.mkv", None), ("clip.h264", None)):
        clip = make_clip(tmp_path / name, pts=[40 * i for i in range(6)], audio=False)
        info = probe(clip.path)
        assert (info.path, info.header_frames) == (clip.path, claimed), name


def test_a_file_without_video_lists_the_streams_it_holds(tmp_path):
    path = tmp_path / "sound.mp4"
    make_audio_only(path, streams=2)
    with pytest.raises(InputError) as caught:
        probe(path)
    assert str(caught.value) == f"{path}: no video stream (streams found: audio (aac), audio (aac))"


def test_a_file_that_is_no_video_says_ffmpegs_reason(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("not a video\n")
    with pytest.raises(InputError) as caught:
        probe(path)
    assert str(caught.value).startswith(f"{path}: not a readable video file (Invalid data found when processing input)")


def test_a_video_codec_ffmpeg_does_not_know_is_unsupported_in_one_line(tmp_path):
    """The clip's codec tag overwritten (avc1 -> zzzz): no decoder. FFmpeg's message about it spans
    two lines; the error is one line (the CLI prints it after ``error:``)."""
    clip = make_clip(tmp_path / "clip.mp4", count=3, audio=False)
    unknown = tmp_path / "unknown.mp4"
    unknown.write_bytes(clip.path.read_bytes().replace(b"avc1", b"zzzz"))
    with pytest.raises(UnsupportedFormatError) as caught:
        probe(unknown)
    message = str(caught.value)
    assert message.startswith(f"{unknown}: no decoder for the video codec (FFmpeg said: ")
    assert "unknown codec" in message and "\n" not in message


def test_a_video_whose_every_packet_is_refused_says_how_many(tmp_path):
    clip = make_clip(tmp_path / "clip.mkv", count=4, audio=False)
    data = clip.path.read_bytes()
    with av.open(str(clip.path)) as container:
        packets = [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]
    for packet in packets:  # each starts with a NAL unit size beyond the packet's end
        data = data.replace(packet, b"\xff\xff\xff\xff" + packet[4:])
    broken = tmp_path / "broken.mkv"
    broken.write_bytes(data)
    with pytest.raises(InputError) as caught:
        probe(broken)
    assert str(caught.value).startswith(f"{broken}: the video stream holds no decodable frame (4 packets refused) "
                                        "(FFmpeg said: h264: Invalid NAL unit size")


def test_an_encoder_this_build_lacks_is_named_with_the_ones_to_try():
    with pytest.raises(UsageError) as caught:
        check_encoder("no-such-codec")
    assert str(caught.value) == ("no video encoder called 'no-such-codec' in this FFmpeg build "
                                 "(try libx264, libx265, ffv1 or mpeg4)")


def test_the_decord_backend_without_decord_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)  # import decord raises ImportError
    with pytest.raises(UsageError) as caught:
        open_backend("decord")
    assert str(caught.value).startswith("the decord backend needs the decord package (pip install decord): ")


def test_ffmpegs_first_three_messages_are_folded_into_the_error():
    assert with_ffmpeg_said("a.mp4: bad", []) == "a.mp4: bad"
    assert with_ffmpeg_said("a.mp4: bad", ["mov: one", "mov: two\n  more", "h264: three", "h264: four"]) == \
        "a.mp4: bad (FFmpeg said: mov: one; mov: two more; h264: three)"


# ------------------------------------------------------------------------------------------- decode
def test_a_counted_pass_gives_the_same_frames_and_counts_them(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", count=9)
    info = probe(clip.path)
    tally = DecodeTally()
    frames = list(open_backend("pyav").frames(clip.path, info, as_float=True, tally=tally))
    pts = [f.pts for f in open_backend("pyav").frames(clip.path, info)]
    assert [f.pts for f in frames] == pts == tally.kept and len(pts) == 9
    first = next(iter(open_backend("pyav").frames(clip.path, info)))
    assert frames[0].rgb.dtype == np.float32 and np.array_equal(frames[0].rgb, first.rgb / np.float32(255))
    assert (tally.packets, tally.refused, tally.untimed, tally.stopped, tally.damaged) == (9, 0, 0, None, False)


def test_an_uncounted_pass_while_ffmpegs_messages_are_collected_gives_the_same_frames(tmp_path):
    """Inside an ``ffmpeg_messages()`` block (PyAV logging) an uncounted pass decodes with slice
    threads, not frame threads (see media.quiet); the frames are the same."""
    clip = make_clip(tmp_path / "clip.mp4", count=6, audio=False)
    info = probe(clip.path)
    with ffmpeg_messages():
        inside = [f.time for f in open_backend("pyav").frames(clip.path, info)]
    assert inside == [p * TB for p in clip.pts]


def test_a_range_starting_before_the_first_frame_holds_every_frame(tmp_path):
    """The first frame is at 40 ms: a range from 0 or 39 ms finds no keyframe at or before its start
    and decodes from the beginning."""
    clip = make_clip(tmp_path / "clip.mp4", count=6, audio=False)
    info = probe(clip.path)
    assert clip.pts[0] == 40
    for start in (0, 39):
        got = [f.pts * f.time_base for f in open_backend("pyav").frames(clip.path, info, start_pts=start)]
        assert got == [p * TB for p in clip.pts]


def test_a_range_decodes_from_the_keyframe_before_its_start(tmp_path):
    """Keyframes at frames 0, 4 and 8: the range from frame 9 reads the packets of frames 8-11 only,
    and its frames are the very pixels a whole pass gives."""
    path = tmp_path / "clip.mp4"
    pts = _keyframed_clip(path)
    info = probe(path)
    with av.open(str(path)) as container:
        assert [i for i, p in enumerate(container.demux(container.streams.video[0])) if p.is_keyframe] == [0, 4, 8]
    whole = {f.pts: f.rgb for f in open_backend("pyav").frames(path, info)}
    tally = DecodeTally()
    part = list(open_backend("pyav").frames(path, info, start_pts=int(pts[9] * TB / info.time_base), tally=tally))
    assert [f.time for f in part] == [p * TB for p in pts[9:]]
    assert tally.packets == 4
    assert all(np.array_equal(f.rgb, whole[f.pts]) for f in part)


@pytest.fixture
def damaged_mkv(tmp_path) -> tuple[Path, list[int]]:
    """An mkv of 12 frames (keyframes at 0, 4, 8) whose sixth and seventh packets start with a NAL
    unit size beyond the packet's end: h264 refuses them. Returns the file and the undamaged pts."""
    clean = tmp_path / "clean.mkv"
    pts = _keyframed_clip(clean)
    with av.open(str(clean)) as container:
        packets = [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]
    data = clean.read_bytes()
    for packet in packets[5:7]:
        assert data.count(packet) == 1
        data = data.replace(packet, b"\xff\xff\xff\xff" + packet[4:])
    path = tmp_path / "damaged.mkv"
    path.write_bytes(data)
    return path, pts


def test_a_packet_the_decoder_refuses_is_counted_and_the_others_kept(damaged_mkv):
    path, pts = damaged_mkv
    info = probe(path)
    tally = DecodeTally()
    kept = [f.time for f in open_backend("pyav").frames(path, info, tally=tally)]
    assert kept == [p * TB for p in pts[:5] + pts[7:]]
    assert (tally.packets, tally.refused, tally.untimed, tally.stopped) == (12, 2, 0, None)
    assert tally.damaged and "h264: Invalid NAL unit size" in tally.messages[0]
    assert tally.lost(info) == 2


def test_one_tally_over_a_pass_in_two_ranges_holds_what_both_met(damaged_mkv):
    """The first range meets the damaged packet, the second starts at the keyframe after it; the
    tally adds up both, FFmpeg's messages included."""
    path, pts = damaged_mkv
    info = probe(path)
    tally, backend = DecodeTally(), open_backend("pyav")
    middle = int(pts[8] * TB / info.time_base)
    first = [f.pts for f in backend.frames(path, info, None, middle, tally=tally)]
    said = list(tally.messages)
    second = [f.pts for f in backend.frames(path, info, middle, None, tally=tally)]
    assert [p * info.time_base for p in tally.kept] == [p * TB for p in pts[:5] + pts[7:]]
    assert tally.kept == first + second and len(second) == 4
    assert said and tally.messages[:len(said)] == said  # the second range's (FFmpeg probing the file) follow
    assert (tally.packets, tally.refused) == (9 + 4, 2)  # the first range read frame 8's packet to find its end


def test_decord_records_the_frames_it_kept(tmp_path):
    _decord_or_skip()
    clip = make_clip(tmp_path / "clip.mp4", count=6, audio=False)
    info = probe(clip.path)
    tally = DecodeTally()
    frames = list(open_backend("decord").frames(clip.path, info, tally=tally))
    assert tally.kept == [f.pts for f in frames] and [f.time for f in frames] == [p * TB for p in clip.pts]


@pytest.fixture
def edited_clip(tmp_path) -> Path:
    """Six frames from -80 ms: mp4 keeps the two before 0 behind an edit list that hides them."""
    return make_clip(tmp_path / "edited.mp4", pts=[-80, -40, 0, 40, 80, 120], audio=False).path


def test_frames_an_edit_list_hides_are_not_frames_of_the_video(edited_clip):
    info = probe(edited_clip)
    assert [(p * info.time_base, hidden) for p, hidden in packet_table(edited_clip, info.video_index)] == \
        [(Fraction(-80, 1000), True), (Fraction(-40, 1000), True), (0, False), (Fraction(40, 1000), False),
         (Fraction(80, 1000), False), (Fraction(120, 1000), False)]
    assert [f.time for f in open_backend("pyav").frames(edited_clip, info)] == [Fraction(t, 1000) for t in (0, 40, 80, 120)]


def test_decord_refuses_an_edit_list_that_hides_frames(edited_clip):
    _decord_or_skip()
    with pytest.raises(UnsupportedFormatError) as caught:
        next(iter(open_backend("decord").frames(edited_clip, probe(edited_clip))))
    assert str(caught.value) == (f"{edited_clip}: its edit list hides 2 frames, which decord indexes "
                                 "inconsistently; use --backend pyav for this file")


# ------------------------------------------------------------------------------------- frames lost
def _info(header_frames: int | None = None, duration: Fraction | None = None, time_base: Fraction = TB) -> VideoInfo:
    return VideoInfo(path=Path("clip.mp4"), format="mp4", video_index=0, codec="h264", width=64, height=48,
                     time_base=time_base, rotation=0, colour=Colour(), average_rate=Fraction(25),
                     header_frames=header_frames, duration=duration)


EVERY_40 = [0, 40, 80, 120, 160]


@pytest.mark.parametrize("why, tally, info, lost", [
    ("nothing decoded, header says nothing", DecodeTally(), _info(), 0),
    ("one frame of the header's five", DecodeTally(kept=[0]), _info(header_frames=5), 4),
    ("one frame, three packets refused", DecodeTally(kept=[0], refused=3), _info(header_frames=2), 3),
    ("one frame, a packet refused and two frames untimed", DecodeTally(kept=[0], refused=1, untimed=2), _info(), 3),
    ("one frame of a stated 10 (no step to measure the rest by)", DecodeTally(kept=[0]),
     _info(header_frames=10, duration=Fraction(2, 5)), 9),
    ("a clean pass", DecodeTally(kept=EVERY_40), _info(header_frames=5, duration=Fraction(1, 5)), 0),
    ("a gap of 3 frames where a packet was refused", DecodeTally(kept=[0, 40, 80, 200, 240], refused=1), _info(), 2),
    ("the same gap in an undamaged pass is a pause (variable frame rate)", DecodeTally(kept=[0, 40, 80, 200, 240]),
     _info(), 0),
    ("a step of 2 frames is not a gap, even when FFmpeg complained",
     DecodeTally(kept=[0, 40, 120, 160, 200], messages=["h264: error"]), _info(), 0),
    ("a step of 2.5 frames is not a gap yet", DecodeTally(kept=[0, 40, 80, 180, 220], messages=["h264: error"]),
     _info(), 0),
    ("a gap of 4 frames where FFmpeg complained", DecodeTally(kept=[0, 40, 200, 240], messages=["h264: error"]),
     _info(), 3),
    ("cut after 4 of 10 frames (the stated duration)", DecodeTally(kept=[0, 40, 80, 120]),
     _info(duration=Fraction(2, 5)), 6),
    ("one frame short of the stated duration is within rounding", DecodeTally(kept=[0, 40, 80, 120]),
     _info(duration=Fraction(1, 5)), 0),
    ("one and a half frames short still is", DecodeTally(kept=[0, 40, 80, 120]), _info(duration=Fraction(22, 100)), 0),
    ("two frames short is two frames lost", DecodeTally(kept=[0, 40, 80, 120]), _info(duration=Fraction(24, 100)), 2),
    ("cut after 4 of 10 frames, a tick a frame (time base 1/25)", DecodeTally(kept=[0, 1, 2, 3]),
     _info(duration=Fraction(2, 5), time_base=Fraction(1, 25)), 6),
    ("the header lists more than the timeline shows", DecodeTally(kept=EVERY_40), _info(header_frames=8), 3),
])
def test_frames_lost_in_a_pass(why, tally, info, lost):
    assert tally.lost(info) == lost, why


def test_the_pass_summary_for_the_jobs_record():
    tally = DecodeTally(kept=[0, 40, 200], refused=2, untimed=1, stopped="reading stopped: End of file",
                        messages=[f"h264: error {i}" for i in range(12)])
    assert tally.summary(_info()) == {
        "frames_lost": 3, "packets_refused": 2, "frames_untimed": 1, "stopped": "reading stopped: End of file",
        "ffmpeg_said": [f"h264: error {i}" for i in range(10)]}


# ------------------------------------------------------------------------------------------- encode
def test_segments_have_no_b_frames_so_they_join_in_presentation_order(tmp_path):
    """x264's default preset (medium) makes B-frames unless told not to: a segment's packets must
    come in presentation order (pts == dts, increasing)."""
    clip = make_clip(tmp_path / "clip.mp4", count=12, audio=False)
    info = probe(clip.path)
    segment = tmp_path / "segment.mp4"
    with SegmentWriter(segment, info, 64, 48, EncodeSettings()) as writer:  # origin 0: pts as given
        for frame in open_backend("pyav").frames(clip.path, info):
            writer.write(frame.rgb, frame.pts)
    assert writer.frames == 12
    with av.open(str(segment)) as container:
        stream = container.streams.video[0]
        stamps = [(p.pts * stream.time_base, p.dts * stream.time_base) for p in container.demux(stream) if p.size]
    assert [pts for pts, _ in stamps] == [p * TB for p in clip.pts]
    assert all(pts == dts for pts, dts in stamps)
    assert EncodeSettings().options(64, 48) == {"bf": "0", "crf": "18", "preset": "medium"}
    assert EncodeSettings(codec="ffv1").options(64, 48) == {"bf": "0"}  # crf and preset are x264/x265 options


@pytest.mark.parametrize("height, width", [(3, 4), (4, 5), (3, 5), (4, 6)])
def test_only_an_odd_side_is_padded(height, width):
    rgb = np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)
    padded = pad_even(rgb)
    assert padded.shape == (height + height % 2, width + width % 2, 3)
    assert np.array_equal(padded[:height, :width], rgb)
    assert (padded[-1] == padded[height - 1]).all() and (padded[:, -1] == padded[:, width - 1]).all()


def test_a_segment_that_cannot_be_written_says_why(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", count=2, audio=False)
    with pytest.raises(UnsupportedFormatError) as caught:
        SegmentWriter(tmp_path / "segment.xyz", probe(clip.path), 64, 48)
    assert str(caught.value) == "cannot encode libx264 into segment.xyz: Could not determine output format"


def test_a_join_without_segments_is_refused(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", count=2, audio=False)
    with pytest.raises(InputError) as caught:
        join_segments([], clip.path, probe(clip.path), tmp_path / "out.mp4")
    assert str(caught.value) == f"{clip.path}: no rendered segments to join"
    assert not (tmp_path / "out.mp4").exists()


def test_the_join_writes_the_container_format_it_is_told_whatever_the_name(tmp_path):
    """An output name that names no format (``restored.part``) holds the container asked for, with
    the source's timing and its audio packets unchanged; asked for mp4, the join keeps a start that
    is no whole millisecond (760 ticks of 1/19184 s) exactly, as it does for a ``.mp4`` name."""
    clip = make_clip(tmp_path / "clip.mp4", pts=[760 + 800 * i for i in range(6)], time_base=Fraction(1, 19184))
    info = probe(clip.path)
    source = [f.time for f in open_backend("pyav").frames(clip.path, info)]
    origin = int(source[0] / info.time_base)
    segment = tmp_path / "segment.mp4"
    with SegmentWriter(segment, info, 64, 48, EncodeSettings(preset="ultrafast"), origin=origin) as writer:
        for frame in open_backend("pyav").frames(clip.path, info):
            writer.write(frame.rgb, frame.pts)
    output = tmp_path / "restored.part"
    assert join_segments([Segment(segment, origin)], clip.path, info, output, container_format="mp4") == 6
    joined = probe(output)
    assert joined.format == "mov,mp4,m4a,3gp,3g2,mj2"
    assert [f.time for f in open_backend("pyav").frames(output, joined)] == source
    assert packet_hashes(output) == packet_hashes(clip.path)


def test_two_files_that_fail_alike_each_say_what_ffmpeg_said(tmp_path):
    """FFmpeg's log drops a message identical to the one before it unless told not to: the second of two
    files broken the same way must still carry FFmpeg's reason."""
    clip = tmp_path / "clip.mp4"
    make_clip(clip, 6)  # the index (moov) is written last: cut short, the file has none
    messages = []
    for name in ("first.mp4", "second.mp4"):
        path = tmp_path / name
        path.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
        with pytest.raises(InputError) as caught:
            probe(path)
        messages.append(str(caught.value).removeprefix(str(path)))
    assert messages[0] == messages[1] and "moov atom not found" in messages[1]


def test_x264_looks_ahead_its_presets_frames_unless_they_would_hold_over_192_mib():
    """x264 holds each frame it looks ahead at (about 3.5 bytes a pixel): medium's 40 frames of 1920x1408
    (a 480x352 video at x4) would hold some 380 MB, so it looks 21 ahead; small frames keep the
    preset's own; never under 10 frames; presets that look less far, or unknown ones, are left alone."""
    assert x264_lookahead("medium", 1920, 1408) == int(192 * 2**20 / (3.5 * 1920 * 1408)) == 21
    assert x264_lookahead("medium", 1280, 720) is None  # 62 frames would fit: medium's own 40
    assert x264_lookahead("slow", 1920, 1080) == 27 and x264_lookahead("fast", 1920, 1080) == 27
    assert x264_lookahead("faster", 1920, 1080) is None  # its own 20 fits
    assert x264_lookahead("medium", 7680, 4320) == 10  # at least 10
    assert x264_lookahead("ultrafast", 7680, 4320) is None and x264_lookahead("mine", 7680, 4320) is None
    assert EncodeSettings().options(1920, 1408) == {"bf": "0", "crf": "18", "preset": "medium", "rc-lookahead": "21"}
    assert EncodeSettings(codec="libx265").options(1920, 1408) == {"bf": "0", "crf": "18", "preset": "medium"}


def test_a_large_frame_is_encoded_with_the_shorter_lookahead(tmp_path):
    """The option reaches libx264 (it writes its settings into the stream)."""
    clip = make_clip(tmp_path / "clip.mp4", count=2, audio=False)
    info = probe(clip.path)
    with SegmentWriter(tmp_path / "big.mp4", info, 1920, 1408) as writer:
        for pts in clip.pts:
            writer.write(np.zeros((1408, 1920, 3), np.uint8), pts)
    with SegmentWriter(tmp_path / "small.mp4", info, 64, 48) as writer:
        for pts in clip.pts:
            writer.write(np.zeros((48, 64, 3), np.uint8), pts)
    assert b"rc_lookahead=21 " in (tmp_path / "big.mp4").read_bytes()
    assert b"rc_lookahead=40 " in (tmp_path / "small.mp4").read_bytes()


def test_the_output_check_tries_the_container_and_codec_elsewhere(tmp_path):
    """``check_output``: a name FFmpeg knows and a container that holds the codec pass, writing nothing beside
    the output; each way of failing says what to pass."""
    check_output(tmp_path / "new" / "out.mp4", EncodeSettings())  # a folder the job will make is fine
    check_output(tmp_path / "out.mkv", EncodeSettings("ffv1"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match=r"out: the name has no suffix .* ending in \.mp4, \.mkv or \.mov"):
        check_output(tmp_path / "out", EncodeSettings())
    with pytest.raises(UsageError, match=r"out\.xyz with libx264: .*output format"):
        check_output(tmp_path / "out.xyz", EncodeSettings())
    with pytest.raises(UsageError, match=r"'webm' format does not support 'libx264'.*another --codec"):
        check_output(tmp_path / "out.webm", EncodeSettings())
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UsageError, match="a-file cannot be written to"):
        check_output(tmp_path / "a-file" / "out.mp4", EncodeSettings())
    assert container_format(Path("x.MKV")) == "matroska" and container_format(Path("x.avi")) is None
