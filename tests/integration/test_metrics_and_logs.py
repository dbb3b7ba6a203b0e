"""Metrics and correlated logs on the real stack: the API and a Celery worker as subprocesses (Redis, SQLite, the
emulator over HTTP). Jobs run through the API; ``/metrics`` of the API and the worker's metrics port are scraped and
parsed, and the worker's JSON log lines are searched for the request id the client sent."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import ProcessesFactory, Rows, wait_for_terminal
from tests.support import API_KEY, free_port, wait_until

pytestmark = pytest.mark.integration

GENERATIONS = "/v1/images/generations"
GPT = {"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "quality": "low", "async": True}
METRICS_TOKEN = "scrape-token-0123456789"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, series), v in found.items() if n == name and wanted <= series)


def scrape(url: str, token: str | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return samples(response.text)


def test_jobs_show_up_in_metrics_and_worker_logs_carry_the_request_id(
    processes: ProcessesFactory, sqlite_url: str, rows_for: Any
) -> None:
    worker_port = free_port()
    group = processes(
        sqlite_url,
        IMAGEJOBS_METRICS__TOKEN=METRICS_TOKEN,
        IMAGEJOBS_METRICS__WORKER_PORT=str(worker_port),
        IMAGEJOBS_LOG_FORMAT="json",
        IMAGEJOBS_KLING__REQUESTS_PER_SECOND="50",  # a rate-limited channel: its bucket shows as a gauge
    )
    worker = group.worker(concurrency=4)
    api = group.api()
    rows: Rows = rows_for(sqlite_url)

    assert httpx.get(f"{api}/metrics", timeout=10).status_code == 401  # the scrape token is required
    before = scrape(f"{api}/metrics", METRICS_TOKEN)
    assert value(before, "imagejobs_jobs_accepted_total", provider="openai", model="gpt-image-1") == 0

    request_id = "req-metrics-test-42"
    ids = []
    for index in range(3):
        headers = {"Authorization": f"Bearer {API_KEY}", "X-Request-ID": f"{request_id}-{index}"}
        response = httpx.post(f"{api}{GENERATIONS}", json=GPT, headers=headers, timeout=30)
        assert response.status_code in (200, 202), response.text
        assert response.headers["x-request-id"] == f"{request_id}-{index}"
        ids.append(response.json()["id"])
    generated = httpx.get(f"{api}/healthz", timeout=10).headers["x-request-id"]
    assert len(generated) >= 16  # none sent: one is made up and echoed

    assert set(wait_for_terminal(rows, ids, timeout_s=60).values()) == {"succeeded"}

    api_metrics = scrape(f"{api}/metrics", METRICS_TOKEN)
    assert value(api_metrics, "imagejobs_jobs_accepted_total", provider="openai", model="gpt-image-1") == 3
    assert (
        value(api_metrics, "imagejobs_http_requests_total", route=GENERATIONS, method="POST", status="202")
        + value(api_metrics, "imagejobs_http_requests_total", route=GENERATIONS, method="POST", status="200")
        == 3
    )
    queue_series = [series for (name, series) in api_metrics if name == "imagejobs_queue_messages"]
    assert ("queue", "submit.openai") in {label for series in queue_series for label in series}

    def worker_counted() -> bool:
        found = scrape(f"http://127.0.0.1:{worker_port}/metrics")
        return value(found, "imagejobs_jobs_finished_total", status="succeeded", provider="openai") == 3

    wait_until(worker_counted, timeout_s=20, what="the worker to count the finished jobs")
    found = scrape(f"http://127.0.0.1:{worker_port}/metrics")
    assert value(found, "imagejobs_jobs_finished_total", status="succeeded", model="gpt-image-1", error_code="") == 3
    assert value(found, "imagejobs_job_duration_seconds_count", provider="openai", status="succeeded") == 3
    assert value(found, "imagejobs_job_duration_seconds_sum", provider="openai") > 0
    assert value(found, "imagejobs_job_phase_seconds_count", phase="queued", provider="openai") == 3
    assert value(found, "imagejobs_job_phase_seconds_count", phase="submitting", provider="openai") == 3
    assert value(found, "imagejobs_upstream_requests_total", provider="openai", operation="submit", outcome="ok") == 3
    assert value(found, "imagejobs_upstream_request_seconds_count", provider="openai", operation="submit") == 3
    assert value(found, "imagejobs_job_polls_count", provider="openai") == 3
    assert value(found, "imagejobs_cost_total", model="gpt-image-1", currency="USD") > 0
    assert any(name == "imagejobs_channel_resting_seconds" for name, _ in found)
    assert value(found, "imagejobs_channel_tokens", provider="kling", channel="default") == 1.0  # unused: full

    def logged() -> list[dict[str, Any]]:
        lines = []
        for line in worker.output().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines

    wait_until(lambda: any(entry.get("request_id") == f"{request_id}-0" for entry in logged()), timeout_s=10,
               what="a worker log line with the request id")  # fmt: skip
    tagged = [entry for entry in logged() if entry.get("request_id") == f"{request_id}-0"]
    assert all(entry.get("job_id") == ids[0] for entry in tagged), tagged
    assert {entry.get("task") for entry in tagged} >= {"imagejobs.submit_job"}
    assert any(entry.get("provider") == "openai" for entry in tagged)
    access = [line for line in group.started[-1].output().splitlines() if '"imagejobs.access"' in line]
    lines = [json.loads(line) for line in access]
    posted = [entry for entry in lines if entry.get("request_id") == f"{request_id}-1"]
    assert posted and posted[0]["path"] == GENERATIONS and posted[0]["method"] == "POST"
    assert "duration_ms" in posted[0] and posted[0]["status"] in (200, 202)
    assert all(API_KEY not in line for line in access)
