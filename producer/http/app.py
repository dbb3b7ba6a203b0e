"""The API process: ``uvicorn --factory producer.http.app:create_app``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from producer.accept_writer import AcceptWriter
from producer.http import (
    apimodels_routes,
    batches_routes,
    callbacks_routes,
    cancel_routes,
    delete_routes,
    edits_routes,
    events_routes,
    files,
    history_routes,
    kling_routes,
    models_routes,
    openai_routes,
    webhook_routes,
)
from producer.http.auth import Gate, RevocationListener
from producer.http.context import ApiContext
from producer.http.errors import install_error_handlers
from producer.http.limits import BodySizeLimit, RateLimiter, RateLimitExceededError, rate_limit_response
from producer.http.observability import RequestContext, metrics_router
from producer.http.ui import routes as ui
from producer.http.waiter import JobWaiter
from producer.keys import KeyDirectory, KeyRing, database_lookup
from shared.catalog import catalog_for
from shared.completion_latencies import ExpectedDurations
from shared.config import Settings, get_settings
from shared.db.engine import make_engine
from shared.egress import EgressPolicy
from shared.errors import ConfigurationError
from shared.logs import configure_logging
from shared.provider_modes import log_provider_report
from shared.queue import TaskSender, make_celery
from shared.storage import open_storage

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API; a bad setting or catalog file stops the process with one line naming it (no traceback)."""
    try:
        settings = settings or get_settings()
        catalog = catalog_for(settings)
    except ConfigurationError as exc:
        raise SystemExit(f"imagejobs: {exc}") from None
    configure_logging(log_format=settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        waiter = JobWaiter(Redis.from_url(settings.redis_url, socket_connect_timeout=5))
        engine = make_engine(settings.database_url, pool_size=20)
        sender = TaskSender(make_celery(settings, main="producer"))
        writer = AcceptWriter(engine, sender)
        app.state.context = ApiContext(
            settings=settings,
            catalog=catalog,
            engine=engine,
            sender=sender,
            keys=KeyRing(key.get_secret_value() for key in settings.api_keys),
            storage=open_storage(settings),
            waiter=waiter,
            egress=EgressPolicy.from_lists(hosts=settings.egress.allow_hosts, networks=settings.egress.allow_networks),
            writer=writer,
            expected=ExpectedDurations.from_url(settings.redis_url),
        )
        limiter = RateLimiter(Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2))
        keys = KeyDirectory(
            bootstrap=app.state.context.keys,
            lookup=database_lookup(engine),
            bootstrap_requests_per_minute=settings.limits.bootstrap_requests_per_minute,
            ttl_s=settings.limits.key_cache_ttl_s,
        )
        log_provider_report(settings, log)
        app.state.gate = Gate(keys=keys, limiter=limiter)
        revocations = RevocationListener(Redis.from_url(settings.redis_url, socket_connect_timeout=5), keys)
        await waiter.start()
        await writer.start()
        await revocations.start()
        try:
            yield
        finally:
            await revocations.stop()
            await writer.stop()
            await waiter.stop()
            await limiter.close()
            engine.dispose()

    app = FastAPI(title="imagejobs", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_exception_handler(RateLimitExceededError, rate_limit_response)
    app.add_middleware(
        BodySizeLimit,
        max_json_bytes=settings.limits.max_json_body_bytes,
        max_multipart_bytes=settings.limits.max_multipart_body_bytes,
    )
    app.add_middleware(RequestContext)  # added last: the outermost, so its id and access line cover everything
    app.include_router(events_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(models_routes.router)
    app.include_router(edits_routes.router)
    app.include_router(kling_routes.router)
    app.include_router(apimodels_routes.router)
    app.include_router(files.router)
    app.include_router(webhook_routes.router)
    app.include_router(cancel_routes.router)
    app.include_router(delete_routes.router)
    app.include_router(callbacks_routes.router)
    app.include_router(batches_routes.router)
    app.include_router(history_routes.router)
    app.include_router(ui.router)
    app.include_router(metrics_router(settings))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
