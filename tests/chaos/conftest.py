"""Chaos fixtures: a private redis-server per test that may be killed and restarted, the Celery broker (that
Redis, or a RabbitMQ vhost of the test's own), our processes against them and an in-process producer (the
suite's summary line: ``tests.chaos.summary``).

Everything the chaos tests break is theirs: each test starts its own ``redis-server`` (AOF everysec, files in
the test's temp dir, a spare port) and its own worker/beat/API subprocesses, and kills only those, by their
own ids. The machine's shared services are never touched. The session emulator and the helpers of
``tests.integration.harness`` are reused.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import NotFound
from kombu import Connection
from redis import Redis
from redis.exceptions import RedisError
from sqlmodel import Session

from devstack.services import start_private_redis
from producer.enqueue import enqueue_job
from producer.keys import owner_id
from shared.egress import EgressPolicy
from shared.jobs import ImageRequest
from shared.queue import QueueName, TaskSender, all_queue_names, make_celery
from tests.chaos.summary import record_outcome
from tests.conftest import make_settings
from tests.integration.harness import (
    Emulator,
    Processes,
    ProcessesFactory,
    Rows,
    emulator,
    files_dir,
    processes_factory,
    rows_for,
    webhook_receiver,
)
from tests.support import API_KEY, free_port, queued_count, wait_until

__all__ = ["emulator", "files_dir", "record_outcome", "rows_for", "webhook_receiver"]

#: local webhook receivers live on loopback (the processes allow it too: ``base_env``)
LOOPBACK = EgressPolicy.from_lists(hosts=[], networks=["127.0.0.0/8"])

# ---------------------------------------------------------------------------------------------------
# A private redis-server that a test may shut down, kill and start again (same port, same files)
# ---------------------------------------------------------------------------------------------------


@dataclass
class PrivateRedis:
    """``redis-server`` on 127.0.0.1:``port`` with AOF (everysec) in ``directory``; only ever this process."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert not self.alive(), "redis-server is already running"
        self.process = start_private_redis(self.directory, port=self.port, appendonly=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def shutdown(self) -> None:
        """A graceful stop: ``SHUTDOWN`` (the AOF is flushed), then wait for the process to exit."""
        assert self.process is not None
        client = Redis.from_url(self.url, socket_timeout=5)
        try:
            client.shutdown()
        except RedisError:
            pass  # the server closes the connection as it exits
        finally:
            client.close()
        self.process.wait(timeout=30)

    def kill(self) -> None:
        """A crash: SIGKILL (what the last second of AOF everysec may lose is lost)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def chaos_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """This test's own redis-server (AOF everysec) on a spare port; stopped after the test."""
    server = PrivateRedis(directory=tmp_path / "redis", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------
# The Celery broker: the private Redis (default) or a RabbitMQ vhost of the test's own
# ---------------------------------------------------------------------------------------------------


@dataclass
class ChaosBroker:
    """Where the test's Celery messages go, and how many wait (ready, not taken by a worker) in a queue family."""

    kind: str
    url: str

    def queued(self, queue: str) -> int:
        """Messages ready in every queue named ``queue`` or ``queue.<provider>`` (on Redis: every priority step)."""
        if self.kind == "redis":
            redis = Redis.from_url(self.url)
            try:
                return queued_count(redis, queue)
            finally:
                redis.close()
        names = [name for name in all_queue_names() if name == queue or name.startswith(f"{queue}.")]
        with Connection(self.url, connect_timeout=5) as connection:
            return sum(_amqp_ready(connection, name) for name in names)

    def env(self) -> dict[str, str]:
        """What our processes need to use this broker (Redis stays: limits, channel health, the done channel)."""
        return {"IMAGEJOBS_BROKER_URL": self.url} if self.kind == "amqp" else {}


def _amqp_ready(connection: Connection, queue: str) -> int:
    """Ready messages of one RabbitMQ queue (a passive declare; a queue not declared yet holds none)."""
    channel: Any = connection.channel()
    try:
        _, ready, _ = channel.queue_declare(queue=queue, passive=True)
        return int(ready)
    except NotFound:
        return 0
    finally:
        with suppress(Exception):  # a NotFound already closed the channel on the broker's side
            channel.close()


@pytest.fixture
def chaos_broker(request: pytest.FixtureRequest, chaos_redis: PrivateRedis) -> ChaosBroker:
    """The private Redis, unless the test parametrizes it (``indirect``) as ``"rabbitmq"``: a vhost of its own."""
    kind = getattr(request, "param", "redis")
    if kind == "rabbitmq":
        return ChaosBroker(kind="amqp", url=request.getfixturevalue("rabbitmq_url"))
    return ChaosBroker(kind="redis", url=chaos_redis.url)


#: ``@BROKERS`` on a chaos test runs it once per broker (RabbitMQ skips locally when absent, fails under CI=true)
BROKERS = pytest.mark.parametrize(
    "chaos_broker", ["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)], indirect=True
)


def wait_for_the_worker_to_hold_every_poll(
    rows: Rows, broker: ChaosBroker, job_ids: Sequence[str], *, timeout_s: float = 30, what: str = "all jobs running"
) -> None:
    """Waits until every job is ``running`` with a poll due and the worker has taken every submit and poll
    message off the broker's queues (the countdowns sit unacked in its memory)."""

    def held() -> bool:
        jobs = rows.jobs(job_ids)
        running = all(job.status == "running" and job.next_poll_at is not None for job in jobs)
        if len(jobs) != len(job_ids) or not running:
            return False
        return broker.queued(QueueName.SUBMIT.value) + broker.queued(QueueName.POLL.value) == 0

    wait_until(held, timeout_s=timeout_s, interval_s=0.2, what=what)


# ---------------------------------------------------------------------------------------------------
# Our processes against the private Redis (and the broker)
# ---------------------------------------------------------------------------------------------------

ChaosProcesses = ProcessesFactory


@pytest.fixture
def chaos_processes(
    tmp_path: Path, chaos_redis: PrivateRedis, chaos_broker: ChaosBroker, files_dir: Path, emulator: Emulator
) -> Iterator[ChaosProcesses]:
    """``chaos_processes(database_url, **extra_env)`` → a ``Processes`` bound to the private Redis and the broker.

    Children are stopped at teardown (each by its own process group) and their log tails printed (pytest
    shows them when the test fails).
    """
    with processes_factory(tmp_path, redis_url=chaos_redis.url, files_dir=files_dir, emulator=emulator) as make:

        def make_on_broker(database_url: str, **extra_env: str) -> Processes:
            return make(database_url, **{**chaos_broker.env(), **extra_env})

        yield make_on_broker


# ---------------------------------------------------------------------------------------------------
# An in-process producer: ``enqueue_job`` (commit, then publish) as the API does it, without an API process
# ---------------------------------------------------------------------------------------------------


@dataclass
class Producer:
    rows: Rows
    sender: TaskSender
    close: Callable[[], None]
    submitted: list[str] = field(default_factory=list)

    def submit(self, fields: dict[str, Any]) -> str:
        """Accepts one job (row committed, submit published if the broker answers) and returns its id."""
        request = ImageRequest.model_validate(fields)
        with Session(self.rows.engine, expire_on_commit=False) as session:
            enqueued = enqueue_job(
                request, session=session, owner=owner_id(API_KEY), sender=self.sender, egress=LOOPBACK
            )
        job_id = enqueued.job.id
        self.submitted.append(job_id)
        return job_id


@pytest.fixture
def producer_for(
    chaos_redis: PrivateRedis, chaos_broker: ChaosBroker, files_dir: Path
) -> Iterator[Callable[[Rows, str], Producer]]:
    """``producer_for(rows, database_url)`` → a ``Producer`` publishing to the test's broker."""
    made: list[Producer] = []

    def make(rows: Rows, database_url: str) -> Producer:
        broker = {"broker_url": chaos_broker.url} if chaos_broker.kind == "amqp" else {}
        settings = make_settings(redis_url=chaos_redis.url, database_url=database_url, files_dir=files_dir, **broker)
        celery = make_celery(settings, main="chaos-producer")
        producer = Producer(rows=rows, sender=TaskSender(celery), close=celery.close)
        made.append(producer)
        return producer

    try:
        yield make
    finally:
        for producer in made:
            producer.close()


def kling_request(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "kling-image", "model_name": "kling-v2-1", "prompt": prompt, **extra}
