"""The driver's pool of Ray workers (``worker.PipelineWorker`` actors, one per worker).

Each worker gets at most ``DEPTH`` items at once (one running, one waiting), so that it never waits
for the driver. A worker starts by answering the job's access checks; it gets items only after
that. A worker that dies (its process killed, its node lost) is not restarted by Ray: the pool
hands its items back as ``Lost`` (the driver puts them back to pending, to be done elsewhere) and
starts a replacement, which answers the checks before it gets work.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ...errors import ClusterError, WorkerError
from ...jobs.store import Item, one_line
from .worker import AccessCheck, Node, Outcome, PipelineWorker

DEPTH = 2              # items sent to one worker at once
START_TIMEOUT_S = 180  # how long the pool waits for a worker to start when none is working
FAILED_STARTS = 3      # workers in a row that die before answering their checks: the pool gives up
HEALTH_S = 10.0        # while waiting for answers, the cluster's nodes are looked at this often


@dataclass(frozen=True)
class Lost:
    """An item whose worker died before answering."""

    reason: str


@dataclass
class Worker:
    actor: Any
    starting: Any = None           # the start checks' reply, until it comes
    node: Node | None = None
    tasks: dict[Any, Item] = field(default_factory=dict)


class WorkerPool:
    def __init__(self, ray: Any, count: int, resources: dict[str, float], env: dict[str, str]) -> None:
        self.ray = ray
        self.count = count
        self._actor = ray.remote(PipelineWorker).options(max_restarts=0, scheduling_strategy="SPREAD", **resources)
        self._env = env
        self._checks: list[AccessCheck] = []
        self.workers: list[Worker] = []
        self.lost = 0
        self.lost_pids: set[int] = set()  # the processes of workers lost (a lost node's may outlive it a while)
        self._failed_starts = 0

    # ---------------------------------------------------------------------------------- workers
    def check(self, checks: list[AccessCheck]) -> list[Node]:
        """Start the workers (the first time; replacements for dead ones) and have every one answer
        ``checks``; ClusterError naming the first node that cannot reach something, or when not all
        workers start in time. Returns their nodes."""
        self._checks = checks
        for worker in self.workers:
            if worker.starting is None:
                worker.starting = worker.actor.check_access.remote(checks)
        while len(self.workers) < self.count:
            self._start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while starting := [w.starting for w in self.workers if w.starting is not None]:
            left = min(HEALTH_S, max(0.0, deadline - time.monotonic()))
            ready, _ = self.ray.wait(starting, num_returns=1, timeout=left)
            if not ready and time.monotonic() < deadline:
                self.check_alive()
                continue
            if not ready:
                raise ClusterError(f"only {self.count - len(starting)} of {self.count} workers started in "
                                   f"{START_TIMEOUT_S} s: the cluster has no room for more (see `ray status`); "
                                   "ask for fewer --workers or fewer resources per worker")
            self._started(next(w for w in self.workers if w.starting == ready[0]), ready[0])
        return [w.node for w in self.workers]

    def _start(self) -> None:
        actor = self._actor.remote(self._env)
        self.workers.append(Worker(actor, starting=actor.check_access.remote(self._checks)))

    def _started(self, worker: Worker, ref: Any) -> None:
        try:
            node, problems = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            self._failed_starts += 1
            self._drop(worker)
            if self._failed_starts >= FAILED_STARTS:
                raise ClusterError(f"{FAILED_STARTS} workers in a row died as they started ({_first_line(exc)}): "
                                   "see the nodes' memory and logs (`ray status`, `ray logs`), then run the same "
                                   "command again") from None
            self._start()
            return
        worker.starting, worker.node, self._failed_starts = None, node, 0
        if problems:
            raise ClusterError(f"the worker on {node} {problems[0]}")

    def _drop(self, worker: Worker) -> list[Item]:
        """Forget a worker (killed, to be sure); returns the items it had."""
        self.workers.remove(worker)
        try:
            self.ray.kill(worker.actor, no_restart=True)
        except Exception:  # already gone
            pass
        return list(worker.tasks.values())

    def close(self) -> list[Item]:
        """Stop every worker; returns the items they still had."""
        items = []
        for worker in list(self.workers):
            items += self._drop(worker)
        return items

    # ------------------------------------------------------------------------------------ items
    def has_room(self) -> bool:
        return any(w.node is not None and len(w.tasks) < DEPTH for w in self.workers)

    @property
    def busy(self) -> bool:
        return any(w.tasks for w in self.workers)

    def submit(self, spec: Any, item: Item) -> None:
        """Send ``item`` to the started worker with the fewest items."""
        worker = min((w for w in self.workers if w.node is not None), key=lambda w: len(w.tasks))
        worker.tasks[worker.actor.run.remote(spec, item)] = item

    def wait(self) -> list[tuple[Item, Outcome | Lost]]:
        """Block until an item is answered (or lost with its worker; replacements that start on the
        way are handled); [] when only a start was."""
        refs = [ref for w in self.workers for ref in w.tasks]
        starting = [w.starting for w in self.workers if w.starting is not None]
        if not refs and not starting:
            return []
        working = any(w.node is not None for w in self.workers)
        deadline = None if working else time.monotonic() + START_TIMEOUT_S
        while True:  # in slices: a dead node's answers never come, and Ray may not say so
            left = HEALTH_S if deadline is None else min(HEALTH_S, max(0.0, deadline - time.monotonic()))
            ready, _ = self.ray.wait(refs + starting, num_returns=1, timeout=left)
            if ready or (deadline is not None and time.monotonic() >= deadline):
                break
            self.check_alive()
        if not ready:
            raise ClusterError(f"no worker is left and none could start in {START_TIMEOUT_S} s (a node lost and "
                               "no room for its workers elsewhere? see `ray status`); run the same command again "
                               "once the cluster has room")
        worker = next(w for w in self.workers if ready[0] == w.starting or ready[0] in w.tasks)
        if ready[0] == worker.starting:
            self._started(worker, ready[0])
            return []
        return self._answer(worker, ready[0])

    def check_alive(self) -> None:
        """ClusterError when no node of the cluster is alive any more (its raylets dead, or marked dead for
        missed heartbeats), or when its head no longer answers."""
        try:
            nodes = self.ray.nodes()
        except Exception as exc:  # the head (its GCS) is gone
            raise ClusterError(f"the Ray cluster's head no longer answers ({_first_line(exc)})") from None
        if not any(n.get("Alive") for n in nodes):
            dead = ", ".join(sorted({str(n.get("NodeManagerAddress", "?")) for n in nodes})) or "?"
            raise ClusterError(f"every node of the Ray cluster is dead (marked dead: {dead}; its raylet killed, "
                               "or heartbeats missed)")

    def _answer(self, worker: Worker, ref: Any) -> list[tuple[Item, Outcome | Lost]]:
        item = worker.tasks.pop(ref)
        try:
            return [(item, self.ray.get(ref))]
        except self.ray.exceptions.RayTaskError as exc:  # raised past the worker's own handling
            return [(item, Outcome(error=WorkerError(_first_line(exc))))]
        except self.ray.exceptions.RayError as exc:  # the worker died: its items are done elsewhere
            self.lost += 1
            if worker.node is not None:
                self.lost_pids.add(worker.node.pid)
            lost = Lost(f"the worker on {worker.node} died ({_first_line(exc)})")
            items = [item, *self._drop(worker)]
            self._start()
            return [(i, lost) for i in items]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return one_line(text[0] if text else type(exc).__name__, 300)

