"""The producer↔worker contract: task and queue names, the Celery app factory, the done channel.

The producer sends tasks by name and never imports worker code. Task messages carry ids only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

from celery import Celery
from kombu import Exchange, Queue

from shared.catalog import load_catalog
from shared.config import Settings
from shared.jobs import Priority

#: Redis pub/sub channel on which workers announce job ids that reached a terminal state
JOB_DONE_CHANNEL: Final = "imagejobs:job-done"
MAX_COUNTDOWN_S: Final = 300.0


#: every upstream provider gets its own submit and poll queue, so a hanging upstream only holds its own work; the
#: providers are the ones the catalog's models name (a new provider's catalog file brings its queues)
PROVIDER_NAMES: Final[tuple[str, ...]] = tuple(sorted({entry.provider for entry in load_catalog().models.values()}))


#: Redis transport priorities: 0 is served first (kombu keeps one list per step and reads them in order)
PRIORITY_LEVELS: Final[dict[Priority, int]] = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}


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
}


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration every process uses (the same timings everywhere)."""
    timings = settings.celery
    transport = {
        "visibility_timeout": timings.visibility_timeout_s,
        "queue_order_strategy": "priority",
        "priority_steps": sorted(PRIORITY_LEVELS.values()),
        "health_check_interval": 25,
        "socket_keepalive": True,
        "socket_connect_timeout": 5,
    }
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": transport,
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
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in all_queue_names()],
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
            }
        },
    }


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

    def submit(self, job_id: str, *, route: Route, countdown_s: float = 0) -> None:
        self._send(TaskName.SUBMIT_JOB, (job_id,), countdown_s, route=route)

    def poll(self, job_id: str, poll_count: int, *, route: Route, countdown_s: float) -> None:
        self._send(TaskName.POLL_JOB, (job_id, poll_count), countdown_s, route=route)

    def webhook(self, delivery_id: int, *, countdown_s: float = 0) -> None:
        self._send(TaskName.DELIVER_WEBHOOK, (delivery_id,), countdown_s, route=None)

    def _send(self, name: TaskName, args: tuple[str | int, ...], countdown_s: float, *, route: Route | None) -> None:
        if countdown_s > MAX_COUNTDOWN_S:
            raise ValueError(f"countdown {countdown_s}s exceeds {MAX_COUNTDOWN_S}s; long waits belong to the sweeper")
        countdown = countdown_s if countdown_s > 0 else None
        queue = route.queue(name) if route is not None else TASK_QUEUES[name].value
        priority = PRIORITY_LEVELS[route.priority] if route is not None else PRIORITY_LEVELS[Priority.NORMAL]
        self._celery.send_task(name.value, args=args, queue=queue, countdown=countdown, priority=priority)
