"""Interlaced and telecined input (``media.fields``): found from the stream's flag and idet, made progressive
with exact timing, the same frames whatever the chunks, and progressive input left as it was."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from field_clips import NTSC, combing, interlaced, progressive, telecined
from video_clips import decoded

from archive_restore.cli import cli
from archive_restore.errors import UsageError
from archive_restore.jobs.store import JobStore
from archive_restore.media.fields import FieldCounts, FieldPlan, plan_fields
from archive_restore.media.video import DecordBackend, PyAVBackend, field_counts, probe

FAST = ["--preset", "ultrafast", "--face-detector", "haar", "--scale", "1"]


def _plan(path: Path, requested: str = "auto") -> tuple[FieldPlan, object]:
    info = probe(path)
    return plan_fields(requested, info.field_order, field_counts(path, info)), info


def _frames(path: Path, plan: FieldPlan | None = None, start=None, end=None):
    info = probe(path)
    return list(PyAVBackend().frames(path, info, start, end, fields=plan))


def _mean_combing(frames) -> float:
    return float(np.mean([combing(f.rgb) for f in frames]))


@pytest.mark.parametrize("tff", [True, False], ids=["tff", "bff"])
@pytest.mark.parametrize("flagged", [True, False], ids=["flagged", "unflagged"])
def test_interlaced_clips_are_found_and_deinterlaced_one_frame_per_field(tmp_path, tff, flagged):
    path = interlaced(tmp_path / "i.mp4", count=30, tff=tff, flagged=flagged)
    plan, info = _plan(path)
    assert (plan.mode, plan.parity) == ("field", "tff" if tff else "bff"), plan
    assert info.field_order == (("tff" if tff else "bff") if flagged else "progressive")
    raw, out = _frames(path), _frames(path, plan)
    assert len(out) == 2 * len(raw) == 60
    assert _mean_combing(raw) >= 5 * _mean_combing(out), (_mean_combing(raw), _mean_combing(out))
    # each field at its own time: frame i's fields at i/25 and i/25 + 1/50 seconds
    assert [f.pts * f.time_base for f in out] == [Fraction(k, 50) for k in range(60)]


def test_frame_mode_keeps_the_input_timing(tmp_path):
    path = interlaced(tmp_path / "i.mp4", count=12)
    plan, info = _plan(path, "frame")
    raw, out = _frames(path), _frames(path, plan)
    assert [f.pts * f.time_base for f in out] == [f.pts * f.time_base for f in raw]
    assert _mean_combing(raw) >= 5 * _mean_combing(out)


@pytest.mark.parametrize("flagged", [False, True], ids=["unflagged", "flagged"])
def test_telecined_film_comes_back_as_its_film_frames(tmp_path, flagged):
    path, film = telecined(tmp_path / "t.mp4", film_frames=20, flagged=flagged)
    plan, info = _plan(path)
    assert plan.mode == "ivtc" and plan.found.startswith("telecined"), plan
    assert info.average_rate == NTSC
    raw, out = _frames(path), _frames(path, plan)
    assert len(raw) == 25 and len(out) == 20
    assert plan.view(info).average_rate == Fraction(24000, 1001)
    assert [f.pts * f.time_base for f in out] == [k * Fraction(1001, 24000) for k in range(20)]
    for k, frame in enumerate(out):  # the right film frame in each place (the pattern repeats every 16)
        distances = [np.abs(frame.rgb.astype(int) - f.astype(int)).mean() for f in film]
        assert int(np.argmin(distances)) % 16 == k % 16
    assert _mean_combing(raw) >= 5 * _mean_combing(out)


def test_a_flag_that_lies_is_caught_and_a_progressive_clip_is_left_alone(tmp_path):
    liar = progressive(tmp_path / "liar.mp4", flagged_as="tff")
    plan, info = _plan(liar)
    assert info.field_order == "tff"
    assert plan.mode == "off" and "flagged tff" in plan.found, plan
    plain, _ = _plan(progressive(tmp_path / "p.mp4"))
    assert plain.mode == "off" and plain.found == "progressive"


def test_a_clip_too_short_to_detect_says_which_default_it_used(tmp_path):
    flagged, _ = _plan(interlaced(tmp_path / "f.mp4", count=8))
    assert flagged.mode == "field" and "too few frames" in flagged.reason and "flag (tff)" in flagged.reason
    unflagged, _ = _plan(interlaced(tmp_path / "u.mp4", count=8, flagged=False))
    assert unflagged.mode == "off" and "too few frames" in unflagged.reason


def test_the_rules_on_counts():
    counts = FieldCounts(frames=100, tff=10, bff=70, progressive=20)
    assert plan_fields("auto", None, counts) == FieldPlan("field", "bff", "interlaced bff", plan_fields(
        "auto", None, counts).reason)
    assert plan_fields("auto", None, FieldCounts(frames=100, tff=30, progressive=70)).mode == "off"
    assert plan_fields("auto", "progressive", FieldCounts(100, 60, 0, 40, 0, 40)).mode == "ivtc"
    forced = plan_fields("frame", "bff", FieldCounts(frames=100, progressive=100))
    assert (forced.mode, forced.parity) == ("frame", "bff") and forced.found.startswith("progressive (flagged bff")


@pytest.mark.parametrize("kind", ["field", "ivtc"])
def test_a_range_gives_the_same_frames_as_the_whole_pass(tmp_path, kind):
    """What makes chunks and resumes exact: a frame depends on its neighbours, not on where decoding began
    (every frame a keyframe here, so decoding really starts near each range)."""
    if kind == "field":
        path = interlaced(tmp_path / "i.mp4", count=30, intra=True)
    else:
        path = telecined(tmp_path / "t.mp4", film_frames=40, intra=True)[0]
    plan, _ = _plan(path)
    whole = {f.pts: f.rgb for f in _frames(path, plan)}
    stamps = sorted(whole)
    for first, last in ((5, 13), (7, 9), (13, 14), (17, len(stamps))):
        end = stamps[last] if last < len(stamps) else None
        part = _frames(path, plan, stamps[first], end)
        assert [f.pts for f in part] == stamps[first:last]
        assert all(np.array_equal(f.rgb, whole[f.pts]) for f in part)


def test_decord_refuses_to_deinterlace(tmp_path):
    path = interlaced(tmp_path / "i.mp4", count=8)
    plan, info = _plan(path)
    backend = DecordBackend.__new__(DecordBackend)  # the refusal comes before decord is needed
    with pytest.raises(UsageError, match="--backend pyav"):
        list(backend.frames(path, info, fields=plan))


def _video(args: list[str], models: Path, jobs: Path):
    return CliRunner().invoke(cli, ["video", *args, *FAST, "--models-dir", str(models), "--jobs-dir", str(jobs)])


def _restored_inputs(monkeypatch) -> dict[int, np.ndarray]:
    """The frames the video job hands the network, by pts."""
    from archive_restore.pipeline import video

    given: dict[int, np.ndarray] = {}
    restore = video.VideoJob.restore

    def recording(self, batch, code, cleanup=None):
        given.update((f.pts, f.rgb.copy()) for f in batch)
        return restore(self, batch, code, cleanup)

    monkeypatch.setattr(video.VideoJob, "restore", recording)
    return given


def test_an_interlaced_video_job_restores_fields_with_their_timing_whatever_the_chunks(tmp_path, tiny_models,
                                                                                        monkeypatch):
    path = interlaced(tmp_path / "i.mp4", count=24)
    given = _restored_inputs(monkeypatch)
    result = _video([str(path), "-o", str(tmp_path / "a.mp4"), "--chunk-frames", "48"], tiny_models, tmp_path / "j")
    assert result.exit_code == 0, result.output
    assert "deinterlaced one frame per field" in result.output
    pts, time_base, frames = decoded(tmp_path / "a.mp4")
    assert [p * time_base for p in pts] == [Fraction(k, 50) for k in range(48)]
    assert _mean_combing([type("F", (), {"rgb": g}) for g in given.values()]) < 1.0
    whole = dict(given)
    given.clear()
    result = _video([str(path), "-o", str(tmp_path / "b.mp4"), "--chunk-frames", "7"], tiny_models, tmp_path / "j")
    assert result.exit_code == 0, result.output
    assert sorted(given) == sorted(whole) and all(np.array_equal(given[p], whole[p]) for p in whole)
    with JobStore.open(tmp_path / "j") as store:
        job = next(j for j in store.jobs() if j.output.endswith("b.mp4"))
        analysis = next(i for i in store.items(job.id) if i.key == "analysis")
    assert analysis.extra["fields"]["mode"] == "field" and analysis.extra["frames"] == 48
    status = CliRunner().invoke(cli, ["status", job.id, "--jobs-dir", str(tmp_path / "j")])
    assert "interlaced tff: deinterlaced one frame per field" in status.output, status.output
    page = CliRunner().invoke(cli, ["report", job.id, "-o", str(tmp_path / "page"), "--quiet",
                                    "--jobs-dir", str(tmp_path / "j")])
    assert page.exit_code == 0, page.output
    assert "interlaced tff: deinterlaced one frame per field" in (tmp_path / "page" / "index.html").read_text()


def test_a_telecined_video_job_gives_the_film_frames_at_film_rate(tmp_path, tiny_models):
    path, _ = telecined(tmp_path / "t.mp4", film_frames=20)
    result = _video([str(path), "-o", str(tmp_path / "out.mp4"), "--chunk-frames", "6"], tiny_models, tmp_path / "j")
    assert result.exit_code == 0, result.output
    pts, time_base, frames = decoded(tmp_path / "out.mp4")
    assert len(frames) == 20
    assert [p * time_base for p in pts] == [k * Fraction(1001, 24000) for k in range(20)]


def test_progressive_input_gives_the_bytes_of_deinterlace_off(tmp_path, tiny_models):
    path = progressive(tmp_path / "p.mp4", count=10)
    for name, extra in (("auto.mp4", []), ("off.mp4", ["--deinterlace", "off"])):
        result = _video([str(path), "-o", str(tmp_path / name), *extra], tiny_models, tmp_path / "j")
        assert result.exit_code == 0, result.output
        assert "deinterlaced" not in result.output
    assert (tmp_path / "auto.mp4").read_bytes() == (tmp_path / "off.mp4").read_bytes()
