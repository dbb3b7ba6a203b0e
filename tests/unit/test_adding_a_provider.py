"""Adding a provider: a toy upstream registered here, with its own catalog text, runs a job end to end through the
real pipeline, capacity and repository, with no edit anywhere else in the worker."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from producer.enqueue import enqueue_job
from shared.catalog.loading import parse_catalog
from shared.config import ProviderSettings, Settings
from shared.db import jobs_repo
from shared.jobs import ImageRequest, JobStatus
from tests.conftest import make_settings
from tests.fakes import RecordingSender, make_runtime, png_bytes
from worker.inputs import HttpImageLoader, ImageLoader
from worker.pipeline import poll_job, submit_job
from worker.providers.base import Accepted, JobSpec, PollResult, ProviderFacts, ResultImage, UpstreamState
from worker.providers.registry import build_providers, register, split_default, unregister
from worker.runtime import Runtime

TOY_CATALOG = """
[models."toy-image"]
provider = "toy"
upstream_model = "toy-v1"
currency = "USD"
price_source = "a toy price for the test"

[models."toy-image".params]
prompt = { type = "string", required = true, max_length = 100 }
n = { type = "integer", min = 1, max = 2, default = 1 }

[[models."toy-image".operations]]
name = "text2img"
price = { per = "image", amount = "0.01" }
"""


class ToyProvider:
    """An async upstream: a task is done on the second poll, with one image per requested ``n``."""

    name = "toy"

    def __init__(self, settings: ProviderSettings) -> None:
        assert settings.api_key is not None  # the section it declared reached it
        self.tasks: dict[str, int] = {}

    def submit(self, spec: JobSpec) -> Accepted:
        self.tasks[f"toy-{spec.job_id}"] = 0
        return Accepted(upstream_id=f"toy-{spec.job_id}")

    def poll(self, upstream_id: str) -> PollResult:
        self.tasks[upstream_id] += 1
        if self.tasks[upstream_id] < 2:
            return PollResult(state=UpstreamState.PENDING)
        return PollResult(state=UpstreamState.SUCCEEDED, images=(ResultImage(data=png_bytes()),))

    def close(self) -> None:
        return None


def _toy_section(settings: Settings) -> ProviderSettings:
    return ProviderSettings(api_key=SecretStr("toy-key"), base_url="http://toy.invalid")


def _toy_factory(settings: Settings, channel: str, images: ImageLoader) -> ToyProvider:
    return ToyProvider(_toy_section(settings).for_channel(channel))


@pytest.fixture
def toy_registered() -> Iterator[None]:
    register(ProviderFacts(name="toy", asynchronous=True, section=_toy_section), _toy_factory)
    yield
    unregister("toy")


@pytest.fixture
def runtime(toy_registered: None, sqlite_url: str, tmp_path: Path) -> Iterator[tuple[Runtime, RecordingSender]]:
    settings = make_settings(database_url=sqlite_url)
    rt, sender, _ = make_runtime(settings=settings, database_url=sqlite_url, files_dir=tmp_path, providers={})
    loader = HttpImageLoader(httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(404))), max_bytes=1)
    rt.providers, rt.channels = split_default(build_providers(settings, loader))  # what the worker's app does
    yield rt, sender
    rt.close()


def test_a_registered_toy_provider_runs_a_job_to_success(runtime: tuple[Runtime, RecordingSender]) -> None:
    rt, sender = runtime
    request = ImageRequest.model_validate({"model": "toy-image", "prompt": "a toy fox"})
    with rt.session() as session:
        enqueued = enqueue_job(
            request, session=session, owner="owner-1", sender=RecordingSender(), catalog=parse_catalog(TOY_CATALOG)
        )
    job_id = enqueued.job.id

    submit_job(job_id, rt=rt)
    assert [(polled, count) for polled, count, _ in sender.polls] == [(job_id, 0)]
    assert sender.routes[-1].provider == "toy"  # its own submit and poll queues
    poll_job(job_id, 0, rt=rt)  # pending
    poll_job(job_id, 1, rt=rt)  # done

    with rt.session() as session:
        job = jobs_repo.get_job(session=session, job_id=job_id)
        images = jobs_repo.list_images(session=session, job_id=job_id)
        cost = jobs_repo.get_cost(session=session, job_id=job_id)
    assert (job.status, job.provider, job.upstream_task_id) == (JobStatus.SUCCEEDED, "toy", f"toy-{job_id}")
    assert len(images) == 1
    assert cost is not None and cost.amount == Decimal("0.01")
