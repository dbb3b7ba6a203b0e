"""Sync upstream calls in flight beside the Celery pool: many at once on one worker, none lost when it dies.

The upstream is a tiny threaded HTTP server that holds every generation request until its gate opens, and
counts how many requests were open at once. In the first test the gate opens only when ``CALLS`` requests
are open together: a worker that held a pool thread (or one of a handful of pooled connections) per call
could never get there, its held requests would be answered 503 and its jobs would not succeed. So the
assertions are on what the upstream saw, not on how long anything took.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from producer.enqueue import enqueue_job
from producer.keys import owner_id
from shared.jobs import ImageRequest, JobStatus
from shared.queue import TaskSender, make_celery
from tests.conftest import make_settings
from tests.integration.harness import ProcessesFactory, Rows, duplicate_charges, settle, wait_for_terminal
from tests.support import API_KEY, wait_until

pytestmark = pytest.mark.integration

#: far more than the pool's 2 threads, the old 16-thread default and the adapters' old 32 pooled connections
CALLS = 120
#: calls in flight when their worker is killed
KILLED_CALLS = 20
POOL_THREADS = 2
#: a 1x1 PNG, what every held request is answered with once the barrier opens
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


class HeldUpstream:
    """OpenAI-style ``POST /v1/images/generations`` that holds every request until its gate opens.

    With ``open_at``, the request that makes ``open_at`` requests open at once opens the gate; a request held
    longer than ``timeout_s`` is answered 503.
    """

    def __init__(self, *, open_at: int | None = None, timeout_s: float = 60) -> None:
        self.gate = threading.Event()
        self._open_at, self._timeout_s = open_at, timeout_s
        self._lock = threading.Lock()
        self.open_now = 0
        self.most_open = 0
        self.received = 0
        self.answered = 0
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, body = upstream._hold()
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the caller is gone (a killed worker)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 1024
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _hold(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.received += 1
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
            if self._open_at is not None and self.open_now >= self._open_at:
                self.gate.set()
        opened = self.gate.wait(self._timeout_s)
        with self._lock:
            self.open_now -= 1
            if opened:
                self.answered += 1
        if not opened:
            return 503, {"error": {"message": "the gate never opened", "type": "server_error"}}
        return 200, {"created": 0, "data": [{"b64_json": base64.b64encode(PNG).decode()}]}

    def close(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def held_upstream() -> Iterator[Callable[..., HeldUpstream]]:
    made: list[HeldUpstream] = []

    def make(**kwargs: Any) -> HeldUpstream:
        made.append(HeldUpstream(**kwargs))
        return made[-1]

    try:
        yield make
    finally:
        for upstream in made:
            upstream.close()


def _enqueue_sync_jobs(count: int, *, rows: Rows, settings: Any) -> list[str]:
    celery = make_celery(settings, main="test-producer")
    try:
        sender = TaskSender(celery)
        job_ids = []
        for number in range(count):
            request = ImageRequest.model_validate({"model": "gpt-image-1", "prompt": f"held {number}"})
            with Session(rows.engine, expire_on_commit=False) as session:
                job_ids.append(enqueue_job(request, session=session, owner=owner_id(API_KEY), sender=sender).job.id)
    finally:
        celery.close()
    return job_ids


def test_one_worker_keeps_many_sync_calls_in_flight(
    sqlite_url: str,
    processes: ProcessesFactory,
    rows_for: Any,
    isolated_redis_url: str,
    files_dir: Path,
    held_upstream: Callable[..., HeldUpstream],
) -> None:
    upstream = held_upstream(open_at=CALLS)
    stack = processes(sqlite_url, **_openai_at(upstream))
    stack.worker(concurrency=POOL_THREADS)
    rows: Rows = rows_for(sqlite_url)
    settings = make_settings(redis_url=isolated_redis_url, database_url=sqlite_url, files_dir=files_dir)
    job_ids = _enqueue_sync_jobs(CALLS, rows=rows, settings=settings)

    statuses = wait_for_terminal(rows, job_ids, timeout_s=120)

    assert upstream.most_open >= CALLS, f"only {upstream.most_open} calls were in flight at once"
    assert upstream.answered == CALLS
    assert set(statuses.values()) == {JobStatus.SUCCEEDED}
    assert all(len(rows.images(job_id)) == 1 for job_id in job_ids)


def test_calls_in_flight_in_a_killed_worker_are_re_claimed_and_charged_once(
    database_url: str,
    processes: ProcessesFactory,
    rows_for: Any,
    isolated_redis_url: str,
    files_dir: Path,
    held_upstream: Callable[..., HeldUpstream],
) -> None:
    upstream = held_upstream()
    stack = processes(database_url, **_openai_at(upstream))
    first = stack.worker(concurrency=POOL_THREADS)
    rows: Rows = rows_for(database_url)
    settings = make_settings(redis_url=isolated_redis_url, database_url=database_url, files_dir=files_dir)
    job_ids = _enqueue_sync_jobs(KILLED_CALLS, rows=rows, settings=settings)

    # Given a worker with every call in flight (each job claimed: submitting, under its lease)
    wait_until(lambda: upstream.open_now == KILLED_CALLS, timeout_s=60, interval_s=0.2, what="every call in flight")
    # When it is killed, and only then the upstream answers (to nobody)
    first.kill(9)
    upstream.gate.set()
    assert set(rows.statuses(job_ids).values()) == {JobStatus.SUBMITTING}

    # Then a new worker and the sweeper re-claim every job once its lease expires, and each is charged once
    stack.worker(concurrency=POOL_THREADS)
    stack.beat()
    lost = settle(rows, job_ids, timeout_s=90)
    assert lost == {}
    assert set(rows.statuses(job_ids).values()) == {JobStatus.SUCCEEDED}
    assert duplicate_charges(rows, job_ids) == 0
    assert sorted(cost.job_id for cost in rows.costs()) == sorted(job_ids)
    for job_id in job_ids:
        assert rows.event_path(job_id) == ["queued", "submitting", "submitting", "succeeded"]
        assert rows.job(job_id).submit_attempts == 2
    assert upstream.received == 2 * KILLED_CALLS  # at least once: the dead worker's calls are lost with it


def _openai_at(upstream: HeldUpstream) -> dict[str, str]:
    return {
        "IMAGEJOBS_OPENAI__BASE_URL": upstream.url,
        "IMAGEJOBS_OPENAI__API_KEY": "sk-held",
        "IMAGEJOBS_OPENAI__TIMEOUT_S": "90",
    }
