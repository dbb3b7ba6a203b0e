"""Cancel and priority end to end: the API, a Celery worker (threads pool) and beat as subprocesses, the emulator
over HTTP, a private Redis, SQLite (and PostgreSQL for the running cancel).

- A running Kling job that is cancelled is never polled again, never billed, its webhook says ``job.cancelled``
  (verified with ``standardwebhooks``) and ``GET`` shows it cancelled.
- A queued job that is cancelled before a worker takes it never reaches the emulator, in every dialect.
- ``priority``: a bad value is a 400 naming it in every dialect; a ``high`` job is submitted before a backlog of
  ``low`` ones waiting in the same provider queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from redis import Redis
from standardwebhooks.webhooks import Webhook

from shared.queue import JOB_DONE_CHANNEL
from tests.integration.harness import (
    Emulator,
    Processes,
    ProcessesFactory,
    Rows,
    WebhookReceiver,
    fixed,
    wait_for_requests,
)
from tests.support import API_KEY, OTHER_API_KEY, queued_count, tenant_webhook_secret, wait_until

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_KEY}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_API_KEY}"}
GENERATIONS = "/v1/images/generations"
KLING = "/kling/v1/images/generations"
APIMODELS = "/api/v1/images/generations"
KLING_BODY: dict[str, Any] = {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a lighthouse at dusk"}
#: kombu's Redis list of a queue's messages at one priority step (step 0, ``high``, is the bare queue name)
LOW_LIST, HIGH_LIST = "submit.kling\x06\x166", "submit.kling"


@dataclass
class Stack:
    processes: Processes
    api: httpx.Client
    rows: Rows
    redis: Redis
    emulator: Emulator

    def submit(self, body: dict[str, Any], *, path: str = GENERATIONS) -> str:
        """Creates an async task and returns its id (every dialect)."""
        extra = {"async": True} if path == GENERATIONS else {}
        response = self.api.post(path, json={**body, **extra})
        assert response.status_code in (200, 202), response.text
        data = response.json()
        if path == GENERATIONS:
            return str(data["id"])
        return str(data["data"]["task_id"] if path == KLING else data["data"]["taskId"])

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.api.get(f"{GENERATIONS}/{task_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_for_status(self, task_id: str, status: str, *, timeout_s: float) -> dict[str, Any]:
        wait_until(lambda: self.task(task_id)["status"] == status, timeout_s=timeout_s, what=f"{task_id} {status}")
        return self.task(task_id)


@pytest.fixture
def stack_for(
    processes: ProcessesFactory, rows_for: Callable[[str], Rows], isolated_redis_url: str, emulator: Emulator
) -> Iterator[Callable[[str], Stack]]:
    """``stack_for(database_url)`` → the API running (no worker yet: a test starts it when it wants)."""
    made: list[tuple[httpx.Client, Redis]] = []

    def make(database_url: str) -> Stack:
        group = processes(database_url)
        client = httpx.Client(base_url=group.api(), headers=AUTH, timeout=30)
        redis = Redis.from_url(isolated_redis_url)
        made.append((client, redis))
        return Stack(processes=group, api=client, rows=rows_for(database_url), redis=redis, emulator=emulator)

    try:
        yield make
    finally:
        for client, redis in made:
            client.close()
            redis.close()


# ---------------------------------------------------------------------------------------------------- cancel


def test_a_running_kling_job_cancelled_is_not_polled_not_billed_and_its_webhook_says_cancelled(
    database_url: str, stack_for: Callable[[str], Stack], webhook_receiver: Callable[..., WebhookReceiver]
) -> None:
    # Given a Kling job running upstream (the emulator finishes it 3 s after submit), with a callback URL
    receiver = webhook_receiver()
    stack = stack_for(database_url)
    stack.emulator.configure({"kling": {"latency": fixed(3.0)}})
    stack.processes.worker(concurrency=4)
    stack.processes.beat()  # the sweeper runs every second: it must leave the cancelled job alone
    job_id = stack.submit({**KLING_BODY, "callback_url": receiver.url})
    running = stack.wait_for_status(job_id, "running", timeout_s=30)
    running_at = time.monotonic()
    upstream_id = stack.rows.job(job_id).upstream_task_id
    assert upstream_id

    # When the caller cancels it
    response = stack.api.post(f"{GENERATIONS}/{job_id}/cancel")

    # Then the answer is the task object, cancelled, with no images and no cost
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert (cancelled["id"], cancelled["status"], cancelled["cost"], cancelled["data"]) == (
        job_id,
        "cancelled",
        None,
        [],
    )
    assert cancelled["finished_at"] is not None
    assert cancelled["poll_count"] >= running["poll_count"]

    # and the webhook says job.cancelled, signed for the tenant
    [request] = wait_for_requests(receiver, 1, timeout_s=20)
    event = Webhook(tenant_webhook_secret()).verify(request.body, request.headers)
    assert event["type"] == "job.cancelled"
    assert (event["data"]["id"], event["data"]["status"], event["data"]["cost"]) == (job_id, "cancelled", None)
    assert request.headers["webhook-id"] == f"msg_{job_id}"

    # When the upstream task finishes (3 s) and the time of the job's first polls passes (≈ 4 s, then +2 s …)
    time.sleep(1.0)  # a poll that was in flight at the cancel has landed by now
    queries_after_cancel = stack.emulator.stats()["kling"]["queries"]
    time.sleep(max(0.0, running_at + 8.0 - time.monotonic()))

    # Then nothing asked the upstream again although it has a result, and the job stays cancelled: no cost,
    # no images, no other webhook
    assert stack.emulator.stats()["kling"]["queries"] == queries_after_cancel
    assert stack.emulator.kling_task(upstream_id)["task_status"] == "succeed"
    assert stack.task(job_id)["status"] == "cancelled"
    job = stack.rows.job(job_id)
    assert (job.status, job.poll_count, job.error_code) == ("cancelled", cancelled["poll_count"], None)
    assert stack.rows.event_path(job_id) == ["queued", "submitting", "running", "cancelled"]
    assert stack.rows.costs(job_id) == []
    assert stack.rows.images(job_id) == []
    assert [delivery.event_type for delivery in stack.rows.deliveries(job_id)] == ["job.cancelled"]
    assert len(receiver.received()) == 1

    # and it cannot be cancelled twice (409 naming its status), nor by another key (404)
    again = stack.api.post(f"{GENERATIONS}/{job_id}/cancel")
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "task_already_ended"
    assert "cancelled" in again.json()["error"]["message"]
    other = stack.api.post(f"{GENERATIONS}/{job_id}/cancel", headers=OTHER_AUTH)
    assert other.status_code == 404, other.text


def test_queued_jobs_cancelled_before_a_worker_takes_them_never_reach_the_upstream(
    sqlite_url: str, stack_for: Callable[[str], Stack]
) -> None:
    # Given three queued Kling jobs, one per dialect, and no worker running
    stack = stack_for(sqlite_url)
    openai_id = stack.submit(KLING_BODY)
    kling_id = stack.submit({"prompt": "a red fox", "external_task_id": "order-1"}, path=KLING)
    apimodels_id = stack.submit({"model": "kling-v3-image", "prompt": "a red fox"}, path=APIMODELS)
    assert queued_count(stack.redis, "submit.kling") == 3

    # When each is cancelled in its own dialect (another key first: not found, in the dialect's envelope)
    assert stack.api.post(f"{GENERATIONS}/{openai_id}/cancel", headers=OTHER_AUTH).status_code == 404
    not_found = stack.api.post(f"{KLING}/{kling_id}/cancel", headers=OTHER_AUTH)
    assert (not_found.status_code, not_found.json()["code"]) == (404, 1203)
    not_found = stack.api.post(f"{APIMODELS}/cancel", params={"task_id": apimodels_id}, headers=OTHER_AUTH)
    assert (not_found.status_code, not_found.json()["code"], not_found.json()["data"]) == (404, 404, None)

    done = stack.redis.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    done.subscribe(JOB_DONE_CHANNEL)
    assert done.get_message(timeout=5) is not None  # the subscription is confirmed
    openai = stack.api.post(f"{GENERATIONS}/{openai_id}/cancel")
    kling = stack.api.post(f"{KLING}/order-1/cancel")  # by the caller's external_task_id, as Kling's query allows
    apimodels = stack.api.post(f"{APIMODELS}/cancel", params={"task_id": apimodels_id})

    # Then each answers its task, ended
    assert openai.status_code == 200 and openai.json()["status"] == "cancelled", openai.text
    assert kling.status_code == 200 and kling.json()["code"] == 0, kling.text
    assert kling.json()["data"]["task_id"] == kling_id
    assert kling.json()["data"]["task_status"] == "failed"
    assert "cancelled" in kling.json()["data"]["task_status_msg"]
    assert apimodels.status_code == 200 and apimodels.json()["code"] == 200, apimodels.text
    assert apimodels.json()["data"]["state"] == "failed"
    assert "cancelled" in apimodels.json()["data"]["failMsg"]
    assert apimodels.json()["data"]["completeTime"] >= apimodels.json()["data"]["createTime"]

    # and the cancel woke the sync waiters of the job (the done channel)
    announced = done.get_message(timeout=5)
    done.close()
    assert announced is not None and announced["data"] == openai_id.encode()

    # and a second cancel is a conflict in each envelope
    conflict = stack.api.post(f"{KLING}/{kling_id}/cancel")
    assert (conflict.status_code, conflict.json()["code"]) == (409, 1201)
    assert "cancelled" in conflict.json()["message"]
    conflict = stack.api.post(f"{APIMODELS}/cancel", params={"task_id": apimodels_id})
    assert (conflict.status_code, conflict.json()["code"]) == (409, 409)

    # When a worker starts, takes their submit messages, and then a control job queued behind them
    stack.processes.worker(concurrency=2)
    control_id = stack.submit(KLING_BODY)
    stack.wait_for_status(control_id, "running", timeout_s=30)

    # Then only the control job reached the emulator; the cancelled ones were never claimed
    assert queued_count(stack.redis, "submit.kling") == 0
    assert stack.emulator.stats()["kling"]["submits"] == 1
    for job_id in (openai_id, kling_id, apimodels_id):
        job = stack.rows.job(job_id)
        assert (job.status, job.submit_attempts, job.upstream_task_id) == ("cancelled", 0, None)
        assert stack.rows.event_path(job_id) == ["queued", "cancelled"]
        assert stack.rows.costs(job_id) == []


# ---------------------------------------------------------------------------------------------------- priority


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        (GENERATIONS, {"model": "gpt-image-1", "prompt": "a whale"}, lambda body: body["error"]["param"]),
        (KLING, {"prompt": "a whale"}, lambda body: body["message"]),
        (APIMODELS, {"model": "kling-v3-image", "prompt": "a whale"}, lambda body: body["msg"]),
    ],
    ids=["openai", "kling", "apimodels"],
)
def test_a_bad_priority_is_a_400_naming_it_in_every_dialect(
    sqlite_url: str, stack_for: Callable[[str], Stack], path: str, body: dict[str, Any], named: Any
) -> None:
    stack = stack_for(sqlite_url)

    for bad in ("urgent", "HIGH", 1, ["high"]):
        response = stack.api.post(path, json={**body, "priority": bad})
        assert response.status_code == 400, response.text
        assert "priority" in named(response.json())
    assert stack.rows.jobs() == []

    # and every word is accepted for any model and shown on the task object (null: not given, normal)
    for word, shown in (("low", "low"), ("normal", "normal"), ("high", "high"), (None, "normal")):
        task_id = stack.submit({**body, "priority": word}, path=path)
        assert stack.task(task_id)["priority"] == shown


def test_a_high_priority_job_is_submitted_before_a_backlog_of_low_ones(
    sqlite_url: str, stack_for: Callable[[str], Stack]
) -> None:
    # Given a backlog of low-priority Kling jobs waiting in submit.kling (no worker running), then one high job
    backlog = 12
    stack = stack_for(sqlite_url)
    low_ids = [stack.submit({**KLING_BODY, "prompt": f"low {index}", "priority": "low"}) for index in range(backlog)]
    high_id = stack.submit({"prompt": "high", "priority": "high"}, path=KLING)  # the Kling-task dialect carries it
    assert stack.task(high_id)["priority"] == "high"
    assert stack.task(low_ids[0])["priority"] == "low"
    assert (stack.redis.llen(LOW_LIST), stack.redis.llen(HIGH_LIST)) == (backlog, 1)

    # When one worker with a single thread starts on the backlog
    stack.processes.worker(concurrency=1)
    all_ids = [*low_ids, high_id]

    def all_submitted() -> bool:
        return all("submitting" in stack.rows.event_path(job_id) for job_id in all_ids)

    wait_until(all_submitted, timeout_s=60, interval_s=0.3, what="every job to be submitted")

    # Then the high job was submitted before the low ones (allowing for a message the worker had reserved)
    first_submit = {job_id: first_submit_event(stack.rows, job_id) for job_id in all_ids}
    order = sorted(all_ids, key=lambda job_id: first_submit[job_id])
    position = order.index(high_id)
    print(
        f"\npriority: the high job was submitted at position {position + 1} of {len(order)} (backlog of {backlog} low)"
    )
    assert position <= 2, f"the high job was submitted after {position} low ones"


def first_submit_event(rows: Rows, job_id: str) -> int:
    """The id of the job's first ``→ submitting`` event (event ids grow with commit order)."""
    ids = [event.id for event in rows.events(job_id) if event.to_status == "submitting" and event.id is not None]
    return min(ids)
