"""Crash safety of the photo job, for real: ``archive-restore run`` in a subprocess is SIGKILLed at
several moments (after the first output, while an output is half-written under its temporary name,
late in the job) and run again until done. The result must equal an uninterrupted run's, byte for
byte, with no temporary file left and every item done."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from archive_restore.cli import cli
from archive_restore.media.image import read_image

PHOTOS = 20
START_TIMEOUT_S = 180  # the first output waits for torch's import, slow on a loaded machine

# The real CLI, with each output held under its temporary name for a moment after it is written,
# so that kills land mid-item, and one while a temporary file exists, deterministically.
_SLOW_CLI = """
import sys, time
from archive_restore.pipeline import photo
from archive_restore.cli import main

write_image = photo.write_image

def slow_write_image(*args, **kwargs):
    write_image(*args, **kwargs)
    time.sleep(0.12)

photo.write_image = slow_write_image
sys.argv[0] = "archive-restore"
main()
"""


def _outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))


def _temps(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob(".*") if p.is_file())


def _run_and_kill(args: list[str], cwd: Path, log: Path, until) -> None:
    """Start the CLI in a subprocess and SIGKILL it as soon as ``until()`` holds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as sink:
        proc = subprocess.Popen([sys.executable, "-c", _SLOW_CLI, *args], cwd=cwd, env=env,
                                stdout=sink, stderr=sink)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not until():
                assert proc.poll() is None, f"the job ended (exit {proc.returncode}) before the kill:\n{log.read_text()}"
                assert time.monotonic() < deadline, "the job made no progress in time"
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_at_any_moment_then_rerun_gives_the_uninterrupted_result(tmp_path, tiny_models):
    inp, out, ref, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "ref", tmp_path / "jobs"
    rng = np.random.default_rng(7)
    for index in range(PHOTOS):
        folder = inp / f"roll{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (rng.random((20 + index % 4, 28, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"frame{index:02d}.{'png' if index % 2 else 'jpg'}", quality=92)
    options = ["--scale", "2", "--face-detector", "haar", "--models-dir", str(tiny_models), "--jobs-dir", str(jobs)]

    reference = CliRunner().invoke(cli, ["run", str(inp), "-o", str(ref), *options])
    assert reference.exit_code == 0, reference.output
    expected = {p.relative_to(ref): p.read_bytes() for p in _outputs(ref)}
    assert len(expected) == PHOTOS

    args, log = ["run", str(inp), "-o", str(out), *options], tmp_path / "killed.log"
    moments = [
        lambda: len(_outputs(out)) >= 1,
        lambda: len(_outputs(out)) >= 5 and bool(_temps(out)),  # mid-write: a temporary file exists
        lambda: len(_outputs(out)) >= 12,
    ]
    seen_temp = False
    for until in moments:
        _run_and_kill(args, tmp_path, log, until)
        seen_temp |= bool(_temps(out))
        # Whatever is under a final name is complete and already the final result.
        for path in _outputs(out):
            assert path.read_bytes() == expected[path.relative_to(out)], path
            read_image(path)
    assert seen_temp, "no kill landed while a temporary file existed"
    assert len(_outputs(out)) < PHOTOS

    finished = CliRunner().invoke(cli, args)
    assert finished.exit_code == 0, finished.output

    assert {p.relative_to(out): p.read_bytes() for p in _outputs(out)} == expected
    assert _temps(out) == [] and _temps(jobs) == []
    job_id = finished.stdout.split()[1].rstrip(":")
    status = json.loads(CliRunner().invoke(cli, ["status", job_id, "--json", "--jobs-dir", str(jobs)]).stdout)
    assert status["job"]["status"] == "done" and status["locked_by"] is None
    assert status["summary"] == {"pending": 0, "running": 0, "done": PHOTOS, "failed": 0, "skipped": 0}
    for item in status["items"]:
        assert item["error"] is None and Path(item["output"]) == out / item["key"]
    # Killed items were redone, not lost: some photo needed more than one attempt.
    assert max(item["attempts"] for item in status["items"]) >= 2
