"""The API's request id, access log and request metrics (one ASGI middleware), and ``GET /metrics``."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from redis import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics
from shared.config import Settings
from shared.logs import bound, request_id_from
from shared.queue import PRIORITY_LEVELS, all_queue_names

log = logging.getLogger("imagejobs.access")

REQUEST_ID_HEADER = "X-Request-ID"


class RequestContext:
    """Binds ``request_id`` (the client's ``X-Request-ID`` or a fresh one, echoed in the response) for everything
    the request logs or enqueues, then writes one access line and counts the request by its route template.

    Plain ASGI (not ``BaseHTTPMiddleware``), so streamed responses pass straight through
    (https://www.starlette.io/middleware/#pure-asgi-middleware). The Authorization header is never logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(REQUEST_ID_HEADER.lower().encode())
        request_id = request_id_from(raw.decode("latin-1") if raw is not None else None)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        with bound(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                _access(scope, status, time.perf_counter() - started)


def _access(scope: Scope, status: int, seconds: float) -> None:
    route: Any = scope.get("route")
    template = getattr(route, "path", None) or "unmatched"  # the template, never the ids in the path
    method = str(scope.get("method", ""))
    if template != "/metrics":
        metrics.HTTP_REQUESTS.labels(method=method, route=template, status=str(status)).inc()
        metrics.HTTP_SECONDS.labels(method=method, route=template).observe(seconds)
    log.info(
        "%s %s %d", method, template, status,
        extra={"method": method, "path": template, "status": status, "duration_ms": round(seconds * 1000, 1)},
    )  # fmt: skip


def metrics_router(settings: Settings) -> APIRouter:
    """``GET /metrics``: not behind tenant keys; with ``IMAGEJOBS_METRICS__TOKEN`` set, only for that bearer."""
    router = APIRouter()
    token = settings.metrics.token.get_secret_value() if settings.metrics.token is not None else None
    depth = (
        metrics.QueueDepth(
            Redis.from_url(settings.broker(), socket_connect_timeout=2, socket_timeout=2),
            all_queue_names(),
            sorted(PRIORITY_LEVELS.values()),
        )
        if settings.broker_kind() == "redis"
        else None
    )

    @router.get("/metrics", include_in_schema=False)
    def scrape(request: Request) -> Response:  # sync: the queue depth is read with a blocking Redis client
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return Response(status_code=401, headers={"WWW-Authenticate": "Bearer"})
        body = metrics.scrape([depth] if depth is not None else [])
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
