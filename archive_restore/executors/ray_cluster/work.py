"""The driver's loop for ``--executor ray``: a job's items through the pool's workers.

The job store stays the single source of truth on the driver (SQLite, one writer): the loop claims
items, sends them to the workers and records each answer with the runner's own ``process_one``
(failures, a full disk, the output checked to be in place before the item is marked done). A photo
job's faces and codes are found on the workers first (``_analyse``); the folder and job codes are then
made here from the stored results, and the renders follow. An item
whose worker died goes back to pending and is done by another worker; one that took
``MAX_LOSSES`` workers down with it is failed. Items that must run where the job's files are
gathered (a video's ``finish``: join and audio) run here, once every other item is done.
"""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ...errors import ClusterError
from ...jobs.runner import ItemResult, process_one, remove_stale_temps
from ...jobs.store import DONE, PENDING, Item, Job
from ...pipeline.status import FINISH
from .pool import Lost, WorkerPool
from .worker import ANALYSIS, PHOTOS, VIDEO, AccessCheck, Outcome, WorkerSpec

MAX_LOSSES = 3


class ClusterWork:
    """``work(job, advance)`` for ``run_job``: one job's items through ``pool``."""

    def __init__(self, ray: Any, pool: WorkerPool, pipeline: Any, checks: list[AccessCheck]) -> None:
        self.ray = ray
        self.pool = pool
        self.checks = checks  # what workers must reach; their token files are removed when the job ends
        self.pipeline = pipeline
        self.store = pipeline.store
        self.kind = pipeline.job.kind
        self._version = 0
        self._spec: Any = None
        self._said: set[str] = set()
        self._losses: Counter[int] = Counter()

    def __call__(self, job: Job, advance: Callable[[], None]) -> None:
        lost_before = self.pool.lost
        held: Item | None = None  # a driver item, waiting for the workers' items to be done
        try:
            if self.kind == PHOTOS:
                self._analyse(job)
            self._send_spec(job)
            while True:
                while held is None and self.pool.has_room():
                    item = self.store.claim_next(job.id)
                    if item is None:
                        break
                    if self.kind == VIDEO and item.key == FINISH:
                        held = item
                    else:
                        self.pool.submit(self._spec, item)
                if self.pool.busy:
                    for item, outcome in self.pool.wait():
                        self._record(job, item, outcome, advance)
                elif held is not None:
                    self._run_here(job, held, advance)
                    held = None
                elif self.store.summary(job.id)[PENDING]:
                    self.pool.wait()  # items wait, no worker is started: wait for a replacement
                else:
                    return
        except BaseException as exc:
            for item in [*self.pool.close(), *([held] if held else [])]:  # their answers no longer count
                self.store.requeue(item.id)
            if isinstance(exc, ClusterError):  # the cluster gave out: say what is kept and what goes on
                items = self.store.items(job.id)
                done = sum(i.status == DONE for i in items)
                raise ClusterError(f"{exc}; {done} of {len(items)} items are done and kept; `archive-restore "
                                   f"resume {job.id[:12]}` goes on from there") from None
            raise
        finally:
            for check in self.checks:
                if check.token is not None:
                    (Path(check.path) / check.token).unlink(missing_ok=True)
            if lost := self.pool.lost - lost_before:
                self.pipeline.notify(f"{lost} Ray worker(s) died during the job; what they had in hand went back "
                                     "to pending and was done by the others")
                # a worker killed mid-write leaves its temporary file: gone with its process
                output = Path(job.output)
                gone = self.pool.lost_pids  # a lost node's worker may still run a while after its node is gone
                remove_stale_temps(output if output.is_dir() else output.parent, recursive=output.is_dir(), gone=gone)
                remove_stale_temps(self.store.job_dir(job.id), gone=gone)

    def _analyse(self, job: Job) -> None:
        """The photos' faces and codes, on the workers: each photo not analysed yet is sent as it is (not
        claimed: it stays pending), and the writes its analysis made are replayed here. The first photo
        goes alone: its worker makes the job's engine, which chooses the precision and records it in the
        job's folder (``pipeline.precision``); every other worker then reads that record, so that all
        compute alike. The folder and job codes are then made here from the stored results, as locally."""
        todo = deque(self.pipeline.to_analyse())
        if not todo:
            return
        spec = self.ray.put(WorkerSpec(PHOTOS, job, self.pipeline.options, self.store.jobs_dir, analysis=True,
                                       version=self._version))
        self._version += 1
        primed = False
        with tqdm(total=len(todo), desc="analysing faces", unit="photo", disable=not self.pipeline.progress) as bar:
            while todo or self.pool.busy:
                while todo and self.pool.has_room() and (primed or not self.pool.busy):
                    self.pool.submit(spec, todo.popleft())
                for item, outcome in self.pool.wait():
                    if isinstance(outcome, Lost):
                        self._losses[item.id] += 1
                        if self._losses[item.id] < MAX_LOSSES:
                            todo.appendleft(item)
                            continue
                        self.store.update_item(item.id, faces=0, extra={
                            "analysis_error": f"{outcome.reason}; {MAX_LOSSES} workers died analysing it"})
                    else:
                        self._apply(outcome)
                        primed = True
                    bar.update(1)
        self._losses.clear()
        self.pipeline._codes = None  # made again from what the workers found

    def _apply(self, outcome: Outcome) -> None:
        """A worker's notices said once, its item writes replayed here, its error raised."""
        for notice in outcome.notices:
            if notice not in self._said:
                self._said.add(notice)
                self.pipeline.notify(notice)
        for name, args, kwargs in outcome.writes:
            getattr(self.store, name)(*args, **kwargs)
        if outcome.error is not None:
            raise outcome.error

    def _send_spec(self, job: Job) -> None:
        """The worker spec (photos: the folder and job codes; video: the items) in Ray's object store."""
        p = self.pipeline
        if self.kind == PHOTOS:
            spec = WorkerSpec(PHOTOS, job, p.options, self.store.jobs_dir, codes=p.shared_codes(),
                              version=self._version)
        else:
            spec = WorkerSpec(VIDEO, job, p.options, self.store.jobs_dir, items=tuple(self.store.items(job.id)),
                              version=self._version)
        self._spec = self.ray.put(spec)
        self._version += 1

    def _run_here(self, job: Job, item: Item, advance: Callable[[], None]) -> None:
        """Run a driver item, unless a lost item went back to pending meanwhile (that one goes first)."""
        if self.store.summary(job.id)[PENDING]:
            self.store.requeue(item.id)
            return
        process_one(self.store, item, self.pipeline.process, job)
        advance()

    def _record(self, job: Job, item: Item, outcome: Outcome | Lost, advance: Callable[[], None]) -> None:
        if isinstance(outcome, Lost):
            self._losses[item.id] += 1
            if self._losses[item.id] < MAX_LOSSES:
                self.store.requeue(item.id)
                return
            self.store.mark_failed(item.id, f"{outcome.reason}; {MAX_LOSSES} workers died working on it")
            advance()
            return
        process_one(self.store, item, lambda _: self._accept(outcome), job)
        advance()
        if self.kind == VIDEO and item.key == ANALYSIS:
            self._send_spec(job)  # the workers need the render items the analysis added
        elif self.kind == VIDEO and item.key != FINISH and outcome.result is not None:
            self.pipeline.render_bar().update(item.extra.get("frames", 0))

    def _accept(self, outcome: Outcome) -> ItemResult:
        """The worker's answer applied here (``_apply``), a video analysis' shots added as items; the result
        (``process_one`` checks its output is there)."""
        self._apply(outcome)
        if outcome.shots is not None:
            self.pipeline.add_shot_items(outcome.shots)
        return outcome.result
