"""Kling tasks whose lifecycle is computed from the clock, and the in-memory task store.

A task created at ``t0`` with generation time ``L`` is ``submitted`` during ``[t0, t0 + min(0.5, L/4))``,
``processing`` until ``t0 + L`` and then ``succeed`` (or ``failed``). A hanging task has ``L = inf`` and
stays ``processing``. No background threads: every query just reads the clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections import Counter
from dataclasses import dataclass

from emulator.kling.params import KlingImageRequest

SUBMITTED = "submitted"
PROCESSING = "processing"
SUCCEED = "succeed"
FAILED = "failed"
_MAX_SUBMITTED_S = 0.5


@dataclass(frozen=True, slots=True)
class KlingTask:
    task_id: str
    request: KlingImageRequest
    created_at: float  # unix seconds
    latency_s: float  # math.inf: never finishes
    failure_msg: str | None = None  # set: the task ends `failed` with this task_status_msg

    @property
    def ends_at(self) -> float:
        return self.created_at + self.latency_s

    def state_at(self, now: float) -> tuple[str, float]:
        """``(task_status, updated_at)`` at unix time ``now``; ``updated_at`` in unix seconds."""
        submitted_for = min(_MAX_SUBMITTED_S, self.latency_s / 4)
        elapsed = now - self.created_at
        if elapsed >= self.latency_s:
            return (FAILED if self.failure_msg else SUCCEED), self.ends_at
        if elapsed >= submitted_for:
            return PROCESSING, self.created_at + submitted_for
        return SUBMITTED, self.created_at

    def status_changes(self) -> list[float]:
        """When the status changes (unix seconds): created, ``processing`` (if any), the end (never, if hanging)."""
        submitted_for = min(_MAX_SUBMITTED_S, self.latency_s / 4)
        changes = [self.created_at]
        if self.latency_s > 0:
            changes.append(self.created_at + submitted_for)
            if math.isfinite(self.latency_s):
                changes.append(self.ends_at)
        return changes


class DuplicateExternalTaskIdError(ValueError):
    """``external_task_id`` is already used by another task of this account."""


class ConcurrencyExceededError(RuntimeError):
    """The account's in-flight slots of a resource pack (``n`` per image task) would exceed the limit."""


class TaskStore:
    """Tasks by ``task_id`` (insertion-ordered) plus an ``external_task_id`` index and slot accounting.

    ``external_task_id`` is unique per account (across endpoints). Slots are counted per resource pack
    (``request.pool``: image tasks and try-on tasks are separate packs), each up to the same limit.
    """

    def __init__(self, *, max_tasks: int = 100_000) -> None:
        self._max_tasks = max_tasks
        self._lock = threading.Lock()
        self._tasks: dict[str, KlingTask] = {}
        self._by_external: dict[str, str] = {}
        self._in_flight: list[tuple[float, str, str, int]] = []  # heap of (ends_at, task_id, pool, slots)
        self._slots: Counter[str] = Counter()

    def add(self, task: KlingTask, *, now: float, concurrency_limit: int | None) -> None:
        """Store ``task``; raises ``DuplicateExternalTaskIdError`` or ``ConcurrencyExceededError``."""
        external = task.request.external_task_id
        pool, slots = task.request.pool, task.request.slots
        with self._lock:
            if external is not None and external in self._by_external:
                raise DuplicateExternalTaskIdError(external)
            self._release_finished(now)
            if concurrency_limit is not None and self._slots[pool] + slots > concurrency_limit:
                raise ConcurrencyExceededError(f"{self._slots[pool]} of {concurrency_limit} {pool} slots in use")
            self._tasks[task.task_id] = task
            if external is not None:
                self._by_external[external] = task.task_id
            if task.ends_at > now:
                heapq.heappush(self._in_flight, (task.ends_at, task.task_id, pool, slots))
                self._slots[pool] += slots
            self._evict_oldest()

    def get(self, task_or_external_id: str, *, endpoint: str | None = None) -> KlingTask | None:
        """The task with this ``task_id`` or ``external_task_id`` (created by ``endpoint``, when given)."""
        with self._lock:
            task = self._tasks.get(task_or_external_id)
            if task is None and task_or_external_id in self._by_external:
                task = self._tasks.get(self._by_external[task_or_external_id])
        if task is not None and endpoint is not None and task.request.endpoint != endpoint:
            return None
        return task

    def page(self, page_num: int, page_size: int, *, endpoint: str | None = None) -> list[KlingTask]:
        """Page ``page_num`` (1-based) of the tasks (created by ``endpoint``, when given), newest first."""
        start = (page_num - 1) * page_size
        with self._lock:
            newest_first = reversed(self._tasks.values())
            tasks = (task for task in newest_first if endpoint is None or task.request.endpoint == endpoint)
            return list(itertools.islice(tasks, start, start + page_size))

    def slots_in_use(self, now: float, pool: str = "image") -> int:
        with self._lock:
            self._release_finished(now)
            return self._slots[pool]

    def clear(self) -> None:
        with self._lock:
            self._tasks.clear()
            self._by_external.clear()
            self._in_flight.clear()
            self._slots.clear()

    def _release_finished(self, now: float) -> None:
        while self._in_flight and self._in_flight[0][0] <= now:
            _, _, pool, slots = heapq.heappop(self._in_flight)
            self._slots[pool] -= slots

    def _evict_oldest(self) -> None:
        while len(self._tasks) > self._max_tasks:
            oldest = self._tasks.pop(next(iter(self._tasks)))
            if oldest.request.external_task_id is not None:
                self._by_external.pop(oldest.request.external_task_id, None)
