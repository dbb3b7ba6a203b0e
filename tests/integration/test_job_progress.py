"""Progress for API clients: the task object's timestamps and the job's events as Server-Sent Events, read from a
real API and worker until the stream closes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from shared.db.tables import Job
from tests.integration.harness import Emulator, ProcessesFactory, Rows, WebhookReceiver
from tests.support import API_KEY, OTHER_API_KEY, wait_until

pytestmark = pytest.mark.integration

KLING = {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a lighthouse", "aspect_ratio": "1:1"}


def _auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _read_stream(url: str, key: str = API_KEY) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    with httpx.stream("GET", url, headers=_auth(key), timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_the_events_stream_follows_a_job_until_it_ends(
    processes: ProcessesFactory, sqlite_url: str, emulator: Emulator
) -> None:
    # Given a running stack and an async upstream that takes a while
    emulator.set_latency(kling_s=1.5, openai_s=0.1)
    stack = processes(sqlite_url)
    stack.worker()
    api = stack.api()

    # When a job is created and its events are read until the stream closes
    created = httpx.post(f"{api}/v1/images/generations", json={**KLING, "async": True}, headers=_auth())
    assert created.status_code == 202, created.text
    task = created.json()
    assert task["submitted_at"] is None and task["started_at"] is None and "queue_position" in task
    events = _read_stream(f"{api}/v1/images/generations/{task['id']}/events")

    # Then every status change came as an event, polls were reported, and the task object came last
    statuses = [data["status"] for name, data in events if name == "job.event"]
    assert statuses == ["queued", "submitting", "running", "succeeded"], events
    assert any(name == "job.poll" and data["poll_count"] >= 1 for name, data in events), events
    name, final = events[-1]
    assert name == "job.task" and final["status"] == "succeeded" and final["data"], final
    assert final["upstream_model"] == "kling-v2-1"
    assert final["queue_position"] is None
    assert final["created_at"] <= final["submitted_at"] <= final["started_at"] <= final["finished_at"]

    # And the task object answers the same timestamps
    again = httpx.get(f"{api}/v1/images/generations/{task['id']}", headers=_auth()).json()
    assert (again["submitted_at"], again["started_at"]) == (final["submitted_at"], final["started_at"])

    # And a stream resumed after the last status event has only the end in it
    last_id = max(data["id"] for name, data in events if name == "job.event")
    with httpx.stream(
        "GET",
        f"{api}/v1/images/generations/{task['id']}/events",
        headers={**_auth(), "Last-Event-ID": str(last_id)},
        timeout=30,
    ) as response:
        body = response.read().decode()
    assert "event: job.event" not in body and "event: job.task" in body

    # And another key's stream is not found
    other = httpx.get(f"{api}/v1/images/generations/{task['id']}/events", headers=_auth(OTHER_API_KEY))
    assert other.status_code == 404, other.text


def test_webhook_events_adds_signed_started_and_running_webhooks(
    processes: ProcessesFactory, sqlite_url: str, emulator: Emulator, webhook_receiver: Any
) -> None:
    # Given a running stack and a receiver
    emulator.set_latency(kling_s=1.0, openai_s=0.1)
    receiver: WebhookReceiver = webhook_receiver()
    stack = processes(sqlite_url)
    stack.worker()
    api = stack.api()

    # When a job asks for the started and running events too
    body = {**KLING, "callback_url": receiver.url, "webhook_events": ["started", "running"]}
    created = httpx.post(f"{api}/v1/images/generations", json=body, headers=_auth())
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    wait_until(lambda: len(receiver.received()) == 3, timeout_s=60, what="three webhooks")

    # Then each came signed with the tenant's secret, under its own webhook-id, besides the terminal one
    secret = httpx.get(f"{api}/v1/webhooks/secret", headers=_auth()).json()["secret"]
    events = {}
    for request in receiver.received():
        event = Webhook(secret).verify(request.body, request.headers)
        events[event["type"]] = (request.headers["webhook-id"], event["data"]["id"])
    assert events == {
        "job.started": (f"msg_{job_id}_started", job_id),
        "job.running": (f"msg_{job_id}_running", job_id),
        "job.succeeded": (f"msg_{job_id}", job_id),
    }


def test_a_job_without_webhook_events_gets_only_the_terminal_webhook(
    processes: ProcessesFactory, sqlite_url: str, emulator: Emulator, webhook_receiver: Any
) -> None:
    emulator.set_latency(kling_s=0.3, openai_s=0.1)
    receiver: WebhookReceiver = webhook_receiver()
    stack = processes(sqlite_url)
    stack.worker()
    api = stack.api()
    created = httpx.post(f"{api}/v1/images/generations", json={**KLING, "callback_url": receiver.url}, headers=_auth())
    job_id = created.json()["id"]
    wait_until(lambda: len(receiver.received()) >= 1, timeout_s=60, what="the terminal webhook")
    final = httpx.get(f"{api}/v1/images/generations/{job_id}", headers=_auth()).json()
    assert final["status"] == "succeeded"
    assert [request.headers["webhook-id"] for request in receiver.received()] == [f"msg_{job_id}"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/images/generations", {**KLING, "webhook_events": ["started", "completed"]}),
        ("/kling/v1/images/generations", {"model_name": "kling-v2-1", "prompt": "x", "webhook_events": ["nope"]}),
    ],
)
def test_an_unknown_webhook_event_is_refused_naming_the_parameter(
    processes: ProcessesFactory, sqlite_url: str, rows_for: Any, path: str, body: dict[str, Any]
) -> None:
    api = processes(sqlite_url).api()
    answer = httpx.post(f"{api}{path}", json=body, headers=_auth())
    assert answer.status_code == 400, answer.text
    assert "webhook_events" in answer.text
    rows: Rows = rows_for(sqlite_url)
    assert rows.count(Job) == 0
