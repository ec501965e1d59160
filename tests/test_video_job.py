"""The video job through the CLI: every frame once and in order with its pts, audio copied bit for
bit, shots and code sources in the job store and ``status``, resume, bad inputs, odd sizes, colour,
rotation, and the decord backend."""
from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from video_clips import (SUBTITLES, TB, decoded, frame_pixels, make_audio_only, make_clip, packet_hashes,
                         stream_start, vfr_pts)

import direct_render
from archive_restore.cli import cli
from archive_restore.media.video import probe
from archive_restore.jobs.store import JobStore

FAST = ["--preset", "ultrafast", "--face-detector", "haar"]


def _video(args: list[str], models: Path, jobs: Path):
    result = CliRunner().invoke(cli, ["video", *args, *FAST, "--models-dir", str(models), "--jobs-dir", str(jobs)])
    return result


def _seconds(pts, time_base):
    return [Fraction(p) * Fraction(time_base) for p in pts]


def _order(outputs: list[np.ndarray], sources: list[np.ndarray]) -> list[int]:
    """For each output frame (resized to the source size) the index of the closest source frame."""
    h, w = sources[0].shape[:2]
    found = []
    for out in outputs:
        small = cv2.resize(out[:h * (out.shape[0] // h), :w * (out.shape[1] // w)], (w, h),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        found.append(int(np.argmin([np.mean((small - s) ** 2) for s in sources])))
    return found


def _job(jobs: Path):
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        return job, store.items(job.id)


def test_every_frame_once_in_order_with_pts_and_audio(tmp_path, tiny_models):
    # a time base mp4's millisecond edit lists cannot express (a real clip's): chunk starts stay exact
    time_base = Fraction(1, 19184)
    clip = make_clip(tmp_path / "film.mp4", pts=[19 * p for p in vfr_pts(24)], shots=(8, 16), time_base=time_base)
    jobs = tmp_path / "jobs"
    result = _video([str(clip.path), "--scale", "2", "--chunk-frames", "5", "--batch", "3"], tiny_models, jobs)
    assert result.exit_code == 0, result.output
    out = tmp_path / "film_restored.mp4"
    pts, out_base, frames = decoded(out)
    src_pts, src_base, _ = decoded(clip.path)  # as decoded: mp4 rounded the first frame's start too
    assert _seconds(pts, out_base) == _seconds(src_pts, src_base) and src_base == time_base
    assert _order(frames, clip.frames) == list(range(24))
    assert frames[0].shape == (96, 128, 3)
    assert packet_hashes(out) == packet_hashes(clip.path)
    assert stream_start(out, "audio") == stream_start(clip.path, "audio")

    job, items = _job(jobs)
    analysis, *chunks, finish = items
    assert (analysis.key, finish.key) == ("analysis", "finish")
    assert analysis.extra["frames"] == 24 and analysis.extra["shots"] == 3
    assert [c.extra["shot"] for c in chunks] == [0, 0, 1, 1, 2, 2]
    assert [c.extra["start_frame"] for c in chunks] == [0, 5, 8, 13, 16, 21]
    assert sum(c.extra["frames"] for c in chunks) == 24
    assert all(c.status == "done" and c.attempts == 1 and c.code_source == "blind" for c in chunks)

    status = CliRunner().invoke(cli, ["status", job.id, "--jobs-dir", str(jobs)])
    assert "analysis 24 frames, 3 shots" in status.output
    assert "shot0001.000 shot 1 frames 8-12 faces=0 code=blind" in status.output
    as_json = json.loads(CliRunner().invoke(cli, ["status", job.id, "--json", "--jobs-dir", str(jobs)]).output)
    assert as_json["summary"]["done"] == 8

    before = out.stat().st_mtime_ns
    again = _video([str(clip.path), "--scale", "2", "--chunk-frames", "5", "--batch", "3"], tiny_models, jobs)
    assert again.exit_code == 0 and out.stat().st_mtime_ns == before
    assert [i.attempts for i in _job(jobs)[1]] == [1] * 8  # nothing done again


def _face_clip(path: Path) -> list[np.ndarray]:
    from skimage import data

    face = cv2.resize(data.astronaut(), (160, 160), interpolation=cv2.INTER_AREA)
    frames = [np.roll(face, i, axis=1) for i in range(6)] + [frame_pixels(i, 160, 160, shot=1) for i in range(6)]
    return _write_frames(path, frames)


def _write_frames(path: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "10", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 160, 160, "yuv420p"
        stream.codec_context.time_base = TB
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = 40 * i, TB
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return frames


def _rendered_frames(monkeypatch) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """What the video job restores (decoded frames, by pts) and what it hands the encoder (by pts)."""
    from archive_restore.pipeline import video

    given: dict[int, np.ndarray] = {}
    encoded: dict[int, np.ndarray] = {}
    restore, write = video.VideoJob.restore, video.SegmentWriter.write

    def recording_restore(self, batch, code, cleanup=None):
        given.update((f.pts, f.rgb.copy()) for f in batch)
        return restore(self, batch, code, cleanup)

    def recording_write(self, rgb, pts):
        encoded[pts] = rgb.copy()
        return write(self, rgb, pts)

    monkeypatch.setattr(video.VideoJob, "restore", recording_restore)
    monkeypatch.setattr(video.SegmentWriter, "write", recording_write)
    return given, encoded


def test_faces_tracked_give_their_shot_its_code(tmp_path, conditioned_models, monkeypatch):
    pytest.importorskip("skimage")
    path = tmp_path / "astronaut.mp4"
    _face_clip(path)
    given, encoded = _rendered_frames(monkeypatch)
    # frames on their own (no temporal steadying): each is then exactly CondSR's with its shot's code
    result = _video([str(path), "--scale", "1", "--detect-every", "2", "--temporal", "off"], conditioned_models,
                    tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    _, (analysis, face_shot, other_shot, _) = _job(tmp_path / "jobs")
    assert analysis.extra["shots"] == 2 and analysis.extra["tracks"] == 1
    assert face_shot.code_source == "faces" and face_shot.faces == 1 and face_shot.extra["confidence"] > 0
    assert other_shot.code_source == "neighbour" and other_shot.code == face_shot.code

    # Every frame is rendered with its shot's code: what the encoder gets is CondSR called directly
    # with that code, rounded to 8 bits; the zero code would be far off.
    assert sorted(encoded) == sorted(given) and len(given) == 12
    for pts, frame in given.items():
        rgb = frame.astype(np.float32) / 255 if frame.dtype == np.uint8 else frame
        expected = direct_render.condsr(conditioned_models, rgb, face_shot.code, 1)
        got = encoded[pts].astype(np.float32) / 255
        assert np.abs(got - expected).max() <= direct_render.EIGHT_BIT, pts
        assert np.abs(got - direct_render.condsr(conditioned_models, rgb, np.zeros(16), 1)).mean() > 5 / 255, pts


def test_bad_inputs_fail_alone_with_one_line_each(tmp_path, tiny_models):
    good = make_clip(tmp_path / "good.mp4", count=6)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "cut.mp4").write_bytes(good.path.read_bytes()[:1500])
    (tmp_path / "notes.mp4").write_text("this is not a video\n")
    make_audio_only(tmp_path / "voice.mp4")
    names = ["empty", "cut", "voice", "good", "notes"]
    result = _video([str(tmp_path / f"{n}.mp4") for n in names] + ["-o", str(tmp_path / "out"), "--scale", "1"],
                    tiny_models, tmp_path / "jobs")
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 4
    for name, reason in [("empty", "empty (0 bytes)"), ("cut", "not a readable video"),
                         ("voice", "no video stream"), ("notes", "not a readable video")]:
        assert any(f"{name}.mp4" in e and reason in e for e in errors), (name, errors)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.mp4"]
    with JobStore.open(tmp_path / "jobs") as store:
        assert sorted(j.status for j in store.jobs()) == ["done"] + ["failed"] * 4


def test_odd_size_rotation_and_colour_are_kept(tmp_path, tiny_models):
    colour = {"color_primaries": 1, "color_trc": 1, "colorspace": 1, "color_range": 1}
    clip = make_clip(tmp_path / "odd.mp4", count=6, width=63, height=47, rotation=90, colour=colour)
    result = _video([str(clip.path), "--scale", "1", "-o", str(tmp_path / "o.mp4")], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    info, source = probe(tmp_path / "o.mp4"), probe(clip.path)
    assert (info.width, info.height, info.rotation) == (64, 48, 90)  # padded by one pixel each way
    assert info.colour == source.colour and info.colour.matrix == 1
    pts, time_base, _ = decoded(tmp_path / "o.mp4")
    assert _seconds(pts, time_base) == _seconds(clip.pts, TB)


def test_a_failed_chunk_fails_the_job_until_resumed(tmp_path, tiny_models, monkeypatch):
    from archive_restore.pipeline import video

    clip = make_clip(tmp_path / "f.mp4", count=8)
    render = video.VideoJob.render
    calls = []

    def flaky(self, item):
        calls.append(item.key)
        if item.key == "shot0000.001" and calls.count(item.key) == 1:
            raise OSError("disk hiccup")
        return render(self, item)

    monkeypatch.setattr(video.VideoJob, "render", flaky)
    args = [str(clip.path), "--scale", "1", "--chunk-frames", "3"]
    first = _video(args, tiny_models, tmp_path / "jobs")
    assert first.exit_code == 1 and "disk hiccup" in first.output
    assert not (tmp_path / "f_restored.mp4").exists()
    job, _ = _job(tmp_path / "jobs")
    resumed = CliRunner().invoke(cli, ["resume", job.id, "--retry-failed", "--models-dir", str(tiny_models),
                                       "--jobs-dir", str(tmp_path / "jobs")])
    assert resumed.exit_code == 0, resumed.output
    assert calls == ["shot0000.000", "shot0000.001", "shot0000.002", "shot0000.001"]
    pts, time_base, _ = decoded(tmp_path / "f_restored.mp4")
    assert _seconds(pts, time_base) == _seconds(clip.pts, TB)


def test_decord_backend_job(tmp_path, tiny_models):
    try:
        import decord  # noqa: F401
    except Exception as exc:
        pytest.skip(f"decord is not usable here ({exc}); the pyav backend is tested throughout")
    clip = make_clip(tmp_path / "d.mp4", count=8)
    result = _video([str(clip.path), "--scale", "1", "--backend", "decord"], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    pts, time_base, frames = decoded(tmp_path / "d_restored.mp4")
    assert _seconds(pts, time_base) == _seconds(clip.pts, TB) and _order(frames, clip.frames) == list(range(8))


def test_an_output_the_encoder_cannot_write_is_refused_before_any_work(tmp_path, tiny_models):
    """``-o NAME`` without a container suffix, or a container that cannot hold the codec: exit 2 with one line
    saying what to pass, before the job exists (a job used to render every frame, then fail at the join)."""
    clip = make_clip(tmp_path / "c.mp4", count=4)
    jobs = tmp_path / "jobs"
    for output, said in ((tmp_path / "restored", "has no suffix"), (tmp_path / "r.webm", "does not support")):
        result = _video([str(clip.path), "-o", str(output), "--scale", "1"], tiny_models, jobs)
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1, result.output
        assert said in errors[0] and "give -o a file name ending in .mp4, .mkv or .mov" in errors[0]
        assert not output.exists()
    with JobStore.open(jobs) as store:
        assert store.jobs() == []  # refused before any job was made, let alone rendered


def test_video_help_and_usage_errors(tmp_path):
    assert "--backend" in CliRunner().invoke(cli, ["video", "--help"]).output
    bad = CliRunner().invoke(cli, ["video", str(tmp_path / "x.mp4"), "--codec", "nope", "--jobs-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "no video encoder called 'nope'" in bad.output
    empty = CliRunner().invoke(cli, ["video", str(tmp_path), "--jobs-dir", str(tmp_path / "jobs")])
    assert empty.exit_code == 2 and "no video files" in empty.output


def test_an_input_changed_after_its_analysis_is_refused(tmp_path, tiny_models, monkeypatch):
    from archive_restore.pipeline import video

    clip = make_clip(tmp_path / "c.mp4", count=4, audio=False)
    analyse = video.VideoJob.analyse

    def analyse_then_touch(self):
        result = analyse(self)
        os.utime(clip.path, ns=(1, 1))  # the file is replaced while the job runs
        return result

    monkeypatch.setattr(video.VideoJob, "analyse", analyse_then_touch)
    result = _video([str(clip.path), "--scale", "1"], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 1 and "changed or vanished since its analysis" in result.output
    assert not (tmp_path / "c_restored.mp4").exists()
    monkeypatch.undo()
    again = _video([str(clip.path), "--scale", "1", "--restart"], tiny_models, tmp_path / "jobs")
    assert again.exit_code == 0, again.output


# ------------------------------------------------------------------------------- the face restorer

def _no_user_models(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ARCHIVE_RESTORE_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_without_gfpgan_each_video_job_says_so_once_and_falls_back(tmp_path, tiny_models, monkeypatch):
    _no_user_models(tmp_path, monkeypatch)
    for name in ("a.mp4", "b.mp4"):
        make_clip(tmp_path / name, count=6, audio=False)
    clips, out, jobs = [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")], tmp_path / "out", tmp_path / "jobs"
    result = _video([*clips, "-o", str(out), "--scale", "1", "--chunk-frames", "2"], tiny_models, jobs)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("no face restorer") == 2  # one per job, not one per chunk
    assert "GFPGANv1.4.pth" in result.stderr and "archive-restore models fetch gfpgan-v1.4" in result.stderr
    with JobStore.open(jobs) as store:
        chunks = [i for job in store.jobs() for i in store.items(job.id) if i.key.startswith("shot")]
    assert len(chunks) == 6 and not any("faces_pasted" in c.extra for c in chunks)

    quiet = _video([clips[0], "-o", str(out / "none.mp4"), "--scale", "1", "--face-restorer", "none"], tiny_models, jobs)
    assert quiet.exit_code == 0 and "no face restorer" not in quiet.stderr
    required = _video([clips[0], "-o", str(out / "g.mp4"), "--face-restorer", "gfpgan"], tiny_models, jobs)
    assert required.exit_code == 1 and "--face-restorer gfpgan: GFPGANv1.4.pth" in required.stderr
    assert "Traceback" not in required.output and not (out / "g.mp4").exists()


def test_with_a_face_restorer_faces_are_restored_and_pasted_in_every_frame(tmp_path, conditioned_models,
                                                                           random_restorer, monkeypatch):
    pytest.importorskip("skimage")
    path = tmp_path / "astronaut.mp4"
    _face_clip(path)
    given, encoded = _rendered_frames(monkeypatch)
    result = _video([str(path), "--scale", "1", "--detect-every", "2", "--models-dir", str(random_restorer),
                     "--temporal", "off"], conditioned_models, tmp_path / "jobs")  # frames on their own
    assert result.exit_code == 0, result.output
    assert "no face restorer" not in result.stderr
    _, (analysis, face_shot, other_shot, _) = _job(tmp_path / "jobs")
    assert face_shot.extra["code_detail"].startswith("paired codes")
    assert face_shot.extra["face_restorer"] == "GFPGANv1.4" and face_shot.extra["faces_pasted"] == 6
    assert other_shot.extra["faces_pasted"] == 0

    # Each frame is its shot's CondSR render with the restored face pasted in: the face shot's frames
    # differ from the bare render around the face only; the faceless shot's frames do not differ at all.
    starts = {c.extra["start_pts"]: c for c in (face_shot, other_shot)}
    for pts in sorted(given):
        shot = starts[max(p for p in starts if p <= pts)]
        rgb = given[pts].astype(np.float32) / 255
        bare = direct_render.condsr(conditioned_models, rgb, shot.code, 1)
        changed = np.abs(encoded[pts].astype(np.float32) / 255 - bare).max(axis=2) > direct_render.EIGHT_BIT
        if shot is other_shot:
            assert not changed.any(), pts
            continue
        # the astronaut's face (Haar's box: about x 54-86, y 20-52 of 160) and its feathered margin
        rows, cols = np.nonzero(changed)
        assert changed.mean() > 0.02 and 40 < cols.mean() < 120 and 10 < rows.mean() < 80, pts
        assert not changed[:, :20].any() and not changed[120:].any(), pts  # the far side of the picture is untouched


@pytest.mark.slow
def test_a_random_weight_gfpgan_is_found_and_used_by_the_video_job(tmp_path, tiny_models, gfpgan_dir, monkeypatch):
    """The real GFPGAN (random weights, official layout) through spandrel: one frame, two forward passes."""
    pytest.importorskip("skimage")
    from skimage import data

    _no_user_models(tmp_path, monkeypatch)
    path = tmp_path / "one.mp4"
    _write_frames(path, [cv2.resize(data.astronaut(), (160, 160), interpolation=cv2.INTER_AREA)])
    result = _video([str(path), "--scale", "1", "--models-dir", str(gfpgan_dir)], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    assert "no face restorer" not in result.stderr
    _, (analysis, chunk, _) = _job(tmp_path / "jobs")
    assert analysis.extra["tracks"] == 1 and chunk.extra["code_detail"].startswith("paired codes")
    assert chunk.extra["face_restorer"] == "GFPGANv1.4" and chunk.extra["faces_pasted"] == 1
    assert len(decoded(tmp_path / "one_restored.mp4")[0]) == 1


# ------------------------------------------------------------------------------------- subtitles

@pytest.mark.parametrize(("name", "codec"), [("film.mp4", "mov_text"), ("film.mkv", "subrip")])
def test_subtitle_packets_are_copied_unchanged(tmp_path, tiny_models, name, codec):
    clip = make_clip(tmp_path / name, count=8, subtitle=True)
    result = _video([str(clip.path), "--scale", "1", "--chunk-frames", "4"], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    out = clip.path.with_name(f"film_restored{clip.path.suffix}")
    source = probe(clip.path).subtitles
    assert [s.codec for s in source] and [s.codec for s in probe(out).subtitles] == [s.codec for s in source]
    texts = packet_hashes(clip.path, "subtitle")
    assert len(texts) >= len(SUBTITLES) and packet_hashes(out, "subtitle") == texts
    assert stream_start(out, "subtitle") == stream_start(clip.path, "subtitle")
    assert packet_hashes(out) == packet_hashes(clip.path)  # and the audio, as ever
    assert _seconds(decoded(out)[0], decoded(out)[1]) == _seconds(clip.pts, TB)


def test_an_mp4_with_aac_priming_joined_into_mkv_keeps_the_frames_at_their_own_times(tmp_path, tiny_models):
    """The AAC stream's first packet starts at -64 ms (1024 priming samples at 16 kHz): Matroska's muxer
    shifted every stream by as much, the video included, until negative times were allowed to stay."""
    clip = make_clip(tmp_path / "film.mp4", count=8)
    with av.open(str(clip.path)) as container:
        first_audio = next(p for p in container.demux(container.streams.audio[0]) if p.size)
        assert first_audio.pts * first_audio.time_base < 0  # the case itself
    result = _video([str(clip.path), "--scale", "1", "-o", str(tmp_path / "film.mkv")], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    pts, time_base, _ = decoded(tmp_path / "film.mkv")
    assert _seconds(pts, time_base) == _seconds(clip.pts, TB)


def test_our_face_restorer_restores_and_pastes_faces_in_every_frame(tmp_path, tiny_models):
    """``--faces-without-restorer ours``: the faces of the face shot restored by our face restorer (a tiny
    FaceNet that brightens) and pasted in each of its frames, with blind codes; the faceless shot untouched."""
    pytest.importorskip("skimage")
    import torch

    from archive_restore.nets import save_checkpoint
    from archive_restore.nets.face_net import FaceNet
    from archive_restore.weights.folders import MODEL_FILES

    torch.manual_seed(0)
    net = FaceNet(features=4, depth=2)
    torch.nn.init.zeros_(net.out.weight)
    torch.nn.init.constant_(net.out.bias, 0.15)
    ours = tmp_path / "ours"
    ours.mkdir()
    save_checkpoint(net, ours / MODEL_FILES["face_net"])
    path = tmp_path / "astronaut.mp4"
    _face_clip(path)
    result = _video([str(path), "--scale", "1", "--detect-every", "2", "--temporal", "off", "--faces-without-restorer",
                     "ours", "--models-dir", str(ours)], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    job, (analysis, face_shot, other_shot, _) = _job(tmp_path / "jobs")
    assert job.options["faces_without_restorer"] == "ours"
    assert face_shot.extra["code_detail"].startswith("blind codes")
    assert face_shot.extra["face_restorer"] == "face_net" and face_shot.extra["faces_pasted"] == 6
    assert other_shot.extra["faces_pasted"] == 0
