"""Readable fakes for unit tests: a scripted provider, a recording task sender, a runtime builder."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from PIL import Image

from shared.config import Settings
from shared.db.engine import make_engine
from shared.db.tables import utcnow
from shared.errors import ProviderError
from shared.queue import Route
from shared.storage import LocalStorage, open_storage
from worker.capacity import Capacity
from worker.providers.base import Accepted, Completed, JobSpec, PollResult, ResultImage, Submission, UpstreamState
from worker.runtime import Runtime


def png_bytes(width: int = 8, height: int = 8, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class FakeProvider:
    """Scripted upstream: ``submissions`` and ``polls`` are consumed in order (an exception is raised)."""

    name: str = "fake"
    submissions: list[Submission | ProviderError] = field(default_factory=list)
    polls: list[PollResult | ProviderError] = field(default_factory=list)
    submitted: list[JobSpec] = field(default_factory=list)
    polled: list[str] = field(default_factory=list)

    def submit(self, spec: JobSpec) -> Submission:
        self.submitted.append(spec)
        outcome = self.submissions.pop(0)
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    def poll(self, upstream_id: str) -> PollResult:
        self.polled.append(upstream_id)
        outcome = self.polls.pop(0)
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    def close(self) -> None:
        pass


def accepted(upstream_id: str = "up-1") -> Accepted:
    return Accepted(upstream_id=upstream_id)


def completed(count: int = 1) -> Completed:
    return Completed(images=tuple(ResultImage(data=png_bytes()) for _ in range(count)))


def pending() -> PollResult:
    return PollResult(state=UpstreamState.PENDING)


def succeeded(count: int = 1) -> PollResult:
    return PollResult(state=UpstreamState.SUCCEEDED, images=tuple(ResultImage(data=png_bytes()) for _ in range(count)))


@dataclass
class RecordingSender:
    """Records the task messages a pipeline step sends."""

    submits: list[tuple[str, float]] = field(default_factory=list)
    polls: list[tuple[str, int, float]] = field(default_factory=list)
    webhooks: list[tuple[int, float]] = field(default_factory=list)
    #: the route of every submit and poll, in order
    routes: list[Route] = field(default_factory=list)

    def submit(self, job_id: str, *, route: Route, countdown_s: float = 0) -> None:
        self.submits.append((job_id, countdown_s))
        self.routes.append(route)

    def submit_many(self, jobs: Sequence[tuple[str, Route]]) -> None:
        for job_id, route in jobs:
            self.submit(job_id, route=route)

    def poll(self, job_id: str, poll_count: int, *, route: Route, countdown_s: float) -> None:
        self.polls.append((job_id, poll_count, countdown_s))
        self.routes.append(route)

    def webhook(self, delivery_id: int, *, countdown_s: float = 0) -> None:
        self.webhooks.append((delivery_id, countdown_s))


@dataclass
class Clock:
    """A settable clock for pipeline tests."""

    now: datetime = field(default_factory=utcnow)

    def __call__(self) -> datetime:
        return self.now


def make_runtime(
    *,
    settings: Settings,
    database_url: str,
    files_dir: Path,
    providers: dict[str, FakeProvider],
    webhook_handler: Callable[[httpx.Request], httpx.Response] | None = None,
    clock: Clock | None = None,
) -> tuple[Runtime, RecordingSender, list[str]]:
    """A runtime over a real database, fake providers, a recording sender and in-memory HTTP."""
    sender = RecordingSender()
    announced: list[str] = []
    handler = webhook_handler or (lambda _request: httpx.Response(200))
    runtime = Runtime(
        settings=settings,
        engine=make_engine(database_url),
        providers=providers,
        storage=open_storage(settings) if settings.storage.is_s3() else LocalStorage(files_dir),
        sender=sender,
        announce_done=announced.append,
        downloads=httpx.Client(
            transport=httpx.MockTransport(lambda _request: httpx.Response(200, content=png_bytes()))
        ),
        webhook_http=httpx.Client(transport=httpx.MockTransport(handler)),
        capacity=Capacity.in_memory(settings),
        clock=clock or Clock(),
    )
    return runtime, sender, announced
