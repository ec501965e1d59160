"""``archive-restore jobs --repair``: a new job database from what a damaged one still holds.

The damaged file (with its ``-wal`` and ``-shm``) is moved aside as ``archive-restore.db.damaged-<time>``,
never deleted; every row SQLite can still read from it is copied into a fresh database: the jobs
table whole when it reads, else row by row; the items likewise, skipping the rows on unreadable
pages. A row whose stored values no longer make sense (an unknown status, JSON that does not parse)
is not trusted: its item goes back to pending and is done again, a job without readable options is
dropped. Finished items are kept as they were, so the same commands carry on instead of starting
over; items that could not be read come back as pending when their job next walks its input.
Jobs being worked on (their lock held) are never repaired under their worker's feet.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatabaseDamagedError, JobError
from .store import (
    _ITEMS_SCHEMA,
    _JOB_DIR_NAME,
    _JOBS_SCHEMA,
    DB_NAME,
    DONE,
    ITEM_STATUSES,
    PENDING,
    RUNNING,
    JobStore,
    holder_pid,
    resolve_jobs_dir,
)

MISSES_BEFORE_END = 2000  # row ids tried past the last one read, when the table's end cannot be read


@dataclass(frozen=True)
class RepairReport:
    """What ``repair_database`` salvaged, and where the damaged file went."""

    damaged_copy: Path
    jobs: int
    jobs_lost: int
    items: int
    items_done: int
    items_redone: int
    unreadable_rows: int

    def lines(self) -> list[str]:
        salvaged = (f"salvaged {self.jobs} job(s) ({self.jobs_lost} unreadable or without their options, dropped) "
                    f"and {self.items} item(s): {self.items_done} done (kept), {self.items_redone} to do again "
                    f"(their stored values were damaged); {self.unreadable_rows} row(s) could not be read")
        return [f"moved the damaged database aside: {self.damaged_copy}", salvaged,
                "run the same commands again: finished items are kept, the rest is done"]


def repair_database(jobs_dir: str | os.PathLike[str] | None = None) -> RepairReport:
    """Move the damaged database aside and build a new one from its readable rows (see the module)."""
    folder = resolve_jobs_dir(jobs_dir)
    path = folder / DB_NAME
    if not path.exists():
        raise JobError(f"no job database at {path}: nothing to repair")
    _refuse_while_worked_on(folder)
    _refuse_when_sound(folder)
    damaged = path.with_name(f"{DB_NAME}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{path}{suffix}").exists():
            os.replace(f"{path}{suffix}", f"{damaged}{suffix}")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".repair-") as scratch:
        copy = _readable_copy(damaged, Path(scratch))
        jobs, jobs_unread = _salvage(copy, "jobs", list(_JOBS_SCHEMA))
        items, items_unread = _salvage(copy, "items", ["id", *(c for c in _ITEMS_SCHEMA if c != "id")])
    kept_jobs = {row["id"]: row for row in jobs if _job_ok(row)}
    kept_items = [row for row in items if row.get("job_id") in kept_jobs]
    redone = sum(_trust(row) for row in kept_items)
    with JobStore.open(folder) as store:
        store.restore_rows(list(kept_jobs.values()), kept_items)
    return RepairReport(damaged_copy=damaged, jobs=len(kept_jobs), jobs_lost=len(jobs) - len(kept_jobs),
                        items=len(kept_items), items_done=sum(r["status"] == DONE for r in kept_items),
                        items_redone=redone, unreadable_rows=jobs_unread + items_unread)


def _refuse_while_worked_on(folder: Path) -> None:
    for job_dir in folder.iterdir():
        if job_dir.is_dir() and _JOB_DIR_NAME.match(job_dir.name):
            pid = holder_pid(job_dir / "lock")
            if pid is not None:
                raise JobError(f"job {job_dir.name} is being worked on by process {pid or '?'}; "
                               "stop it before repairing the job database")


def _readable_copy(damaged: Path, scratch: Path) -> Path:
    """A copy of the damaged file (and its WAL) to read from, padded with empty pages up to the size
    its header states: SQLite refuses a whole truncated file, but reads what is left of a padded one."""
    copy = scratch / DB_NAME
    shutil.copyfile(damaged, copy)
    if Path(f"{damaged}-wal").exists():
        shutil.copyfile(f"{damaged}-wal", f"{copy}-wal")
    header = copy.read_bytes()[:100]
    if len(header) == 100 and header.startswith(b"SQLite format 3\0"):
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        stated = int.from_bytes(header[28:32], "big") * page_size
        if stated > copy.stat().st_size:
            with open(copy, "r+b") as fh:
                fh.truncate(stated)
    return copy


def _refuse_when_sound(folder: Path) -> None:
    try:
        JobStore.open(folder).close()
    except DatabaseDamagedError:
        return
    raise JobError(f"the job database {folder / DB_NAME} is not damaged (SQLite's check passes): nothing to repair")


def _salvage(path: Path, table: str, columns: list[str]) -> tuple[list[dict], int]:
    """Every readable row of ``table`` (only the ``columns`` it has), and how many could not be read."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.DatabaseError:
        return [], 0
    try:
        present = _columns(conn, table, columns)
        if not present:
            return [], 0
        names = ", ".join(present)
        try:
            return [dict(zip(present, r)) for r in conn.execute(f"SELECT {names} FROM {table}")], 0
        except sqlite3.DatabaseError:
            rows, unread = [], 0
            for row in _row_by_row(conn, table, names):
                if row is None:
                    unread += 1
                else:
                    rows.append(dict(zip(present, row)))
            return rows, unread
    finally:
        conn.close()


def _columns(conn: sqlite3.Connection, table: str, wanted: list[str]) -> list[str]:
    try:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    except sqlite3.DatabaseError:
        have = set(wanted)  # the schema page is damaged: ask for the known columns and see
    return [c for c in wanted if c in have]


def _row_by_row(conn: sqlite3.Connection, table: str, names: str) -> Iterator[tuple | None]:
    """Rows by rowid from 1, a row that fails to read as None; stops after ``MISSES_BEFORE_END`` row
    ids past the last one found (or at the table's last rowid, when that still reads)."""
    try:
        last = conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0]
    except sqlite3.DatabaseError:
        last = None
    rowid, since_found, failed = 1, 0, 0
    while (rowid <= last) if last is not None else since_found < MISSES_BEFORE_END:
        try:
            row = conn.execute(f"SELECT {names} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            row, failed = None, failed + 1
        since_found = 0 if row is not None else since_found + 1
        if row is not None:
            yield from [None] * failed  # rows that failed to read before this one: lost
            failed = 0
            yield row
        rowid += 1


def _job_ok(row: dict) -> bool:
    """A job is kept when what identifies it is readable: id, kind, paths and options JSON."""
    try:
        json.loads(row.get("options") or "")
    except (ValueError, TypeError):
        return False
    return all(isinstance(row.get(k), str) and row[k] for k in ("id", "kind", "input", "output"))


def _trust(row: dict) -> bool:
    """Make an item row safe to use; True when it had to go back to pending (to be done again)."""
    try:
        for name in ("code", "extra"):
            if row.get(name):
                json.loads(row[name])
        sane = row.get("status") in ITEM_STATUSES and isinstance(row.get("key"), str)
    except (ValueError, TypeError):
        sane = False
    if row.get("status") == RUNNING:
        row["status"] = PENDING
    if sane:
        return False
    row.update(status=PENDING, output=None, code=None, code_source=None, faces=None, error=None, started=None,
               finished=None, seconds=None, extra="{}", sha256=None, attempts=0)
    row["key"] = row["key"] if isinstance(row.get("key"), str) else f"unreadable-{row.get('id')}"
    return True
