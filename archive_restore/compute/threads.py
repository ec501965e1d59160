"""The networks' thread count on the CPU, re-decided while a long job runs, from the throughput it measures.

``cpu.cpu_threads`` decides once, at start-up, from a short probe: a load that passes just then (a test run,
another job finishing) would leave a quiet hour of work on one thread, and a load that comes later would
never be met. A :class:`ThreadGovernor` follows the job instead: the job reports the work it did (frames, or
output pixels for photos of different sizes) and the seconds it took; every ``every_s`` seconds the governor
tries another thread count for one measuring window and keeps it only when it did at least ``margin`` times
the work per second of the count before, measured just before.

The thread count never changes an output byte: every runtime ``auto`` may pick computes the same numbers on
1 and on 2 threads (``tests/test_threads.py`` compares them), so a job's identity still decides its outputs.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

WINDOW_S = 15.0  # seconds of work that make one throughput measurement
EVERY_S = 120.0  # seconds between tries of another thread count
MARGIN = 1.1     # another count is kept only when this much faster


class ThreadGovernor:
    """Re-decides ``threads`` (applied with ``apply``, torch's own setting by default) from ``record``'s
    reports; ``clock`` is injectable so that tests drive it without waiting."""

    def __init__(self, cores: int, threads: int, clock: Callable[[], float] = time.monotonic,
                 apply: Callable[[int], None] = torch.set_num_threads, every_s: float = EVERY_S,
                 window_s: float = WINDOW_S, margin: float = MARGIN):
        self.cores, self.threads, self.clock, self.apply = max(1, cores), max(1, threads), clock, apply
        self.every_s, self.window_s, self.margin = every_s, window_s, margin
        self.rates: dict[int, float] = {}  # the latest work per second measured at each thread count
        self.changes: list[tuple[int, int, str]] = []  # (from, to, the rates that decided it), kept counts only
        self._units = self._seconds = 0.0
        self._trial_from: int | None = None  # the count a running trial replaced
        self._last_trial = clock()
        self._tries = 0

    def record(self, units: float, seconds: float) -> int:
        """``units`` of work done in ``seconds`` at the current count; the count to use next."""
        self._units, self._seconds = self._units + units, self._seconds + seconds
        if self.cores == 1 or self._seconds < self.window_s:
            return self.threads
        rate = self._units / max(self._seconds, 1e-9)
        self._units = self._seconds = 0.0
        self.rates[self.threads] = rate
        if self._trial_from is not None:  # a trial's window: keep its count, or go back
            before, self._trial_from = self._trial_from, None
            self._last_trial = self.clock()
            if rate < self.rates.get(before, 0.0) * self.margin:
                self._set(before)
            else:
                self.changes.append((before, self.threads, f"{rate:.3g}/s against {self.rates[before]:.3g}/s"))
        elif self.clock() - self._last_trial >= self.every_s:
            self._trial_from = self.threads
            self._set(self._candidate())
        return self.threads

    def _candidate(self) -> int:
        """The next count to try: one fewer or one more in turn (within 1..cores), then the extremes."""
        near = [t for t in (self.threads - 1, self.threads + 1, 1, self.cores) if 1 <= t <= self.cores]
        options = list(dict.fromkeys(t for t in near if t != self.threads))
        self._tries += 1
        return options[(self._tries - 1) % len(options)]

    def _set(self, threads: int) -> None:
        if threads != self.threads:
            self.threads = threads
            self.apply(threads)


def governor_for(device: torch.device) -> ThreadGovernor | None:
    """A governor for a job's networks on ``device``: None on CUDA, and where ``$ARCHIVE_RESTORE_THREADS`` fixes
    the count (a Ray worker given its CPUs, tests), or on one core."""
    from .cpu import fixed_threads, usable_cores

    if device.type != "cpu" or fixed_threads() or usable_cores() == 1:
        return None
    return ThreadGovernor(usable_cores(), torch.get_num_threads())
