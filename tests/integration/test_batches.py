"""``POST /v1/images/batches``: many requests, one call, all or nothing; progress; one signed webhook at the end.

The refusals run the API in-process against the real private Redis and a real SQLite file (nothing may be
left behind: no batch, no job row, no broker message). The end-to-end test runs the API, a real Celery worker
and beat (the sweeper finishes batches) against the emulator and checks the one ``batch.completed`` webhook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlmodel import Session, col, select
from standardwebhooks.webhooks import Webhook

from producer.http.app import create_app
from shared.db.tables import Job, JobBatch, JobEvent
from shared.queue import QueueName
from tests.conftest import make_settings
from tests.integration.harness import (
    Emulator,
    ProcessesFactory,
    Rows,
    WebhookReceiver,
    decode_kombu_message,
    wait_for_terminal,
)
from tests.support import API_KEY, OTHER_API_KEY, queued_count, queued_raw, tenant_webhook_secret, wait_until

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_KEY}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_API_KEY}"}
BATCHES = "/v1/images/batches"
PROMPT = "a lighthouse at dusk"
GPT = {"model": "gpt-image-1", "prompt": PROMPT}
KLING = {"model": "kling-image", "model_name": "kling-v2-1", "prompt": PROMPT, "aspect_ratio": "1:1"}


class InProcessApi:
    def __init__(self, client: TestClient, redis: Redis, rows: Rows) -> None:
        self.client, self.redis, self.rows = client, redis, rows

    def queue_lengths(self) -> dict[str, int]:
        return {queue.value: queued_count(self.redis, queue.value) for queue in QueueName}

    def submitted_job_ids(self) -> list[str]:
        ids = []
        for raw in queued_raw(self.redis, QueueName.SUBMIT.value):
            _envelope, body = decode_kombu_message(raw if isinstance(raw, bytes) else raw.encode())
            args, kwargs, _embed = body
            assert kwargs == {} and len(args) == 1, body  # id-only messages
            ids.append(args[0])
        return ids


@pytest.fixture
def api(isolated_redis_url: str, database_url: str, tmp_path: Path) -> Iterator[InProcessApi]:
    """The API in-process, on SQLite and on PostgreSQL."""
    settings = make_settings(redis_url=isolated_redis_url, database_url=database_url, files_dir=tmp_path / "files")
    redis = Redis.from_url(isolated_redis_url)
    rows = Rows(database_url)
    try:
        with TestClient(create_app(settings)) as client:
            yield InProcessApi(client, redis, rows)
    finally:
        rows.close()
        redis.close()


def assert_nothing_left_behind(api: InProcessApi) -> None:
    assert api.rows.count(JobBatch) == 0
    assert api.rows.count(Job) == 0
    assert api.rows.count(JobEvent) == 0
    assert api.queue_lengths() == {queue.value: 0 for queue in QueueName}


def test_a_batch_becomes_its_jobs_in_item_order_with_one_id_only_message_each(api: InProcessApi) -> None:
    items = [{**GPT, "prompt": f"{PROMPT} {i}"} if i % 2 else {**KLING, "prompt": f"{PROMPT} {i}"} for i in range(300)]

    response = api.client.post(BATCHES, json={"requests": items}, headers=AUTH)

    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["object"] == "image.generation.batch"
    assert (batch["status"], batch["total"], batch["ended"], batch["counts"]) == (
        "in_progress",
        300,
        0,
        {"queued": 300},
    )
    job_ids = batch["job_ids"]
    assert len(set(job_ids)) == 300
    with Session(api.rows.engine) as session:
        jobs = session.exec(select(Job).where(Job.batch_id == batch["id"]).order_by(col(Job.batch_index))).all()
        assert [job.id for job in jobs] == job_ids
        assert [job.batch_index for job in jobs] == list(range(300))
        assert [job.provider for job in jobs[:2]] == ["kling", "openai"]
        assert {job.status for job in jobs} == {"queued"}
    assert api.rows.count(JobEvent) == 300  # each job's first event
    assert sorted(api.submitted_job_ids()) == sorted(job_ids)  # one submit message per job, no more

    progress = api.client.get(f"{BATCHES}/{batch['id']}", headers=AUTH)
    assert progress.status_code == 200, progress.text
    assert progress.json() == batch
    # each job is an ordinary task of the same tenant
    task = api.client.get(f"/v1/images/generations/{job_ids[1]}", headers=AUTH)
    assert (task.status_code, task.json()["model"]) == (200, "gpt-image-1")


def test_another_tenant_does_not_see_a_batch(api: InProcessApi) -> None:
    batch = api.client.post(BATCHES, json={"requests": [GPT]}, headers=AUTH).json()

    for path in (f"{BATCHES}/{batch['id']}", f"{BATCHES}/no-such-batch"):
        answer = api.client.get(path, headers=OTHER_AUTH)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["param"] == "batch_id"


BAD_BATCHES = [
    pytest.param({"requests": [GPT, GPT, {"model": "gpt-image-1"}]}, "requests.2.prompt", id="item-without-prompt"),
    pytest.param({"requests": [GPT, {**GPT, "size": "999x999"}]}, "requests.1.size", id="item-with-a-bad-size"),
    pytest.param({"requests": [{**GPT, "colour": "red"}]}, "requests.0.colour", id="item-with-an-unknown-field"),
    pytest.param({"requests": [GPT, {**GPT, "n": "two"}]}, "requests.1.n", id="item-n-not-an-integer"),
    pytest.param({"requests": [GPT, {**GPT, "model": "dall-e-9"}]}, "requests.1.model", id="item-unknown-model"),
    pytest.param(
        {"requests": [{**GPT, "callback_url": "ftp://example.com/hook"}]},
        "requests.0.callback_url",
        id="item-with-a-bad-callback-url",
    ),
    pytest.param(
        {"requests": [{**GPT, "external_task_id": "order-1"}]},
        "requests.0.external_task_id",
        id="item-with-an-external-task-id",
    ),
    pytest.param({"requests": [GPT], "callback_url": "ftp://example.com/hook"}, "callback_url", id="bad-callback"),
    pytest.param({"requests": []}, "requests", id="no-requests"),
    pytest.param({"requests": [GPT] * 1001}, "requests", id="more-than-1000-requests"),
    pytest.param({}, "requests", id="missing-requests"),
    pytest.param({"requests": [GPT], "priority": "high"}, "priority", id="unknown-batch-field"),
]


@pytest.mark.parametrize(("body", "param"), BAD_BATCHES)
def test_a_bad_batch_is_refused_whole_naming_the_item_and_parameter(
    api: InProcessApi, body: dict[str, Any], param: str
) -> None:
    response = api.client.post(BATCHES, json=body, headers=AUTH)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    assert_nothing_left_behind(api)


def test_a_batch_of_1000_is_accepted(api: InProcessApi) -> None:
    response = api.client.post(BATCHES, json={"requests": [KLING] * 1000}, headers=AUTH)

    assert response.status_code == 202, response.text
    assert response.json()["total"] == 1000
    assert api.rows.count(Job) == 1000
    assert queued_count(api.redis, QueueName.SUBMIT.value) == 1000


def test_every_job_of_a_batch_runs_and_one_signed_webhook_reports_the_batch(
    processes: ProcessesFactory, sqlite_url: str, emulator: Emulator, webhook_receiver: Any, rows_for: Any
) -> None:
    # Given a worker, beat (the sweeper finishes batches; a short interval for the test) and a receiver
    emulator.set_latency(kling_s=0.5, openai_s=0.1)
    batch_receiver: WebhookReceiver = webhook_receiver()
    job_receiver: WebhookReceiver = webhook_receiver()
    stack = processes(sqlite_url, IMAGEJOBS_SWEEPER__INTERVAL_S="1")
    stack.worker()
    stack.beat()
    api = stack.api()
    rows: Rows = rows_for(sqlite_url)

    # When a batch of 40 jobs (one with a webhook of its own, one that the upstream refuses) is sent
    items: list[dict[str, Any]] = [{**(KLING if i % 2 else GPT), "prompt": f"{PROMPT} {i}"} for i in range(40)]
    items[3] = {**items[3], "callback_url": job_receiver.url}
    items[4] = {**items[4], "prompt": "[moderated] " + items[4]["prompt"]}
    created = httpx.post(f"{api}{BATCHES}", json={"requests": items, "callback_url": batch_receiver.url}, headers=AUTH)
    assert created.status_code == 202, created.text
    batch_id, job_ids = created.json()["id"], created.json()["job_ids"]

    # Then every job ends, and the batch shows it
    statuses = wait_for_terminal(rows, job_ids, timeout_s=120)
    assert statuses[job_ids[4]] == "failed", statuses
    assert [statuses[job_id] for job_id in job_ids if job_id != job_ids[4]] == ["succeeded"] * 39, statuses
    progress = httpx.get(f"{api}{BATCHES}/{batch_id}", headers=AUTH).json()
    assert (progress["status"], progress["total"], progress["ended"]) == ("completed", 40, 40)
    assert progress["counts"] == {"succeeded": 39, "failed": 1}

    # And exactly one batch.completed webhook arrives, signed with the tenant's secret, and no second one later
    wait_until(lambda: len(batch_receiver.received()) >= 1, timeout_s=30, what="the batch webhook")
    time.sleep(3)  # three more sweeps
    received = batch_receiver.received()
    assert len(received) == 1, [request.body for request in received]
    event = Webhook(tenant_webhook_secret()).verify(received[0].body, received[0].headers)
    assert received[0].headers["webhook-id"] == f"msg_{batch_id}"
    assert event["type"] == "batch.completed"
    assert (event["data"]["id"], event["data"]["status"], event["data"]["ended"]) == (batch_id, "completed", 40)
    assert event["data"]["job_ids"] == job_ids
    finished = httpx.get(f"{api}{BATCHES}/{batch_id}", headers=AUTH).json()
    assert finished["finished_at"] is not None
    # the item with its own callback also got its job's webhook
    wait_until(lambda: len(job_receiver.received()) == 1, timeout_s=30, what="the job's own webhook")
    assert json.loads(job_receiver.received()[0].body)["data"]["id"] == job_ids[3]
