"""Bearer-token authentication and the per-key rate limit: the dependency that turns a request into its tenant.

``Owner`` (the tenant id, a ``str``) is what routes use; ``CurrentTenant`` gives the whole ``Tenant``. Both run
the same dependency once per request, so a request is authenticated and counted against its key's rate limit
once, whichever it asks for. See ``producer.keys`` for the key kinds and the cache (a revoked key stops working
as soon as ``RevocationListener`` hears of it, and within ``IMAGEJOBS_LIMITS__KEY_CACHE_TTL_S`` at worst),
``producer.http.limits`` for the limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from redis.asyncio import Redis
from redis.exceptions import RedisError

from producer.http.errors import ApiError
from producer.http.limits import RateLimiter, RateLimitExceededError
from producer.keys import KEY_REVOKED_CHANNEL, KeyDirectory, Revoked, Tenant

log = logging.getLogger(__name__)


class RevocationListener:
    """Drops a key from this process's ``KeyDirectory`` cache as soon as ``imagejobs keys revoke`` announces it.

    A lost connection is retried every few seconds; meanwhile the cache TTL still bounds a revoked key's life.
    """

    def __init__(self, redis: Redis, keys: KeyDirectory, *, retry_s: float = 2.0) -> None:
        self._redis = redis
        self._keys = keys
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="key-revocations")

    async def stop(self) -> None:
        # bounded: a pub/sub connection cancelled mid-read can take its time to unwind, and shutdown must not wait
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2.0)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._redis.aclose(), timeout=2.0)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(KEY_REVOKED_CHANNEL)
                    async for message in pubsub.listen():
                        data = message.get("data")
                        if isinstance(data, bytes):
                            self._keys.forget(data.decode())
            except (RedisError, OSError) as exc:
                log.warning("key revocation channel unavailable (%s); the cache TTL applies", type(exc).__name__)
                await asyncio.sleep(self._retry_s)


@dataclass(frozen=True, slots=True)
class Gate:
    """What the dependency needs: the key directory and the limiter (``app.state.gate``, set in the lifespan)."""

    keys: KeyDirectory
    limiter: RateLimiter


def bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Missing bearer token in the Authorization header.", code="missing_api_key")
    return token.strip()


async def require_tenant(request: Request) -> Tenant:
    """The request's tenant; 401 for a missing, unknown or revoked key, 429 past the key's rate limit."""
    token = bearer_token(request)
    gate: Gate = request.app.state.gate
    known, resolution = gate.keys.peek(token)
    if not known:
        resolution = await run_in_threadpool(gate.keys.resolve, token)
    if isinstance(resolution, Revoked):
        raise ApiError(401, "This API key has been revoked.", code="invalid_api_key")
    if resolution is None:
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
    per_minute = resolution.requests_per_minute
    if per_minute is not None:
        decision = await gate.limiter.acquire(resolution.owner, per_minute=per_minute)
        if not decision.allowed:
            raise RateLimitExceededError(per_minute=per_minute, retry_after_s=decision.retry_after_s)
    return resolution


async def require_owner(tenant: Annotated[Tenant, Depends(require_tenant)]) -> str:
    return tenant.owner


Owner = Annotated[str, Depends(require_owner)]
CurrentTenant = Annotated[Tenant, Depends(require_tenant)]
