"""BFL tasks whose status is computed from the clock, and the store that counts in-flight tasks.

A task created at ``t0`` with generation time ``L`` is ``Pending`` (with ``progress`` growing from 0 to 1)
until ``t0 + L``, then ``Ready`` (or ``Error`` / ``Content Moderated``). A task whose request was moderated
is ``Request Moderated`` from the start and never held a slot. A hanging task has ``L = inf``. Every
unfinished task holds one of the account's in-flight slots (BFL: 24 per account); no background threads.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass
from typing import Final, Literal

from emulator.bfl.params import BflRequest

PENDING: Final = "Pending"
READY: Final = "Ready"
ERROR: Final = "Error"
REQUEST_MODERATED: Final = "Request Moderated"
CONTENT_MODERATED: Final = "Content Moderated"
TASK_NOT_FOUND: Final = "Task not found"

Outcome = Literal["Ready", "Error", "Request Moderated", "Content Moderated"]


@dataclass(frozen=True, slots=True)
class BflTask:
    task_id: str
    request: BflRequest
    created_at: float  # unix seconds
    latency_s: float  # math.inf: never finishes
    outcome: Outcome = READY

    @property
    def ends_at(self) -> float:
        return self.created_at if self.outcome == REQUEST_MODERATED else self.created_at + self.latency_s

    def status_at(self, now: float) -> tuple[str, float | None]:
        """``(status, progress)`` at unix time ``now``; progress only while ``Pending``."""
        if now >= self.ends_at:
            return self.outcome, None
        return PENDING, round(min(0.99, max(0.0, (now - self.created_at) / self.latency_s)), 2)


class TooManyActiveTasksError(RuntimeError):
    """The account already has ``limit`` unfinished tasks."""


class BflTaskStore:
    """Tasks by id (insertion-ordered, oldest evicted past ``max_tasks``) and the in-flight count."""

    def __init__(self, *, max_tasks: int = 100_000) -> None:
        self._max_tasks = max_tasks
        self._lock = threading.Lock()
        self._tasks: dict[str, BflTask] = {}
        self._in_flight: list[tuple[float, str]] = []  # heap of (ends_at, task_id)

    def add(self, task: BflTask, *, now: float, concurrency_limit: int | None) -> None:
        """Store ``task``; raises ``TooManyActiveTasksError`` when every slot is taken."""
        with self._lock:
            self._release_finished(now)
            if concurrency_limit is not None and len(self._in_flight) >= concurrency_limit:
                raise TooManyActiveTasksError(f"{len(self._in_flight)} of {concurrency_limit} tasks active")
            self._tasks[task.task_id] = task
            if task.ends_at > now:
                heapq.heappush(self._in_flight, (task.ends_at, task.task_id))
            while len(self._tasks) > self._max_tasks:
                self._tasks.pop(next(iter(self._tasks)))

    def get(self, task_id: str) -> BflTask | None:
        with self._lock:
            return self._tasks.get(task_id)

    def active(self, now: float) -> int:
        with self._lock:
            self._release_finished(now)
            return len(self._in_flight)

    def clear(self) -> None:
        with self._lock:
            self._tasks.clear()
            self._in_flight.clear()

    def _release_finished(self, now: float) -> None:
        while self._in_flight and self._in_flight[0][0] <= now:
            heapq.heappop(self._in_flight)
