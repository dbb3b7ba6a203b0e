"""Unit-layer fixtures: a pipeline harness over a real (migrated) database, fake providers and no sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from producer.enqueue import enqueue_job
from shared.db import jobs_repo
from shared.db.tables import CostEntry, Job, JobImage, WebhookDelivery
from shared.inline_inputs import InlineInputs
from shared.jobs import ImageRequest
from tests.conftest import make_settings
from tests.fakes import Clock, FakeProvider, RecordingSender, make_runtime
from worker.providers.base import JobSpec, PollResult, Submission
from worker.runtime import Runtime

OWNER = "owner-1"
KLING_REQUEST: dict[str, Any] = {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a red fox in snow"}
OPENAI_REQUEST: dict[str, Any] = {
    "model": "gpt-image-1",
    "prompt": "a lighthouse at dusk",
    "quality": "high",
    "size": "1024x1024",
}


@dataclass
class Harness:
    """One worker runtime over a real database: fake upstreams, recorded task sends, a settable clock."""

    rt: Runtime
    sender: RecordingSender
    announced: list[str]
    clock: Clock
    kling: FakeProvider
    openai: FakeProvider
    files_dir: Path
    #: what the producer sent when enqueueing (kept apart from the worker's sends)
    enqueue_sender: RecordingSender = field(default_factory=RecordingSender)
    #: webhook POSTs the runtime made, in order
    webhook_requests: list[httpx.Request] = field(default_factory=list)
    #: statuses the webhook receiver answers, consumed in order (then 200)
    webhook_statuses: list[int] = field(default_factory=list)

    def enqueue(self, base: dict[str, Any] | None = None, **fields: Any) -> str:
        request = ImageRequest.model_validate({**(base if base is not None else KLING_REQUEST), **fields})
        with self.rt.session() as session:
            enqueued = enqueue_job(
                request,
                session=session,
                owner=OWNER,
                sender=self.enqueue_sender,
                now=self.clock.now,
                inputs=InlineInputs(self.rt.storage, max_chars=self.rt.settings.storage.inline_input_max_chars),
            )
        assert enqueued.created
        return enqueued.job.id

    def advance(self, seconds: float) -> None:
        self.clock.now += timedelta(seconds=seconds)

    def job(self, job_id: str) -> Job:
        with self.rt.session() as session:
            return jobs_repo.get_job(session=session, job_id=job_id)

    def events(self, job_id: str) -> list[tuple[str | None, str]]:
        with self.rt.session() as session:
            return [(e.from_status, e.to_status) for e in jobs_repo.list_events(session=session, job_id=job_id)]

    def images(self, job_id: str) -> list[JobImage]:
        with self.rt.session() as session:
            return list(jobs_repo.list_images(session=session, job_id=job_id))

    def costs(self, job_id: str) -> list[CostEntry]:
        with self.rt.session() as session:
            return list(session.exec(select(CostEntry).where(CostEntry.job_id == job_id)).all())

    def deliveries(self, job_id: str) -> list[WebhookDelivery]:
        with self.rt.session() as session:
            return list(jobs_repo.list_deliveries(session=session, job_id=job_id))

    def session(self) -> Session:
        return Session(self.rt.engine, expire_on_commit=False)

    def answer_webhook(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.webhook_requests.append(request)
        status = self.webhook_statuses.pop(0) if self.webhook_statuses else 200
        return httpx.Response(status)


HarnessFactory = Callable[..., Harness]


@pytest.fixture
def make_harness(tmp_path: Path) -> Iterator[HarnessFactory]:
    """Builds harnesses on a given database URL (settings overrides go to ``make_settings``); closes them."""
    built: list[Harness] = []

    def make(database_url: str, **settings_overrides: Any) -> Harness:
        files_dir = tmp_path / f"files-{len(built)}"
        clock = Clock()
        kling, openai = FakeProvider(name="kling"), FakeProvider(name="openai")
        holder: list[Harness] = []
        rt, sender, announced = make_runtime(
            settings=make_settings(**settings_overrides),
            database_url=database_url,
            files_dir=files_dir,
            providers={"kling": kling, "openai": openai},
            webhook_handler=lambda request: holder[0].answer_webhook(request),
            clock=clock,
        )
        harness = Harness(
            rt=rt, sender=sender, announced=announced, clock=clock, kling=kling, openai=openai, files_dir=files_dir
        )
        holder.append(harness)
        built.append(harness)
        return harness

    yield make
    for harness in built:
        harness.rt.close()


@pytest.fixture
def harness(make_harness: HarnessFactory, sqlite_url: str) -> Harness:
    """A harness on a fresh, migrated SQLite file."""
    return make_harness(sqlite_url)


class CrashingProvider:
    """An upstream call during which the worker dies: the exception escapes the pipeline step."""

    name = "kling"

    def __init__(self) -> None:
        self.calls = 0

    def submit(self, spec: JobSpec) -> Submission:
        self.calls += 1
        raise RuntimeError("worker killed mid-submit")

    def poll(self, upstream_id: str) -> PollResult:
        raise AssertionError(f"{upstream_id} must not be polled")

    def close(self) -> None:
        pass
