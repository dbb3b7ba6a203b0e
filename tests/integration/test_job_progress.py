"""Progress for API clients: the task object's timestamps and the job's events as Server-Sent Events, read from a
real API and worker until the stream closes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.harness import Emulator, ProcessesFactory
from tests.support import API_KEY, OTHER_API_KEY

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
