"""Waiting for jobs in sync requests: one Redis pub/sub listener per process, plus database re-checks.

The listener also remembers which jobs were announced done in the last ``remember_s`` seconds, so a waiter
whose job ended before it started waiting (a fast upstream) is answered without waiting for a re-check. The
database is asked only when there is something to confirm: once the job is announced done, whenever the
subscription (re)starts (announcements made while it was down are lost, so every waiter looks once), and
every ``recheck_s`` seconds as the last resort — never trusting a message alone, and not re-reading hundreds
of waiting jobs every few seconds when nothing says they changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.queue import JOB_DONE_CHANNEL

log = logging.getLogger(__name__)


class JobWaiter:
    def __init__(self, redis: Redis, *, recheck_s: float = 10.0, remember_s: float = 30.0) -> None:
        self._redis = redis
        self._recheck_s = recheck_s
        self._remember_s = remember_s
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        #: job id → loop time it was announced done, oldest first
        self._announced: OrderedDict[str, float] = OrderedDict()
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="job-waiter")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._redis.aclose()

    async def wait(
        self, job_id: str, *, timeout_s: float, is_done: Callable[[], Awaitable[bool]], check_first: bool = True
    ) -> bool:
        """True once ``is_done()`` holds, False if ``timeout_s`` passes first.

        ``is_done`` is asked when the job is announced done (before or during the wait), at least every
        ``recheck_s`` seconds, and, with ``check_first``, at once. A job this process has just enqueued needs no
        first check: nothing but its announcement (or the missed-message re-check) can tell that it ended.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        check = check_first
        while True:
            woken: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(job_id, set()).add(woken)
            try:
                if not check and job_id not in self._announced:
                    remaining = deadline - loop.time()
                    if remaining > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(woken, timeout=min(remaining, self._recheck_s))
            finally:
                self._forget(job_id, woken)
            if await is_done():
                return True
            if loop.time() >= deadline:
                return False
            self._announced.pop(job_id, None)  # announced yet not ended as we read it: wait for the next word
            check = False

    def _forget(self, job_id: str, future: asyncio.Future[None]) -> None:
        futures = self._waiting.get(job_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiting[job_id]

    def _wake(self, job_id: str) -> None:
        now = asyncio.get_running_loop().time()
        self._announced[job_id] = now
        self._announced.move_to_end(job_id)
        while self._announced:
            oldest, at = next(iter(self._announced.items()))
            if now - at <= self._remember_s:
                break
            del self._announced[oldest]
        for future in self._waiting.get(job_id, ()):
            if not future.done():
                future.set_result(None)

    def _wake_everyone(self) -> None:
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(JOB_DONE_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message["data"]
                            self._wake(data.decode() if isinstance(data, bytes) else str(data))
                        elif message.get("type") == "subscribe":
                            self._wake_everyone()  # announcements made while unsubscribed were missed
            except (RedisError, OSError):
                log.warning("job-done subscription lost; retrying in 1s (waiters fall back to the database)")
                await asyncio.sleep(1.0)
