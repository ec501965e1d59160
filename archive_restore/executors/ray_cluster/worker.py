"""The worker side of ``--executor ray``: one ``PipelineWorker`` actor per worker.

A worker rebuilds the job's pipeline (``PhotoJob`` or ``VideoJob``, the same code the local executor
runs) from a picklable ``WorkerSpec`` and runs one item at a time: ``process(item)``; a photo's
analysis ``analyse_one(item)``; a video's analysis item ``analyse_shots()``. Its networks are loaded
once (an engine per set of options, kept across items and jobs). It never opens the job database: the
store it sees (``WorkerStore``) holds the job folders on shared storage and a snapshot of the items the
driver sent, and records the few item writes a pipeline makes while processing (``set_source``,
``update_item``) for the driver to replay. Outputs are written as locally: to a temporary name, renamed
into place.
"""
from __future__ import annotations

import os
import pickle
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import WorkerError
from ...jobs.runner import ItemResult, disk_full
from ...jobs.store import Item, Job
from ...pipeline.engine import EngineOptions
from ...pipeline.status import ANALYSIS

PHOTOS, VIDEO = "photos", "video"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to rebuild a job's pipeline; ``version`` changes when the driver sends a
    newer snapshot (a video's items, once its analysis is recorded)."""

    kind: str
    job: Job
    options: Any  # PhotoJobOptions or VideoJobOptions
    jobs_dir: Path
    items: tuple[Item, ...] = ()  # video: the job's items as the driver saw them
    codes: dict | None = None     # photos: folder and job codes (PhotoJob.shared_codes)
    version: int = 0
    analysis: bool = False        # photos: the items sent are to be analysed (faces and codes), not rendered


@dataclass(frozen=True)
class Node:
    """Where a worker runs."""

    host: str
    ip: str
    pid: int

    def __str__(self) -> str:
        return f"node {self.host} ({self.ip})"


@dataclass(frozen=True)
class AccessCheck:
    """A path a worker must read, or write; ``token``: a file the driver wrote in that folder, which
    the worker must see (the same storage, not a folder of the same name on its own disk)."""

    what: str   # "the input", "the output folder", ...
    path: str
    write: bool = False
    token: str | None = None

    def problem(self) -> str | None:
        """What is wrong with this path from here, or None."""
        path = Path(self.path)
        try:
            if not self.write:
                if path.is_dir():
                    os.listdir(path)
                else:
                    with open(path, "rb") as f:
                        f.read(1)
                return None
            if self.token is not None and not (path / self.token).is_file():
                return (f"does not see {self.what} {path} as the driver does (a file the driver wrote there is "
                        "missing): it must be the same shared folder on every node")
            probe = path / f".archive-restore-probe.{os.getpid()}.tmp"
            probe.write_bytes(b"probe")
            probe.unlink()
        except OSError as exc:
            return f"cannot {'write' if self.write else 'read'} {self.what} {path}: {exc.strerror or exc}"
        return None


@dataclass
class Outcome:
    """What a worker sends back for one item."""

    result: ItemResult | None = None
    error: BaseException | None = None
    shots: list | None = None  # a video's analysis: its shots, for ``add_shot_items`` on the driver
    writes: list[tuple[str, tuple, dict]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


class WorkerStore:
    """The job store as a worker sees it: job folders on shared storage, the items the driver sent,
    and item writes recorded (``writes``) for the driver to replay in order."""

    def __init__(self, jobs_dir: Path, items: tuple[Item, ...]) -> None:
        self.jobs_dir = jobs_dir
        self._items = items
        self.writes: list[tuple[str, tuple, dict]] = []

    def job_dir(self, job_id: str) -> Path:
        folder = self.jobs_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def items(self, job_id: str, status: str | None = None) -> list[Item]:
        return [i for i in self._items if i.job_id == job_id and (status is None or i.status == status)]

    def update_item(self, item_id: int, **fields: Any) -> None:
        self.writes.append(("update_item", (item_id,), fields))

    def set_source(self, item_id: int, **fields: Any) -> None:
        self.writes.append(("set_source", (item_id,), fields))


class PipelineWorker:
    """The Ray actor: rebuilds pipelines from specs and runs items; networks loaded once."""

    def __init__(self, env: dict[str, str]) -> None:
        os.environ.update(env)
        self._engines: dict[tuple, Any] = {}
        self._pipeline: Any = None
        self._spec_key: tuple | None = None
        self._notices: list[str] = []

    def check_access(self, checks: list[AccessCheck]) -> tuple[Node, list[str]]:
        """Where this worker runs, and what it cannot reach of ``checks``."""
        import ray

        node = Node(socket.gethostname(), ray.util.get_node_ip_address(), os.getpid())
        return node, [p for c in checks if (p := c.problem()) is not None]

    def run(self, spec: WorkerSpec, item: Item) -> Outcome:
        pipeline = self._pipeline_for(spec)
        outcome = Outcome()
        try:
            if spec.kind == VIDEO and item.key == ANALYSIS:
                outcome.shots, outcome.result = pipeline.analyse_shots()
            elif spec.analysis:
                pipeline.analyse_one(item)
            else:
                outcome.result = pipeline.process(item)
        except Exception as exc:  # recorded by the driver as the local runner records it
            outcome.error = portable(exc)
        finally:
            if pipeline._engine is not None:
                self._engines[engine_key(spec.options)] = pipeline._engine
        outcome.writes, pipeline.store.writes = pipeline.store.writes, []
        outcome.notices, self._notices = self._notices, []
        return outcome

    def _pipeline_for(self, spec: WorkerSpec) -> Any:
        key = (spec.job.id, spec.version)
        if self._spec_key != key:
            from ...pipeline.photo import PhotoJob
            from ...pipeline.video import VideoJob

            store = WorkerStore(spec.jobs_dir, spec.items)
            engine = self._engines.get(engine_key(spec.options))
            if engine is not None:  # made for an earlier job: its notices are said again for this one
                self._notices.extend(engine.notices)
            if spec.kind == PHOTOS:
                self._pipeline = PhotoJob(store, spec.job, spec.options, progress=False, notify=self._notices.append,
                                          _engine=engine, _codes=spec.codes)
            else:
                self._pipeline = VideoJob(store, spec.job, spec.options, progress=False, notify=self._notices.append,
                                          _engine=engine)
            self._spec_key = key
        return self._pipeline


def engine_key(options: Any) -> tuple:
    """The job options an engine is made from: jobs with equal ones share a worker's engine."""
    return tuple(vars(EngineOptions.of(options)).items())


def portable(exc: BaseException) -> BaseException:
    """``exc`` as the driver can receive it: a full disk as its OSError (the driver then stops the job,
    as the local runner does), an exception that does not pickle as a WorkerError with its text."""
    exc = disk_full(exc) or exc
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return WorkerError(f"{type(exc).__name__}: {exc}")
    return exc
