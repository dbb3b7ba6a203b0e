"""The Celery broker is chosen by URL: Redis (the default) or RabbitMQ; a bad URL stops every process in one line."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace
from typing import Any

import pytest

from shared.config import load_settings
from shared.errors import ConfigurationError
from shared.jobs import Priority
from shared.queue import AMQP_MAX_PRIORITY, Route, TaskSender, all_queue_names, celery_config
from tests.conftest import make_settings
from tests.support import API_KEY, REPO, SIGNING_KEY, WEBHOOK_SECRET, python_command

AMQP_URL = "amqp://guest:guest@rabbitmq.internal:5672/imagejobs"


def test_the_broker_defaults_to_the_redis_url() -> None:
    settings = make_settings(redis_url="redis://cache.internal:6380/2")
    config = celery_config(settings)

    assert settings.broker_kind() == "redis"
    assert config["broker_url"] == "redis://cache.internal:6380/2"
    assert config["broker_transport_options"]["visibility_timeout"] == settings.celery.visibility_timeout_s
    assert all(queue.queue_arguments is None for queue in config["task_queues"])


def test_an_amqp_url_selects_rabbitmq_with_priority_queues_and_publisher_confirms() -> None:
    settings = make_settings(redis_url="redis://cache.internal:6380/2", broker_url=AMQP_URL)
    config = celery_config(settings)

    assert settings.broker_kind() == "amqp"
    assert config["broker_url"] == AMQP_URL
    options = config["broker_transport_options"]
    assert options["confirm_publish"] is True
    assert "visibility_timeout" not in options and "priority_steps" not in options
    assert [queue.name for queue in config["task_queues"]] == all_queue_names()
    assert {queue.queue_arguments["x-max-priority"] for queue in config["task_queues"]} == {AMQP_MAX_PRIORITY}
    # the delivery guarantees do not depend on the broker
    assert config["task_acks_late"] is True and config["task_reject_on_worker_lost"] is True


class _RecordingCelery:
    def __init__(self, broker_url: str) -> None:
        self.conf = SimpleNamespace(broker_url=broker_url)
        self.sent: list[dict[str, Any]] = []

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append(options)


@pytest.mark.parametrize(
    ("broker_url", "expected"),
    [
        # Redis: kombu reads the lowest step first
        ("redis://127.0.0.1:6379/0", {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}),
        # RabbitMQ: the highest priority is delivered first, up to x-max-priority
        (AMQP_URL, {Priority.HIGH: AMQP_MAX_PRIORITY, Priority.NORMAL: 1, Priority.LOW: 0}),
    ],
)
def test_each_priority_is_sent_in_the_brokers_own_order(broker_url: str, expected: dict[Priority, int]) -> None:
    celery = _RecordingCelery(broker_url)
    sender = TaskSender(celery)  # type: ignore[arg-type]

    for priority in (Priority.HIGH, Priority.NORMAL, Priority.LOW):
        sender.submit("job", route=Route(provider="kling", priority=priority))

    assert [options["priority"] for options in celery.sent] == [
        expected[Priority.HIGH],
        expected[Priority.NORMAL],
        expected[Priority.LOW],
    ]


@pytest.mark.parametrize(
    "bad_url",
    ["kafka://broker:9092", "amqp://", "rabbitmq.internal:5672", "amqp://guest@host:notaport/", "memory://"],
)
def test_a_bad_broker_url_is_named(monkeypatch: pytest.MonkeyPatch, bad_url: str) -> None:
    for name, value in {
        "IMAGEJOBS_API_KEYS": API_KEY,
        "IMAGEJOBS_SIGNING_KEY": SIGNING_KEY,
        "IMAGEJOBS_WEBHOOKS__SECRET": WEBHOOK_SECRET,
        "IMAGEJOBS_BROKER_URL": bad_url,
    }.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigurationError, match="IMAGEJOBS_BROKER_URL"):
        load_settings()


ENTRY_POINTS = {
    "api": python_command("-m", "uvicorn", "--factory", "producer.http.app:create_app", "--port", "9"),
    "worker": python_command("-m", "celery", "-A", "worker.app", "worker", "--pool", "threads"),
    "migrate": python_command("-m", "producer.cli", "migrate"),
}


@pytest.mark.parametrize("process", list(ENTRY_POINTS))
def test_a_process_with_a_bad_broker_url_stops_with_one_line_naming_it(process: str) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "IMAGEJOBS_API_KEYS": API_KEY,
        "IMAGEJOBS_SIGNING_KEY": SIGNING_KEY,
        "IMAGEJOBS_WEBHOOKS__SECRET": WEBHOOK_SECRET,
        "IMAGEJOBS_BROKER_URL": "kafka://broker:9092",
    }
    done = subprocess.run(ENTRY_POINTS[process], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)

    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("imagejobs: invalid settings: IMAGEJOBS_BROKER_URL:")
