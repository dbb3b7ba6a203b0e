"""Request limits: per-key requests per minute (fleet-wide, in Redis) and request body sizes (per process).

**Rate limit.** A token bucket per tenant in Redis, one Lua script using the Redis server's clock (``TIME``), so
every API process shares one bucket per tenant and no process clock matters. The bucket holds
``requests_per_minute`` tokens and refills at ``requests_per_minute / 60`` per second: a tenant may burst a
full minute's worth, then goes at the sustained rate. Keys live under ``imagejobs:ratelimit:`` (apart from
Celery's). If Redis does not answer the request is let through (logged): the limiter protects capacity, it
does not bill, and the budget check lives in the database.

**Body size.** ``BodySizeLimit`` answers 413 before the app runs when ``Content-Length`` is over the limit, and
cuts a chunked body off once it passes it (the app sees a disconnected client, its answer is replaced).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.http.errors import ApiError, error_response

log = logging.getLogger(__name__)

RATE_LIMIT_PREFIX = "imagejobs:ratelimit:"

#: KEYS[1] bucket; ARGV[1] capacity (tokens), ARGV[2] ms to refill the whole bucket.
#: Returns {1, 0} when a token was taken, {0, ms until one is available} otherwise.
TOKEN_BUCKET = """
local capacity = tonumber(ARGV[1])
local period_ms = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
local rate = capacity / period_ms
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate) + 1000)
return {allowed, wait_ms}
"""


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    #: whole seconds until a request would be allowed (0 when allowed)
    retry_after_s: int = 0


class RateLimiter:
    """Requests per minute per tenant, shared by every API process through Redis."""

    def __init__(self, redis: Redis, *, prefix: str = RATE_LIMIT_PREFIX, period_s: float = 60.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._period_ms = int(period_s * 1000)
        self._script = redis.register_script(TOKEN_BUCKET)

    def key_of(self, owner: str) -> str:
        return f"{self._prefix}{owner}"

    async def acquire(self, owner: str, *, per_minute: int) -> RateDecision:
        """Take one request from ``owner``'s bucket of ``per_minute`` tokens."""
        try:
            allowed, wait_ms = await self._script(keys=[self.key_of(owner)], args=[per_minute, self._period_ms])
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable (%s); letting the request through", type(exc).__name__)
            return RateDecision(allowed=True)
        if int(allowed) == 1:
            return RateDecision(allowed=True)
        return RateDecision(allowed=False, retry_after_s=max(1, math.ceil(int(wait_ms) / 1000)))

    async def close(self) -> None:
        await self._redis.aclose()


class RateLimitExceededError(ApiError):
    """HTTP 429 with ``Retry-After``."""

    def __init__(self, *, per_minute: int, retry_after_s: int) -> None:
        super().__init__(
            429,
            f"Rate limit reached for this API key: {per_minute} requests per minute. "
            f"Please try again in {retry_after_s}s.",
            code="rate_limit_exceeded",
        )
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(retry_after_s)}


async def rate_limit_response(_request: Request, exc: Exception) -> JSONResponse:
    """The OpenAI-style 429 with its ``Retry-After`` header (registered for ``RateLimitExceededError``)."""
    assert isinstance(exc, RateLimitExceededError)
    return error_response(exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers)


class BodySizeLimit:
    """ASGI middleware: 413 (OpenAI-style body) for request bodies over the limit of their content type."""

    def __init__(self, app: ASGIApp, *, max_json_bytes: int, max_multipart_bytes: int) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_multipart_bytes = max_multipart_bytes

    def limit_for(self, content_type: str) -> int:
        multipart = content_type.lower().lstrip().startswith("multipart/")
        return self.max_multipart_bytes if multipart else self.max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self.limit_for(headers.get("content-type", ""))
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            await _too_large(limit)(scope, receive, send)
            return
        guard = _StreamGuard(limit, receive, send)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if not guard.cut_off or guard.started:
                raise
        if guard.cut_off and not guard.started:
            await _too_large(limit)(scope, receive, send)


class _StreamGuard:
    """Counts body bytes as the app reads them; past the limit the app sees a disconnect and its answer is dropped."""

    def __init__(self, limit: int, receive: Receive, send: Send) -> None:
        self._limit = limit
        self._receive = receive
        self._send = send
        self._received = 0
        self.cut_off = False
        self.started = False

    async def receive(self) -> Message:
        if self.cut_off:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit:
                self.cut_off = True
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.cut_off and not self.started:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _too_large(limit: int) -> JSONResponse:
    return error_response(
        413,
        f"The request body is too large: the limit for this content type is {limit} bytes.",
        code="request_too_large",
        headers={"connection": "close"},
    )
