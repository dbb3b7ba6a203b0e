"""Upstream calls in flight beside the Celery pool, so a 5–60 s sync generation does not hold a pool thread.

The Celery task only hands the job's submit step (claim → upstream call → finish) to one of up to ``limit``
threads of its own and returns, freeing its pool thread for the next message. Each step's thread spends its
time blocked in a socket read, which costs neither CPU nor the GIL. When ``limit`` steps are already in
flight, the hand-off blocks the pool thread until one ends: back-pressure onto the broker, never an unbounded
backlog in memory.

Crash recovery does not change: every step still commits its status change (compare-and-set) in the
database before and after the upstream call, and a job whose worker vanished mid-call is still found by the
sweeper (a ``queued`` job not dispatched recently is re-sent; a ``submitting`` one is re-claimed once its
lease expires).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)

#: one submit step, with its own guard against unexpected errors (an exception escaping it is only logged)
Step = Callable[[], None]


class InflightSteps:
    """Runs up to ``limit`` submit steps at once on threads of its own (``limit=0``: in the caller's thread)."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._slots = threading.BoundedSemaphore(max(limit, 1))
        self._executor = (
            ThreadPoolExecutor(max_workers=limit, thread_name_prefix="inflight") if limit > 0 else None
        )
        self._lock = threading.Lock()
        self._running = 0
        self._peak = 0

    @classmethod
    def inline(cls) -> InflightSteps:
        """Every step runs in the caller's thread (unit tests, and the shape of the code before this module)."""
        return cls(limit=0)

    @property
    def running(self) -> int:
        return self._running

    @property
    def peak(self) -> int:
        """The most steps that were in flight at once since this process started."""
        return self._peak

    def hand_off(self, step: Step) -> None:
        """Start ``step`` on an in-flight thread; blocks while ``limit`` steps are already running."""
        if self._executor is None:
            self._run(step)
            return
        self._slots.acquire()
        try:
            self._executor.submit(self._run_and_free, step)
        except BaseException:
            self._slots.release()
            raise

    def shutdown(self, *, wait: bool) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=False)

    def _run_and_free(self, step: Step) -> None:
        try:
            self._run(step)
        finally:
            self._slots.release()

    def _run(self, step: Step) -> None:
        with self._lock:
            self._running += 1
            self._peak = max(self._peak, self._running)
        try:
            step()
        except Exception:  # the step guards itself; this only keeps a bug from killing the thread silently
            log.exception("an in-flight submit step raised")
        finally:
            with self._lock:
                self._running -= 1
