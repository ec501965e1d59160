"""The video job's details: the analysis pass on a stand-in engine (where faces are looked for, how
shots are chunked, which crops make a shot's code), what each item records, the progress bars,
``status`` lines and the damage note, the finish's refusal, resuming, the options' identity, finding
videos and opening their jobs, and the decode / probe threads that keep a damaged file from hanging."""
from __future__ import annotations

import json
import re
import threading
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from video_clips import decoded, frame_pixels, make_clip

from archive_restore.cli import cli
from archive_restore.errors import InputError, UsageError
from archive_restore.faces import Face
from archive_restore.media.video import EncodeSettings, VideoFrame, probe
from archive_restore.pipeline import video
from archive_restore.faces.steady import SteadyFaces
from archive_restore.pipeline.engine import ALIGNED_SIZE, Engine, combine
from archive_restore.pipeline.status import video_lines
from archive_restore.pipeline.video import (BLIND, FACES, NEIGHBOUR, WHOLE, Analysis, Shot, VideoJobOptions,
                                            damage_note, find_videos, open_video_job, output_for)
from archive_restore.jobs.store import Item, JobStore

FAST = ["--preset", "ultrafast", "--face-detector", "haar", "--face-restorer", "none"]


# ------------------------------------------------------------------------ the analysis pass
class StandInEngine:
    """What the analysis asks of the engine: faces the test chooses per frame, a blind code naming
    the frame it was read from, face codes naming the crop they were read from."""

    def __init__(self, frames: list[np.ndarray], faces_at: dict[int, list[Face]]) -> None:
        self.frames, self.faces_at = frames, faces_at
        self.options = SimpleNamespace(min_face=16)
        self.detector = SimpleNamespace(detect=self._detect)
        self.detected: list[int] = []
        self.encoded: list[list] = []

    def index_of(self, rgb: np.ndarray) -> int:
        """Which source frame ``rgb`` is; it must be that frame scaled to [0, 1] exactly."""
        for index, frame in enumerate(self.frames):
            if np.array_equal(rgb, frame.astype(np.float32) / 255.0):
                return index
        raise AssertionError("not a source frame scaled to [0, 1]")

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        index = self.index_of(rgb)
        self.detected.append(index)
        return self.faces_at.get(index, [])

    def image_blind_code(self, rgb: np.ndarray) -> np.ndarray:
        return np.full(4, float(self.index_of(rgb)), np.float32)

    def encode_faces(self, payloads: list, restored=None) -> tuple[np.ndarray, str]:
        self.encoded.append(list(payloads))
        return np.stack([np.full(4, 100.0 * frame + x0, np.float32) for frame, x0, _ in payloads]), "paired"


def _analyse(monkeypatch, faces_at: dict[int, list[Face]]) -> tuple[list[Shot], Analysis, StandInEngine]:
    """Fifteen 96x64 frames, a cut before frame 10, pts 5, 45, 85, ...; faces looked for every 3
    frames, chunks of at most 3 frames. A crop is (frame, x0 of its box, size); its quality is its
    score."""
    frames = [frame_pixels(i, 96, 64, shot=int(i >= 10)) for i in range(15)]
    engine = StandInEngine(frames, faces_at)
    monkeypatch.setattr(video, "align_face", lambda rgb, face, size: (engine.index_of(rgb), face.box[0], size))
    monkeypatch.setattr(video, "face_quality", lambda face, rgb: face.score)
    analysis = Analysis(engine, VideoJobOptions(detect_every=3, chunk_frames=3))
    shots = analysis.run(VideoFrame(5 + 40 * i, Fraction(1, 1000), rgb) for i, rgb in enumerate(frames))
    return shots, analysis, engine


def _face(x0: float, y0: float, side: float, score: float) -> Face:
    return Face((x0, y0, x0 + side, y0 + side), score, None, "test")


A_SCORES = {0: 0.51234, 3: 0.61111, 6: 0.72222, 9: 0.83334}


def test_faces_are_looked_for_every_k_frames_of_a_shot_and_their_best_crops_make_its_code(monkeypatch):
    # in shot 0 a face moving right (40 px), a still one exactly min_face (16 px) wide, one too small
    faces_at = {i: [_face(20 + 2 * i, 10, 40, A_SCORES[i]), _face(70, 40, 16, 0.3), _face(0, 0, 15, 0.9)]
                for i in A_SCORES}
    shots, analysis, engine = _analyse(monkeypatch, faces_at)

    # every 3rd frame counted from each shot's own start: shot 1 starts at frame 10
    assert engine.detected == [0, 3, 6, 9, 10, 13]
    assert (analysis.frames, analysis.tracks, len(shots)) == (15, 2, 2)
    assert [(s.index, s.start_frame, s.start_pts, s.frames, s.tracks) for s in shots] == [(0, 0, 5, 10, 2),
                                                                                         (1, 10, 405, 5, 0)]
    # chunks of at most 3 frames within a shot; each ends where the next frame (of any shot) starts
    assert shots[0].chunks == [{"start_frame": 0, "start_pts": 5, "frames": 3, "end_pts": 125},
                               {"start_frame": 3, "start_pts": 125, "frames": 3, "end_pts": 245},
                               {"start_frame": 6, "start_pts": 245, "frames": 3, "end_pts": 365},
                               {"start_frame": 9, "start_pts": 365, "frames": 1, "end_pts": 405}]
    assert shots[1].chunks == [{"start_frame": 10, "start_pts": 405, "frames": 3, "end_pts": 525},
                               {"start_frame": 13, "start_pts": 525, "frames": 2, "end_pts": None}]
    # blind codes from the first 3 frames looked at, per shot
    assert [b[0] for b in shots[0].blind] == [0, 3, 6] and [b[0] for b in shots[1].blind] == [10, 13]

    # one encode call for shot 0: each track's 3 best crops, the first of equals (the too-small face
    # is never tracked)
    (payloads,) = engine.encoded
    assert sorted(payloads) == sorted([(f, 20 + 2 * f, ALIGNED_SIZE) for f in (3, 6, 9)]
                                      + [(f, 70, ALIGNED_SIZE) for f in (0, 3, 6)])
    quality = {(f, 20 + 2 * f): A_SCORES[f] for f in A_SCORES} | {(f, 70): 0.3 for f in A_SCORES}
    qualities = [quality[frame, x0] for frame, x0, _ in payloads]
    codes = np.stack([np.full(4, 100.0 * frame + x0, np.float32) for frame, x0, _ in payloads])
    assert shots[0].source == FACES
    assert np.array_equal(shots[0].code, combine(codes, np.array(qualities, np.float32)))  # weighted by quality
    assert not np.array_equal(shots[0].code, combine(codes))
    assert shots[0].confidence == 0.5111  # the crops' mean quality, 0.511112 to 4 decimals
    assert shots[0].detail == "paired codes of 6 crops of 2 tracks"
    # shot 1 has no face: its neighbour's code, half as sure
    assert shots[1].source == NEIGHBOUR and np.array_equal(shots[1].code, shots[0].code)
    assert (shots[1].confidence, shots[1].detail) == (0.2555, "from shot 0")  # 0.5111 / 2, as a float


def test_a_video_without_faces_gives_each_shot_the_blind_code_of_its_own_frames(monkeypatch):
    shots, analysis, engine = _analyse(monkeypatch, {})
    assert engine.encoded == [] and analysis.tracks == 0
    assert [s.source for s in shots] == [BLIND, BLIND] and [s.confidence for s in shots] == [0.0, 0.0]
    assert np.array_equal(shots[0].code, combine(np.stack([np.full(4, float(i), np.float32) for i in (0, 3, 6)])))
    assert np.array_equal(shots[1].code, combine(np.stack([np.full(4, float(i), np.float32) for i in (10, 13)])))
    assert [s.detail for s in shots] == ["blind code from 3 frames", "blind code from 2 frames"]


def test_borrowed_codes_are_less_sure_to_four_decimals():
    shots = [Shot(i, i * 10, i * 10, blind=[np.zeros(4, np.float32)]) for i in range(5)]
    shots[0].code, shots[0].source, shots[0].confidence = np.ones(4, np.float32), FACES, 0.77777
    analysis = Analysis.__new__(Analysis)
    analysis.shots = shots
    analysis._fill_codes()
    assert [s.source for s in shots] == [FACES, NEIGHBOUR, NEIGHBOUR, WHOLE, WHOLE]
    assert [s.confidence for s in shots] == [0.77777, 0.3889, 0.3889, 0.1944, 0.1944]  # x 0.5 and x 0.25
    assert [s.detail for s in shots[1:]] == ["from shot 0", "from shot 0"] + ["whole video (1 shots with faces)"] * 2


# ------------------------------------------------------------------------ the job's record
def _video(args: list[str], models: Path, jobs: Path):
    return CliRunner().invoke(cli, ["video", *args, *FAST, "--models-dir", str(models), "--jobs-dir", str(jobs)])


def _items(jobs: Path):
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        return job, store.items(job.id), store.job_dir(job.id)


def _bar_states(stderr: str, name: str) -> list[str]:
    """Every state a tqdm bar called ``name`` printed."""
    return [s.strip() for s in re.split(r"[\r\n]", stderr) if s.strip().startswith(name)]


def _adds_up(fps: float, seconds: float, frames: int) -> bool:
    """frames/s times seconds gives the frames, as far as their rounding (to 2 and 3 decimals) allows."""
    return abs(fps * seconds - frames) <= 0.0005 * fps + 0.005 * seconds + 1e-6


def test_each_item_records_what_it_did_and_the_bars_and_status_say_it(tmp_path, tiny_models, monkeypatch):
    clip = make_clip(tmp_path / "film.mp4", count=10, shots=(6,), audio=False)
    batches: list[int] = []
    dtypes: set[np.dtype] = set()
    restore = video.VideoJob.restore

    def recording_restore(self, batch, code, cleanup=None):
        batches.append(len(batch))
        restored = restore(self, batch, code, cleanup)
        dtypes.update(r.dtype for r in restored)
        return restored

    monkeypatch.setattr(video.VideoJob, "restore", recording_restore)
    steadies = []  # the face steadier each frame is pasted with
    paste = Engine.paste_faces

    def recording_paste(self, lq, picture, restored=None, steady=None, code=None):
        steadies.append(steady)
        return paste(self, lq, picture, restored, steady=steady, code=code)

    monkeypatch.setattr(Engine, "paste_faces", recording_paste)
    network_batches = []  # the batch size the network is asked to run
    restore_frames = Engine.restore_frames

    def recording_restore_frames(self, frames, code, batch=1, as_uint8=False, cleanup=None):
        network_batches.append(batch)
        return restore_frames(self, frames, code, batch, as_uint8=as_uint8, cleanup=cleanup)

    monkeypatch.setattr(Engine, "restore_frames", recording_restore_frames)
    jobs = tmp_path / "jobs"
    result = _video([str(clip.path), "--scale", "1", "--chunk-frames", "4", "--batch", "3"], tiny_models, jobs)
    assert result.exit_code == 0, result.output
    job, (analysis, *chunks, finish), job_dir = _items(jobs)
    pts = decoded(clip.path)[0]
    info, stat = probe(clip.path), clip.path.stat()

    # the analysis: the input's stamp, what it found, the decoder's tally, timing that adds up
    assert (analysis.size, analysis.mtime) == (stat.st_size, pytest.approx(stat.st_mtime))
    x = analysis.extra
    assert x["fields"]["mode"] == "off" and "the stream's flag (progressive) decided: off" in x["fields"]["reason"]
    assert {k: v for k, v in x.items() if k not in ("seconds", "fps", "fields")} == {
        "input": [stat.st_size, stat.st_mtime_ns], "frames": 10, "shots": 2, "tracks": 0, "video": info.summary(),
        "header_frames": info.header_frames, "code_sources": {"blind": 2}, "frames_lost": 0, "packets_refused": 0,
        "frames_untimed": 0, "stopped": None, "ffmpeg_said": []}
    assert 0 < x["seconds"] < 60 and x["seconds"] == round(x["seconds"], 3) and x["fps"] == round(x["fps"], 2)
    assert _adds_up(x["fps"], x["seconds"], 10)
    assert analysis.faces == 0

    # each chunk: its frames and pts, its shot's code and where it came from, its segment and timing
    assert [c.key for c in chunks] == ["shot0000.000", "shot0000.001", "shot0001.000"]
    common = {"shot_frames": 6, "tracks": 0, "code_source": "blind", "confidence": 0.0,
              "code_detail": "blind code from 2 frames"}
    expected = [{"start_frame": 0, "start_pts": pts[0], "frames": 4, "end_pts": pts[4], "shot": 0, "part": 0},
                {"start_frame": 4, "start_pts": pts[4], "frames": 2, "end_pts": pts[6], "shot": 0, "part": 1},
                {"start_frame": 6, "start_pts": pts[6], "frames": 4, "end_pts": None, "shot": 1, "part": 0,
                 "shot_frames": 4, "code_detail": "blind code from 1 frames"}]
    for chunk, want in zip(chunks, expected):
        got = {k: v for k, v in chunk.extra.items() if k not in ("render_seconds", "render_fps")}
        assert got == {**common, **want, "segment_origin": want["start_pts"]}, chunk.key
        assert (chunk.faces, chunk.code_source, chunk.output) == (0, "blind", str(job_dir / f"{chunk.key}.mp4"))
        seconds, fps = chunk.extra["render_seconds"], chunk.extra["render_fps"]
        assert 0 < seconds < 60 and seconds == round(seconds, 3) and fps == round(fps, 2)
        assert _adds_up(fps, seconds, want["frames"])
    assert chunks[0].code == chunks[1].code != chunks[2].code and len(chunks[0].code) == 16
    assert batches == [3, 1, 2, 3, 1] and network_batches == [3] * 5  # --batch 3, within each chunk
    assert dtypes == {np.dtype(np.uint8)}  # no face to paste: rounded to 8 bits on the device, a quarter of the bytes
    # faces are steadied within a chunk only: each chunk starts without history, so a chunk rendered
    # again after a crash comes out as it would have
    parts = [steadies[:4], steadies[4:6], steadies[6:]]
    assert len(steadies) == 10 and all(isinstance(s, SteadyFaces) for s in steadies)
    assert all(s is part[0] for part in parts for s in part)
    assert parts[0][0] is not parts[1][0] and parts[1][0] is not parts[2][0] and parts[0][0] is not parts[2][0]
    assert (finish.output, finish.extra) == (job.output, {"frames": 10})

    # a bar for the analysis (over the header's frame count) and one for the render (counted frames),
    # no other (the runner's bar counts items)
    shown = [s.strip() for s in re.split(r"[\r\n]", result.stderr) if s.strip() and not s.startswith("note: ")]
    assert {s.split(":")[0] for s in shown} == {"analysis film.mp4", "render film.mp4"}, result.stderr
    assert _bar_states(result.stderr, "analysis film.mp4:")[-1].startswith("analysis film.mp4: 100%")
    assert " 10/10 [" in _bar_states(result.stderr, "analysis film.mp4:")[-1]
    assert "frame/s]" in _bar_states(result.stderr, "analysis film.mp4:")[-1]
    render = _bar_states(result.stderr, "render film.mp4:")
    assert render[0].startswith("render film.mp4:   0%") and " 0/10 [" in render[0]
    assert render[-1].startswith("render film.mp4: 100%") and " 10/10 [" in render[-1]

    status = CliRunner().invoke(cli, ["status", job.id, "--jobs-dir", str(jobs)]).output.splitlines()
    assert (f"  done     analysis 10 frames, 2 shots, 0 face tracks, {x['fps']} frames/s" in status), status
    for chunk, first, last, blind in zip(chunks, (0, 4, 6), (3, 5, 9), (2, 2, 1)):
        line = (f"  done     {chunk.key} shot {chunk.extra['shot']} frames {first}-{last} faces=0 code=blind "
                f"(blind code from {blind} frames, confidence 0.0) {chunk.extra['render_fps']} frames/s")
        assert line in status, (line, status)
    assert "  done     finish" in status


def test_a_resumed_render_bar_starts_at_the_frames_already_done(tmp_path, tiny_models, monkeypatch):
    clip = make_clip(tmp_path / "r.mp4", count=8, audio=False)
    render = video.VideoJob.render

    def fails_once(self, item):
        if item.key == "shot0000.001" and not item.error:
            raise OSError("disk hiccup")
        return render(self, item)

    monkeypatch.setattr(video.VideoJob, "render", fails_once)
    args, jobs = [str(clip.path), "--scale", "1", "--chunk-frames", "3"], tmp_path / "jobs"
    assert _video(args, tiny_models, jobs).exit_code == 1
    again = _video([*args, "--retry-failed"], tiny_models, jobs)
    assert again.exit_code == 0, again.output
    states = _bar_states(again.stderr, "render r.mp4:")
    assert " 5/8 [" in states[0] and " 8/8 [" in states[-1]  # chunks 0 and 2 (3 + 2 frames) were done


def test_the_finish_refuses_while_chunks_are_not_rendered_and_names_the_first_five(tmp_path, tiny_models,
                                                                                   monkeypatch):
    clip = make_clip(tmp_path / "m.mp4", count=7, audio=False)
    render = video.VideoJob.render

    def only_the_last(self, item):
        if item.key != "shot0000.006":
            raise OSError("disk hiccup")
        return render(self, item)

    monkeypatch.setattr(video.VideoJob, "render", only_the_last)
    result = _video([str(clip.path), "--scale", "1", "--chunk-frames", "1"], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 1
    finish = _items(tmp_path / "jobs")[1][-1]
    assert (finish.key, finish.status) == ("finish", "failed")
    assert finish.error == ("JobError: 6 of 7 chunks are not rendered (shot0000.000, shot0000.001, shot0000.002, "
                            "shot0000.003, shot0000.004); rerun with --retry-failed")
    assert not (tmp_path / "m_restored.mp4").exists()


def test_a_video_of_which_no_frame_decodes_fails_its_analysis_with_ffmpegs_first_words(tmp_path, tiny_models,
                                                                                       monkeypatch):
    from archive_restore.media.video import PyAVBackend

    clip = make_clip(tmp_path / "n.mp4", count=3, audio=False)
    said: list[str] = []

    def nothing_decodes(self, path, info, *args, tally=None, **kwargs):
        tally.messages.extend(said)
        return iter(())

    monkeypatch.setattr(PyAVBackend, "frames", nothing_decodes)
    with JobStore.open(tmp_path / "jobs") as store:
        for words, reason in (([], ""), (["a", "b", "c", "d"], " (FFmpeg said: a; b; c)")):
            said[:] = words
            options = VideoJobOptions(face_detector="haar", face_restorer="none", models_dirs=(tiny_models,))
            job = open_video_job(store, clip.path, tmp_path / "out.mp4", options, progress=False)
            assert job.run(restart=True).failed == 1
            (analysis,) = store.items(job.job.id)
            assert analysis.error == f"InputError: {clip.path}: no frame decodes{reason}"


def test_segments_recorded_without_their_origin_join_at_origin_zero(tmp_path, tiny_models, monkeypatch):
    """A job rendered before segment origins were recorded (its segments hold absolute pts) still joins."""
    clip = make_clip(tmp_path / "o.mp4", count=6, pts=[40 * i for i in range(6)], audio=False)
    render = video.VideoJob.render

    def as_older_versions_recorded_it(self, item):
        result = render(self, item)
        if item.key == "shot0000.000":  # starts at pts 0: its segment's pts are the input's
            del result.extra["segment_origin"]
        return result

    monkeypatch.setattr(video.VideoJob, "render", as_older_versions_recorded_it)
    result = _video([str(clip.path), "--scale", "1", "--chunk-frames", "3"], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    assert "segment_origin" not in _items(tmp_path / "jobs")[1][1].extra
    assert decoded(tmp_path / "o_restored.mp4")[0] == decoded(clip.path)[0]


def test_a_plain_run_neither_restarts_nor_retries_and_another_loop_can_do_the_work(tmp_path, tiny_models,
                                                                                  monkeypatch, capsys):
    from archive_restore.jobs.runner import process_one

    clip = make_clip(tmp_path / "p.mp4", count=4, audio=False)
    render, failures = video.VideoJob.render, []

    def fails_first(self, item):
        if not failures:
            failures.append(item.key)
            raise OSError("disk hiccup")
        return render(self, item)

    monkeypatch.setattr(video.VideoJob, "render", fails_first)
    options = VideoJobOptions(scale=1, preset="ultrafast", face_detector="haar", face_restorer="none",
                              chunk_frames=2, models_dirs=(tiny_models,))
    with JobStore.open(tmp_path / "jobs") as store:
        job = open_video_job(store, clip.path, tmp_path / "p_out.mp4", options, progress=False)
        first = job.run()
        assert (first.done, first.failed) == (2, 2)  # a chunk, and the finish that needs it
        again = job.run()
        assert (again.done, again.failed) == (2, 2)
        assert [i.attempts for i in store.items(job.job.id)] == [1, 1, 1, 1]  # nothing redone, nothing retried

        claimed = []

        def work(claimed_job, advance):  # another executor's loop: the runner's own steps, recorded
            while (item := store.claim_next(claimed_job.id)) is not None:
                claimed.append(item.key)
                process_one(store, item, job.process, claimed_job)
                advance()

        done = job.run(retry_failed=True, work=work)
        assert claimed == ["shot0000.000", "finish"] and (done.done, done.failed) == (4, 0)
    assert capsys.readouterr().err == ""  # progress=False: no bar at all
    assert len(decoded(tmp_path / "p_out.mp4")[0]) == 4


def test_an_input_changed_since_its_analysis_is_refused_with_the_way_out(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", count=2, audio=False)
    with JobStore.open(tmp_path / "jobs") as store:
        job = open_video_job(store, clip.path, tmp_path / "out.mp4", VideoJobOptions(), progress=False)
        job.prepare(job.job)
        (analysis,) = store.items(job.job.id)
        stat = clip.path.stat()
        store.update_item(analysis.id, extra={"input": [stat.st_size, stat.st_mtime_ns]})
        job.check_unchanged()  # as analysed
        store.update_item(analysis.id, extra={"input": [stat.st_size + 1, stat.st_mtime_ns]})
        with pytest.raises(InputError) as raised:
            job.check_unchanged()
    assert str(raised.value) == (f"{clip.path} changed or vanished since its analysis; run again with --restart "
                                 "to start over")


def test_a_decoder_that_hangs_in_a_render_fails_that_chunk_naming_the_file(tmp_path, tiny_models, monkeypatch):
    from archive_restore.media.video import PyAVBackend

    clip = make_clip(tmp_path / "h.mp4", count=4, audio=False)
    real, release = PyAVBackend.frames, threading.Event()

    def hangs(self, path, info, start_pts, *args, **kwargs):
        release.wait(30)
        yield from real(self, path, info, start_pts, *args, **kwargs)

    def hangs_in_renders(self, path, info, start_pts=None, *args, **kwargs):
        if start_pts is None:  # the analysis reads the whole file
            return real(self, path, info, start_pts, *args, **kwargs)
        return hangs(self, path, info, start_pts, *args, **kwargs)

    monkeypatch.setattr(PyAVBackend, "frames", hangs_in_renders)
    monkeypatch.setattr(video, "DECODE_STALL_S", 1.0)
    options = VideoJobOptions(scale=1, preset="ultrafast", face_detector="haar", face_restorer="none",
                              models_dirs=(tiny_models,))
    try:
        with JobStore.open(tmp_path / "jobs") as store:
            job = open_video_job(store, clip.path, tmp_path / "out.mp4", options, progress=False)
            assert job.run().failed == 2  # the chunk, then the finish that needs it
            chunk = store.items(job.job.id)[1]
    finally:
        release.set()
    assert chunk.error == (f"InputError: {clip.path}: no frame decoded for 1 s; the file is probably damaged "
                           "(decoding stopped)")


# ------------------------------------------------------------------------ status and damage
def _item(key: str, status: str = "done", error: str | None = None, **extra) -> Item:
    return Item(1, "job", key, None, None, status, 1, error, None, None, None, None, None, None, None, extra)


def test_status_lines_name_each_shot_chunk_with_its_frames_code_and_speed():
    items = [_item("analysis", frames=12, shots=2, tracks=1, fps=30.5, frames_lost=3),
             _item("shot0000.000", start_frame=0, frames=8, shot=0, tracks=1, code_source="faces",
                   code_detail="paired codes of 3 crops of 1 tracks", confidence=0.5111, render_fps=42.0),
             _item("shot0001.000", "failed", "OSError: disk", start_frame=8, frames=4, shot=1, tracks=0,
                   code_source="neighbour", code_detail="from shot 0", confidence=0.2556),
             _item("finish", "failed", "JobError: 1 of 2 chunks are not rendered")]
    assert video_lines(items) == [
        "  done     analysis 12 frames, 2 shots, 1 face tracks, 30.5 frames/s, 3 frames lost to damage",
        ("  done     shot0000.000 shot 0 frames 0-7 faces=1 code=faces (paired codes of 3 crops of 1 tracks, "
         "confidence 0.5111) 42.0 frames/s"),
        ("  failed   shot0001.000 shot 1 frames 8-11 faces=0 code=neighbour (from shot 0, confidence 0.2556)"
         "  OSError: disk"),
        "  failed   finish  JobError: 1 of 2 chunks are not rendered"]
    assert video_lines([_item("analysis", "pending"), _item("finish", "pending")]) == ["  pending  analysis",
                                                                                      "  pending  finish"]
    assert video_lines([_item("analysis", frames=5, shots=1, tracks=0, fps=9.0, frames_lost=0)]) == [
        "  done     analysis 5 frames, 1 shots, 0 face tracks, 9.0 frames/s"]


def test_the_damage_note_counts_the_lost_frames_and_quotes_ffmpeg_twice_at_most():
    said = ["Invalid NAL unit size", "Error splitting the input", "concealing errors"]
    items = [_item("analysis", frames=9, frames_lost=3, ffmpeg_said=said), _item("finish")]
    assert damage_note(items) == ("3 frame(s) could not be decoded (the file is damaged); the 9 that decoded are "
                                  "kept with their timestamps (FFmpeg said: Invalid NAL unit size; Error splitting "
                                  "the input)")
    assert damage_note([_item("analysis", frames=9, frames_lost=1, ffmpeg_said=[])]) == (
        "1 frame(s) could not be decoded (the file is damaged); the 9 that decoded are kept with their timestamps")
    assert damage_note([_item("analysis", frames=9, frames_lost=0)]) is None
    assert damage_note([_item("analysis", frames=9)]) is None  # an analysis recorded before damage was counted
    assert damage_note([_item("finish", frames_lost=2)]) is None


# ------------------------------------------------------------------------ options and opening
def test_the_options_identity_holds_what_changes_the_result_and_rebuilds_the_options():
    defaults = VideoJobOptions()
    assert defaults.identity() == {"scale": 4, "codec": "libx264", "crf": 18, "preset": "medium", "backend": "pyav",
                                   "face_detector": "auto", "detect_every": 5, "chunk_frames": 120,
                                   "temporal": "steady"}
    chosen = VideoJobOptions(scale=2, codec="libx265", crf=20, preset="fast", backend="decord",
                             face_detector="haar", detect_every=3, chunk_frames=60, tile=128, device="cpu", batch=2,
                             face_restorer="none", face_fidelity=0.5, upscaler="/m/x.pth", upscaler_sha256="ab12",
                             fidelity=0.3, deinterlace="ivtc", temporal="off")
    assert chosen.identity() == {"scale": 2, "codec": "libx265", "crf": 20, "preset": "fast", "backend": "decord",
                                 "face_detector": "haar", "detect_every": 3, "chunk_frames": 60, "tile": 128,
                                 "face_restorer": "none", "face_fidelity": 0.5, "upscaler": "/m/x.pth",
                                 "upscaler_sha256": "ab12", "fidelity": 0.3, "faces_without_restorer": "faithful",
                                 "deinterlace": "ivtc"}
    # a resumed job's options: the stored identity (through JSON, as the store keeps it) and this run's device
    stored = json.loads(json.dumps(chosen.identity()))
    assert VideoJobOptions.from_identity(stored, device="cpu", batch=2) == chosen
    assert VideoJobOptions.from_identity(defaults.identity()) == defaults
    assert chosen.encode == EncodeSettings(codec="libx265", crf=20, preset="fast")


def test_folders_are_searched_for_videos_and_outputs_named(tmp_path):
    folder = tmp_path / "films"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.mp4", "A.MKV", "c.Mov", "notes.txt", ".hidden.mp4", "b_restored.mp4", "sub/d.webm", "sub/e.avi"):
        (folder / name).write_bytes(b"x")
    (folder / "dir.mp4").mkdir()
    single = tmp_path / "one.mp4"
    assert find_videos([folder, single]) == [folder / "A.MKV", folder / "b.mp4", folder / "c.Mov",
                                             folder / "sub" / "d.webm", folder / "sub" / "e.avi", single]
    out = tmp_path / "out"
    assert output_for(single, None, False) == tmp_path / "one_restored.mp4"
    assert output_for(single, out / "x.mp4", False) == out / "x.mp4"
    assert output_for(single, out, True) == out / "one.mp4"
    out.mkdir()
    assert output_for(single, out, False) == out / "one.mp4"


def test_the_job_container_follows_the_output_name():
    from archive_restore.media.video import container_format

    names = ["a.mkv", "a.MKV", "a.webm", "a.WebM", "a.mov", "a.MOV", "a.m4v", "a.M4V", "a.mp4", "a.MP4", "a.avi"]
    assert [container_format(Path(n)) for n in names] == ["matroska", "matroska", "webm", "webm", "mov", "mov",
                                                         "mp4", "mp4", "mp4", "mp4", None]


def test_opening_a_job_checks_its_paths_and_finds_it_again(tmp_path, monkeypatch):
    clip = tmp_path / "in.mp4"
    clip.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    options = VideoJobOptions(scale=2)
    with JobStore.open(tmp_path / "jobs") as store:
        with pytest.raises(InputError, match=re.escape(f"{tmp_path / 'gone.mp4'}: no such file")):
            open_video_job(store, Path("gone.mp4"), tmp_path / "o.mp4", options)
        with pytest.raises(UsageError, match=re.escape(f"the output {clip} is the input itself; choose another -o")):
            open_video_job(store, Path("in.mp4"), clip, options)
        with pytest.raises(UsageError, match=re.escape(f"the output {tmp_path} is a folder; give a file name")):
            open_video_job(store, clip, Path("."), options)
        assert store.jobs() == []
        opened = open_video_job(store, Path("in.mp4"), Path("o.mp4"), options, progress=False)
        job = opened.job
        assert (job.kind, job.input, job.output, job.options) == ("video", str(clip), str(tmp_path / "o.mp4"),
                                                                  options.identity())
        assert opened.store is store and opened.options == options and opened.progress is False
        assert open_video_job(store, clip, tmp_path / "o.mp4", options).progress is True
        assert open_video_job(store, clip, tmp_path / "o.mp4", options).job.id == job.id
        assert len(store.jobs()) == 1


# ------------------------------------------------------------------------ threads that keep damage from hanging
def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "decode"]


def test_decoding_runs_ahead_on_its_own_thread_at_most_size_frames_and_stops_with_the_reader():
    pulled = []

    def frames():
        for i in range(100):
            pulled.append(i)
            yield i

    before = set(_decode_threads())
    reader = video._prefetch(frames(), 4, "clip.mp4")
    assert [next(reader), next(reader)] == [0, 1]
    time.sleep(0.3)
    ours = [t for t in _decode_threads() if t not in before]
    assert len(ours) == 1 and ours[0].daemon
    assert len(pulled) <= 2 + 4 + 1  # the two read, a full queue, one waiting to go in
    reader.close()
    assert not ours[0].is_alive()  # closing the reader ends its decoder


def test_a_decoder_error_reaches_the_reader_after_the_frames_before_it():
    def frames():
        yield "a"
        yield "b"
        raise ValueError("bad packet")

    reader = video._prefetch(frames(), 4, "clip.mp4")
    assert [next(reader), next(reader)] == ["a", "b"]
    with pytest.raises(ValueError, match="bad packet"):
        next(reader)


def test_a_stalled_decoder_fails_at_once_naming_the_file(monkeypatch):
    release = threading.Event()

    def frames():
        yield "a"
        release.wait(30)

    monkeypatch.setattr(video, "DECODE_STALL_S", 0.2)
    started = time.monotonic()
    reader = video._prefetch(frames(), 4, "clip.mp4")
    assert next(reader) == "a"
    with pytest.raises(InputError) as raised:
        next(reader)
    assert str(raised.value) == "clip.mp4: no frame decoded for 0 s; the file is probably damaged (decoding stopped)"
    assert time.monotonic() - started < 3  # the stuck thread is left behind, not waited for
    release.set()


def test_a_stalled_decoder_is_stopped_and_closed_once_it_comes_back(monkeypatch):
    """After the item failed, the decoder that was stuck decodes nothing more: when its call returns,
    its thread closes it (its file with it) and ends."""
    release, closed, decoded = threading.Event(), threading.Event(), []

    def frames():
        try:
            for name in ("a", "b", "c", "d"):
                if name == "b":
                    release.wait(30)
                decoded.append(name)
                yield name
        finally:
            closed.set()

    monkeypatch.setattr(video, "DECODE_STALL_S", 0.2)
    decoder = frames()  # held here: only the thread's own close, not garbage collection, can close it
    before = set(threading.enumerate())
    reader = video._prefetch(decoder, 1, "clip.mp4")
    assert next(reader) == "a"
    (thread,) = [t for t in threading.enumerate() if t.name == "decode" and t not in before]
    with pytest.raises(InputError, match="no frame decoded"):
        next(reader)
    release.set()
    assert closed.wait(5), "the decoder was not closed after it came back"
    thread.join(5)
    assert not thread.is_alive() and decoded == ["a", "b"]  # it ended, decoding nothing after the stop


def test_a_probe_is_answered_or_fails_with_the_reason_and_its_own_error():
    path = Path("clip.mp4")
    assert video._within(5, lambda p: p.name, path) == "clip.mp4"

    def refuses(p):
        raise InputError(f"{p}: not a readable video")

    with pytest.raises(InputError, match="clip.mp4: not a readable video"):
        video._within(5, refuses, path)
    release = threading.Event()
    with pytest.raises(InputError) as raised:
        video._within(0.2, lambda p: release.wait(30), path)
    assert str(raised.value) == "clip.mp4: no answer from the decoder in 0 s; the file is probably damaged"
    stuck = [t for t in threading.enumerate() if t.name == "probe" and t.is_alive()]
    assert stuck and all(t.daemon for t in stuck)  # left behind, it does not keep the program from exiting
    release.set()


def test_each_render_chunk_hands_its_freed_buffers_back_before_the_next(tmp_path, tiny_models, monkeypatch):
    """A chunk's encoder (x264's lookahead) and decoder buffers are freed when it ends; the heap is then
    trimmed, once per chunk, after its segment is written, so the next chunk does not add its own on top."""
    clip = make_clip(tmp_path / "m.mp4", count=5, audio=False)
    trimmed: list[list[str]] = []
    monkeypatch.setattr(video, "release_freed_heap", lambda: trimmed.append(
        sorted(p.name for p in (tmp_path / "jobs").rglob("shot*.mp4"))))
    result = _video([str(clip.path), "--scale", "1", "--chunk-frames", "2"], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    chunks = ["shot0000.000.mp4", "shot0000.001.mp4", "shot0000.002.mp4"]  # 2 + 2 + 1 frames
    assert trimmed == [chunks[:1], chunks[:2], chunks]


def test_restored_frames_wait_for_the_encoder_in_a_short_queue(tmp_path, tiny_models, monkeypatch):
    """Each restored frame is a whole output frame (8.1 MB at 1920x1408): at most ENCODE_QUEUE_FRAMES (4)
    wait for the encoder, while up to QUEUE_FRAMES small decoded ones wait for the network."""
    sizes = []
    real = video._Background

    class Recorded(real):
        def __init__(self, fn, size, name):
            sizes.append((name, size))
            super().__init__(fn, size, name)

    monkeypatch.setattr(video, "_Background", Recorded)
    clip = make_clip(tmp_path / "m.mp4", count=3, audio=False)
    result = _video([str(clip.path), "--scale", "1"], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    assert sizes == [("encode", 4)] and video.ENCODE_QUEUE_FRAMES == 4 < video.QUEUE_FRAMES


def test_the_heap_is_trimmed_every_so_many_rendered_frames_and_after_each_chunk(tmp_path, tiny_models, monkeypatch):
    """Within a chunk the freed heap is handed back every HEAP_TRIM_FRAMES frames (16), besides once at
    its end: freed buffers reused in another order would otherwise leave ever more of it resident."""
    clip = make_clip(tmp_path / "m.mp4", count=5, audio=False)
    restored, trims = [0], []
    to_uint8 = video.to_uint8

    def counted(picture):
        restored[0] += 1
        return to_uint8(picture)

    monkeypatch.setattr(video, "to_uint8", counted)
    monkeypatch.setattr(video, "release_freed_heap", lambda: trims.append(restored[0]))
    monkeypatch.setattr(video, "HEAP_TRIM_FRAMES", 2)
    result = _video([str(clip.path), "--scale", "1", "--batch", "1"], tiny_models, tmp_path / "jobs")
    assert result.exit_code == 0, result.output
    assert trims == [2, 4, 5]  # frames restored at each trim: every 2, then the chunk's end
