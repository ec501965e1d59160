"""The runner: atomic outputs, failures recorded, Ctrl-C, the lock, and real SIGKILL crashes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from archive_restore.errors import InputError
from archive_restore.runner import (ItemResult, Summary, atomic_output, remove_stale_temps,
                                    run_job, temp_path)
from archive_restore.store import ItemSpec, JobStore

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEAD_PID = 2**31 - 2  # above any pid_max, so never a live process


@pytest.fixture
def store(tmp_path: Path):
    with JobStore.open(tmp_path / "jobs") as opened:
        yield opened


def _job(store: JobStore, tmp_path: Path, keys: list[str]):
    job = store.get_or_create_job("photos", tmp_path / "in", tmp_path / "out", {})
    store.add_items(job.id, [ItemSpec(key) for key in keys])
    return job


def _writer(out: Path):
    def process(item) -> ItemResult:
        if item.key.startswith("bad"):
            raise InputError(f"{item.key}: not an image\n(truncated)")
        with atomic_output(out / f"{item.key}.txt") as tmp:
            tmp.write_text(f"restored {item.key}\n")
        return ItemResult(output=out / f"{item.key}.txt", code=[0.25], code_source="blind", faces=0)
    return process


# -- atomic_output ----------------------------------------------------------------------------

def test_atomic_output_keeps_the_extension_and_hides_the_temp_name(tmp_path):
    final = tmp_path / "sub" / "photo.jpg"
    with atomic_output(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".") and tmp.suffix == ".jpg"
        assert str(os.getpid()) in tmp.name
        tmp.write_bytes(b"partial")
        assert not final.exists()  # never exposed before the block ends
        tmp.write_bytes(b"complete")
    assert final.read_bytes() == b"complete"
    assert list(final.parent.iterdir()) == [final]


def test_atomic_output_removes_temp_and_keeps_old_file_on_exception(tmp_path):
    final = tmp_path / "video.mp4"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("encoder died")
    assert final.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [final]


def test_atomic_output_without_a_written_file_fails(tmp_path):
    with pytest.raises(Exception, match="nothing was written"):
        with atomic_output(tmp_path / "a.png"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temps_removes_only_dead_processes_files(tmp_path):
    (tmp_path / "sub").mkdir()
    stale = tmp_path / "sub" / f".a.{DEAD_PID}.tmp.jpg"
    live = tmp_path / f".b.{os.getpid()}.tmp.jpg"
    unrelated = [tmp_path / "c.tmp.jpg", tmp_path / ".hidden.jpg", tmp_path / "d.jpg"]
    for path in [stale, live, *unrelated]:
        path.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and all(p.exists() for p in unrelated)
    assert temp_path(tmp_path / "x.png").name == f".x.{os.getpid()}.tmp.png"


# -- run_job ----------------------------------------------------------------------------------

def test_run_job_goes_on_after_a_failing_item(store, tmp_path):
    out = tmp_path / "out"
    job = _job(store, tmp_path, ["a", "bad1", "b"])
    summary = run_job(store, job, _writer(out), progress=False)
    assert summary == Summary(done=2, failed=1, skipped=0, pending=0, seconds=summary.seconds)
    items = {i.key: i for i in store.items(job.id)}
    assert items["bad1"].error == "InputError: bad1: not an image (truncated)"
    assert items["a"].output == str(out / "a.txt") and items["a"].code == [0.25]
    assert (out / "b.txt").read_text() == "restored b\n"
    assert store.job(job.id).status == "failed"


def test_run_job_resumes_and_retries_failed(store, tmp_path):
    job = _job(store, tmp_path, ["a", "bad1"])
    run_job(store, job, _writer(tmp_path / "out"), progress=False)
    calls = []

    def record(item):
        calls.append(item.key)
        return ItemResult(skipped="nothing to do")

    assert run_job(store, job, record, progress=False).failed == 1 and calls == []
    summary = run_job(store, job, record, progress=False, retry_failed=True)
    assert calls == ["bad1"] and (summary.done, summary.failed, summary.skipped) == (1, 0, 1)
    assert store.job(job.id).status == "done"
    summary = run_job(store, job, record, progress=False, restart=True)
    assert calls == ["bad1", "a", "bad1"] and summary.skipped == 2


def test_missing_output_marks_the_item_failed(store, tmp_path):
    job = _job(store, tmp_path, ["a"])
    missing = ItemResult(output=tmp_path / "nope.png")
    summary = run_job(store, job, lambda item: missing, progress=False)
    assert summary.failed == 1
    assert "missing after processing" in store.items(job.id)[0].error


def test_keyboard_interrupt_puts_the_item_back(store, tmp_path):
    job = _job(store, tmp_path, ["a", "b"])

    def interrupt(item):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(store, job, interrupt, progress=False)
    first = store.items(job.id)[0]
    assert (first.status, first.attempts) == ("pending", 1)
    assert store.locked_by(job.id) is None
    assert run_job(store, job, _writer(tmp_path / "out"), progress=False).done == 2


def test_run_job_progress_bar_does_not_break_the_run(store, tmp_path, capsys):
    job = _job(store, tmp_path, ["a", "b"])
    assert run_job(store, job, _writer(tmp_path / "out"), progress=True).done == 2
    assert job.id in capsys.readouterr().err


# -- real processes ---------------------------------------------------------------------------

WORKER = """
import os, sys, time
from pathlib import Path
from archive_restore.runner import ItemResult, atomic_output, run_job
from archive_restore.store import ItemSpec, JobStore

jobs_dir, src, out, log, delay = sys.argv[1:6]
store = JobStore.open(jobs_dir)
job = store.get_or_create_job("photos", src, out, {"test": True})
store.add_items(job.id, [ItemSpec(f"{n:02d}") for n in range(20)])
mark_done = store.mark_done

def logged_done(item_id, **kw):
    item = mark_done(item_id, **kw)
    with open(log, "a") as f:
        f.write(item.key + "\\n")
        f.flush()
        os.fsync(f.fileno())
    return item

store.mark_done = logged_done

def process(item):
    content = f"item {item.key}\\n" * 200
    with atomic_output(Path(out) / f"{item.key}.txt") as tmp:
        with open(tmp, "w") as f:
            f.write(content[:1000]); f.flush()
            print("writing", item.key, flush=True)
            time.sleep(float(delay))
            f.write(content[1000:])
    return ItemResult(output=Path(out) / f"{item.key}.txt")

print("start", os.getpid(), flush=True)
print("summary", run_job(store, job, process, progress=False), flush=True)
"""


def _start_worker(tmp_path: Path, delay: float = 0.03) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    args = [tmp_path / "jobs", tmp_path / "in", tmp_path / "out", tmp_path / "done.log", delay]
    return subprocess.Popen([sys.executable, str(script), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done_log(tmp_path: Path) -> list[str]:
    log = tmp_path / "done.log"
    return log.read_text().split() if log.exists() else []


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "worker made no progress"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def test_second_runner_is_refused_while_the_first_works(tmp_path):
    first = _start_worker(tmp_path, delay=2.0)
    try:
        assert first.stdout.readline().startswith("start")
        assert first.stdout.readline().startswith("writing")  # it holds the lock now
        second = _start_worker(tmp_path)
        _, err = second.communicate(timeout=60)
        assert second.returncode != 0
        assert "JobLockedError" in err and f"process {first.pid}" in err
    finally:
        first.kill()
        first.wait()
        first.stdout.close()
        first.stderr.close()


def test_runner_survives_sigkill_at_any_moment(tmp_path):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    # kill just after an item is done, in the middle of writing an output, and at a random moment
    proc = _start_worker(tmp_path)
    _kill_when(proc, lambda: len(_done_log(tmp_path)) >= 2)
    # each write is held open for 0.5 s, so the kill lands mid-write even on a loaded machine
    proc = _start_worker(tmp_path, delay=0.5)
    _kill_when(proc, lambda: proc.stdout.readline().startswith("writing 08"))
    assert list(out.glob(".08.*.tmp.txt")), "the kill should have left a half-written temp file"
    assert not (out / "08.txt").exists()
    proc = _start_worker(tmp_path)
    _kill_when(proc, lambda: proc.stdout.readline().startswith("start") and not time.sleep(0.1))
    assert len(_done_log(tmp_path)) < 20
    for _ in range(5):
        proc = _start_worker(tmp_path)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        if "pending=0" in stdout:
            break
    assert "done=20" in stdout and "failed=0" in stdout
    counts = Counter(_done_log(tmp_path))
    assert sorted(counts) == [f"{n:02d}" for n in range(20)]
    assert max(counts.values()) == 1, "an item reached done twice"
    for n in range(20):
        assert (out / f"{n:02d}.txt").read_text() == f"item {n:02d}\n" * 200
    assert sorted(p.name for p in out.iterdir()) == [f"{n:02d}.txt" for n in range(20)]
    with JobStore.open(tmp_path / "jobs") as store:
        (job,) = store.jobs()
        assert job.status == "done"
        assert {i.status for i in store.items(job.id)} == {"done"}
        assert store.locked_by(job.id) is None
