"""The Celery app for ``celery -A worker.app``: the composition root of the worker process.

It wires settings, logging, the database engine, HTTP clients and the provider registry into one
``Runtime``, built lazily once per process (after any fork).
"""

from __future__ import annotations

import logging
import threading

import httpx
from celery import Celery
from redis import Redis, RedisError

from shared.config import get_settings
from shared.db.engine import make_engine
from shared.egress import EgressPolicy, guarded_client
from shared.logs import configure_logging
from shared.queue import JOB_DONE_CHANNEL, TaskSender, make_celery
from shared.storage import LocalStorage
from worker import kombu_workarounds
from worker.capacity import Capacity
from worker.inputs import HttpImageLoader
from worker.providers.registry import build_providers, split_default
from worker.runtime import Runtime
from worker.scheduling.latency import LatencyBook, RedisCompletions

log = logging.getLogger(__name__)

settings = get_settings()
configure_logging()
kombu_workarounds.apply()  # the worker must survive a Redis restart (see the module)
app: Celery = make_celery(settings, main="worker")
app.conf.include = ["worker.tasks"]

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def build_runtime() -> Runtime:
    concurrency = settings.celery.worker_concurrency
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)

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
        engine=make_engine(settings.database_url, pool_size=min(concurrency, 20)),
        providers=providers,
        channels=channels,
        capacity=Capacity.redis(redis, settings),
        latency=LatencyBook(RedisCompletions.from_url(settings.redis_url)),
        storage=LocalStorage(settings.files_dir),
        sender=TaskSender(app),
        announce_done=announce_done,
        downloads=httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), trust_env=False, follow_redirects=True),
        webhook_http=guarded_client(
            egress, timeout=httpx.Timeout(settings.webhooks.timeout_s, connect=settings.webhooks.connect_timeout_s)
        ),
    )


def runtime() -> Runtime:
    """The process-wide runtime (built on first use; thread-safe for the threads pool)."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                _runtime = build_runtime()
    return _runtime
