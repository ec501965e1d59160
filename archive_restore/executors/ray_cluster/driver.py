"""``--executor ray``: a job's items on the workers of a Ray cluster.

The driver (this process) keeps the job store and claims the items; workers (``worker``,
one Ray actor each, holding the networks loaded once) restore them and write the outputs, renamed
into place; the driver checks each output is there before marking its item done
(``work``). Inputs, outputs and the jobs folder must be at the same paths on every node (a
shared or network filesystem): before each job every worker proves it can read the input and
write, and see the driver's files in, the output folder and the job's folder; else the job stops
with a message naming the node.

Faults: a worker killed mid-item -> its items go back to pending and another worker does them;
a node lost -> the same for its workers' items (replacements start where there is room); the driver
killed -> the same command resumes from the store (its workers die with it); Ray missing or the
address unreachable -> a one-line ClusterError saying what to install or check.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...compute.cpu import THREADS_ENV
from ...errors import ClusterError
from ...jobs.runner import Work
from ...jobs.store import one_line
from .. import CHECK_FILES, ExecutorSettings, check_folders, clear_checks
from .pool import WorkerPool
from .work import ClusterWork
from .worker import AccessCheck

CONNECT_TIMEOUT_S = 5.0
FORWARDED_ENV = "ARCHIVE_RESTORE_"  # the driver's settings the workers get (models folders, runtimes...)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError("--executor ray needs Ray, which is not installed here: "
                           "pip install 'archive-restore[ray]'") from None
    return ray


def check_reachable(address: str) -> None:
    """ClusterError at once when nothing answers at ``address`` (host:port, or ray://host:port)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray-address {address!r} is not HOST:PORT (the head node's address, port 6379 "
                           "unless `ray start --head --port` said otherwise)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): check that its head "
                           "node runs (`ray start --head` there) and that this machine reaches that address and "
                           "port") from None


class RayExecutor:
    """One connection to a Ray cluster for a command, and its pool of workers (started with the
    first job, kept for the next ones)."""

    def __init__(self, ray: Any, settings: ExecutorSettings, where: str) -> None:
        self.ray = ray
        self.settings = settings
        self.where = where
        self._pool: WorkerPool | None = None

    @classmethod
    @contextmanager
    def connect(cls, settings: ExecutorSettings) -> Iterator[RayExecutor]:
        ray = import_ray()
        address = settings.address or os.environ.get("RAY_ADDRESS") or "local"  # local: a new instance
        if address not in ("auto", "local"):
            check_reachable(address)
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if address == "local":
            options["include_dashboard"] = False
        where = "a local Ray instance" if address == "local" else f"the Ray cluster at {address}"
        try:
            ray.init(address=address, **options)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, OSError...
            if address == "local":
                raise ClusterError(f"cannot start a local Ray instance: {one_line(str(exc), 300)} (RAY_TMPDIR, else "
                                   "/tmp, must be a writable folder with free space; or give --ray-address of a "
                                   "running cluster)") from None
            raise ClusterError(f"cannot connect to {where}: {one_line(str(exc), 300)} (a cluster with token "
                               "authentication also needs RAY_AUTH_MODE=token here)") from None
        executor = cls(ray, settings, where)
        try:
            yield executor
        finally:
            if executor._pool is not None:
                executor._pool.close()
            ray.shutdown()

    def work_for(self, pipeline: Any) -> Work:
        """The job's loop on the cluster, after every worker checked the job's files."""
        pool, checks = self.pool(), access_checks(pipeline)
        nodes = pool.check(checks)
        hosts = sorted({n.host for n in nodes})
        pipeline.notify(f"{len(nodes)} Ray worker(s) on {len(hosts)} node(s) ({', '.join(hosts)}) of {self.where}")
        return ClusterWork(self.ray, pool, pipeline, checks)

    def pool(self) -> WorkerPool:
        if self._pool is None:
            resources = {"num_cpus": self.settings.cpus_per_worker, "num_gpus": self.settings.gpus_per_worker}
            self._pool = WorkerPool(self.ray, self._worker_count(), resources, _worker_env(self.settings))
        return self._pool

    def _worker_count(self) -> int:
        """``--workers``, else as many as the cluster's CPUs (GPUs, when asked for) hold; a count the
        cluster cannot hold is refused at once."""
        total = self.ray.cluster_resources()
        s = self.settings
        fits = int(total.get("CPU", 0) // s.cpus_per_worker)
        if s.gpus_per_worker:
            fits = min(fits, int(total.get("GPU", 0) // s.gpus_per_worker))
        count = s.workers or fits
        if count < 1 or count > fits:
            raise ClusterError(f"{count or 1} worker(s) of {s.cpus_per_worker:g} CPU and {s.gpus_per_worker:g} GPU "
                               f"do not fit in {self.where} ({total.get('CPU', 0):g} CPUs, "
                               f"{total.get('GPU', 0):g} GPUs); ask for fewer --workers or less per worker")
        return count


def access_checks(pipeline: Any) -> list[AccessCheck]:
    """What every worker must reach for this job: the input (read), the output folder and the job's
    folder (write, and see a file the driver wrote there: the same storage)."""
    clear_checks(pipeline)  # what a driver that died left
    checks = [AccessCheck("the input", pipeline.job.input)]
    for what, path in zip(("the output folder", "the job's folder"), check_folders(pipeline)):
        checks.append(AccessCheck(what, str(path), write=True, token=_token(path)))
    return checks


def _token(folder: Path) -> str:
    """A hidden empty file with a fresh random name written in ``folder`` (removed when the job's work
    ends; one a killed driver left is removed by the next run, on any executor); its name."""
    folder.mkdir(parents=True, exist_ok=True)
    name = CHECK_FILES.replace("*", secrets.token_hex(8))
    (folder / name).touch()
    return name


def _worker_env(settings: ExecutorSettings) -> dict[str, str]:
    """The driver's archive-restore settings (``ARCHIVE_RESTORE_*``) for the workers; torch threads =
    the worker's CPUs unless set."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    env.setdefault(THREADS_ENV, str(max(1, int(settings.cpus_per_worker))))
    return env
