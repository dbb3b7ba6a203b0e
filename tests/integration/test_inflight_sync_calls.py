"""One worker process with a pool of 2 threads keeps many slow sync upstream calls in flight at once.

The upstream is a tiny threaded HTTP server that holds every generation request at a barrier until ``CALLS``
requests are open at the same time, and counts how many were open at once. A worker that held a pool thread
(or one of a handful of pooled connections) per call could never have ``CALLS`` open: the barrier would time
out, every request would be answered 503 and the jobs would fail. So the assertion is on what the upstream
saw, not on how long anything took.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from producer.enqueue import enqueue_job
from producer.keys import owner_id
from shared.jobs import ImageRequest, JobStatus
from shared.queue import TaskSender, make_celery
from tests.conftest import make_settings
from tests.integration.harness import ProcessesFactory, Rows, wait_for_terminal
from tests.support import API_KEY

pytestmark = pytest.mark.integration

#: far more than the pool's 2 threads, the old 16-thread default and the adapters' pooled connections
CALLS = 120
POOL_THREADS = 2
#: a 1x1 PNG, what every held request is answered with once the barrier opens
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


class BarrierUpstream:
    """OpenAI-style ``POST /v1/images/generations`` that answers only once ``parties`` requests are open."""

    def __init__(self, parties: int, *, timeout_s: float) -> None:
        self.barrier = threading.Barrier(parties, timeout=timeout_s)
        self._lock = threading.Lock()
        self.open_now = 0
        self.most_open = 0
        self.answered = 0
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, body = upstream._hold()
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.request_queue_size = 4 * parties
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _hold(self) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            return 503, {"error": {"message": "the barrier never filled", "type": "server_error"}}
        finally:
            with self._lock:
                self.open_now -= 1
        with self._lock:
            self.answered += 1
        return 200, {"created": 0, "data": [{"b64_json": base64.b64encode(PNG).decode()}]}

    def close(self) -> None:
        self.barrier.abort()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def barrier_upstream() -> Iterator[BarrierUpstream]:
    upstream = BarrierUpstream(CALLS, timeout_s=60)
    try:
        yield upstream
    finally:
        upstream.close()


def test_one_worker_keeps_many_sync_calls_in_flight(
    sqlite_url: str,
    processes: ProcessesFactory,
    rows_for: Any,
    isolated_redis_url: str,
    files_dir: Path,
    barrier_upstream: BarrierUpstream,
) -> None:
    stack = processes(
        sqlite_url,
        IMAGEJOBS_OPENAI__BASE_URL=barrier_upstream.url,
        IMAGEJOBS_OPENAI__API_KEY="sk-barrier",
        IMAGEJOBS_OPENAI__TIMEOUT_S="90",
    )
    stack.worker(concurrency=POOL_THREADS)
    rows: Rows = rows_for(sqlite_url)
    settings = make_settings(redis_url=isolated_redis_url, database_url=sqlite_url, files_dir=files_dir)
    celery = make_celery(settings, main="test-producer")
    try:
        sender = TaskSender(celery)
        job_ids = []
        for number in range(CALLS):
            request = ImageRequest.model_validate({"model": "gpt-image-1", "prompt": f"held {number}"})
            with Session(rows.engine, expire_on_commit=False) as session:
                job_ids.append(enqueue_job(request, session=session, owner=owner_id(API_KEY), sender=sender).job.id)
    finally:
        celery.close()

    statuses = wait_for_terminal(rows, job_ids, timeout_s=120)

    assert barrier_upstream.most_open >= CALLS, f"only {barrier_upstream.most_open} calls were in flight at once"
    assert barrier_upstream.answered == CALLS
    assert set(statuses.values()) == {JobStatus.SUCCEEDED}
    assert all(len(rows.images(job_id)) == 1 for job_id in job_ids)
