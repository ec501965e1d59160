"""The generic job loop: claim an item -> process it -> its output lands atomically -> mark it done.

The pipelines (photos, video) supply ``process_item(item) -> ItemResult``; everything about
resuming, crash safety, failures and progress lives here. An item's output is written through
``atomic_output`` (a hidden temporary file in the same folder, fsynced, then renamed into place),
so a crash never leaves a half-written file under the final name, and an item is marked done only
after its output is in place. A crash between the rename and ``mark_done`` redoes that one item,
which rewrites the same file.

A full disk is not one bad item: the first write that fails with ENOSPC puts its item back to
pending and stops the job with DiskFullError naming the folder (the temporary file is removed), so
the same command carries on once there is room.
"""
from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..errors import DiskFullError, JobError
from .store import DONE, FAILED, PENDING, SKIPPED, Item, Job, JobStore

_TEMP_NAME = re.compile(r"^\..*\.(?P<pid>\d+)\.tmp(\.[^.]*)?$")


@dataclass(frozen=True)
class ItemResult:
    """What ``process_item`` reports; ``skipped`` (a reason) marks the item skipped, not done."""

    output: str | os.PathLike[str] | None = None
    code: Sequence[float] | None = None
    code_source: str | None = None
    faces: int | None = None
    extra: dict[str, Any] | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class Summary:
    """The job's item counts after a run, and the run's wall-clock seconds."""

    done: int
    failed: int
    skipped: int
    pending: int
    seconds: float


COUNTS_EVERY_S = 1.0  # the progress bar's done/failed counts are read again at most this often

ProcessItem = Callable[[Item], ItemResult]
Work = Callable[[Job, Callable[[], None]], None]


def temp_path(final_path: str | os.PathLike[str]) -> Path:
    """The hidden temporary name for ``final_path``: ``.<stem>.<pid>.tmp<suffix>`` beside it.

    The real extension stays last so writers that pick the format from it still work.
    """
    final = Path(final_path)
    return final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix}")


@contextmanager
def atomic_output(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to ``final_path``.

    On any exception the temporary file is removed and ``final_path`` is left as it was.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
        if not tmp.is_file():
            raise JobError(f"nothing was written for {final} (expected the file {tmp})")
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, final)
        _fsync(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | os.PathLike[str], recursive: bool = True,
                       gone: Collection[int] = ()) -> list[Path]:
    """Delete temporary files of ours left by a killed process (its PID no longer runs, or is in ``gone``:
    processes known to be out of the job, such as a lost node's workers, which may outlive their node a while).

    Returns the removed paths. Temporary files of other live processes are left alone.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    candidates = root.rglob(".*.tmp*") if recursive else root.glob(".*.tmp*")
    removed = []
    for path in candidates:
        match = _TEMP_NAME.match(path.name)
        pid = int(match["pid"]) if match else 0
        if match and path.is_file() and (pid in gone or not _pid_alive(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_job(store: JobStore, job: Job, process_item: ProcessItem, progress: bool = True, *,
            restart: bool = False, retry_failed: bool = False,
            prepare: Callable[[Job], None] | None = None, work: Work | None = None) -> Summary:
    """Work through the job's pending items under its lock and return the resulting Summary.

    ``restart`` resets every item first, ``retry_failed`` puts failed ones back. An exception from
    ``process_item`` marks that item failed and the loop goes on; KeyboardInterrupt (or any other
    BaseException) puts the item back to pending and is re-raised. Raises JobLockedError when
    another process holds the job. ``prepare(job)``, when given, runs under the lock before the
    first claim: a pipeline's analysis pass (it records what it finds with ``update_item``, so it
    too resumes where it stopped). ``work(job, advance)``, when given, works through the items
    instead of the loop here (another executor: ``executors.ray_cluster``); it records each item with
    ``process_one`` and calls ``advance()`` after each.
    """
    started = time.monotonic()
    with store.open_for_work(job.id) as job:
        if restart:
            store.reset(job.id)
        elif retry_failed:
            store.retry_failed(job.id)
        _clean_outputs(store, job)
        if prepare is not None:
            prepare(job)
        with _progress_bar(store, job, progress) as bar:
            if work is not None:
                work(job, lambda: _advance(bar, store, job.id))
            else:
                while (item := store.claim_next(job.id)) is not None:
                    process_one(store, item, process_item, job)
                    _advance(bar, store, job.id)
    counts = store.summary(job.id)
    return Summary(done=counts[DONE], failed=counts[FAILED], skipped=counts[SKIPPED],
                   pending=counts[PENDING], seconds=round(time.monotonic() - started, 3))


def _clean_outputs(store: JobStore, job: Job) -> None:
    """Remove stale temporary files in the output folder (or beside an output file) and job dir."""
    output = Path(job.output)
    if output.is_dir():
        remove_stale_temps(output)
    else:
        remove_stale_temps(output.parent, recursive=False)
    remove_stale_temps(store.job_dir(job.id))


def process_one(store: JobStore, item: Item, process_item: ProcessItem, job: Job) -> None:
    """Run one claimed item and record its outcome."""
    try:
        result = process_item(item)
        _check_output(result)
    except Exception as exc:  # one bad item must not stop the job: record it and go on
        full = disk_full(exc)
        if full is not None:  # ... but a full disk stops it: every later item would fail the same way
            store.requeue(item.id)
            raise DiskFullError(_disk_full_message(full, job)) from exc
        store.mark_failed(item.id, f"{type(exc).__name__}: {exc}")
        return
    except BaseException:
        store.requeue(item.id)
        raise
    if result.skipped is not None:
        store.mark_skipped(item.id, result.skipped)
        return
    store.mark_done(item.id, output=result.output, code=result.code,
                    code_source=result.code_source, faces=result.faces, extra=result.extra)


def disk_full(exc: BaseException) -> OSError | None:
    """The ENOSPC (or EDQUOT) error behind ``exc`` (itself, or what it was raised from), else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _disk_full_message(error: OSError, job: Job) -> str:
    """Which folder is full (the failing file's, else the job's output folder) and what to do."""
    output = Path(job.output)
    folder = Path(error.filename).parent if error.filename else (output if output.is_dir() else output.parent)
    return (f"no space left on {folder} ({os.strerror(error.errno)}); nothing half-written was kept: "
            f"free some space there, then run the same command again to carry on")


def _check_output(result: ItemResult) -> None:
    if not isinstance(result, ItemResult):
        raise JobError(f"process_item returned {type(result).__name__}, not an ItemResult")
    if result.output is not None and not Path(result.output).exists():
        raise JobError(f"the output {result.output} is missing after processing")


@contextmanager
def _progress_bar(store: JobStore, job: Job, enabled: bool) -> Iterator[tqdm]:
    counts = store.summary(job.id)
    total = sum(counts.values())
    finished = counts[DONE] + counts[FAILED] + counts[SKIPPED]
    bar = tqdm(total=total, initial=finished, disable=not enabled, unit="item",
               desc=f"{job.kind} {job.id}", dynamic_ncols=True)
    bar.set_postfix(done=counts[DONE], failed=counts[FAILED], refresh=False)
    try:
        yield bar
        if not bar.disable:
            _show_counts(bar, store, job.id)  # the last items' outcomes, whenever the counts were last read
    finally:
        bar.close()


def _advance(bar: tqdm, store: JobStore, job_id: str) -> None:
    """One more item on the bar; its done and failed counts are read again at most every
    ``COUNTS_EVERY_S`` (counting is a pass over the job's items: per item, a job of 100,000 photos
    would spend more time counting than claiming and marking)."""
    if bar.disable:
        return
    bar.update(1)
    now = time.perf_counter()
    if now - getattr(bar, "counted_at", 0.0) >= COUNTS_EVERY_S:
        bar.counted_at = now
        _show_counts(bar, store, job_id)


def _show_counts(bar: tqdm, store: JobStore, job_id: str) -> None:
    counts = store.summary(job_id)
    bar.set_postfix(done=counts[DONE], failed=counts[FAILED], refresh=False)
