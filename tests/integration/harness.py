"""Shared machinery for the integration and e2e layers: real processes, a webhook receiver, DB look-ups.

Fixtures defined here are imported by ``tests/integration/conftest.py`` and ``tests/e2e/conftest.py``.
Everything is real: a private redis-server (one fresh DB index per test), the emulator over HTTP,
Celery worker/beat/API subprocesses, SQLite or PostgreSQL.
"""

from __future__ import annotations

import base64
import http.server
import itertools
import json
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from redis import Redis
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from shared.config import EMULATOR_KLING_ACCESS_KEY, EMULATOR_KLING_SECRET_KEY
from shared.db.engine import make_engine
from shared.db.tables import CostEntry, Job, JobEvent, JobImage, WebhookDelivery
from shared.jobs import TERMINAL
from shared.queue import QueueName
from tests.support import (
    Process,
    api_command,
    base_env,
    celery_beat_command,
    celery_worker_command,
    free_port,
    http_ok,
    queued_count,
    wait_until,
)

LOG_TAIL_LINES = 80
TERMINAL_STATUSES = frozenset(status.value for status in TERMINAL)

# ---------------------------------------------------------------------------------------------------
# Redis: a fresh DB index per test (the private server from tests/conftest.py; never the machine's 6379)
# ---------------------------------------------------------------------------------------------------

_DB_INDEXES = itertools.cycle(range(1, 16))


@pytest.fixture
def isolated_redis_url(redis_url: str) -> Iterator[str]:
    """``redis_url`` with a DB index of its own, empty at the start of the test and flushed at its end."""
    url = f"{redis_url.rsplit('/', 1)[0]}/{next(_DB_INDEXES)}"
    client = Redis.from_url(url)
    try:
        client.flushdb()
        yield url
        client.flushdb()
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------------
# The emulator (session-scoped server; each test resets it and sets the latencies it depends on)
# ---------------------------------------------------------------------------------------------------


def fixed(seconds: float) -> dict[str, Any]:
    return {"kind": "fixed", "value_s": seconds}


@dataclass
class Emulator:
    url: str

    def reset(self) -> None:
        response = httpx.post(f"{self.url}/_emulator/reset", timeout=10)
        assert response.status_code == 200, response.text

    def configure(self, patch: dict[str, Any]) -> dict[str, Any]:
        response = httpx.put(f"{self.url}/_emulator/config", json=patch, timeout=10)
        assert response.status_code == 200, response.text
        config: dict[str, Any] = response.json()
        return config

    def set_latency(self, *, kling_s: float, openai_s: float) -> None:
        config = self.configure({"kling": {"latency": fixed(kling_s)}, "openai": {"latency": fixed(openai_s)}})
        assert config["kling"]["latency"] == fixed(kling_s)
        assert config["openai"]["latency"] == fixed(openai_s)

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(f"{self.url}/_emulator/stats", timeout=10).json()
        return stats

    def kling_token(self) -> str:
        """A Kling JWT for the emulator's default account (what our Kling adapter sends)."""
        now = int(time.time())
        payload = {"iss": EMULATOR_KLING_ACCESS_KEY, "exp": now + 1800, "nbf": now - 5}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            return jwt.encode(payload, EMULATOR_KLING_SECRET_KEY, algorithm="HS256", headers={"typ": "JWT"})

    def kling_task(self, task_id: str) -> dict[str, Any]:
        """The emulator's Kling task object (``data`` of the envelope), read over the Kling API."""
        response = httpx.get(
            f"{self.url}/kling/v1/images/generations/{task_id}",
            headers={"Authorization": f"Bearer {self.kling_token()}"},
            timeout=10,
        )
        body = response.json()
        assert response.status_code == 200 and body["code"] == 0, body
        data: dict[str, Any] = body["data"]
        return data


@pytest.fixture
def emulator(emulator_url: str) -> Emulator:
    """The session emulator, reset to defaults with short latencies (a test sets longer ones if it needs)."""
    control = Emulator(emulator_url)
    control.reset()
    control.set_latency(kling_s=1.0, openai_s=0.2)
    return control


# ---------------------------------------------------------------------------------------------------
# Processes: worker, beat and API subprocesses, stopped (whole process group) at the end of the test
# ---------------------------------------------------------------------------------------------------


@dataclass
class Processes:
    """Starts our processes with one environment; ``stop_all`` ends each of them by its own id."""

    env: dict[str, str]
    log_dir: Path
    started: list[Process] = field(default_factory=list)
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self, name: str, command: list[str]) -> Process:
        process = Process(f"{name}-{next(self._names)}", command, env=self.env, log_dir=self.log_dir)
        self.started.append(process)
        return process

    def worker(self, concurrency: int = 8) -> Process:
        return self.start("worker", celery_worker_command(concurrency))

    def beat(self) -> Process:
        return self.start("beat", celery_beat_command(self.log_dir / f"beat-schedule-{len(self.started)}"))

    def api(self) -> str:
        """Starts the API on a free port, waits for it to answer and returns its base URL."""
        port = int(self.env["IMAGEJOBS_API_PORT"]) if "IMAGEJOBS_API_PORT" in self.env else free_port()
        process = self.start("api", api_command(port))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{url}/healthz") or not process.alive(), timeout_s=30, what="the API")
        assert process.alive(), f"the API exited:\n{process.output()[-4000:]}"
        return url

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()

    def logs(self) -> str:
        parts = []
        for process in self.started:
            lines = process.output().splitlines()[-LOG_TAIL_LINES:]
            parts.append(f"----- {process.name} (last {len(lines)} lines) -----\n" + "\n".join(lines))
        return "\n".join(parts)


@pytest.fixture
def files_dir(tmp_path: Path) -> Path:
    path = tmp_path / "files"
    path.mkdir()
    return path


ProcessesFactory = Callable[..., Processes]


@contextmanager
def processes_factory(
    tmp_path: Path, *, redis_url: str, files_dir: Path, emulator: Emulator
) -> Iterator[ProcessesFactory]:
    """``make(database_url, **extra_env)`` → a ``Processes`` against ``redis_url``; all are stopped on exit.

    The children's log tails are printed on exit (pytest shows them only when the test fails).
    """
    made: list[Processes] = []

    def make(database_url: str, **extra_env: str) -> Processes:
        env = base_env(
            redis_url=redis_url,
            database_url=database_url,
            files_dir=files_dir,
            emulator_url=emulator.url,
            **extra_env,
        )
        log_dir = tmp_path / f"logs-{len(made)}"
        log_dir.mkdir()
        group = Processes(env=env, log_dir=log_dir)
        made.append(group)
        return group

    try:
        yield make
    finally:
        for group in made:
            group.stop_all()
            print(group.logs())


@pytest.fixture
def processes(
    tmp_path: Path, isolated_redis_url: str, files_dir: Path, emulator: Emulator
) -> Iterator[ProcessesFactory]:
    """``processes(database_url, **extra_env)`` → a ``Processes`` whose children are stopped after the test."""
    with processes_factory(tmp_path, redis_url=isolated_redis_url, files_dir=files_dir, emulator=emulator) as make:
        yield make


# ---------------------------------------------------------------------------------------------------
# A webhook receiver: a tiny threaded HTTP server on 127.0.0.1 that records every request
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


class WebhookReceiver:
    """Answers the scripted statuses in order (then ``default_status``) and records each request."""

    def __init__(self, statuses: Sequence[int] = (), default_status: int = 200) -> None:
        self._statuses = list(statuses)
        self._default = default_status
        self._lock = threading.Lock()
        self.requests: list[ReceivedRequest] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                status = receiver._record(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks/imagejobs"

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            status = self._statuses.pop(0) if self._statuses else self._default
            self.requests.append(ReceivedRequest(path, headers, body, status, time.time()))
            return status

    def received(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def webhook_receiver() -> Iterator[Callable[..., WebhookReceiver]]:
    """``webhook_receiver(statuses=(500, 200))`` → a running receiver, shut down after the test."""
    made: list[WebhookReceiver] = []

    def make(statuses: Sequence[int] = (), default_status: int = 200) -> WebhookReceiver:
        receiver = WebhookReceiver(statuses, default_status)
        made.append(receiver)
        return receiver

    try:
        yield make
    finally:
        for receiver in made:
            receiver.close()


# ---------------------------------------------------------------------------------------------------
# Reading the database the processes write
# ---------------------------------------------------------------------------------------------------


class Rows:
    """Read-only look-ups of the five tables (a fresh session per call: always the committed state)."""

    def __init__(self, database_url: str) -> None:
        self.engine: Engine = make_engine(database_url, pool_size=2)

    def close(self) -> None:
        self.engine.dispose()

    def _all(self, statement: Any) -> list[Any]:
        with Session(self.engine) as session:
            return list(session.exec(statement).all())

    def job(self, job_id: str) -> Job:
        with Session(self.engine, expire_on_commit=False) as session:
            job = session.get(Job, job_id)
        assert job is not None, f"no job row {job_id}"
        return job

    def jobs(self, job_ids: Sequence[str] | None = None) -> list[Job]:
        statement = select(Job)
        if job_ids is not None:
            statement = statement.where(col(Job.id).in_(list(job_ids)))
        return self._all(statement)

    def statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        return {job.id: str(job.status) for job in self.jobs(job_ids)}

    def events(self, job_id: str) -> list[JobEvent]:
        return self._all(select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id)))

    def event_path(self, job_id: str) -> list[str]:
        return [str(event.to_status) for event in self.events(job_id)]

    def images(self, job_id: str) -> list[JobImage]:
        return self._all(select(JobImage).where(JobImage.job_id == job_id).order_by(col(JobImage.index)))

    def costs(self, job_id: str | None = None) -> list[CostEntry]:
        statement = select(CostEntry)
        if job_id is not None:
            statement = statement.where(CostEntry.job_id == job_id)
        return self._all(statement.order_by(col(CostEntry.id)))

    def deliveries(self, job_id: str) -> list[WebhookDelivery]:
        statement = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
        return self._all(statement.order_by(col(WebhookDelivery.attempt)))

    def count(self, table: type[Any]) -> int:
        with Session(self.engine) as session:
            return int(session.exec(select(func.count()).select_from(table)).one())


@pytest.fixture
def rows_for() -> Iterator[Callable[[str], Rows]]:
    made: list[Rows] = []

    def make(database_url: str) -> Rows:
        rows = Rows(database_url)
        made.append(rows)
        return rows

    try:
        yield make
    finally:
        for rows in made:
            rows.close()


def wait_for_terminal(rows: Rows, job_ids: Sequence[str], *, timeout_s: float) -> dict[str, str]:
    """Waits until every job is in a terminal state; on timeout fails naming the stragglers."""

    def done() -> bool:
        statuses = rows.statuses(job_ids)
        return len(statuses) == len(job_ids) and all(status in TERMINAL_STATUSES for status in statuses.values())

    try:
        wait_until(done, timeout_s=timeout_s, interval_s=0.2, what="jobs to reach a terminal state")
    except TimeoutError:
        waiting = {
            job_id: status for job_id, status in rows.statuses(job_ids).items() if status not in TERMINAL_STATUSES
        }
        raise AssertionError(f"{len(waiting)} job(s) not terminal after {timeout_s}s: {waiting}") from None
    return rows.statuses(job_ids)


def lost_jobs(rows: Rows, job_ids: Sequence[str]) -> dict[str, str]:
    """Accepted jobs (rows committed) that are not in a terminal state, with their status (no row: ``missing``)."""
    statuses = rows.statuses(job_ids)
    missing = {job_id: "missing" for job_id in job_ids if job_id not in statuses}
    return missing | {job_id: status for job_id, status in statuses.items() if status not in TERMINAL_STATUSES}


def settle(rows: Rows, job_ids: Sequence[str], *, timeout_s: float) -> dict[str, str]:
    """Waits (up to ``timeout_s``) for every job to reach a terminal state; returns the lost ones (none: ``{}``).

    Unlike ``wait_for_terminal`` it does not fail by itself: a test reports its numbers first, then asserts.
    """
    with suppress(TimeoutError):
        wait_until(lambda: not lost_jobs(rows, job_ids), timeout_s=timeout_s, interval_s=0.2, what="terminal jobs")
    return lost_jobs(rows, job_ids)


def duplicate_charges(rows: Rows, job_ids: Sequence[str]) -> int:
    """Cost rows beyond the first of any of these jobs."""
    wanted = set(job_ids)
    charges = Counter(cost.job_id for cost in rows.costs() if cost.job_id in wanted)
    return sum(count - 1 for count in charges.values() if count > 1)


def duplicate_webhook_events(requests: Sequence[ReceivedRequest]) -> int:
    """Deliveries of one ``webhook-id`` that the receiver accepted (2xx) more than once."""
    accepted = Counter(request.headers.get("webhook-id") for request in requests if 200 <= request.status < 300)
    return sum(count - 1 for count in accepted.values() if count > 1)


def queued_messages(redis: Redis) -> int:
    """Submit and poll messages waiting in Redis (not taken by a worker)."""
    return queued_count(redis, QueueName.SUBMIT.value) + queued_count(redis, QueueName.POLL.value)


def wait_for_the_worker_to_hold_every_poll(
    rows: Rows, redis_url: str, job_ids: Sequence[str], *, timeout_s: float = 30, what: str = "all jobs running"
) -> None:
    """Waits until every job is ``running`` with a poll due and the worker has taken every submit and poll
    message off the queues (the countdowns sit unacked in its memory)."""
    redis = Redis.from_url(redis_url)

    def held() -> bool:
        jobs = rows.jobs(job_ids)
        running = all(job.status == "running" and job.next_poll_at is not None for job in jobs)
        return len(jobs) == len(job_ids) and running and queued_messages(redis) == 0

    try:
        wait_until(held, timeout_s=timeout_s, interval_s=0.1, what=what)
    finally:
        redis.close()


def wait_for_requests(receiver: WebhookReceiver, count: int, *, timeout_s: float) -> list[ReceivedRequest]:
    try:
        wait_until(lambda: len(receiver.received()) >= count, timeout_s=timeout_s, what=f"{count} webhook request(s)")
    except TimeoutError:
        raise AssertionError(f"expected {count} webhook request(s), got {len(receiver.received())}") from None
    return receiver.received()


def delivered(rows: Rows, job_id: str) -> bool:
    """One of the job's webhook attempts is recorded as delivered."""
    return any(delivery.state == "delivered" for delivery in rows.deliveries(job_id))


def wait_for_delivered(rows: Rows, job_id: str, *, timeout_s: float) -> None:
    """Waits until one of the job's webhook attempts is recorded as delivered."""
    try:
        wait_until(lambda: delivered(rows, job_id), timeout_s=timeout_s, what=f"a delivered webhook for {job_id}")
    except TimeoutError:
        attempts = [(d.attempt, d.state, d.response_status, d.error) for d in rows.deliveries(job_id)]
        raise AssertionError(f"no delivered webhook for {job_id} after {timeout_s}s: {attempts}") from None


def decode_kombu_message(raw: bytes) -> tuple[dict[str, Any], Any]:
    """A Redis-transport kombu message → (envelope, decoded body); Celery's body is ``[args, kwargs, embed]``."""
    envelope: dict[str, Any] = json.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body).decode()
    return envelope, json.loads(body)


def seconds_between(earlier: datetime, later: datetime) -> float:
    return (later - earlier).total_seconds()
