"""The job store: identity and resume, the item life cycle, crash recovery, the job lock."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from archive_restore.errors import JobError, JobLockedError
from archive_restore.store import (JOBS_DIR_ENV, ItemSpec, JobStore, job_identity,
                                   resolve_jobs_dir)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path):
    with JobStore.open(tmp_path / "jobs") as opened:
        yield opened


@pytest.fixture
def job(store: JobStore, tmp_path: Path):
    return store.get_or_create_job("photos", tmp_path / "in", tmp_path / "out", {"scale": 2})


def _add(store: JobStore, job_id: str, *keys: str) -> int:
    return store.add_items(job_id, [ItemSpec(key, size=10, mtime=1.5) for key in keys])


def test_resolve_jobs_dir_argument_then_environment_then_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(JOBS_DIR_ENV, raising=False)
    assert resolve_jobs_dir() == tmp_path / "jobs"
    monkeypatch.setenv(JOBS_DIR_ENV, str(tmp_path / "env"))
    assert resolve_jobs_dir() == tmp_path / "env"
    assert resolve_jobs_dir(tmp_path / "arg") == tmp_path / "arg"


def test_open_creates_database_in_wal_mode(store: JobStore):
    assert store.path.name == "archive-restore.db" and store.path.exists()
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_same_command_finds_same_job(store, tmp_path, monkeypatch):
    options = {"a": 1, "b": [1, 2]}
    first = store.get_or_create_job("photos", tmp_path / "in", tmp_path / "out", options)
    monkeypatch.chdir(tmp_path)
    again = store.get_or_create_job("photos", "in", "out", {"b": [1, 2], "a": 1})
    assert again == first
    assert len(first.id) == 12 and first.status == "pending" and first.options == options
    assert store.jobs() == [first]


def test_different_options_kind_or_paths_give_different_jobs(store, tmp_path):
    base = ("photos", tmp_path / "in", tmp_path / "out", {"a": 1})
    ids = {job_identity(*base),
           job_identity("photos", tmp_path / "in", tmp_path / "out", {"a": 2}),
           job_identity("video", tmp_path / "in", tmp_path / "out", {"a": 1}),
           job_identity("photos", tmp_path / "in", tmp_path / "other", {"a": 1})}
    assert len(ids) == 4
    store.get_or_create_job(*base)
    store.get_or_create_job("photos", tmp_path / "in", tmp_path / "out", {"a": 2})
    assert len(store.jobs()) == 2


def test_unknown_kind_is_refused(store, tmp_path):
    with pytest.raises(JobError, match="unknown job kind 'audio'"):
        store.get_or_create_job("audio", tmp_path, tmp_path / "o", {})


def test_job_lookup_by_unique_prefix(store, job):
    assert store.job(job.id[:4]) == job
    assert store.job(job.id.upper()) == job
    with pytest.raises(JobError, match="no job"):
        store.job("zz-not-hex")
    missing = "0" if not job.id.startswith("0") else "1"
    with pytest.raises(JobError, match="no job"):
        store.job(missing)


def test_add_items_is_idempotent_and_keeps_existing_rows(store, job):
    assert _add(store, job.id, "a.jpg", "b.jpg") == 2
    claimed = store.claim_next(job.id)
    assert _add(store, job.id, "b.jpg", "a.jpg", "c.jpg") == 1
    items = store.items(job.id)
    assert [i.key for i in items] == ["a.jpg", "b.jpg", "c.jpg"]
    assert store.item(claimed.id).status == "running"
    assert items[2].size == 10 and items[2].mtime == 1.5 and items[2].extra == {}


def test_extra_is_stored_per_item(store, job):
    store.add_items(job.id, [ItemSpec("shot-0001", extra={"frames": [0, 120]})])
    assert store.items(job.id)[0].extra == {"frames": [0, 120]}


def test_claim_follows_insertion_order_and_counts_attempts(store, job):
    _add(store, job.id, "z.jpg", "a.jpg")
    first, second = store.claim_next(job.id), store.claim_next(job.id)
    assert (first.key, second.key) == ("z.jpg", "a.jpg")
    assert first.status == "running" and first.attempts == 1 and first.started
    assert store.claim_next(job.id) is None


def test_mark_done_records_results(store, job):
    _add(store, job.id, "a.jpg")
    item = store.claim_next(job.id)
    store.update_item(item.id, code=[0.5, 1.0], code_source="faces", faces=2, extra={"w": 3})
    done = store.mark_done(item.id, output="out/a.png", extra={"h": 4})
    assert done.status == "done" and done.output == "out/a.png" and done.error is None
    assert done.code == [0.5, 1.0] and done.code_source == "faces" and done.faces == 2
    assert done.extra == {"w": 3, "h": 4} and done.seconds is not None and done.finished
    assert store.job(job.id).status == "done"


def test_invalid_updates_are_refused(store, job):
    _add(store, job.id, "a.jpg")
    item = store.claim_next(job.id)
    with pytest.raises(JobError, match="cannot update item field"):
        store.update_item(item.id, status="done")
    with pytest.raises(JobError, match="unknown code source"):
        store.update_item(item.id, code_source="guess")
    store.mark_done(item.id)
    with pytest.raises(JobError, match="is done, not running"):
        store.mark_done(item.id)


def test_failed_error_is_one_line_and_job_status_follows_items(store, job):
    _add(store, job.id, "a.jpg", "b.jpg", "c.jpg")
    a, b, c = (store.claim_next(job.id) for _ in range(3))
    store.mark_done(a.id)
    assert store.job(job.id).status == "pending"
    store.mark_failed(b.id, "InputError: cannot read\n  b.jpg:   truncated")
    store.mark_skipped(c.id, "already restored")
    assert store.item(b.id).error == "InputError: cannot read b.jpg: truncated"
    assert store.job(job.id).status == "failed" and store.job(job.id).finished
    counts = {"pending": 0, "running": 0, "done": 1, "failed": 1, "skipped": 1}
    assert store.summary(job.id) == counts
    assert [i.key for i in store.items(job.id, status="failed")] == ["b.jpg"]


def test_retry_failed_only_retries_failed_items(store, job):
    _add(store, job.id, "a.jpg", "b.jpg", "c.jpg", "d.jpg")
    a, b, c = (store.claim_next(job.id) for _ in range(3))
    store.mark_done(a.id)
    store.mark_failed(b.id, "boom")
    store.mark_skipped(c.id, "nothing to do")
    assert store.retry_failed(job.id) == 1
    statuses = {i.key: (i.status, i.attempts) for i in store.items(job.id)}
    assert statuses == {"a.jpg": ("done", 1), "b.jpg": ("pending", 1),
                        "c.jpg": ("skipped", 1), "d.jpg": ("pending", 0)}
    assert store.job(job.id).status == "pending"


def test_reset_starts_the_job_over(store, job):
    store.add_items(job.id, [ItemSpec("a.jpg", extra={"k": 1}), ItemSpec("b.jpg")])
    a = store.claim_next(job.id)
    store.mark_done(a.id, output="x", code=[1.0], code_source="blind")
    assert store.reset(job.id) == 2
    for item in store.items(job.id):
        assert (item.status, item.attempts, item.output, item.code) == ("pending", 0, None, None)
    assert store.items(job.id)[0].extra == {"k": 1}


def test_running_rows_come_back_as_pending_when_opened_for_work(tmp_path, job):
    with JobStore.open(tmp_path / "jobs") as first:
        _add(first, job.id, "a.jpg", "b.jpg")
        crashed = first.claim_next(job.id)
    with JobStore.open(tmp_path / "jobs") as reopened:
        assert reopened.item(crashed.id).status == "running"  # read-only opening changes nothing
        with reopened.open_for_work(job.id):
            item = reopened.item(crashed.id)
            assert (item.status, item.attempts) == ("pending", 1)
            assert reopened.claim_next(job.id).id == crashed.id


def _claim_all(jobs_dir: str, job_id: str) -> list[str]:
    with JobStore.open(jobs_dir) as store:
        keys = []
        while (item := store.claim_next(job_id)) is not None:
            store.mark_done(item.id)
            keys.append(item.key)
        return keys


def test_concurrent_writers_claim_each_item_once(tmp_path, store, job):
    keys = [f"{n:03d}.jpg" for n in range(30)]
    _add(store, job.id, *keys)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_claim_all, [(str(store.jobs_dir), job.id)] * 2)
    claimed = results[0] + results[1]
    assert sorted(claimed) == keys
    assert store.summary(job.id)["done"] == 30 and store.job(job.id).status == "done"


HOLDER = """
import sys, time
from archive_restore.store import JobStore
store = JobStore.open(sys.argv[1])
with store.open_for_work(sys.argv[2]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _spawn_holder(tmp_path: Path, jobs_dir: Path, job_id: str) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(jobs_dir), job_id],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read()
    return proc


def test_second_process_is_refused_until_holder_is_killed(tmp_path, store, job):
    _add(store, job.id, "a.jpg")
    holder = _spawn_holder(tmp_path, store.jobs_dir, job.id)
    try:
        with pytest.raises(JobLockedError) as refused:
            with store.open_for_work(job.id):
                pass
        assert job.id in str(refused.value) and str(holder.pid) in str(refused.value)
        # read-only queries keep working while the job is locked
        assert store.locked_by(job.id) == holder.pid
        assert store.summary(job.id)["pending"] == 1 and store.jobs()[0].id == job.id
        assert store.items(job.id)[0].status == "pending"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    assert store.locked_by(job.id) is None
    with store.open_for_work(job.id) as opened:
        assert opened.id == job.id and store.locked_by(job.id) == os.getpid()
    assert store.locked_by(job.id) is None


def test_lock_is_exclusive_within_one_process_too(store, job):
    with store.lock(job.id):
        with pytest.raises(JobLockedError, match=f"job {job.id} is already being worked on"):
            store.lock(job.id).acquire(attempts=1)
