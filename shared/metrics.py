"""The Prometheus metrics every process exports (https://prometheus.github.io/client_python/).

Each fact is counted where it happens: a job accepted once its row is committed (``producer.enqueue``), a job
finished by the one winner of its terminal compare-and-set (``worker.ending``), an upstream call where it is made
(``worker.pipeline``), a webhook attempt once it is sent (``worker.webhooks``). Labels are bounded: provider,
channel, model, operation, status, error code, outcome — never a job id, a tenant or a prompt.

Several API processes share one ``PROMETHEUS_MULTIPROC_DIR`` (set before start; each process writes its own files
and a scrape merges them: https://prometheus.github.io/client_python/multiprocess/); a worker's pool threads share
its default registry and it serves them on its own port.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from redis import Redis, RedisError

from shared.errors import ProviderError

#: job-scale durations: a sync generation takes seconds, a video minutes, a stuck job up to an hour
_JOB_BUCKETS: Final = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
#: one HTTP call to an upstream or a webhook receiver
_CALL_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_POLL_BUCKETS: Final = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89)

JOBS_ACCEPTED = Counter("imagejobs_jobs_accepted", "Jobs accepted (committed)", ["provider", "model"])
JOBS_FINISHED = Counter(
    "imagejobs_jobs_finished", "Jobs that reached a terminal status", ["status", "provider", "model", "error_code"]
)
JOB_DURATION = Histogram(
    "imagejobs_job_duration_seconds", "From acceptance to the terminal status", ["provider", "status"],
    buckets=_JOB_BUCKETS,
)  # fmt: skip
JOB_PHASE = Histogram(
    "imagejobs_job_phase_seconds", "Time a job spent in each phase (queued, submitting, running)",
    ["phase", "provider"], buckets=_JOB_BUCKETS,
)  # fmt: skip
JOB_POLLS = Histogram("imagejobs_job_polls", "Polls a job took until its end", ["provider"], buckets=_POLL_BUCKETS)
UPSTREAM_REQUESTS = Counter(
    "imagejobs_upstream_requests", "Calls to an upstream by outcome (ok or the normalised error code)",
    ["provider", "channel", "operation", "outcome"],
)  # fmt: skip
UPSTREAM_SECONDS = Histogram(
    "imagejobs_upstream_request_seconds", "Latency of one call to an upstream", ["provider", "operation"],
    buckets=_CALL_BUCKETS,
)  # fmt: skip
WEBHOOK_ATTEMPTS = Counter("imagejobs_webhook_attempts", "Webhook delivery attempts by outcome", ["outcome"])
WEBHOOK_SECONDS = Histogram(
    "imagejobs_webhook_delivery_seconds", "Latency of one webhook attempt", buckets=_CALL_BUCKETS
)
WEBHOOK_DELIVERY_DELAY = Histogram(
    "imagejobs_webhook_delivered_after_seconds", "From the job's end to the delivered webhook", buckets=_JOB_BUCKETS
)
COST = Counter("imagejobs_cost", "Cost recorded for succeeded jobs", ["model", "currency"])
HTTP_REQUESTS = Counter(
    "imagejobs_http_requests", "API requests by route template and status", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "imagejobs_http_request_seconds", "API request latency", ["method", "route"], buckets=_CALL_BUCKETS
)


class _Counted(Protocol):
    provider: str
    model: str


def count_accepted(jobs: Iterable[_Counted]) -> None:
    for job in jobs:
        JOBS_ACCEPTED.labels(provider=job.provider, model=job.model).inc()


class _Ended(Protocol):
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def status(self) -> StrEnum | str: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def poll_count(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def running_since(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...


def count_finished(job: _Ended) -> None:
    """The terminal transition's winner: counts, total duration, time running, polls."""
    status = str(job.status)
    JOBS_FINISHED.labels(status=status, provider=job.provider, model=job.model, error_code=job.error_code or "").inc()
    JOB_POLLS.labels(provider=job.provider).observe(job.poll_count)
    if job.finished_at is None:
        return
    JOB_DURATION.labels(provider=job.provider, status=status).observe(seconds_between(job.created_at, job.finished_at))
    if job.running_since is not None:
        observe_phase("running", job.provider, seconds_between(job.running_since, job.finished_at))


def observe_phase(phase: str, provider: str, seconds: float) -> None:
    JOB_PHASE.labels(phase=phase, provider=provider).observe(max(seconds, 0.0))


def count_upstream(*, provider: str, channel: str | None, operation: str, outcome: str, seconds: float) -> None:
    UPSTREAM_REQUESTS.labels(provider=provider, channel=channel or "default", operation=operation,
                             outcome=outcome).inc()  # fmt: skip
    UPSTREAM_SECONDS.labels(provider=provider, operation=operation).observe(seconds)


@contextmanager
def upstream_call(*, provider: str, channel: str | None, operation: str) -> Iterator[None]:
    """Count one call to an upstream and how long it took; its outcome is ``ok`` or the error's code."""
    started, outcome = time.monotonic(), "ok"
    try:
        yield
    except ProviderError as exc:
        outcome = exc.code
        raise
    finally:
        count_upstream(provider=provider, channel=channel, operation=operation, outcome=outcome,
                       seconds=time.monotonic() - started)  # fmt: skip


def seconds_between(earlier: datetime, later: datetime) -> float:
    if (earlier.tzinfo is None) != (later.tzinfo is None):  # SQLite hands back naive UTC
        earlier, later = earlier.replace(tzinfo=None), later.replace(tzinfo=None)
    return max((later - earlier).total_seconds(), 0.0)


#: kombu's Redis transport keeps one list per priority step: ``queue`` for the first, ``queue\x06\x16N`` after
#: (https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.transport.redis.html)
_PRIORITY_SEP: Final = "\x06\x16"
#: kombu's hash of messages taken by a worker and not yet acknowledged (running, or held until their ETA)
_UNACKED: Final = "unacked"


class QueueDepth(Collector):
    """``imagejobs_queue_messages{queue}`` (waiting, all priorities) and ``imagejobs_messages_held`` (taken by
    workers and not acknowledged: running tasks and ETA'd polls), read from the Redis broker at scrape time."""

    def __init__(self, redis: Redis, queues: Sequence[str], priority_steps: Sequence[int]) -> None:
        self._redis = redis
        self._queues = list(queues)
        self._steps = list(priority_steps)

    def collect(self) -> Iterable[Metric]:
        waiting = GaugeMetricFamily("imagejobs_queue_messages", "Messages waiting in a Celery queue", labels=["queue"])
        held = GaugeMetricFamily("imagejobs_messages_held", "Messages taken by workers, not yet acknowledged")
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for queue in self._queues:
                    for step in self._steps:
                        pipe.llen(queue if step == 0 else f"{queue}{_PRIORITY_SEP}{step}")
                pipe.hlen(_UNACKED)
                lengths = pipe.execute()
        except RedisError:  # a scrape during a Redis outage shows the outage (no series), not an error page
            return
        per_queue = len(self._steps)
        for index, queue in enumerate(self._queues):
            waiting.add_metric([queue], sum(lengths[index * per_queue : (index + 1) * per_queue]))
        held.add_metric([], lengths[-1])
        yield waiting
        yield held


def scrape(extra: Sequence[Collector] = ()) -> bytes:
    """The exposition text: this process's metrics, or every API process's under ``PROMETHEUS_MULTIPROC_DIR``."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for collector in extra:
            registry.register(collector)
        return generate_latest(registry)
    if not extra:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    registry.register(_Everything())
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


class _Everything(Collector):
    """The default registry's metrics inside another registry (to add scrape-time collectors per request)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()
