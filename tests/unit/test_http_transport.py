"""``PerThreadTransport``: each thread keeps its own connection, reused for its next request."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from worker.http_transport import PerThreadTransport

THREADS = 4
REQUESTS_PER_THREAD = 3


class Recorder:
    """A loopback HTTP/1.1 server that records the client port of every request."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so a reused connection shows as a repeated port

            def do_GET(self) -> None:
                recorder.ports.append(self.client_address[1])
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def test_each_thread_reuses_a_connection_of_its_own(recorder: Recorder) -> None:
    client = httpx.Client(base_url=recorder.url, transport=PerThreadTransport(), trust_env=False)
    start = threading.Barrier(THREADS)

    def requests() -> None:
        start.wait(timeout=10)  # every thread is alive at once: none can inherit another's connection
        for _ in range(REQUESTS_PER_THREAD):
            assert client.get("/").text == "ok"

    threads = [threading.Thread(target=requests) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    client.close()

    assert len(recorder.ports) == THREADS * REQUESTS_PER_THREAD
    # one connection per thread, each used for all of that thread's requests
    assert len(set(recorder.ports)) == THREADS
    assert sorted(recorder.ports.count(port) for port in set(recorder.ports)) == [REQUESTS_PER_THREAD] * THREADS


def test_closing_closes_every_threads_pool(recorder: Recorder) -> None:
    transport = PerThreadTransport()
    client = httpx.Client(base_url=recorder.url, transport=transport, trust_env=False)
    worker = threading.Thread(target=lambda: client.get("/"))
    worker.start()
    worker.join(10)
    client.get("/")
    assert len(transport._transports) == 2
    client.close()
    assert transport._transports == []
