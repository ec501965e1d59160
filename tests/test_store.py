"""The job store: identity and resume, the item life cycle, crash recovery, the job lock."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from archive_restore.errors import JobError, JobLockedError
from archive_restore.jobs.store import (JOBS_DIR_ENV, ItemSpec, JobStore, job_identity,
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
    with pytest.raises(JobError) as refused:
        store.update_item(item.id, status="done", attempts=0)
    assert str(refused.value) == ("cannot update item field(s) attempts, status; "
                                  "allowed: code, code_source, extra, faces, output, seconds")
    with pytest.raises(JobError, match="unknown code source"):
        store.update_item(item.id, code_source="guess")
    store.mark_done(item.id)
    with pytest.raises(JobError, match="is done, not running"):
        store.mark_done(item.id)
    for missing in (store.item, store.mark_done, lambda i: store.update_item(i, faces=1)):
        with pytest.raises(JobError) as unknown:
            missing(item.id + 99)
        assert str(unknown.value) == f"no item {item.id + 99} in {store.path}"


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
    d = store.claim_next(job.id)
    store.mark_done(d.id)
    assert (store.job(job.id).status, bool(store.job(job.id).finished)) == ("failed", True)
    assert store.retry_failed(job.id) == 1
    statuses = {i.key: (i.status, i.attempts) for i in store.items(job.id)}
    assert statuses == {"a.jpg": ("done", 1), "b.jpg": ("pending", 1),
                        "c.jpg": ("skipped", 1), "d.jpg": ("done", 1)}
    assert (store.job(job.id).status, store.job(job.id).finished) == ("pending", None)  # back to work


def test_reset_starts_the_job_over(store, job):
    store.add_items(job.id, [ItemSpec("a.jpg", extra={"k": 1}), ItemSpec("b.jpg")])
    a = store.claim_next(job.id)
    store.mark_done(a.id, output="x", code=[1.0], code_source="blind")
    store.mark_done(store.claim_next(job.id).id)
    assert store.job(job.id).status == "done"
    assert store.reset(job.id) == 2
    assert (store.job(job.id).status, store.job(job.id).finished) == ("pending", None)
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
    # spawn, not fork: a fork copies the locks of whatever threads the test process holds (Ray's, torch's)
    # in their locked state; CI once hung here for its whole 90 minutes after the Ray tests had run.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_claim_all, [(str(store.jobs_dir), job.id)] * 2)
    claimed = results[0] + results[1]
    assert sorted(claimed) == keys
    assert store.summary(job.id)["done"] == 30 and store.job(job.id).status == "done"


HOLDER = """
import sys, time
from archive_restore.jobs.store import JobStore
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


# -- exact texts and values ---------------------------------------------------------------------

def test_canonical_json_and_the_options_hash_are_stable_text(store, tmp_path):
    from archive_restore.jobs.store import canonical_json

    assert canonical_json({"b": 1, "a": [1, 2], "p": Path("/x"), "s": {3, 1}}) == '{"a":[1,2],"b":1,"p":"/x","s":[1,3]}'
    job = store.get_or_create_job("photos", tmp_path / "in", tmp_path / "out", {"scale": 2})
    assert job.options_hash == hashlib.sha256(b'{"scale":2}').hexdigest()[:16]
    with pytest.raises(JobError, match=r"^unknown job kind 'audio'; expected one of photos, video$"):
        store.get_or_create_job("audio", tmp_path / "in", tmp_path / "out", {})
    with pytest.raises(JobError) as unstorable:
        store.get_or_create_job("photos", tmp_path / "in", tmp_path / "out", {"gain": 1j})
    assert str(unstorable.value) == "job option value 1j (complex) cannot be stored as JSON"


def test_errors_are_kept_on_one_line_of_at_most_1000_characters():
    from archive_restore.jobs.store import one_line

    assert one_line("a\n  b\tc ") == "a b c"
    assert one_line("x" * 1000) == "x" * 1000  # exactly the limit: kept whole
    assert one_line("x" * 1001) == "x" * 999 + "…"  # one over: cut, with the ellipsis inside the limit


def test_results_and_timings_are_stored_as_given(store, job):
    _add(store, job.id, "a", "b", "c")
    first = store.claim_next(job.id)
    done = store.mark_done(first.id, output="/o/a.png", code=[0.5], code_source="folder", faces=3, seconds=1.25)
    assert (done.output, done.code, done.code_source, done.faces, done.seconds) == ("/o/a.png", [0.5], "folder", 3, 1.25)
    updated = store.update_item(store.claim_next(job.id).id, seconds=2, extra={"k": 1}, code_source="job")
    assert (updated.seconds, updated.extra, updated.code_source, updated.status) == (2.0, {"k": 1}, "job", "running")
    with pytest.raises(JobError, match=r"^unknown code source 'face'; expected one of faces, neighbour, folder, job, "
                                       r"blind$"):
        store.update_item(updated.id, code_source="face")
    with pytest.raises(JobError, match=r"^unknown item status 'lost'; expected one of pending, running, done, failed, "
                                       r"skipped$"):
        store.items(job.id, status="lost")


def test_seconds_default_to_the_time_since_the_claim_in_milliseconds(store, job, monkeypatch):
    import archive_restore.jobs.store as store_module

    _add(store, job.id, "a")
    now = ["2026-01-01T00:00:00.000+00:00"]
    monkeypatch.setattr(store_module, "_now", lambda: now[0])
    item = store.claim_next(job.id)
    now[0] = "2026-01-01T00:00:02.3456+00:00"
    assert store.mark_done(item.id).seconds == 2.346


def test_the_lock_lives_in_a_new_folder_readable_by_all_and_names_its_holder(tmp_path):
    from archive_restore.jobs.store import JobLock

    path = tmp_path / "a" / "b" / "job.lock"
    umask = os.umask(0o022)
    os.umask(umask)
    with JobLock(path, "abc123"):
        assert path.stat().st_mode & 0o777 == 0o644 & ~umask
        with pytest.raises(JobLockedError) as refused:
            JobLock(path, "abc123").acquire(attempts=1)
    assert str(refused.value) == (f"job abc123 is already being worked on by process {os.getpid()} (lock {path}); "
                                  "wait for it to finish or stop it, then run the command again")


def test_a_lock_file_with_garbage_in_it_reads_as_no_pid(tmp_path):
    import fcntl

    import time

    from archive_restore.jobs.store import JobLock, holder_pid

    path = tmp_path / "job.lock"
    path.write_bytes(b"\xff\xfe not a pid")
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held, but what it says is not a number
        started = time.monotonic()
        assert holder_pid(path) == 0
        assert time.monotonic() - started < 0.5  # a few quick rereads, never a wait that holds up `jobs`
        with pytest.raises(JobLockedError) as refused:
            JobLock(path, "abc123").acquire(attempts=1)
        assert str(refused.value).startswith("job abc123 is already being worked on by another process (lock")
    finally:
        os.close(fd)
    lock = JobLock(path, "abc123")
    lock.acquire()
    lock.release()
    lock.release()  # twice is harmless
    with JobLock(path, "abc123"):  # and the lock is free again
        assert holder_pid(path) == os.getpid()



def test_database_errors_become_messages_that_say_what_to_do(tmp_path):
    import sqlite3

    from archive_restore.errors import DatabaseBusyError, DiskFullError
    from archive_restore.jobs.store import BUSY_TIMEOUT_S, database_error

    db = tmp_path / "jobs" / "jobs.db"
    full = database_error(sqlite3.OperationalError("database or disk is full"), db)
    assert isinstance(full, DiskFullError) and str(full) == (
        f"no space left on {db.parent} for the job database (database or disk is full): "
        "free some space there, then run the same command again")
    busy = database_error(sqlite3.OperationalError("database is locked"), db)
    assert isinstance(busy, DatabaseBusyError) and str(busy) == (
        f"the job database {db} stayed locked by another program for {BUSY_TIMEOUT_S:.0f} s (database is locked); "
        "close the program holding it (a database browser, a backup tool) and run the command again")


def test_an_ambiguous_job_prefix_names_every_match(store, tmp_path):
    ids = [store.get_or_create_job("photos", tmp_path / "in", tmp_path / f"out{n}", {}).id for n in range(40)]
    first = next(i for i in ids if sum(j.startswith(i[0]) for j in ids) >= 2)[0]  # 40 ids share a first digit
    matches = [i for i in ids if i.startswith(first)]  # in the order the jobs were made
    with pytest.raises(JobError) as ambiguous:
        store.job(first)
    assert str(ambiguous.value) == f"job id {first!r} is ambiguous; it matches {', '.join(matches)}"


def test_the_store_makes_its_folder_with_its_parents(tmp_path):
    with JobStore.open(tmp_path / "a" / "b" / "jobs") as store:
        assert store.path.parent == tmp_path / "a" / "b" / "jobs"


def test_a_changed_input_puts_its_item_back_as_new(store, job):
    _add(store, job.id, "a")
    item = store.claim_next(job.id)
    store.mark_done(item.id, output="/o/a.png", code=[1.0], code_source="blind", faces=0, extra={"k": 1})
    assert store.job(job.id).status == "done"
    again = store.source_changed(item.id, size=11, mtime=2.5, sha256="ab" * 32)
    assert (store.job(job.id).status, store.job(job.id).finished) == ("pending", None)
    assert (again.status, again.attempts, again.output, again.code, again.faces, again.error) == (
        "pending", 0, None, None, None, None)
    assert (again.size, again.mtime, again.sha256) == (11, 2.5, "ab" * 32) and set(again.extra) == {"input_changed"}


def test_a_write_waits_busy_timeout_s_for_another_programs_lock_then_says_so(tmp_path, monkeypatch):
    import sqlite3
    import threading
    import time

    import archive_restore.jobs.store as store_module
    from archive_restore.errors import DatabaseBusyError

    jobs = tmp_path / "jobs"
    with JobStore.open(jobs) as store:
        job = store.get_or_create_job("photos", tmp_path / "in", tmp_path / "out", {})
        _add(store, job.id, "a.jpg")
    other = sqlite3.connect(jobs / store_module.DB_NAME, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN EXCLUSIVE")  # a database browser holding a write, longer than the wait
        monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.3)
        with JobStore.open(jobs) as store:
            started = time.monotonic()
            with pytest.raises(DatabaseBusyError, match="stayed locked by another program for 0 s"):
                store.claim_next(job.id)
            waited = time.monotonic() - started
        other.execute("ROLLBACK")
        # SQLite waits the timeout before giving up, not its own default (5 s); the upper bound leaves a busy
        # machine 4 s of slack while still telling the two apart
        assert 0.29 <= waited < 4.5
        monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 30.0)
        with JobStore.open(jobs) as store:
            other.execute("BEGIN EXCLUSIVE")  # released within the wait: the write goes through
            threading.Timer(0.3, other.execute, ("ROLLBACK",)).start()
            assert store.claim_next(job.id).key == "a.jpg"
    finally:
        other.close()


def test_a_damaged_page_is_found_when_the_store_opens_and_sqlites_finding_is_named(tmp_path):
    import sqlite3
    from contextlib import closing

    from archive_restore.errors import DatabaseDamagedError
    from archive_restore.jobs.store import DB_NAME

    jobs = tmp_path / "jobs"
    with JobStore.open(jobs) as store:
        job = store.get_or_create_job("photos", tmp_path / "in", tmp_path / "out", {})
        _add(store, job.id, *(f"{n:03d}.jpg" for n in range(50)))
    db = jobs / DB_NAME
    with closing(sqlite3.connect(db)) as conn:
        page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'idx_items_job_id_status'").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    damaged = bytearray(db.read_bytes())
    damaged[(page - 1) * size: page * size] = bytes(size)  # an index page zeroed: the file still opens
    db.write_bytes(bytes(damaged))
    with closing(sqlite3.connect(db)) as conn:
        finding = conn.execute("PRAGMA quick_check(1)").fetchone()[0]  # SQLite's words for the damage
    assert finding != "ok"
    with pytest.raises(DatabaseDamagedError) as refused:
        JobStore.open(jobs)
    assert str(refused.value) == (
        f"the job database {db} is damaged (quick check: {finding}); run `archive-restore jobs --repair "
        f"--jobs-dir {jobs}` to salvage its jobs and finished items (the damaged file is kept beside it)")
    assert db.read_bytes() == bytes(damaged)  # left as it was, for the repair


def test_salvaged_rows_are_put_back_as_they_were_and_missing_columns_take_the_defaults(store, job, tmp_path):
    _add(store, job.id, "kept.jpg")
    kept = store.items(job.id)[0]
    other = {"id": "0123456789ab", "kind": "video", "input": "/in/film.mp4", "output": "/out/film.mkv",
             "options": '{"scale":2}', "options_hash": "x", "status": "pending", "created": "2026-01-01T00:00:00.000+00:00",
             "updated": "2026-01-01T00:00:00.000+00:00", "finished": None, "version": "0.1"}
    store.restore_rows([other, {**other, "id": job.id, "kind": "video"}], [
        {"id": kept.id, "job_id": job.id, "key": "kept.jpg", "status": "done", "attempts": 3},  # there: kept
        {"id": 7, "job_id": job.id, "key": "done.jpg", "status": "done", "attempts": 2, "output": "/o/done.png",
         "code": "[0.5]", "code_source": "blind", "faces": 1, "extra": '{"k":1}', "sha256": "ab" * 32},
        {"id": 9, "job_id": job.id, "key": "bare.jpg", "status": "pending"},  # only what identifies it was read
        {"id": 3, "job_id": other["id"], "key": "shot-0001", "status": "done", "attempts": 1}])
    assert [j.kind for j in store.jobs()] == ["video", "photos"] and store.job(job.id).kind == "photos"
    got = {i.key: i for i in store.items(job.id)}
    assert [i.key for i in store.items(job.id)] == ["kept.jpg", "done.jpg", "bare.jpg"]  # claim order: by id
    assert (got["kept.jpg"].status, got["kept.jpg"].attempts) == ("pending", 0)
    done = got["done.jpg"]
    assert (done.id, done.status, done.attempts, done.output, done.code, done.code_source, done.faces, done.extra,
            done.sha256) == (7, "done", 2, "/o/done.png", [0.5], "blind", 1, {"k": 1}, "ab" * 32)
    bare = got["bare.jpg"]
    assert (bare.attempts, bare.output, bare.code, bare.extra, bare.sha256) == (0, None, None, {}, None)
    assert store.update_item(bare.id, faces=0, extra={"k": 2}).extra == {"k": 2}  # no extra stored: still merges
    assert store.job(job.id).status == "pending" and store.job(other["id"]).status == "done"  # from their items now


def test_the_database_itself_refuses_rows_without_what_identifies_them(store, job):
    import sqlite3

    _add(store, job.id, "a.jpg")
    for column in ("job_id", "key", "status"):
        values = {"job_id": job.id, "key": "b.jpg", "status": "pending", column: None}
        with pytest.raises(sqlite3.IntegrityError, match=f"NOT NULL constraint failed: items.{column}"):
            store.db.conn.execute("INSERT INTO items (job_id, key, status) VALUES (?, ?, ?)", tuple(values.values()))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE constraint failed: items.job_id, items.key"):
        store.db.conn.execute("INSERT INTO items (job_id, key, status) VALUES (?, 'a.jpg', 'pending')", (job.id,))
    for column in ("kind", "input", "output", "status"):
        values = {"id": "0123456789ab", "kind": "photos", "input": "/i", "output": "/o", "status": "pending",
                  column: None}
        with pytest.raises(sqlite3.IntegrityError, match=f"NOT NULL constraint failed: jobs.{column}"):
            store.db.conn.execute("INSERT INTO jobs (id, kind, input, output, status) VALUES (?, ?, ?, ?, ?)",
                                  tuple(values.values()))


def test_a_prefix_two_jobs_share_is_ambiguous(store, tmp_path):
    by_prefix: dict[str, list[str]] = {}
    for n in range(257):  # 256 two-digit prefixes: two jobs share one by then
        job_id = store.get_or_create_job("photos", tmp_path / "in", tmp_path / f"out{n}", {}).id
        by_prefix.setdefault(job_id[:2], []).append(job_id)
        if len(by_prefix[job_id[:2]]) == 2:
            break
    first, second = by_prefix[job_id[:2]]
    with pytest.raises(JobError) as ambiguous:
        store.job(job_id[:2])
    assert str(ambiguous.value) == f"job id {job_id[:2]!r} is ambiguous; it matches {first}, {second}"


def test_a_large_job_lists_its_unfinished_photos_first_and_says_how_to_see_all(store, job, monkeypatch):
    from archive_restore.pipeline import status

    monkeypatch.setattr(status, "LISTED", 3)
    _add(store, job.id, *(f"p{i}.png" for i in range(6)))
    first, second = store.claim_next(job.id), store.claim_next(job.id)
    store.mark_done(first.id)
    store.mark_failed(second.id, "InputError: truncated")
    lines = status.photo_lines(store, job)
    assert lines[0] == "items: 4 pending, 1 done, 1 failed"
    assert [line.split()[:2] for line in lines[1:4]] == [["failed", "p1.png"], ["pending", "p2.png"],
                                                          ["pending", "p3.png"]]
    assert lines[4] == f"  ... and 3 more; `archive-restore status {job.id[:12]} --all` lists every photo"
    every = status.photo_lines(store, job, every=True)
    assert len(every) == 7 and [line.split()[1] for line in every[1:]] == [f"p{i}.png" for i in range(6)]


def test_the_job_status_follows_its_items_as_each_is_finished(store, job):
    _add(store, job.id, "a.jpg", "b.jpg")
    a, b = store.claim_next(job.id), store.claim_next(job.id)
    store.mark_failed(a.id, "broken")
    assert store.job(job.id).status == "pending"  # b is still running
    store.mark_done(b.id)
    assert store.job(job.id).status == "failed"
    store.retry_failed(job.id)
    assert store.job(job.id).status == "pending"
    store.mark_done(store.claim_next(job.id).id)
    assert store.job(job.id).status == "done"


def test_a_new_store_opened_by_several_programs_at_once_opens_for_all(tmp_path):
    """Two commands starting together on a new jobs folder (a job and a `status` beside it): SQLite answers
    one of them "locked" at once while the other switches the file to WAL; it tries again instead of failing
    (about half of such starts failed before, and a Ray test's job with them)."""
    import threading

    for trial in range(30):
        folder, failures = tmp_path / f"jobs{trial}", []

        def opening() -> None:
            try:
                with JobStore.open(folder) as store:
                    assert store.jobs() == []
            except Exception as exc:  # noqa: BLE001 - collected for the assertion below
                failures.append(exc)

        threads = [threading.Thread(target=opening) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == [], failures[0]
