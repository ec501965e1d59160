"""Crash safety of the photo job, for real: ``archive-restore run`` in a subprocess is SIGKILLed at
several moments (in the analysis pass; in the render while a photo's kept faces are pasted, while
an output is half-written under its temporary name, on folder- and job-code photos) and run again
until done. The result must equal an uninterrupted run's, byte for byte, with no temporary file
left and every item done; and no work finished before a kill is done again: every call of the
restoration networks and of the face restorer is logged with its photo and its process, and no
process after a kill renders a photo that was done, or analyses one that was analysed, before it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from archive_restore.cli import cli
from archive_restore.media.image import read_image
from archive_restore.jobs.store import DONE, JobStore

START_TIMEOUT_S = 180  # the first output waits for torch's import, slow on a loaded machine
TESTS = Path(__file__).resolve().parent

# The real CLI with the stand-in face restorer (conftest.random_face_net, as the `random_restorer`
# fixture gives the uninterrupted run), every call of the networks logged as "pid what photo", and
# the analysis of each photo and each written output held for a moment, so that kills land there.
_LOGGED_CLI = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv.pop(1))
import torch
from conftest import random_face_net
from archive_restore.faces.restore import FaceRestorer
from archive_restore.pipeline import engine, photo
from archive_restore.cli import main

log, current = sys.argv.pop(1), [None]

def record(what):
    with open(log, "a") as sink:
        sink.write(f"{os.getpid()} {what} {current[0]}\\n")

def logged(function, what, pause=0.0):
    def call(*args, **kwargs):
        record(what)
        result = function(*args, **kwargs)
        time.sleep(pause)
        return result
    return call

read_image = photo.read_image
def reading(path, *args, **kwargs):
    current[0] = Path(path).name
    return read_image(path, *args, **kwargs)

photo.read_image = reading
engine.Engine.face_codes = logged(engine.Engine.face_codes, "analyse", pause=0.1)
engine.Engine.restore = logged(engine.Engine.restore, "render")
FaceRestorer.restore = logged(FaceRestorer.restore, "faces")
photo.write_image = logged(photo.write_image, "write", pause=0.12)
engine.load_face_restorer = lambda path, device: FaceRestorer(random_face_net(), Path(path), torch.device(device))
sys.argv[0] = "archive-restore"
main()
"""

# a_faces/: four photos with a face (their own codes, their faces kept by the analysis for the render)
# and two without (the folder's code); b_plain/: six without a face in a folder without one (the job's code).
FACES, FOLDER_PLAIN, JOB_PLAIN = 4, 2, 6
PHOTOS = FACES + FOLDER_PLAIN + JOB_PLAIN


def _photos(inp: Path, face_rgb: np.ndarray) -> dict[str, str]:
    """The input collection; returns each photo's expected code source."""
    rng = np.random.default_rng(7)
    (inp / "a_faces").mkdir(parents=True)
    (inp / "b_plain").mkdir()
    sources = {}
    for index in range(FACES):
        print_ = face_rgb[:, ::-1] if index % 2 else face_rgb  # mirrored or not, faded more and more
        faded = print_ * np.float32(1 - 0.07 * index) + np.float32(6 * index)
        Image.fromarray(faded.astype(np.uint8)).save(inp / "a_faces" / f"face{index}.png")
        sources[f"a_faces/face{index}.png"] = "faces"
    for folder, count, source in (("a_faces", FOLDER_PLAIN, "folder"), ("b_plain", JOB_PLAIN, "job")):
        for index in range(count):
            small = rng.random((5, 6, 3))  # smooth: no face detector fires on it
            pixels = np.clip(np.kron(small, np.ones((4, 5, 1))) * 255, 0, 255).astype(np.uint8)
            name = f"{folder}/{source}{index}.{'png' if index % 2 else 'jpg'}"  # file names unique in the log
            Image.fromarray(pixels).save(inp / name, quality=92)
            sources[name] = source
    return sources


def _outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))


def _temps(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob(".*") if p.is_file())


def _calls(log: Path) -> list[tuple[int, str, str]]:
    """(pid, what, photo file name) of every logged call, in order."""
    if not log.is_file():
        return []
    return [(int(pid), what, name) for pid, what, name in (line.split() for line in log.read_text().splitlines())]


def _state(jobs: Path, out: Path) -> tuple[set[str], set[str]]:
    """(photos rendered, photos analysed) according to the store of the job writing to ``out``, by file name."""
    with JobStore.open(jobs) as store:
        (job,) = [j for j in store.jobs() if Path(j.output) == out]
        items = store.items(job.id)
    return ({Path(i.key).name for i in items if i.status == DONE},
            {Path(i.key).name for i in items if i.faces is not None})


def _run_and_kill(args: list[str], cwd: Path, env: dict, log: Path, until) -> int:
    """Start the logged CLI in a subprocess, SIGKILL it as soon as ``until()`` holds; its pid."""
    with open(cwd / "killed.out", "ab") as sink:
        proc = subprocess.Popen([sys.executable, "-c", _LOGGED_CLI, str(TESTS), str(log), *args], cwd=cwd, env=env,
                                stdout=sink, stderr=sink)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not until():
                assert proc.poll() is None, f"the job ended (exit {proc.returncode}) before the kill"
                assert time.monotonic() < deadline, "the job made no progress in time"
                time.sleep(0.005)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def test_sigkill_at_any_moment_then_rerun_gives_the_uninterrupted_result(tmp_path, conditioned_models, random_restorer,
                                                                         face_rgb):
    inp, out, ref, jobs = tmp_path / "in", tmp_path / "out", tmp_path / "ref", tmp_path / "jobs"
    sources = _photos(inp, face_rgb)
    options = ["--scale", "2", "--face-detector", "haar", "--models-dir", str(conditioned_models),
               "--models-dir", str(random_restorer), "--jobs-dir", str(jobs)]

    reference = CliRunner().invoke(cli, ["run", str(inp), "-o", str(ref), *options])
    assert reference.exit_code == 0, reference.output
    expected = {p.relative_to(ref): p.read_bytes() for p in _outputs(ref)}
    assert len(expected) == PHOTOS
    ref_status = json.loads(CliRunner().invoke(cli, ["status", reference.stdout.split()[1].rstrip(":"), "--json",
                                                     "--jobs-dir", str(jobs)]).stdout)
    assert {i["key"]: i["code_source"] for i in ref_status["items"]} == sources  # every path is crossed
    assert all(i["extra"]["faces_from"] == "analysis" for i in ref_status["items"] if i["code_source"] == "faces")

    log = tmp_path / "calls.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # HOME and the models path as the fixtures set them
    args = ["run", str(inp), "-o", str(out), *options]

    def analysed() -> int:
        return sum(what == "analyse" for _, what, _ in _calls(log))

    moments = [
        ("analysis", lambda: analysed() >= 3),
        ("kept faces", lambda: len(_outputs(out)) >= 2),  # a_faces/face*: the faces the analysis kept
        ("mid-write", lambda: len(_outputs(out)) >= 5 and bool(_temps(out))),  # a temporary file exists
        ("job code", lambda: len(_outputs(out)) >= 9),  # b_plain/: the job's code, read back from the store
    ]
    seen_temp, killed = False, []
    for name, until in moments:
        pid = _run_and_kill(args, tmp_path, env, log, until)
        seen_temp |= bool(_temps(out))
        # Whatever is under a final name is complete and already the final result.
        for path in _outputs(out):
            assert path.read_bytes() == expected[path.relative_to(out)], (name, path)
            read_image(path)
        killed.append((pid, *_state(jobs, out)))
    assert seen_temp, "no kill landed while a temporary file existed"
    rendered_at_first_kill, analysed_at_first_kill = killed[0][1:]
    assert not rendered_at_first_kill and 0 < len(analysed_at_first_kill) < PHOTOS, "the first kill missed the analysis"
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
    assert {i["key"]: i["code_source"] for i in status["items"]} == sources

    # Nothing finished before a kill was done again by a later process (the final run is in-process
    # and unlogged: it only finds the photos left, which the store says are not done).
    calls = _calls(log)
    order = [pid for pid, _, _ in killed]
    for index, (pid, rendered, analysed_before) in enumerate(killed):
        later = [(what, photo) for p, what, photo in calls if p in order[index + 1:]]
        assert not [c for c in later if c[0] in ("render", "write") and c[1] in rendered], (pid, later)
        assert not [c for c in later if c[0] == "analyse" and c[1] in analysed_before], (pid, later)
    # Only what a kill interrupted is done twice: one analysis (the first kill's), one render per
    # later kill; every photo was analysed by the killed processes, each face photo's faces restored
    # there, and restored again only where a kill lost the kept faces.
    names = {Path(k).name: s for k, s in sources.items()}
    per_photo = Counter((what, photo) for _, what, photo in calls)
    analyses = [per_photo[("analyse", n)] for n in names]
    assert min(analyses) == 1 and sum(analyses) <= PHOTOS + 1, per_photo
    renders = [per_photo[("render", n)] for n in names]
    assert max(renders) <= 2 and sum(r - 1 for r in renders if r) <= len(moments) - 1, per_photo
    faces = {n: per_photo[("faces", n)] for n in names}
    assert all(faces[n] >= 1 for n, s in names.items() if s == "faces"), faces
    assert all(faces[n] == 0 for n, s in names.items() if s != "faces"), faces
    assert sum(faces.values()) <= FACES + len(moments), faces
    # Killed items were redone, not lost: some photo needed more than one attempt.
    assert max(item["attempts"] for item in status["items"]) >= 2
