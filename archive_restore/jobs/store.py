"""The SQLite job store: jobs, their items, and the lock that keeps one worker per job.

A job is identified by (kind, input, output, options); its id is a short stable hash of these, so
running the same command again finds the same job and resumes it. Items move
``pending -> running -> done | failed | skipped`` and are never deleted: like persist-queue's ack
queue, a row left ``running`` by a crash goes back to ``pending`` when the job is next opened for
work (``open_for_work``), so nothing is lost.

Layout (``resolve_jobs_dir``): ``jobs/archive-restore.db`` and one working folder per job,
``jobs/<job_id>/``, holding the job's ``lock`` file and kind-specific files (segments, logs).

Concurrency: WAL mode, a busy timeout, and every write in a ``BEGIN IMMEDIATE`` transaction, so
readers (``jobs``, ``status``) never block and concurrent writers never corrupt the database. The
job lock is an OS file lock (``fcntl.flock``): the kernel drops it when its holder dies, even by
SIGKILL, so it is never stale.

Damage and contention: opening checks the file (``PRAGMA quick_check``); a corrupt or truncated
database raises DatabaseDamagedError pointing at ``archive-restore jobs --repair`` (``jobs.repair``),
never a silent fresh start. A database another program keeps locked is waited for
``BUSY_TIMEOUT_S``, then DatabaseBusyError says so; a full disk is DiskFullError.

Items remember the input they were made from (``size``, ``mtime``, ``sha256``): a pipeline compares
them on the next run and puts a changed input back to work with ``source_changed``. Databases made
before the ``sha256`` column existed get it added on open.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from .. import __version__
from ..errors import (
    DatabaseBusyError,
    DatabaseDamagedError,
    DiskFullError,
    JobError,
    JobLockedError,
)

JOBS_DIR_ENV = "ARCHIVE_RESTORE_JOBS_DIR"
DB_NAME = "archive-restore.db"
LOCK_NAME = "lock"
BUSY_TIMEOUT_S = 60.0
SCHEMA_RETRY_S = 0.05   # a new store made by two programs at once: the one answered "locked" tries again this soon

KINDS = ("photos", "video")
PENDING, RUNNING, DONE, FAILED, SKIPPED = "pending", "running", "done", "failed", "skipped"
ITEM_STATUSES = (PENDING, RUNNING, DONE, FAILED, SKIPPED)
CODE_SOURCES = ("faces", "neighbour", "folder", "job", "blind")  # neighbour: a nearby shot's
MAX_ERROR_CHARS = 1000

_JOBS_SCHEMA = {
    "id": str, "kind": str, "input": str, "output": str, "options": str, "options_hash": str,
    "status": str, "created": str, "updated": str, "finished": str, "version": str,
}
_ITEMS_SCHEMA = {
    "id": int, "job_id": str, "key": str, "size": int, "mtime": float, "status": str,
    "attempts": int, "error": str, "output": str, "code": str, "code_source": str, "faces": int,
    "started": str, "finished": str, "seconds": float, "extra": str, "sha256": str,
}
_JOB_DIR_NAME = re.compile(r"^[0-9a-f]{12}$")
_UPDATABLE = frozenset({"output", "code", "code_source", "faces", "extra", "seconds"})


def resolve_jobs_dir(jobs_dir: str | os.PathLike[str] | None = None) -> Path:
    """The job store folder: ``jobs_dir``, else ``$ARCHIVE_RESTORE_JOBS_DIR``, else ``./jobs``."""
    chosen = jobs_dir if jobs_dir is not None else os.environ.get(JOBS_DIR_ENV) or "jobs"
    return Path(chosen).expanduser().resolve()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise JobError(f"job option value {value!r} ({type(value).__name__}) cannot be stored as JSON")


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text (and equal hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)


def _hash(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def job_identity(kind: str, input: str | os.PathLike[str], output: str | os.PathLike[str],
                 options: dict[str, Any]) -> str:
    """The stable 12-hex-digit id of (kind, input, output, options); paths are made absolute."""
    ident = [kind, absolute(input), absolute(output), json.loads(canonical_json(options))]
    return _hash(canonical_json(ident), 12)


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute (``~`` expanded, symlinks resolved): how jobs store their paths."""
    return str(Path(path).expanduser().resolve())


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Whitespace collapsed to single spaces and cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True)
class Job:
    """One row of ``jobs``."""

    id: str
    kind: str
    input: str
    output: str
    options: dict[str, Any]
    options_hash: str
    status: str
    created: str
    updated: str
    finished: str | None
    version: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        return cls(**{**row, "options": json.loads(row["options"])})


@dataclass(frozen=True)
class Item:
    """One row of ``items``: a photo, or a shot or segment of a video (``key``: its path or name
    relative to the job input)."""

    id: int
    job_id: str
    key: str
    size: int | None
    mtime: float | None
    status: str
    attempts: int
    error: str | None
    output: str | None
    code: list[float] | None
    code_source: str | None
    faces: int | None
    started: str | None
    finished: str | None
    seconds: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None  # of the input as it was read (photos), None until then

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Item:
        code = json.loads(row["code"]) if row["code"] is not None else None
        extra = json.loads(row["extra"]) if row["extra"] else {}
        return cls(**{**row, "code": code, "extra": extra})


@dataclass(frozen=True)
class ItemSpec:
    """What ``add_items`` needs to know about a new item."""

    key: str
    size: int | None = None
    mtime: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None


class JobLock:
    """An exclusive ``fcntl.flock`` on ``<job dir>/lock``; the file holds the holder's PID.

    The kernel releases the lock when the holder's file descriptor closes, including when the
    process is killed, so the lock can never be stale. Use as a context manager.
    """

    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self.job_id = job_id
        self._fd: int | None = None

    def acquire(self, attempts: int = 5, wait_s: float = 0.05) -> None:
        """Take the lock or raise JobLockedError naming the job and the holder's PID.

        A few quick retries ride out a read-only ``holder_pid`` probe that holds the lock briefly.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        for attempt in range(attempts):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == attempts - 1:
                    os.close(fd)
                    raise JobLockedError(self._locked_message()) from None
                time.sleep(wait_s)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def _locked_message(self) -> str:
        pid = holder_pid(self.path)
        who = f"process {pid}" if pid else "another process"
        return (f"job {self.job_id} is already being worked on by {who} (lock {self.path}); "
                "wait for it to finish or stop it, then run the command again")

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_pid(lock_path: Path) -> int | None:
    """The PID holding ``lock_path``, or None when nobody holds it (0: PID not written yet)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int, attempts: int = 5) -> int:
    for _ in range(attempts):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return 0


class JobStore:
    """Jobs and items in ``<jobs_dir>/archive-restore.db``; open with ``JobStore.open()``."""

    def __init__(self, jobs_dir: Path, db: sqlite_utils.Database) -> None:
        self.jobs_dir = jobs_dir
        self.db = db
        # job id -> where the work found in its folder when the store did not know the job was moved
        self.kept_folders: dict[str, Path] = {}

    @classmethod
    def open(cls, jobs_dir: str | os.PathLike[str] | None = None) -> JobStore:
        """Open (creating if needed) the store in ``resolve_jobs_dir(jobs_dir)``."""
        folder = resolve_jobs_dir(jobs_dir)
        folder.mkdir(parents=True, exist_ok=True)
        _refuse_emptied(folder)
        conn = sqlite3.connect(folder / DB_NAME, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        store = cls(folder, sqlite_utils.Database(conn))
        try:
            with store._translated():
                store._check_intact()
                store._init_schema()
        except BaseException:
            conn.close()
            raise
        return store

    @property
    def path(self) -> Path:
        """The database file."""
        return self.jobs_dir / DB_NAME

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_intact(self) -> None:
        """Raise DatabaseDamagedError unless SQLite's quick check of the whole file passes."""
        found = self.db.conn.execute("PRAGMA quick_check(1)").fetchone()
        if found is None or found[0] != "ok":
            raise sqlite3.DatabaseError(f"quick check: {found[0] if found else 'no answer'}")

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """SQLite's errors as the store's: damaged, locked too long, disk full."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise database_error(exc, self.path) from exc

    def _init_schema(self) -> None:
        """The tables, made if missing, in WAL mode. Programs opening a new store at the same moment (a
        job and a `status` beside it) meet while one of them switches it to WAL: SQLite answers the other
        "locked" at once, without its busy wait (waiting could deadlock there). Making the schema is
        idempotent, so it is tried again until ``BUSY_TIMEOUT_S``."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return self._make_schema()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(SCHEMA_RETRY_S)

    def _make_schema(self) -> None:
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: no corruption, fewer fsyncs
        self.db["jobs"].create(_JOBS_SCHEMA, pk="id", if_not_exists=True,
                               not_null={"kind", "input", "output", "status"})
        self.db["items"].create(_ITEMS_SCHEMA, pk="id", not_null={"job_id", "key", "status"},
                                defaults={"attempts": 0}, if_not_exists=True)
        self.db["items"].create_index(["job_id", "key"], unique=True, if_not_exists=True)
        self.db["items"].create_index(["job_id", "status"], if_not_exists=True)
        if "sha256" not in self.db["items"].columns_dict:  # made by a version without it
            self.db.execute("ALTER TABLE items ADD COLUMN sha256 TEXT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front (no upgrade deadlocks in WAL)."""
        conn = self.db.conn
        with self._translated():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite has rolled back already after some errors (disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._translated():
            return list(self.db.query(sql, params))

    # -- jobs ---------------------------------------------------------------------------------

    def get_or_create_job(self, kind: str, input: str | os.PathLike[str],
                          output: str | os.PathLike[str], options: dict[str, Any]) -> Job:
        """The job for (kind, input, output, options): found if it exists (resume), else created."""
        if kind not in KINDS:
            raise JobError(f"unknown job kind {kind!r}; expected one of {', '.join(KINDS)}")
        job_id = job_identity(kind, input, output, options)
        options_json = canonical_json(options)
        now = _now()
        with self._write() as conn:
            created = conn.execute(
                "INSERT OR IGNORE INTO jobs (id, kind, input, output, options, options_hash,"
                " status, created, updated, finished, version)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (job_id, kind, absolute(input), absolute(output), options_json,
                 _hash(options_json, 16), PENDING, now, now, __version__)).rowcount
        if created:
            self._keep_unknown_work(job_id)
        return self.job(job_id)

    def _keep_unknown_work(self, job_id: str) -> None:
        """A job new to the store whose folder already holds work (its database was deleted or replaced):
        the folder is moved aside, kept whole, so that nothing of it is silently overwritten or reused
        (``kept_folders`` says where; the command says so)."""
        folder = self.jobs_dir / job_id
        if not folder.is_dir() or holder_pid(folder / LOCK_NAME) is not None:
            return
        if not [p for p in folder.iterdir() if p.name != LOCK_NAME]:
            return
        kept = folder.with_name(f"{job_id}.kept-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}")
        folder.rename(kept)
        self.kept_folders[job_id] = kept

    def jobs(self) -> list[Job]:
        """All jobs, oldest first."""
        return [Job.from_row(r) for r in self._rows("SELECT * FROM jobs ORDER BY created, id")]

    def job(self, job_id: str) -> Job:
        """The job whose id is ``job_id`` or starts with it (a unique prefix)."""
        prefix = job_id.strip().lower()
        if not re.fullmatch(r"[0-9a-f]+", prefix):
            raise JobError(f"no job {job_id!r} in {self.path}: a job id is hexadecimal")
        rows = self._rows("SELECT * FROM jobs WHERE substr(id, 1, ?) = ?", (len(prefix), prefix))
        if not rows:
            raise JobError(f"no job {job_id!r} in {self.path}")
        if len(rows) > 1:
            ids = ", ".join(r["id"] for r in rows)
            raise JobError(f"job id {job_id!r} is ambiguous; it matches {ids}")
        return Job.from_row(rows[0])

    def job_dir(self, job_id: str) -> Path:
        """The job's working folder ``<jobs_dir>/<job_id>/`` (created if missing)."""
        folder = self.jobs_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def lock(self, job_id: str) -> JobLock:
        """The job's lock (not yet taken); ``with store.lock(id):`` holds it for the block."""
        return JobLock(self.jobs_dir / job_id / LOCK_NAME, job_id)

    def locked_by(self, job_id: str) -> int | None:
        """The PID working on the job, or None; a read-only check for ``jobs``/``status``."""
        return holder_pid(self.jobs_dir / job_id / LOCK_NAME)

    @contextmanager
    def open_for_work(self, job_id: str) -> Iterator[Job]:
        """Hold the job's lock for the block, after putting items left ``running`` back to pending.

        Raises JobLockedError when another process holds the job.
        """
        job = self.job(job_id)
        with self.lock(job.id):
            self.requeue_running(job.id)
            yield self.job(job.id)

    # -- items --------------------------------------------------------------------------------

    def add_items(self, job_id: str, specs: Iterable[ItemSpec]) -> int:
        """Add items in the given order (that is the claim order); existing keys are left untouched.

        Returns how many were new.
        """
        rows = [(job_id, s.key, s.size, s.mtime, s.sha256, PENDING, canonical_json(s.extra)) for s in specs]
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO items (job_id, key, size, mtime, sha256, status, attempts, extra)"
                " VALUES (?, ?, ?, ?, ?, ?, 0, ?)", rows)
            added = conn.total_changes - before
            if added:
                self._refresh_job(conn, job_id)
        return added

    def items(self, job_id: str, status: str | None = None, limit: int | None = None) -> list[Item]:
        """The job's items in claim order, optionally only those with ``status``, at most ``limit``."""
        last = "" if limit is None else f" LIMIT {max(0, int(limit))}"
        if status is None:
            rows = self._rows(f"SELECT * FROM items WHERE job_id = ? ORDER BY id{last}", (job_id,))
        else:
            _check_status(status)
            rows = self._rows(f"SELECT * FROM items WHERE job_id = ? AND status = ? ORDER BY id{last}",
                              (job_id, status))
        return [Item.from_row(r) for r in rows]

    def item(self, item_id: int) -> Item:
        """One item by its id."""
        rows = self._rows("SELECT * FROM items WHERE id = ?", (item_id,))
        if not rows:
            raise JobError(f"no item {item_id} in {self.path}")
        return Item.from_row(rows[0])

    def summary(self, job_id: str) -> dict[str, int]:
        """Item counts by status (every status present, zeros included)."""
        counts = dict.fromkeys(ITEM_STATUSES, 0)
        for row in self._rows("SELECT status, count(*) AS n FROM items WHERE job_id = ?"
                              " GROUP BY status", (job_id,)):
            counts[row["status"]] = row["n"]
        return counts

    def claim_next(self, job_id: str) -> Item | None:
        """Atomically move the first pending item to running (attempts + 1); None if none is left."""
        with self._write() as conn:
            row = conn.execute(
                "UPDATE items SET status = ?, attempts = attempts + 1, started = ?, finished = NULL"
                " WHERE id = (SELECT id FROM items WHERE job_id = ? AND status = ? ORDER BY id"
                " LIMIT 1) RETURNING id", (RUNNING, _now(), job_id, PENDING)).fetchone()
        return self.item(row[0]) if row else None

    def mark_done(self, item_id: int, *, output: str | os.PathLike[str] | None = None,
                  code: Sequence[float] | None = None, code_source: str | None = None,
                  faces: int | None = None, seconds: float | None = None,
                  extra: dict[str, Any] | None = None) -> Item:
        """Record a running item's result; call only once its output is in place.

        Fields left None keep their stored value; ``extra`` is merged into the stored extra;
        ``seconds`` defaults to the time since the item was claimed.
        """
        fields = _result_fields(output=output, code=code, code_source=code_source, faces=faces)
        return self._finish(item_id, DONE, error=None, seconds=seconds, extra=extra, **fields)

    def mark_failed(self, item_id: int, error: str) -> Item:
        """A running item failed; ``error`` is stored as one line."""
        return self._finish(item_id, FAILED, error=one_line(error))

    def mark_skipped(self, item_id: int, reason: str) -> Item:
        """A pending or running item needs no work; ``reason`` is stored in ``error``."""
        return self._finish(item_id, SKIPPED, error=one_line(reason), allowed=(PENDING, RUNNING))

    def update_item(self, item_id: int, **fields: Any) -> Item:
        """Record analysis results (``code``, ``code_source``, ``faces``, ``output``, ``extra``,
        ``seconds``) without changing the status; ``extra`` is merged."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise JobError(f"cannot update item field(s) {', '.join(sorted(unknown))}; "
                           f"allowed: {', '.join(sorted(_UPDATABLE))}")
        extra = fields.pop("extra", None)
        seconds = fields.pop("seconds", None)
        values = _result_fields(**fields)
        if seconds is not None:
            values["seconds"] = float(seconds)
        with self._write() as conn:
            current = self._item_row(conn, item_id)
            if extra:
                values["extra"] = canonical_json({**json.loads(current["extra"] or "{}"), **extra})
            self._set(conn, item_id, values)
        return self.item(item_id)

    def set_source(self, item_id: int, *, size: int | None, mtime: float | None,
                   sha256: str | None) -> Item:
        """Record the input file as it was read for this item (its size, mtime and content hash)."""
        with self._write() as conn:
            self._item_row(conn, item_id)
            self._set(conn, item_id, {"size": size, "mtime": mtime, "sha256": sha256})
        return self.item(item_id)

    def source_changed(self, item_id: int, *, size: int | None, mtime: float | None,
                       sha256: str | None) -> Item:
        """The item's input is another file now (replaced or edited): record it and put the item back
        to pending with its results cleared, whatever its status (its output, if any, stays on disk
        until the redo replaces it)."""
        with self._write() as conn:
            row = self._item_row(conn, item_id)
            self._set(conn, item_id, {
                "size": size, "mtime": mtime, "sha256": sha256, "status": PENDING, "attempts": 0,
                "error": None, "output": None, "code": None, "code_source": None, "faces": None,
                "started": None, "finished": None, "seconds": None,
                "extra": canonical_json({"input_changed": _now()})})
            self._refresh_job(conn, row["job_id"])
        return self.item(item_id)

    def requeue(self, item_id: int) -> Item:
        """Put a running item back to pending (attempts kept), e.g. after Ctrl-C."""
        with self._write() as conn:
            conn.execute("UPDATE items SET status = ?, started = NULL WHERE id = ? AND status = ?",
                         (PENDING, item_id, RUNNING))
        return self.item(item_id)

    def requeue_running(self, job_id: str) -> int:
        """Put every item left running (by a crash) back to pending; returns how many."""
        return self._move(job_id, (RUNNING,), clear_results=False)

    def retry_failed(self, job_id: str) -> int:
        """Put failed items (only those) back to pending; returns how many."""
        return self._move(job_id, (FAILED,), clear_results=False)

    def reset(self, job_id: str) -> int:
        """Start the job over: every item pending, attempts and results cleared (extra kept)."""
        return self._move(job_id, ITEM_STATUSES, clear_results=True)

    def restore_rows(self, jobs: Sequence[dict[str, Any]], items: Sequence[dict[str, Any]]) -> None:
        """Insert job and item rows as they were (salvaged by ``repair``); existing ones are kept."""
        with self._write() as conn:
            for table, rows in (("jobs", jobs), ("items", items)):
                for row in rows:
                    conn.execute(f"INSERT OR IGNORE INTO {table} ({', '.join(row)})"
                                 f" VALUES ({', '.join('?' * len(row))})", tuple(row.values()))
            for job_id in {row["job_id"] for row in items}:
                self._refresh_job(conn, job_id)

    # -- internals ----------------------------------------------------------------------------

    def _item_row(self, conn: sqlite3.Connection, item_id: int) -> dict[str, Any]:
        cursor = conn.execute("SELECT * FROM items WHERE id = ?", (item_id,))
        row = cursor.fetchone()
        if row is None:
            raise JobError(f"no item {item_id} in {self.path}")
        return dict(zip([c[0] for c in cursor.description], row))

    @staticmethod
    def _set(conn: sqlite3.Connection, item_id: int, values: dict[str, Any]) -> None:
        if values:
            assignments = ", ".join(f"{name} = ?" for name in values)
            conn.execute(f"UPDATE items SET {assignments} WHERE id = ?",
                         (*values.values(), item_id))

    def _finish(self, item_id: int, status: str, *, error: str | None,
                seconds: float | None = None, extra: dict[str, Any] | None = None,
                allowed: tuple[str, ...] = (RUNNING,), **fields: Any) -> Item:
        now = _now()
        with self._write() as conn:
            row = self._item_row(conn, item_id)
            if row["status"] not in allowed:
                raise JobError(f"item {item_id} ({row['key']}) is {row['status']}, not "
                               f"{' or '.join(allowed)}; cannot mark it {status}")
            values = {**fields, "status": status, "error": error, "finished": now,
                      "seconds": seconds if seconds is not None else _elapsed(row["started"], now)}
            if extra:
                values["extra"] = canonical_json({**json.loads(row["extra"] or "{}"), **extra})
            self._set(conn, item_id, values)
            self._refresh_job(conn, row["job_id"])
        return self.item(item_id)

    def _move(self, job_id: str, from_statuses: Sequence[str], *, clear_results: bool) -> int:
        marks = ", ".join("?" for _ in from_statuses)
        cleared = (", attempts = 0, error = NULL, output = NULL, code = NULL, code_source = NULL,"
                   " faces = NULL, seconds = NULL") if clear_results else ""
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE items SET status = ?, started = NULL, finished = NULL{cleared}"
                f" WHERE job_id = ? AND status IN ({marks})", (PENDING, job_id, *from_statuses))
            if cursor.rowcount:
                self._refresh_job(conn, job_id)
        return cursor.rowcount

    @staticmethod
    def _refresh_job(conn: sqlite3.Connection, job_id: str) -> None:
        """Job status from its items: pending while any is unfinished, else failed if any failed,
        else done."""
        def any_item(*statuses: str) -> bool:  # an index seek: the job's items are not counted at each item
            marks = ", ".join("?" for _ in statuses)
            return conn.execute(f"SELECT EXISTS (SELECT 1 FROM items WHERE job_id = ? AND status IN ({marks}))",
                                (job_id, *statuses)).fetchone()[0] == 1

        now = _now()
        if any_item(PENDING, RUNNING):
            status, finished = PENDING, None
        else:
            status, finished = (FAILED if any_item(FAILED) else DONE), now
        conn.execute("UPDATE jobs SET status = ?, updated = ?, finished = ? WHERE id = ?",
                     (status, now, finished, job_id))


def database_error(exc: sqlite3.DatabaseError, path: Path) -> Exception:
    """The store's exception for SQLite's ``exc`` on the database ``path``."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return DatabaseBusyError(
            f"the job database {path} stayed locked by another program for {BUSY_TIMEOUT_S:.0f} s ({text}); "
            "close the program holding it (a database browser, a backup tool) and run the command again")
    if "full" in text:
        return DiskFullError(f"no space left on {path.parent} for the job database ({text}): "
                             "free some space there, then run the same command again")
    return DatabaseDamagedError(
        f"the job database {path} is damaged ({text}); run `archive-restore jobs --repair --jobs-dir "
        f"{path.parent}` to salvage its jobs and finished items (the damaged file is kept beside it)")


def _refuse_emptied(folder: Path) -> None:
    """An empty database file beside job folders lost its contents: refuse to start afresh over it."""
    path = folder / DB_NAME
    if not path.is_file() or path.stat().st_size:
        return
    jobs = [p.name for p in folder.iterdir() if p.is_dir() and _JOB_DIR_NAME.match(p.name)]
    if jobs:
        raise DatabaseDamagedError(
            f"the job database {path} is empty (0 bytes) although {folder} holds the folders of "
            f"{len(jobs)} job(s); run `archive-restore jobs --repair --jobs-dir {folder}` to start a new "
            "database knowingly (finished outputs stay on disk; their items are redone)")


def _check_status(status: str) -> None:
    if status not in ITEM_STATUSES:
        raise JobError(f"unknown item status {status!r}; "
                       f"expected one of {', '.join(ITEM_STATUSES)}")


def _result_fields(*, output: str | os.PathLike[str] | None = None,
                   code: Sequence[float] | None = None, code_source: str | None = None,
                   faces: int | None = None) -> dict[str, Any]:
    """The non-None result fields, converted to their stored form."""
    values: dict[str, Any] = {}
    if output is not None:
        values["output"] = os.fspath(output)
    if code is not None:
        values["code"] = json.dumps([float(x) for x in code])
    if code_source is not None:
        if code_source not in CODE_SOURCES:
            raise JobError(f"unknown code source {code_source!r}; expected one of "
                           f"{', '.join(CODE_SOURCES)}")
        values["code_source"] = code_source
    if faces is not None:
        values["faces"] = int(faces)
    return values


def _elapsed(started: str | None, finished: str) -> float | None:
    if not started:
        return None
    delta = datetime.fromisoformat(finished) - datetime.fromisoformat(started)
    return round(delta.total_seconds(), 3)
