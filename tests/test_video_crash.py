"""Crash safety of the video job, for real: ``archive-restore video`` in a subprocess is SIGKILLed
while a segment is half-written (twice, at different points of the render), then run again. The
output must decode to the same frames, with the same pts, as an uninterrupted run's; segments done
before a kill are not rendered again (the job store proves it); no temporary file is left behind
and nothing appears at the output path before the job finishes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from video_clips import decoded, make_clip

from archive_restore.cli import cli
from archive_restore.jobs.store import JobStore

START_TIMEOUT_S = 180  # the first segment waits for torch's import, slow on a loaded machine
ARGS = ["--scale", "2", "--chunk-frames", "4", "--preset", "ultrafast", "--face-detector", "haar"]

# The real CLI, with each frame's encoding slowed down so that kills land inside a segment.
_SLOW_CLI = """
import sys, time
from archive_restore.pipeline import video
from archive_restore.cli import main

class SlowWriter(video.SegmentWriter):
    def write(self, rgb, pts):
        super().write(rgb, pts)
        time.sleep(0.08)

video.SegmentWriter = SlowWriter
sys.argv[0] = "archive-restore"
main()
"""


def _segments(jobs: Path) -> list[Path]:
    return sorted(p for p in jobs.glob("*/shot*.mp4") if not p.name.startswith("."))


def _temps(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob(".*tmp*") if p.is_file())


def _run_and_kill(args: list[str], cwd: Path, until) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_CLI, *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not until():
            assert proc.poll() is None, "the job ended before it could be killed"
            assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


def _done_chunks(jobs: Path) -> dict[str, tuple[int, str]]:
    with JobStore.open(jobs) as store:
        (job,) = store.jobs()
        return {i.key: (i.attempts, i.finished) for i in store.items(job.id)
                if i.status == "done" and i.key.startswith("shot")}


def test_sigkill_during_render_then_rerun_gives_the_same_video(tmp_path, tiny_models):
    clip = make_clip(tmp_path / "reel.mp4", count=24, shots=(10,))
    common = [*ARGS, "--models-dir", str(tiny_models)]
    reference = tmp_path / "reference.mp4"
    ok = CliRunner().invoke(cli, ["video", str(clip.path), "-o", str(reference), *common,
                                  "--jobs-dir", str(tmp_path / "ref_jobs")])
    assert ok.exit_code == 0, ok.output

    jobs, out = tmp_path / "jobs", tmp_path / "out" / "reel.mp4"
    args = ["video", str(clip.path), "-o", str(out), *common, "--jobs-dir", str(jobs)]
    snapshots = []
    for segments_before in (1, 4):  # kill mid-segment: early, then late in the render
        _run_and_kill(args, tmp_path, lambda: len(_segments(jobs)) >= segments_before and _temps(jobs))
        assert not out.exists()
        snapshots.append(_done_chunks(jobs))
    assert 1 <= len(snapshots[0]) < len(snapshots[1]) < 7

    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    final = _done_chunks(jobs)
    assert len(final) == 7  # shot 0: 10 frames -> 3 chunks; shot 1: 14 frames -> 4 chunks
    for key, (attempts, finished) in snapshots[1].items():
        assert final[key] == (attempts, finished)  # done before the kill: not rendered again
    assert sum(a for a, _ in final.values()) == 7 + 2  # the two chunks killed mid-way were redone once
    assert _temps(jobs, out.parent) == []

    ref_pts, ref_tb, ref_frames = decoded(reference)
    got_pts, got_tb, got_frames = decoded(out)
    assert (got_pts, got_tb) == (ref_pts, ref_tb) and len(got_frames) == 24
    assert all(np.array_equal(a, b) for a, b in zip(got_frames, ref_frames))
