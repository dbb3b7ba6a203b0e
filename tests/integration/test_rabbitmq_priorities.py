"""On RabbitMQ our three priorities are served in order: the queues are declared with ``x-max-priority`` and each
priority is sent as the AMQP priority that RabbitMQ delivers first (the highest), the reverse of Redis' steps.

Messages are published by ``TaskSender`` through a Celery app bound to a vhost of this test's own, then read
back with ``basic_get`` in the order the broker delivers them. Without the queue argument RabbitMQ would
deliver them first in, first out, and the test fails.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kombu import Connection

from shared.jobs import Priority
from shared.queue import Route, TaskSender, make_celery
from tests.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.rabbitmq]

SENT = [Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.LOW, Priority.HIGH, Priority.NORMAL]


def test_rabbitmq_delivers_high_before_normal_before_low(rabbitmq_url: str) -> None:
    celery = make_celery(make_settings(broker_url=rabbitmq_url), main="priority-test")
    try:
        sender = TaskSender(celery)
        for n, priority in enumerate(SENT):
            sender.submit(f"{priority.value}-{n}", route=Route(provider="kling", priority=priority))
    finally:
        celery.close()

    delivered: list[str] = []
    with Connection(rabbitmq_url, connect_timeout=5) as connection:
        channel: Any = connection.channel()
        while (message := channel.basic_get("submit.kling", no_ack=True)) is not None:
            args, _kwargs, _embed = json.loads(message.body)
            delivered.append(args[0])
        channel.close()

    assert [job_id.split("-")[0] for job_id in delivered] == ["high", "high", "normal", "normal", "low", "low"]
    # within one priority, first in, first out
    assert delivered == ["high-2", "high-4", "normal-1", "normal-5", "low-0", "low-3"]
