"""``pipeline.estimate``: how long a job will take, said once, with the faster choices when it is hours
of work on a CPU; and the jobs and previews saying it."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner
from video_clips import make_clip

from archive_restore.cli import cli
from archive_restore.pipeline.estimate import LONG_S, SAY_AFTER_S, Estimate, duration, estimate_line


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (0.2, 40, 89.4, 90, 600, 5340, 5400, 9600, 86400 * 2)] == [
        "about 1 s", "about 40 s", "about 89 s", "about 2 min", "about 10 min", "about 89 min", "about 1 h 30 min",
        "about 2 h 40 min", "about 48 h 00 min"]


def test_the_estimate_is_the_rate_times_what_is_left():
    # 2 frames in 446 s (the x4plus preview on a 2-core EPYC), 46 left: 2 h 51 min, and long
    line = estimate_line("frame", 2, 446.0, 46, "cpu", "RealESRGAN_x4plus")
    assert line.startswith("estimate: about 2 h 51 min for the 46 frames left, at 223.00 s a frame")
    assert "that is long. Faster: --upscaler restore-compact-x4" in line and "--upscaler condsr" in line
    assert "--scale 2 --scale-method reduced" in line
    compact = estimate_line("frame", 2, 446.0, 46, "cpu", "restore_compact_x4")
    assert "Faster: --scale 2" in compact and "--upscaler restore-compact-x4" not in compact  # already the light one
    assert "--scale 2" not in estimate_line("frame", 2, 446.0, 46, "cpu", "restore_compact_x4", scale=2)
    assert "a GPU (--device cuda)" in line and "--executor ray" in line
    short = estimate_line("photo", 4, 10.0, 100, "cpu", "RealESRGAN_x4plus")
    assert short == "estimate: about 4 min for the 100 photos left, at 2.50 s a photo as measured here on the cpu"
    assert "long" not in estimate_line("frame", 1, LONG_S / 10, 10, "cpu", None)  # exactly 2 h: not over
    over = estimate_line("frame", 1, LONG_S / 10, 11, "cpu", None)
    assert "Faster: a GPU" in over and "--upscaler" not in over  # CondSR alone: no lighter upscaler to name
    assert "long" not in estimate_line("frame", 1, 1000.0, 100, "cuda", "x")  # a GPU: no advice about GPUs
    assert estimate_line("frame", 4, 6.0, 48, "cpu", None, whole=True).startswith(
        "estimate: about 72 s for the whole job (48 frames)")


def test_the_estimate_is_said_once_when_enough_is_done():
    said = []
    estimate = Estimate(said.append, "frame", after=8)
    assert not estimate.update(4, 2.0, 100, "cpu", None)  # 4 frames in 2 s: mostly start-up, wait
    assert estimate.update(4, SAY_AFTER_S, 100, "cpu", None)  # ... or long enough
    assert not Estimate(said.append, "frame").update(8, 1.0, 0, "cpu", None)  # nothing left: nothing to say
    assert Estimate(said.append, "frame").update(8, 1.0, 1, "cpu", None)
    estimate.update(50, 100.0, 50, "cpu", None)  # said already: not again
    assert len(said) == 2 and said[0].startswith("estimate: about 8 min for the 100 frames left")


def _notes(output: str) -> list[str]:
    return [line for line in output.splitlines() if "estimate:" in line]


def test_a_video_job_says_its_estimate_once_and_a_preview_for_the_whole_video(tmp_path, tiny_models):
    clip = make_clip(tmp_path / "c.mp4", count=20)
    args = ["video", str(clip.path), "--scale", "1", "--batch", "4", "--models-dir", str(tiny_models),
            "--jobs-dir", str(tmp_path / "jobs"), "--face-detector", "haar"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (line,) = _notes(result.output)
    # counted from the end of the first batch (its warm-up): after 8 more frames, 8 are left
    assert "for the 8 frames left, at" in line and "s a frame as measured here on the cpu" in line
    preview = CliRunner().invoke(cli, [*args, "--preview", "3"])
    assert preview.exit_code == 0, preview.output
    assert any(note.startswith("estimate: ") and "for the whole job (20 frames)" in note for note in _notes(preview.output))


def test_a_photo_job_says_its_estimate_after_the_first_photo(tmp_path, tiny_models):
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        cv2.imwrite(str(scans / f"{name}.png"), (rng.random((24, 32, 3)) * 255).astype(np.uint8))
    args = ["run", str(scans), "--scale", "1", "--models-dir", str(tiny_models), "--jobs-dir", str(tmp_path / "jobs"),
            "--face-detector", "haar"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (line,) = _notes(result.output)
    assert "for the 2 photos left" in line
    again = CliRunner().invoke(cli, args)  # nothing left to do: nothing to estimate
    assert again.exit_code == 0 and _notes(again.output) == []
    preview = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "p"), "--preview", "1"])
    assert preview.exit_code == 0, preview.output
    assert any("for the whole job (3 photos)" in note for note in _notes(preview.output))
    assert Path(tmp_path / "p").exists() is False  # a preview writes nothing at the output
