"""The API process: ``uvicorn --factory producer.http.app:create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis.asyncio import Redis

from producer.http import files, openai_routes
from producer.http.context import ApiContext
from producer.http.errors import install_error_handlers
from producer.http.waiter import JobWaiter
from producer.keys import KeyRing
from shared.catalog import load_catalog
from shared.config import Settings, get_settings
from shared.db.engine import make_engine
from shared.egress import EgressPolicy
from shared.logs import configure_logging
from shared.queue import TaskSender, make_celery
from shared.storage import LocalStorage


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        waiter = JobWaiter(Redis.from_url(settings.redis_url, socket_connect_timeout=5))
        engine = make_engine(settings.database_url, pool_size=20)
        app.state.context = ApiContext(
            settings=settings,
            catalog=load_catalog(),
            engine=engine,
            sender=TaskSender(make_celery(settings, main="producer")),
            keys=KeyRing(key.get_secret_value() for key in settings.api_keys),
            storage=LocalStorage(settings.files_dir),
            waiter=waiter,
            egress=EgressPolicy.from_lists(hosts=settings.egress.allow_hosts, networks=settings.egress.allow_networks),
        )
        await waiter.start()
        try:
            yield
        finally:
            await waiter.stop()
            engine.dispose()

    app = FastAPI(title="imagejobs", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(openai_routes.router)
    app.include_router(files.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
