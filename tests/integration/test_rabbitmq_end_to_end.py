"""The whole chain with Celery messages over RabbitMQ: the API publishes to a vhost of this test's own, a real
worker consumes it, and a synchronous OpenAI request is answered with its image (the done channel that wakes the
waiting request stays on Redis, as the README says). An async Kling job with priority ``high`` finishes too
(submit, countdown polls, terminal commit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import Emulator, Rows, wait_for_terminal
from tests.support import API_KEY

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_the_api_and_a_worker_run_jobs_over_rabbitmq(
    rabbitmq_url: str, sqlite_url: str, processes: Any, rows_for: Any, emulator: Emulator, files_dir: Path
) -> None:
    stack = processes(sqlite_url, IMAGEJOBS_BROKER_URL=rabbitmq_url)
    worker = stack.worker(concurrency=4)
    api = stack.api()
    rows: Rows = rows_for(sqlite_url)

    with httpx.Client(base_url=api, headers=AUTH, timeout=60) as client:
        sync = client.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "a red fox"})
        kling = client.post(
            "/v1/images/generations",
            json={"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a lighthouse", "priority": "high"},
            headers={"Prefer": "respond-async"},
        )

    assert sync.status_code == 200, sync.text
    assert sync.json()["status"] == "succeeded" and sync.json()["data"], sync.json()
    assert kling.status_code == 202, kling.text
    statuses = wait_for_terminal(rows, [kling.json()["id"]], timeout_s=60)
    assert set(statuses.values()) == {"succeeded"}
    assert rows.event_path(kling.json()["id"]) == ["queued", "submitting", "running", "succeeded"]
    # the worker really was on RabbitMQ (Celery's banner names the transport, with the password masked)
    assert "amqp://guest:**@127.0.0.1:5672" in worker.output(), worker.output()[-2000:]
