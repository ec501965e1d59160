"""Where a job's items run: ``local`` (this process, one item after another: the runner's own loop)
or ``ray`` (the workers of a Ray cluster, ``ray_cluster``, imported only when asked for). The CLI opens
one executor per command and asks it, for each job, how to work through the items (``work_for``: None
means the runner's loop).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import UsageError
from ..jobs.runner import Work

EXECUTORS = ("local", "ray")
CHECK_FILES = ".archive-restore-check.*"  # what a Ray driver writes for its workers to find (``ray_cluster.driver``)


@dataclass(frozen=True)
class ExecutorSettings:
    """``--executor`` and its Ray options (picklable)."""

    kind: str = "local"
    address: str | None = None      # a Ray cluster; None: $RAY_ADDRESS, else a local Ray instance for the job
    workers: int | None = None       # None: as many as the cluster's CPUs (or GPUs) hold
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0

    def check(self) -> None:
        """UsageError for settings that make no sense together."""
        if self.kind not in EXECUTORS:
            raise UsageError(f"unknown executor {self.kind!r}; choose one of {', '.join(EXECUTORS)}")
        ray_only = {"--ray-address": self.address is not None, "--workers": self.workers is not None,
                    "--gpus-per-worker": self.gpus_per_worker != 0.0, "--cpus-per-worker": self.cpus_per_worker != 1.0}
        given = [name for name, set_ in ray_only.items() if set_]
        if self.kind == "local" and given:
            raise UsageError(f"{', '.join(given)} apply to --executor ray only")
        if self.workers is not None and self.workers < 1:
            raise UsageError("--workers must be at least 1")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0:
            raise UsageError("--gpus-per-worker must be >= 0 and --cpus-per-worker > 0")


class Executor(Protocol):
    def work_for(self, pipeline: Any) -> Work | None:
        """How ``pipeline.run`` works through its items: None for the runner's own loop."""


class LocalExecutor:
    """This process, one item after another: exactly the runner's loop."""

    def work_for(self, pipeline: Any) -> Work | None:
        clear_checks(pipeline)
        return None


def check_folders(pipeline: Any) -> list[Path]:
    """Where a Ray run of this job writes its check files: the output folder and the job's folder."""
    job = pipeline.job
    output = Path(job.output)
    return [output if job.kind == "photos" else output.parent, pipeline.store.job_dir(job.id)]


def clear_checks(pipeline: Any) -> None:
    """Remove the check files an earlier Ray run of this job left (a driver that died leaves them)."""
    for folder in check_folders(pipeline):
        for old in folder.glob(CHECK_FILES):
            old.unlink(missing_ok=True)


@contextmanager
def open_executor(settings: ExecutorSettings) -> Iterator[Executor]:
    """The executor for ``settings``, open for the block (a Ray connection is closed after it)."""
    settings.check()
    if settings.kind == "local":
        yield LocalExecutor()
        return
    from .ray_cluster.driver import RayExecutor

    with RayExecutor.connect(settings) as executor:
        yield executor
