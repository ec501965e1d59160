"""A Ray job's command watched from outside: never a silent exit when the cluster takes the process down.

When the Ray node the driver runs on dies (its raylet killed, the machine's memory gone), Ray ends the
driver process from its C++ core (exit 1, after its own log lines): no Python handler runs, so the
command cannot say anything itself. So ``run`` and ``video`` with ``--executor ray``, started from the
command line (``main``), run as a child of a small watching process: the child says on a pipe which job
it works on and, when it ends the Python way (done, or an error it printed), that it did. A child that
ends otherwise, the parent says so in one line: what happened, what is kept, what to run next.
"""
from __future__ import annotations

import atexit
import functools
import os
import signal
import subprocess
import sys
from pathlib import Path

import click

WATCH_ENV = "ARCHIVE_RESTORE_WATCH_FD"
ENDED = "ended"

ARGV: list[str] | None = None  # the command line as ``main`` received it (None in-process: tests, CliRunner)


def should_watch(executor) -> bool:
    """Whether this command runs under a watcher: a Ray executor, started from the command line, not yet
    watched."""
    return executor.kind == "ray" and ARGV is not None and WATCH_ENV not in os.environ


def watched(command):
    """Decorator of a command with an ``executor`` option: with Ray, from the command line, it runs under a
    watcher (``watch``), so that Ray ending the process from outside Python is said."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        if should_watch(kwargs["executor"]):
            raise click.exceptions.Exit(watch())
        return command(*args, **kwargs)

    return run


def watch() -> int:
    """Run this command again as a child and wait; its exit code, after the one line when it died silently."""
    read, write = os.pipe()
    env = {**os.environ, WATCH_ENV: str(write)}
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child, which handles it
    try:
        child = subprocess.Popen([sys.executable, "-m", "archive_restore", *ARGV], env=env, pass_fds=(write,))
        os.close(write)
        with os.fdopen(read) as said:
            lines = said.read().splitlines()
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    if ENDED not in lines and code != 0:
        jobs = [line.split(" ", 2)[1:] for line in lines if line.startswith("job ")]
        click.echo(f"error: {lost_message(jobs[-1] if jobs else None, code)}", err=True)
        return 1
    return code


def lost_message(job: list[str] | None, code: int) -> str:
    """What to say when the child was ended from outside Python: which job, how far it got, what next."""
    how = f"exit {code}" if code >= 0 else f"signal {-code}"
    if job is None:
        return (f"the process was ended by the Ray cluster before any job opened ({how}); nothing was started: "
                "check the cluster (`ray status`) and run the command again")
    job_id, jobs_dir = job
    done, total = _progress(job_id, Path(jobs_dir))
    return (f"the Ray cluster was lost while job {job_id[:12]} ran (the node was marked dead, or its raylet "
            f"died; the process was ended by Ray, {how}); {done} of {total} items are done and kept; "
            f"`archive-restore resume {job_id[:12]} --jobs-dir {jobs_dir}` goes on from there (on the cluster "
            "once it is back, or with --executor local)")


def _progress(job_id: str, jobs_dir: Path) -> tuple[int | str, int | str]:
    from ..jobs.store import DONE, JobStore

    try:
        with JobStore.open(jobs_dir) as store:
            items = store.items(job_id)
    except Exception:  # the store itself unreadable: the message still says what to run
        return "?", "?"
    return sum(i.status == DONE for i in items), len(items)


def watched_start(argv: list[str]) -> None:
    """``main``'s first step: keep the command line (a Ray job may run again under a watcher); in a watched
    child, say at its Python exit, whatever the outcome, that it ended the Python way."""
    global ARGV
    ARGV = list(argv)
    fd = os.environ.get(WATCH_ENV)
    if fd is not None:
        atexit.register(_say, fd, ENDED)


def tell_job(job_id: str, jobs_dir: Path) -> None:
    """In a watched child: the job it works on now."""
    fd = os.environ.get(WATCH_ENV)
    if fd is not None:
        _say(fd, f"job {job_id} {jobs_dir}")


def _say(fd: str, line: str) -> None:
    try:
        os.write(int(fd), f"{line}\n".encode())
    except OSError:  # the watcher is gone: nobody to tell
        pass
