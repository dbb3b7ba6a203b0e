"""Waiting for jobs in sync requests: one Redis pub/sub listener per process, plus database re-checks.

A pub/sub message may be missed (Redis restart, a subscription not yet active), so a waiter never trusts
it alone: it re-checks the database when woken and at least every ``recheck_s`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.queue import JOB_DONE_CHANNEL

log = logging.getLogger(__name__)


class JobWaiter:
    def __init__(self, redis: Redis, *, recheck_s: float = 2.0) -> None:
        self._redis = redis
        self._recheck_s = recheck_s
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="job-waiter")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._redis.aclose()

    async def wait(self, job_id: str, *, timeout_s: float, is_done: Callable[[], Awaitable[bool]]) -> bool:
        """True once ``is_done()`` holds, False if ``timeout_s`` passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            woken: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(job_id, set()).add(woken)
            try:
                if await is_done():
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken, timeout=min(remaining, self._recheck_s))
            finally:
                self._forget(job_id, woken)

    def _forget(self, job_id: str, future: asyncio.Future[None]) -> None:
        futures = self._waiting.get(job_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiting[job_id]

    def _wake(self, job_id: str) -> None:
        for future in self._waiting.get(job_id, ()):
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
            except (RedisError, OSError):
                log.warning("job-done subscription lost; retrying in 1s (waiters fall back to the database)")
                await asyncio.sleep(1.0)
