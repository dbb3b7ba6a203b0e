"""A real Celery worker (threads pool) and beat as subprocesses, the emulator over HTTP, SQLite and PostgreSQL.

Jobs are enqueued in-process exactly as the API does (``enqueue_job`` with a ``TaskSender``); the test then
only watches the database, the stored files and a local webhook receiver.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from PIL import Image
from sqlmodel import Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from producer.enqueue import enqueue_job
from producer.keys import owner_id
from shared.catalog import load_catalog
from shared.db.tables import Job
from shared.egress import EgressPolicy
from shared.jobs import ImageRequest
from shared.queue import TaskSender, make_celery
from tests.conftest import make_settings
from tests.integration.harness import (
    Emulator,
    ProcessesFactory,
    ReceivedRequest,
    Rows,
    WebhookReceiver,
    wait_for_delivered,
    wait_for_requests,
    wait_for_terminal,
)
from tests.support import API_KEY, tenant_webhook_secret, wait_until

pytestmark = pytest.mark.integration

KLING_EVENTS = ["queued", "submitting", "running", "succeeded"]
#: the test's webhook receiver listens on loopback, which the SSRF guard refuses unless allow-listed
LOOPBACK_RECEIVERS = EgressPolicy.from_lists(hosts=[], networks=["127.0.0.0/8"])
OPENAI_EVENTS = ["queued", "submitting", "succeeded"]


def kling_price(model_name: str) -> Decimal:
    return load_catalog().models["kling-image"].variants[model_name].prices["text2img"].amount


def gpt_image_cost(job: Job) -> Decimal:
    """What a GPT image job costs: the usage the upstream reported, at gpt-image-1's token rates."""
    price = load_catalog().models["gpt-image-1"].operations[0].price
    assert price is not None and price.usage is not None and job.upstream_report is not None
    cost = price.usage.cost(job.upstream_report["usage"])
    assert cost is not None and cost > 0
    return cost


@dataclass
class Pipeline:
    """A running worker + beat, and an in-process producer sending to the same Redis and database."""

    rows: Rows
    sender: TaskSender
    files_dir: Path

    def enqueue(self, body: dict[str, Any], *, api_key: str = API_KEY) -> str:
        with Session(self.rows.engine, expire_on_commit=False) as session:
            enqueued = enqueue_job(
                ImageRequest.model_validate(body),
                session=session,
                owner=owner_id(api_key),
                sender=self.sender,
                egress=LOOPBACK_RECEIVERS,
            )
        assert enqueued.created
        return enqueued.job.id

    def assert_stored_pngs(self, job_id: str, count: int) -> None:
        images = self.rows.images(job_id)
        assert [image.index for image in images] == list(range(count))
        for image in images:
            path = self.files_dir / image.storage_key
            data = path.read_bytes()
            assert image.content_type == "image/png"
            assert image.byte_size == len(data)
            with Image.open(io.BytesIO(data)) as picture:
                picture.load()  # the whole file decodes
                assert picture.format == "PNG"
                assert picture.size == (image.width, image.height)


@pytest.fixture
def pipeline(
    database_url: str,
    processes: ProcessesFactory,
    rows_for: Any,
    isolated_redis_url: str,
    files_dir: Path,
    emulator: Emulator,
) -> Iterator[Pipeline]:
    emulator.set_latency(kling_s=1.0, openai_s=0.2)
    stack = processes(database_url)
    stack.worker()
    stack.beat()
    settings = make_settings(redis_url=isolated_redis_url, database_url=database_url, files_dir=files_dir)
    celery: Celery = make_celery(settings, main="test-producer")
    try:
        yield Pipeline(rows=rows_for(database_url), sender=TaskSender(celery), files_dir=files_dir)
    finally:
        celery.close()


def test_kling_and_openai_jobs_succeed_with_events_images_and_one_cost_row(
    pipeline: Pipeline, emulator: Emulator
) -> None:
    kling_id = pipeline.enqueue({"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a red fox", "n": 2})
    gpt_id = pipeline.enqueue(
        {"model": "gpt-image-1", "prompt": "a blue whale", "n": 2, "quality": "high", "size": "1024x1024"}
    )

    statuses = wait_for_terminal(pipeline.rows, [kling_id, gpt_id], timeout_s=60)

    assert statuses == {kling_id: "succeeded", gpt_id: "succeeded"}
    rows = pipeline.rows

    kling = rows.job(kling_id)
    assert rows.event_path(kling_id) == KLING_EVENTS
    assert kling.poll_count >= 1
    assert kling.upstream_task_id
    assert kling.submit_attempts == 1
    assert kling.error_code is None
    assert kling.finished_at is not None and kling.next_poll_at is None and kling.lease_until is None
    pipeline.assert_stored_pngs(kling_id, 2)
    [kling_cost] = rows.costs(kling_id)
    assert (kling_cost.per, kling_cost.quantity, kling_cost.currency) == ("image", 2, "credits")
    assert Decimal(kling_cost.unit_price) == kling_price("kling-v2-1")
    assert Decimal(kling_cost.amount) == kling_price("kling-v2-1") * 2
    assert kling_cost.owner == owner_id(API_KEY)

    gpt = rows.job(gpt_id)
    assert rows.event_path(gpt_id) == OPENAI_EVENTS
    assert gpt.poll_count == 0 and gpt.upstream_task_id is None
    pipeline.assert_stored_pngs(gpt_id, 2)
    assert {(image.width, image.height) for image in rows.images(gpt_id)} == {(1024, 1024)}
    [gpt_cost] = rows.costs(gpt_id)
    assert (gpt_cost.per, gpt_cost.quantity, gpt_cost.currency) == ("image", 2, "USD")
    assert Decimal(gpt_cost.amount) == gpt_image_cost(gpt) and gpt_cost.basis == "usage"
    assert gpt.upstream_report is not None
    assert gpt.upstream_report["usage"]["output_tokens"] == 2 * 4160  # two high 1024x1024 images

    stats = emulator.stats()
    assert stats["kling"]["submits"] == 1
    assert stats["kling"]["queries"] >= kling.poll_count
    assert stats["openai"]["requests"] == 1


def test_failed_upstream_jobs_end_failed_without_cost_or_images(pipeline: Pipeline) -> None:
    async_failure = pipeline.enqueue({"model": "kling-image", "model_name": "kling-v2-1", "prompt": "[fail] a fox"})
    moderated = pipeline.enqueue({"model": "kling-image", "model_name": "kling-v2-1", "prompt": "[moderated] a fox"})
    control = pipeline.enqueue({"model": "gpt-image-1", "prompt": "a whale", "quality": "low"})

    statuses = wait_for_terminal(pipeline.rows, [async_failure, moderated, control], timeout_s=60)

    assert statuses == {async_failure: "failed", moderated: "failed", control: "succeeded"}
    rows = pipeline.rows
    failed = rows.job(async_failure)
    assert failed.error_code == "upstream_failed"
    assert failed.error_message
    assert failed.poll_count >= 1
    assert rows.event_path(async_failure) == ["queued", "submitting", "running", "failed"]
    rejected = rows.job(moderated)
    assert rejected.error_code == "content_policy_violation"
    assert rows.event_path(moderated) == ["queued", "submitting", "failed"]
    for job_id in (async_failure, moderated):
        assert rows.costs(job_id) == []
        assert rows.images(job_id) == []
        assert rows.job(job_id).finished_at is not None
    assert [cost.job_id for cost in rows.costs()] == [control]
    assert Decimal(rows.costs(control)[0].amount) == gpt_image_cost(rows.job(control))


def test_broken_poll_answers_never_fail_a_running_job(pipeline: Pipeline) -> None:
    # Given Kling jobs whose every poll is answered by a proxy's broken page (emulator `[poll-answer=NAME]`)
    answers = ("html-502", "text-429", "empty-200", "truncated-json")
    job_ids = {
        answer: pipeline.enqueue(
            {"model": "kling-image", "model_name": "kling-v2-1", "prompt": f"a fox [poll-answer={answer}]"}
        )
        for answer in answers
    }
    rows = pipeline.rows

    # When the real worker has polled each of them again and again
    wait_until(
        lambda: all(rows.job(job_id).poll_count >= 2 for job_id in job_ids.values()),
        timeout_s=60,
        what="two polls of every job",
    )

    # Then every job is still running, and none ended on an answer that says nothing about its task
    for answer, job_id in job_ids.items():
        job = rows.job(job_id)
        assert (job.status, job.error_code) == ("running", None), (answer, job.error_message)
        assert rows.event_path(job_id) == ["queued", "submitting", "running"]


def verified_payload(request: ReceivedRequest) -> dict[str, Any]:
    """The body, verified against the Standard Webhooks signature (raises if it does not verify)."""
    payload: dict[str, Any] = Webhook(tenant_webhook_secret()).verify(request.body, request.headers)
    return payload


def test_webhooks_are_signed_delivered_and_retried_with_the_same_id(pipeline: Pipeline, webhook_receiver: Any) -> None:
    steady: WebhookReceiver = webhook_receiver()
    flaky: WebhookReceiver = webhook_receiver(statuses=(500, 500))
    failing: WebhookReceiver = webhook_receiver()
    ok_id = pipeline.enqueue(
        {"model": "gpt-image-1", "prompt": "a whale", "quality": "low", "callback_url": steady.url}
    )
    retried_id = pipeline.enqueue(
        {"model": "gpt-image-1", "prompt": "a whale", "quality": "medium", "callback_url": flaky.url}
    )
    failed_id = pipeline.enqueue(
        {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "[moderated]", "callback_url": failing.url}
    )

    wait_for_terminal(pipeline.rows, [ok_id, retried_id, failed_id], timeout_s=60)
    for job_id in (ok_id, retried_id, failed_id):
        wait_for_delivered(pipeline.rows, job_id, timeout_s=30)

    # one delivery, verified, describing the finished job
    [request] = wait_for_requests(steady, 1, timeout_s=5)
    assert request.path == "/hooks/imagejobs"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == f"msg_{ok_id}"
    payload = verified_payload(request)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == ok_id and payload["data"]["status"] == "succeeded"
    assert len(payload["data"]["data"]) == 1
    assert Decimal(payload["data"]["cost"]["amount"]) == gpt_image_cost(pipeline.rows.job(ok_id))
    assert payload["data"]["cost"]["basis"] == "usage"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(request.body, request.headers)
    tampered = request.body.replace(b"succeeded", b"failed")
    with pytest.raises(WebhookVerificationError):
        Webhook(tenant_webhook_secret()).verify(tampered, request.headers)
    [delivery] = pipeline.rows.deliveries(ok_id)
    assert (delivery.attempt, delivery.state, delivery.response_status) == (1, "delivered", 200)
    assert delivery.webhook_id == f"msg_{ok_id}" and delivery.event_type == "job.succeeded"

    # 500, 500, then 200: three attempts of one event, every one signed, all with the same webhook-id
    attempts = flaky.received()
    assert [attempt.status for attempt in attempts] == [500, 500, 200]
    assert {attempt.headers["webhook-id"] for attempt in attempts} == {f"msg_{retried_id}"}
    bodies = [verified_payload(attempt) for attempt in attempts]
    assert {body["data"]["id"] for body in bodies} == {retried_id}
    assert attempts[0].at < attempts[1].at < attempts[2].at
    deliveries = pipeline.rows.deliveries(retried_id)
    assert [(d.attempt, d.state, d.response_status) for d in deliveries] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "delivered", 200),
    ]
    assert {d.webhook_id for d in deliveries} == {f"msg_{retried_id}"}

    # a failed job is announced too
    [failure] = failing.received()
    failure_payload = verified_payload(failure)
    assert failure_payload["type"] == "job.failed"
    assert failure_payload["data"]["error"]["code"] == "content_policy_violation"
    assert failure_payload["data"]["cost"] is None
    assert json.loads(failure.body)["data"]["id"] == failed_id
