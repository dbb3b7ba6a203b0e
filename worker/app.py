"""The Celery app for ``celery -A worker.app``: the composition root of the worker process.

It wires settings, logging, the database engine, HTTP clients and the provider registry into one
``Runtime``, built lazily once per process (after any fork).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import httpx
from celery import Celery, Task, signals
from redis import BlockingConnectionPool, Redis, RedisError

from shared.catalog import catalog_for
from shared.config import get_settings
from shared.db.engine import make_engine
from shared.egress import EgressPolicy, guarded_client
from shared.errors import ConfigurationError, ErrorCode
from shared.logs import begin_task, configure_logging, end_task
from shared.provider_modes import log_provider_report
from shared.queue import JOB_DONE_CHANNEL, TaskName, TaskSender, make_celery
from shared.storage import open_storage
from worker import ending, kombu_workarounds
from worker.capacity import Capacity
from worker.inflight import InflightCalls
from worker.inputs import HttpImageLoader
from worker.liveness import heartbeat_step
from worker.metrics_server import serve_metrics
from worker.providers.registry import build_providers, split_default
from worker.runtime import Runtime
from worker.scheduling.latency import LatencyBook, RedisCompletions

log = logging.getLogger(__name__)

try:
    settings = get_settings()
    catalog_for(settings)  # the operator's catalog files are checked in every process, as the API does
except ConfigurationError as exc:  # one line naming the setting, no traceback
    raise SystemExit(f"imagejobs: {exc}") from None
configure_logging(log_format=settings.log_format)
kombu_workarounds.apply()  # the worker must survive a Redis restart (see the module)
app: Celery = make_celery(settings, main="worker")
app.conf.include = ["worker.tasks"]
if settings.celery.heartbeat_file is not None:  # the liveness probe's signal (see worker/liveness.py)
    app.steps["consumer"].add(heartbeat_step(settings.celery.heartbeat_file))


@signals.worker_init.connect
def _report_providers(**_: object) -> None:
    """Once per worker at start: which providers are live, emulated or disabled (one warning for the latter)."""
    log_provider_report(settings, log)
    if settings.metrics.worker_port:
        serve_metrics(settings.metrics.worker_port, capacity=lambda: runtime().capacity, settings=settings)


@signals.task_prerun.connect
def _bind_task_context(task: Task[Any, Any] | None = None, args: Sequence[Any] = (), **_: object) -> None:
    """Every line a task logs names the task, its job and the request that caused it (a message header)."""
    if task is None:
        return
    job_id = args[0] if task.name in _JOB_TASKS and args and isinstance(args[0], str) else None
    request_id = task.request.get("request_id")
    begin_task(task=task.name, job_id=job_id, request_id=request_id if isinstance(request_id, str) else None)


@signals.task_postrun.connect
def _unbind_task_context(**_: object) -> None:
    end_task()


_JOB_TASKS = frozenset({TaskName.SUBMIT_JOB.value, TaskName.POLL_JOB.value})


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def build_runtime() -> Runtime:
    concurrency = settings.celery.worker_concurrency
    inflight = settings.celery.inflight_submits
    # every pool thread and in-flight step may use Redis at once: a blocking pool waits for a free connection
    # instead of raising (redis-py's default pool refuses the 101st: https://redis.readthedocs.io/en/stable/connections.html)
    threads = concurrency + inflight + concurrency  # pool, in-flight calls, their finishers
    redis = _redis(settings.redis_url, threads=threads, timeout_s=5.0)

    def announce_done(job_id: str) -> None:
        try:
            redis.publish(JOB_DONE_CHANNEL, job_id)
        except RedisError:  # waiters re-check the database; never fail a job over this
            log.warning("could not announce job %s as done", job_id, exc_info=True)

    egress = EgressPolicy.from_lists(hosts=settings.egress.allow_hosts, networks=settings.egress.allow_networks)
    input_http = guarded_client(
        egress, timeout=httpx.Timeout(30.0, connect=5.0), max_redirects=settings.egress.max_redirects
    )
    providers, channels = split_default(
        build_providers(settings, HttpImageLoader(input_http, max_bytes=settings.max_image_bytes))
    )
    return Runtime(
        settings=settings,
        # pool threads and finisher threads (as many) may each hold a connection: pool_size + overflow covers both
        engine=make_engine(settings.database_url, pool_size=min(concurrency, 20)),
        providers=providers,
        channels=channels,
        capacity=Capacity.redis(redis, settings),
        latency=LatencyBook(RedisCompletions(_redis(settings.redis_url, threads=threads, timeout_s=1.0))),
        storage=open_storage(settings),
        sender=TaskSender(app),
        announce_done=announce_done,
        downloads=httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), trust_env=False, follow_redirects=True),
        webhook_http=guarded_client(
            egress, timeout=httpx.Timeout(settings.webhooks.timeout_s, connect=settings.webhooks.connect_timeout_s)
        ),
        inflight=InflightCalls(limit=inflight, finishers=min(concurrency, 20), on_crash=_fail_crashed),
    )


def _fail_crashed(job_id: str) -> None:
    ending.fail_job_wherever(job_id, code=ErrorCode.INTERNAL_ERROR, message="internal error", rt=runtime())


def _redis(url: str, *, threads: int, timeout_s: float) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=min(threads, 64),
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    return Redis(connection_pool=pool)


def runtime() -> Runtime:
    """The process-wide runtime (built on first use; thread-safe for the threads pool)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = build_runtime()
    return _runtime
