"""The producer↔worker contract: task and queue names, the Celery app factory, the done channel.

The producer sends tasks by name and never imports worker code. Task messages carry ids only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from celery import Celery
from kombu import Exchange, Producer, Queue

from shared.catalog import load_catalog
from shared.config import BROKER_SCHEMES, BrokerKind, Settings
from shared.jobs import Priority
from shared.logs import current, request_id_of_job

#: Redis pub/sub channel on which workers announce job ids that reached a terminal state
JOB_DONE_CHANNEL: Final = "imagejobs:job-done"
MAX_COUNTDOWN_S: Final = 300.0


#: every upstream provider gets its own submit and poll queue, so a hanging upstream only holds its own work; the
#: providers are the ones the catalog's models name (a new provider's catalog file brings its queues)
PROVIDER_NAMES: Final[tuple[str, ...]] = tuple(sorted({entry.provider for entry in load_catalog().models.values()}))


#: Redis transport priorities: 0 is served first (kombu keeps one list per step and reads them in order)
PRIORITY_LEVELS: Final[dict[Priority, int]] = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}

#: RabbitMQ priorities are the other way round, the highest is served first, up to the queue's ``x-max-priority``
#: (few levels: each costs the broker memory; https://www.rabbitmq.com/docs/priority)
AMQP_PRIORITY_LEVELS: Final[dict[Priority, int]] = {Priority.HIGH: 2, Priority.NORMAL: 1, Priority.LOW: 0}
AMQP_MAX_PRIORITY: Final = max(AMQP_PRIORITY_LEVELS.values())


def priority_levels(kind: BrokerKind) -> dict[Priority, int]:
    """The message priority each of our priorities is sent with on this broker."""
    return AMQP_PRIORITY_LEVELS if kind == "amqp" else PRIORITY_LEVELS


@dataclass(frozen=True, slots=True)
class Route:
    """Where a job's submit and poll messages go: its provider's queues, at its priority."""

    provider: str
    priority: Priority = Priority.NORMAL

    def queue(self, task: TaskName) -> str:
        base = TASK_QUEUES[task].value
        return f"{base}.{self.provider}" if task in (TaskName.SUBMIT_JOB, TaskName.POLL_JOB) else base


class Routed(Protocol):
    """Anything with a provider and a priority (a job row)."""

    provider: str
    priority: str


def route_of(job: Routed) -> Route:
    """The queues (the job's provider) and priority its messages go to."""
    return Route(provider=job.provider, priority=Priority(job.priority))


class TaskName(StrEnum):
    SUBMIT_JOB = "imagejobs.submit_job"
    POLL_JOB = "imagejobs.poll_job"
    DELIVER_WEBHOOK = "imagejobs.deliver_webhook"
    SWEEP = "imagejobs.sweep"
    PURGE_EXPIRED = "imagejobs.purge_expired"


class QueueName(StrEnum):
    SUBMIT = "submit"
    POLL = "poll"
    WEBHOOKS = "webhooks"
    MAINTENANCE = "maintenance"


TASK_QUEUES: Final[dict[TaskName, QueueName]] = {
    TaskName.SUBMIT_JOB: QueueName.SUBMIT,
    TaskName.POLL_JOB: QueueName.POLL,
    TaskName.DELIVER_WEBHOOK: QueueName.WEBHOOKS,
    TaskName.SWEEP: QueueName.MAINTENANCE,
    TaskName.PURGE_EXPIRED: QueueName.MAINTENANCE,
}


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration every process uses (the same timings everywhere)."""
    timings = settings.celery
    kind = settings.broker_kind()
    return {
        "broker_url": settings.broker(),
        "broker_transport_options": transport_options(kind, settings),
        "result_backend_transport_options": {"visibility_timeout": timings.visibility_timeout_s},
        "visibility_timeout": timings.visibility_timeout_s,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_soft_time_limit": timings.soft_time_limit_s,
        "task_time_limit": timings.time_limit_s,
        "worker_prefetch_multiplier": 1,
        "worker_eta_task_limit": timings.eta_task_limit,
        "worker_soft_shutdown_timeout": timings.soft_shutdown_timeout_s,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": timings.task_events,
        "task_send_sent_event": timings.task_events,
        "task_queues": declared_queues(kind),
        "task_default_queue": QueueName.MAINTENANCE.value,
        # submit and poll messages name their provider's queue when sent (``Route``); the rest route by name
        "task_routes": {
            task.value: {"queue": queue.value}
            for task, queue in TASK_QUEUES.items()
            if task not in (TaskName.SUBMIT_JOB, TaskName.POLL_JOB)
        },
        "beat_schedule": {
            "sweep": {
                "task": TaskName.SWEEP.value,
                "schedule": settings.sweeper.interval_s,
                "options": {"expires": settings.sweeper.interval_s},
            },
            "purge-expired": {
                "task": TaskName.PURGE_EXPIRED.value,
                "schedule": settings.retention.interval_s,
                "options": {"expires": settings.retention.interval_s},
            },
        },
    }


def transport_options(kind: BrokerKind, settings: Settings) -> dict[str, Any]:
    """kombu's options for the broker in use.

    Redis: a message taken but not acknowledged returns after ``visibility_timeout`` (and is held in an
    ``unacked`` hash meanwhile). RabbitMQ has no visibility timeout: an unacknowledged message returns as soon as
    the consumer's channel closes (a killed worker's TCP connection drops), and publisher confirms make a
    send return only once the broker has the message
    (https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/rabbitmq.html).
    """
    if kind == "amqp":
        return {"confirm_publish": True, "connect_timeout": 5}
    return {
        "visibility_timeout": settings.celery.visibility_timeout_s,
        "queue_order_strategy": "priority",
        "priority_steps": sorted(PRIORITY_LEVELS.values()),
        "health_check_interval": 25,
        "socket_keepalive": True,
        "socket_connect_timeout": 5,
    }


def declared_queues(kind: BrokerKind) -> list[Queue]:
    """Every queue, each on its own direct exchange; on RabbitMQ declared as priority queues."""
    arguments = {"x-max-priority": AMQP_MAX_PRIORITY} if kind == "amqp" else None
    return [Queue(name, Exchange(name), routing_key=name, queue_arguments=arguments) for name in all_queue_names()]


def all_queue_names() -> list[str]:
    """The webhook and maintenance queues, plus a submit and a poll queue per provider."""
    per_provider = [
        f"{queue.value}.{provider}" for queue in (QueueName.SUBMIT, QueueName.POLL) for provider in PROVIDER_NAMES
    ]
    return [*per_provider, QueueName.WEBHOOKS.value, QueueName.MAINTENANCE.value]


def make_celery(settings: Settings, *, main: str = "imagejobs") -> Celery:
    """A Celery app bound to ``settings``; the producer uses it to send, the worker to run."""
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


class TaskSender:
    """Sends id-only task messages by name (used by the producer, the worker and the sweeper)."""

    def __init__(self, celery: Celery) -> None:
        self._celery = celery
        # the app's broker (not Settings): a test or tool may bind an app to another broker
        scheme = urlsplit(str(celery.conf.broker_url)).scheme
        self._levels = priority_levels(BROKER_SCHEMES.get(scheme, "redis"))

    def submit(self, job_id: str, *, route: Route, countdown_s: float = 0) -> None:
        self._send(TaskName.SUBMIT_JOB, (job_id,), countdown_s, route=route)

    def submit_many(self, jobs: Sequence[tuple[str, Route]]) -> None:
        """One submit message per (job id, route), written to Redis in one pipeline (kombu's ``Producer.batch``,
        https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.html#kombu.Producer.batch); transports
        without batches publish one by one."""
        if not jobs:
            return
        with self._celery.producer_or_acquire() as producer, producer.batch():
            for job_id, route in jobs:
                self._send(TaskName.SUBMIT_JOB, (job_id,), 0, route=route, producer=producer)

    def poll(self, job_id: str, poll_count: int, *, route: Route, countdown_s: float) -> None:
        self._send(TaskName.POLL_JOB, (job_id, poll_count), countdown_s, route=route)

    def webhook(self, delivery_id: int, *, countdown_s: float = 0) -> None:
        self._send(TaskName.DELIVER_WEBHOOK, (delivery_id,), countdown_s, route=None)

    def _send(
        self,
        name: TaskName,
        args: tuple[str | int, ...],
        countdown_s: float,
        *,
        route: Route | None,
        producer: Producer | None = None,
    ) -> None:
        if countdown_s > MAX_COUNTDOWN_S:
            raise ValueError(f"countdown {countdown_s}s exceeds {MAX_COUNTDOWN_S}s; long waits belong to the sweeper")
        countdown = countdown_s if countdown_s > 0 else None
        queue = route.queue(name) if route is not None else TASK_QUEUES[name].value
        priority = self._levels[route.priority if route is not None else Priority.NORMAL]
        # the request that caused the message, for the worker's log lines: a header, never an argument
        request_id = request_id_of_job(args[0]) if isinstance(args[0], str) else current("request_id")
        headers = {"request_id": request_id} if request_id is not None else None
        if producer is None:
            self._celery.send_task(
                name.value, args=args, queue=queue, countdown=countdown, priority=priority, headers=headers
            )
        else:  # inside a publish batch (``submit_many``)
            self._celery.send_task(
                name.value, args=args, queue=queue, countdown=countdown, priority=priority, producer=producer,
                headers=headers,
            )  # fmt: skip
