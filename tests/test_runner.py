"""The runner: atomic outputs, failures recorded, Ctrl-C, the lock, and real SIGKILL crashes."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from archive_restore.errors import DiskFullError, InputError
from archive_restore.jobs.runner import (ItemResult, Summary, atomic_output, remove_stale_temps,
                                    run_job, temp_path)
from archive_restore.jobs.store import ItemSpec, JobStore

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


def test_run_job_progress_bar_counts_items_done_and_failed(store, tmp_path, capsys):
    job = _job(store, tmp_path, ["a", "bad1", "b"])
    assert run_job(store, job, _writer(tmp_path / "out")).done == 2  # a bar unless asked not to
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"photos {job.id}" in last and "3/3" in last and "done=2, failed=1" in last, last


def test_each_result_is_recorded_as_returned(store, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"x")
    job = _job(store, tmp_path, ["a", "b", "c"])
    results = {"a": ItemResult(output=out / "a.png", code=[0.5, 1.5], code_source="faces", faces=2,
                               extra={"seconds": 1.25}),
               "b": ItemResult(skipped="not an image extension"),
               "c": {"output": "not an ItemResult"}}
    summary = run_job(store, job, lambda item: results[item.key], progress=False)
    assert (summary.done, summary.skipped, summary.failed) == (1, 1, 1)
    a, b, c = store.items(job.id)
    assert (a.output, a.code, a.code_source, a.faces, a.extra["seconds"]) == (str(out / "a.png"), [0.5, 1.5],
                                                                                "faces", 2, 1.25)
    assert (b.status, b.error) == ("skipped", "not an image extension")
    assert c.error == "JobError: process_item returned dict, not an ItemResult"


def test_run_job_gives_prepare_and_work_the_job_and_times_the_run(store, tmp_path, monkeypatch, capsys):
    import archive_restore.jobs.runner as runner

    job = _job(store, tmp_path, ["a", "b"])
    seen, clock = [], iter([100.0, 102.34567])
    monkeypatch.setattr(runner, "time", SimpleNamespace(
        monotonic=lambda: next(clock), perf_counter=time.perf_counter))  # the runner's run clock only

    def work(running, advance):  # another executor: it records each item itself and advances the bar
        seen.append(running.id)
        while (item := store.claim_next(running.id)) is not None:
            runner.process_one(store, item, _writer(tmp_path / "out"), running)
            advance()

    summary = run_job(store, job, _writer(tmp_path / "out"), progress=True, prepare=lambda j: seen.append(j.id),
                      work=work)
    assert seen == [job.id, job.id]
    assert summary == Summary(done=2, failed=0, skipped=0, pending=0, seconds=2.346)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "2/2" in last and "done=2, failed=0" in last, last  # the executor's advance() moved the bar


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_stops_the_job_and_puts_the_item_back(store, tmp_path, code):
    out = tmp_path / "out"
    job = _job(store, tmp_path, ["a", "b", "c"])

    def process(item):
        if item.key == "b":  # the error behind the one raised: the disk filled up while the photo was written
            raise InputError("b: could not be written") from OSError(code, os.strerror(code), str(out / "sub" / "b.png"))
        return _writer(out)(item)

    with pytest.raises(DiskFullError) as stopped:
        run_job(store, job, process, progress=False)
    assert str(stopped.value) == (f"no space left on {out / 'sub'} ({os.strerror(code)}); nothing half-written "
                                  "was kept: free some space there, then run the same command again to carry on")
    assert [(i.key, i.status) for i in store.items(job.id)] == [("a", "done"), ("b", "pending"), ("c", "pending")]
    assert store.locked_by(job.id) is None


def test_a_full_disk_without_a_file_name_names_the_output_folder(store, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for output, folder in ((out, out), (out / "film.mp4", out)):  # a folder, or the folder of an output file
        job = store.get_or_create_job("photos", tmp_path / "in", output, {"output": str(output)})
        store.add_items(job.id, [ItemSpec("a")])

        def process(item):
            try:
                raise ValueError("while encoding")
            except ValueError:  # raised while handling another error: found through __context__
                raise OSError(errno.ENOSPC, "No space left on device")

        with pytest.raises(DiskFullError, match=f"^no space left on {folder} "):
            run_job(store, job, process, progress=False)
    other = store.get_or_create_job("photos", tmp_path / "in", out, {"other": True})
    store.add_items(other.id, [ItemSpec("a")])

    def refused(item):
        raise OSError(errno.EACCES, "Permission denied", str(out / "a.png"))

    assert run_job(store, other, refused, progress=False).failed == 1  # any other OSError: that item fails


def test_errors_that_refer_to_each_other_in_a_loop_are_not_a_full_disk():
    from archive_restore.jobs.runner import disk_full

    first, second = ValueError("a"), OSError(errno.EACCES, "Permission denied")
    first.__context__, second.__context__ = second, first
    assert disk_full(first) is None


def test_a_temp_file_someone_else_removes_first_or_of_another_users_live_process(tmp_path, monkeypatch):
    import archive_restore.jobs.runner as runner

    stale = tmp_path / f".a.{DEAD_PID}.tmp.jpg"
    stale.write_bytes(b"x")
    monkeypatch.setattr(runner, "_pid_alive", lambda pid: stale.unlink() or False)  # another cleaner got there first
    assert remove_stale_temps(tmp_path) == [stale]
    monkeypatch.undo()
    stale.write_bytes(b"x")

    def not_ours(pid, sig):
        raise PermissionError  # a live process of another user: it may not be signalled, but it runs

    monkeypatch.setattr(runner.os, "kill", not_ours)
    assert remove_stale_temps(tmp_path) == [] and stale.exists()


def test_stale_temps_beside_an_output_file_are_removed_there_only(store, tmp_path):
    """A job writing one file cleans the dead temporary files beside it, not in the folders below."""
    out = tmp_path / "films"
    (out / "other").mkdir(parents=True)
    beside, below = out / f".film.{DEAD_PID}.tmp.mp4", out / "other" / f".x.{DEAD_PID}.tmp.mp4"
    for path in (beside, below):
        path.write_bytes(b"x")
    job = store.get_or_create_job("video", tmp_path / "film.mp4", out / "film.mp4", {})
    store.add_items(job.id, [ItemSpec("a")])
    run_job(store, job, lambda item: ItemResult(skipped="test"), progress=False)
    assert not beside.exists() and below.exists()


# -- real processes ---------------------------------------------------------------------------

WORKER = """
import os, sys, time
from pathlib import Path
from archive_restore.jobs.runner import ItemResult, atomic_output, run_job
from archive_restore.jobs.store import ItemSpec, JobStore

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


def test_the_progress_bar_ends_with_the_jobs_true_counts(tmp_path, capsys):
    """The bar reads the counts at most once a second, and once more at the end: its last line has them."""
    with JobStore.open(tmp_path / "jobs") as store:
        job = store.get_or_create_job("photos", tmp_path / "in", tmp_path / "out", {})
        store.add_items(job.id, [ItemSpec(f"p{i}") for i in range(5)])

        def process(item):
            if item.key == "p4":
                raise ValueError("bad")
            return ItemResult()

        run_job(store, job, process, progress=True)
    assert "done=4, failed=1" in capsys.readouterr().err.splitlines()[-1].split("\r")[-1]
