"""Upstream calls in flight beside the Celery pool, so a 5–60 s sync generation does not hold a pool thread.

A submit step is cut in two at the upstream call. The pool thread claims the job (a compare-and-set in the
database, as before), hands the call to one of up to ``limit`` in-flight threads and is free for the next
message. An in-flight thread spends the call blocked in a socket read, which costs neither CPU nor the GIL.
When the call ends, what follows it (store the images, the terminal transaction, the announcement) runs on
one of ``finishers`` threads, so the database sees no more concurrent work than the pool itself would give
it, however many calls are in flight. When ``limit`` calls are already in flight (or finishing), the hand-off
blocks the pool thread until one ends: back-pressure onto the broker, never an unbounded backlog in memory.

Crash recovery does not change: the claim is committed before the call, and a job whose worker vanished
mid-call is re-claimed by the sweeper once its submit lease expires, exactly as when the pool thread made the
call itself.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from kombu.exceptions import KombuError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

T = TypeVar("T")
#: the call's outcome for the step that follows it: returns the call's value or raises what the call raised
Outcome = Callable[[], T]
#: ends a job that a step let an unexpected error escape from (``internal_error``)
CrashHandler = Callable[[str], None]


class InflightCalls:
    """Up to ``limit`` upstream calls in flight on threads of their own, their follow-ups on ``finishers`` threads.

    ``limit=0`` runs the call and its follow-up in the caller's thread, errors and all (unit tests, and a worker
    configured so).
    """

    def __init__(self, *, limit: int, finishers: int = 1, on_crash: CrashHandler | None = None) -> None:
        self._slots = threading.BoundedSemaphore(max(limit, 1))
        self._calls = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="inflight") if limit > 0 else None
        self._finishers = (
            ThreadPoolExecutor(max_workers=finishers, thread_name_prefix="inflight-finish") if limit > 0 else None
        )
        self._on_crash = on_crash
        self._lock = threading.Lock()
        self._in_flight = 0
        self._peak = 0

    @classmethod
    def inline(cls) -> InflightCalls:
        return cls(limit=0)

    @property
    def in_flight(self) -> int:
        """Calls started and not yet followed up."""
        return self._in_flight

    @property
    def peak(self) -> int:
        """The most calls in flight at once since this process started."""
        return self._peak

    def call(self, job_id: str, call: Callable[[], T], *, then: Callable[[Outcome[T]], None]) -> None:
        """Run ``call`` in flight, then ``then(outcome)``; blocks while ``limit`` calls are in flight already."""
        if self._calls is None:  # the caller's own guard handles whatever escapes, as for any step it runs
            then(_outcome_of(call))
            return
        self._slots.acquire()
        self._count(+1)
        try:
            # the job's log context (job id, request id, provider) follows the call into both pools
            self._calls.submit(contextvars.copy_context().run, self._run, job_id, call, then)
        except BaseException:
            self._count(-1)
            self._slots.release()
            raise

    def shutdown(self, *, wait: bool) -> None:
        for executor in (self._calls, self._finishers):
            if executor is not None:
                executor.shutdown(wait=wait)

    def _run(self, job_id: str, call: Callable[[], T], then: Callable[[Outcome[T]], None]) -> None:
        outcome = _outcome_of(call)
        assert self._finishers is not None
        try:
            self._finishers.submit(contextvars.copy_context().run, self._finish, job_id, outcome, then)
        except RuntimeError:  # the interpreter is exiting: no new work for the finishers, so finish here
            self._finish(job_id, outcome, then)

    def _finish(self, job_id: str, outcome: Outcome[T], then: Callable[[Outcome[T]], None]) -> None:
        try:
            self._follow_up(job_id, outcome, then)
        finally:
            self._slots.release()

    def _follow_up(self, job_id: str, outcome: Outcome[T], then: Callable[[Outcome[T]], None]) -> None:
        try:
            then(outcome)
        except (KombuError, RedisError):
            # every step commits before it publishes: the row says where the job is and the sweeper re-sends
            log.warning("job %s: broker gone after its upstream call, left to the sweeper", job_id, exc_info=True)
        except Exception:
            log.exception("job %s crashed after its upstream call", job_id)
            if self._on_crash is not None:
                try:
                    self._on_crash(job_id)
                except Exception:  # e.g. the database is down too: the sweeper ends or retries the job later
                    log.exception("job %s could not be failed after its crash", job_id)
        finally:
            self._count(-1)

    def _count(self, delta: int) -> None:
        with self._lock:
            self._in_flight += delta
            self._peak = max(self._peak, self._in_flight)


def _outcome_of(call: Callable[[], T]) -> Outcome[T]:
    """The call's outcome, kept for the follow-up (an exception is re-raised there, where it is handled)."""
    try:
        value = call()
    except BaseException as exc:  # handed over whole: the follow-up decides what it means
        error = exc

        def reraise() -> T:
            raise error

        return reraise
    return lambda: value
