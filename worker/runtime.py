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

from shared.config import DEFAULT_CHANNEL, Settings
from shared.db.tables import utcnow
from shared.errors import ConfigurationError
from shared.queue import Route
from shared.storage import ObjectStorage
from worker.capacity import Capacity
from worker.fast_receivers import FastReceivers
from worker.inflight import InflightCalls
from worker.providers.base import ImageProvider, Pollable, as_pollable
from worker.scheduling.latency import LatencyBook


class Sender(Protocol):
    """Sends id-only task messages (``shared.queue.TaskSender`` in production)."""

    def submit(self, job_id: str, *, route: Route, countdown_s: float = 0) -> None: ...

    def poll(self, job_id: str, poll_count: int, *, route: Route, countdown_s: float) -> None: ...

    def webhook(self, delivery_id: int, *, countdown_s: float = 0) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    #: each provider's adapter for its default channel (the provider section's own credentials)
    providers: Mapping[str, ImageProvider]
    storage: ObjectStorage
    sender: Sender
    #: announces a job id that reached a terminal state (Redis pub/sub for sync waiters)
    announce_done: Callable[[str], None]
    #: downloads result images from upstream URLs
    downloads: httpx.Client
    #: posts webhooks (no redirects, no proxies from the environment)
    webhook_http: httpx.Client
    #: channels, limits and channel health (``Capacity.redis`` in a worker, ``Capacity.in_memory`` in tests)
    capacity: Capacity
    clock: Callable[[], datetime] = field(default=utcnow)
    #: adapters of the extra channels (``IMAGEJOBS_<PROVIDER>__CHANNELS``): provider → channel name → adapter
    channels: Mapping[str, Mapping[str, ImageProvider]] = field(default_factory=dict)
    #: recent completion latencies per upstream model: where poll schedules start (Redis in a worker)
    latency: LatencyBook = field(default_factory=LatencyBook.in_memory)
    #: where submit calls to upstreams run (a sync generation lasts seconds): beside the Celery pool in a worker
    inflight: InflightCalls = field(default_factory=InflightCalls.inline)
    #: webhook receivers that answered fast last time: sent the next webhook inline (``worker.fast_receivers``)
    fast_receivers: FastReceivers = field(default_factory=FastReceivers)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def adapter(self, provider: str, channel: str | None) -> ImageProvider:
        """The adapter of ``provider``'s ``channel`` (None: a job from before channels: the default one)."""
        try:
            if channel is None or channel == DEFAULT_CHANNEL:
                return self.providers[provider]
            return self.channels[provider][channel]
        except KeyError:
            raise ConfigurationError(f"{provider}: no channel {channel!r} is configured") from None

    def pollable(self, provider: str, channel: str | None) -> Pollable:
        """The adapter of an async upstream's channel, which a running job's poll asks."""
        return as_pollable(self.adapter(provider, channel))

    def close(self) -> None:
        self.inflight.shutdown(wait=True)
        for provider in self.providers.values():
            provider.close()
        for adapters in self.channels.values():
            for adapter in adapters.values():
                adapter.close()
        self.downloads.close()
        self.webhook_http.close()
        self.engine.dispose()
