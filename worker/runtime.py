"""Everything a pipeline step needs, built once per worker process (the composition root fills it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from shared.config import Settings
from shared.db.tables import utcnow
from shared.queue import Route
from shared.storage import LocalStorage
from worker.providers.base import ImageProvider


class Sender(Protocol):
    """Sends id-only task messages (``shared.queue.TaskSender`` in production)."""

    def submit(self, job_id: str, *, route: Route, countdown_s: float = 0) -> None: ...

    def poll(self, job_id: str, poll_count: int, *, route: Route, countdown_s: float) -> None: ...

    def webhook(self, delivery_id: int, *, countdown_s: float = 0) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    providers: Mapping[str, ImageProvider]
    storage: LocalStorage
    sender: Sender
    #: announces a job id that reached a terminal state (Redis pub/sub for sync waiters)
    announce_done: Callable[[str], None]
    #: downloads result images from upstream URLs
    downloads: httpx.Client
    #: posts webhooks (no redirects, no proxies from the environment)
    webhook_http: httpx.Client
    clock: Callable[[], datetime] = field(default=utcnow)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()
        self.downloads.close()
        self.webhook_http.close()
        self.engine.dispose()
