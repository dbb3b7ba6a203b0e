"""Settings from the environment, the Celery configuration every process shares, and ``TaskSender``."""

from __future__ import annotations

import base64
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared.config import (
    EMULATOR_KLING_ACCESS_KEY,
    EMULATOR_KLING_SECRET_KEY,
    EMULATOR_OPENAI_API_KEY,
    Settings,
    load_settings,
    provider_modes,
)
from shared.errors import ConfigurationError
from shared.jobs import Priority
from shared.queue import MAX_COUNTDOWN_S, PROVIDER_NAMES, QueueName, Route, TaskName, TaskSender, celery_config
from tests.conftest import make_settings
from tests.support import API_KEY, OTHER_API_KEY, SIGNING_KEY, WEBHOOK_SECRET

REQUIRED = {
    "IMAGEJOBS_API_KEYS": API_KEY,
    "IMAGEJOBS_SIGNING_KEY": SIGNING_KEY,
    "IMAGEJOBS_WEBHOOKS__SECRET": WEBHOOK_SECRET,
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The required variables set to valid values (the autouse fixture cleared every IMAGEJOBS_*)."""
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def _config_error() -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    return str(caught.value)


# -- load_settings -----------------------------------------------------------------------------------


def test_load_settings_reads_the_environment(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("IMAGEJOBS_REDIS_URL", "redis://cache.internal:6380/2")
    env.setenv("IMAGEJOBS_FILES_DIR", str(tmp_path))
    env.setenv("IMAGEJOBS_SWEEPER__MAX_SUBMIT_ATTEMPTS", "5")
    env.setenv("IMAGEJOBS_CELERY__VISIBILITY_TIMEOUT_S", "600")
    env.setenv("IMAGEJOBS_WEBHOOKS__RETRY_DELAYS_S", "[1, 2.5]")

    settings = load_settings()

    assert settings.redis_url == "redis://cache.internal:6380/2"
    assert settings.files_dir == tmp_path
    assert settings.sweeper.max_submit_attempts == 5
    assert settings.celery.visibility_timeout_s == 600
    assert settings.webhooks.retry_delays_s == [1.0, 2.5]
    assert settings.signing_key.get_secret_value() == SIGNING_KEY


def test_missing_required_values_are_named() -> None:
    message = _config_error()

    assert "IMAGEJOBS_API_KEYS" in message
    assert "IMAGEJOBS_SIGNING_KEY" in message
    assert "IMAGEJOBS_WEBHOOKS" in message


def test_missing_webhook_secret_alone_is_named(env: pytest.MonkeyPatch) -> None:
    env.delenv("IMAGEJOBS_WEBHOOKS__SECRET")

    message = _config_error()

    assert "IMAGEJOBS_WEBHOOKS" in message
    assert "IMAGEJOBS_SIGNING_KEY" not in message


def test_short_signing_key_is_named(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_SIGNING_KEY", "short")

    assert "IMAGEJOBS_SIGNING_KEY" in _config_error()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "localhost:6379", "memcached://x"])
def test_bad_redis_url_is_named(env: pytest.MonkeyPatch, url: str) -> None:
    env.setenv("IMAGEJOBS_REDIS_URL", url)

    message = _config_error()

    assert "IMAGEJOBS_REDIS_URL" in message
    assert "redis://" in message


@pytest.mark.parametrize("url", ["redis://h:1/0", "rediss://h:1/0", "unix:///run/redis.sock"])
def test_redis_url_schemes_accepted(env: pytest.MonkeyPatch, url: str) -> None:
    env.setenv("IMAGEJOBS_REDIS_URL", url)

    assert load_settings().redis_url == url


def test_bad_database_url_is_named(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_DATABASE_URL", "mysql://db/imagejobs")

    assert "IMAGEJOBS_DATABASE_URL" in _config_error()


@pytest.mark.parametrize(
    ("soft", "hard", "visibility"),
    [
        pytest.param("270", "270", "900", id="soft-equals-hard"),
        pytest.param("300", "270", "900", id="soft-above-hard"),
        pytest.param("240", "900", "900", id="hard-equals-visibility"),
        pytest.param("240", "1000", "900", id="hard-above-visibility"),
    ],
)
def test_celery_limits_must_be_ordered(env: pytest.MonkeyPatch, soft: str, hard: str, visibility: str) -> None:
    env.setenv("IMAGEJOBS_CELERY__SOFT_TIME_LIMIT_S", soft)
    env.setenv("IMAGEJOBS_CELERY__TIME_LIMIT_S", hard)
    env.setenv("IMAGEJOBS_CELERY__VISIBILITY_TIMEOUT_S", visibility)

    message = _config_error()

    assert "IMAGEJOBS_CELERY" in message
    assert "soft_time_limit_s < time_limit_s < visibility_timeout_s" in message


def test_celery_limits_in_order_are_accepted(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_CELERY__SOFT_TIME_LIMIT_S", "100")
    env.setenv("IMAGEJOBS_CELERY__TIME_LIMIT_S", "120")
    env.setenv("IMAGEJOBS_CELERY__VISIBILITY_TIMEOUT_S", "300")

    celery = load_settings().celery

    assert (celery.soft_time_limit_s, celery.time_limit_s, celery.visibility_timeout_s) == (100, 120, 300)


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(base64.b64encode(b"k" * 32).decode(), id="no-prefix"),
        pytest.param("whsec_not*base64!", id="not-base64"),
        pytest.param("whsec_" + base64.b64encode(b"k" * 8).decode(), id="too-short"),
        pytest.param("whsec_" + base64.b64encode(b"k" * 65).decode(), id="too-long"),
        pytest.param("whsec_", id="empty"),
    ],
)
def test_webhook_secret_must_be_whsec_and_base64(env: pytest.MonkeyPatch, secret: str) -> None:
    env.setenv("IMAGEJOBS_WEBHOOKS__SECRET", secret)

    message = _config_error()

    assert "IMAGEJOBS_WEBHOOKS__SECRET" in message
    assert "whsec_" in message


def test_bad_webhook_secret_is_not_echoed_in_the_error(env: pytest.MonkeyPatch) -> None:
    leaked = base64.b64encode(b"do-not-log-me").decode()
    env.setenv("IMAGEJOBS_WEBHOOKS__SECRET", leaked)

    assert leaked not in _config_error()


def test_negative_webhook_retry_delay_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_WEBHOOKS__RETRY_DELAYS_S", "[5, -1]")

    assert "IMAGEJOBS_WEBHOOKS__RETRY_DELAYS_S" in _config_error()


def test_default_webhook_schedule_is_ten_attempts_over_about_three_days(env: pytest.MonkeyPatch) -> None:
    delays = load_settings().webhooks.retry_delays_s

    assert len(delays) + 1 == 10
    assert 2.9 * 86400 < sum(delays) < 3.3 * 86400


def test_api_keys_are_split_on_commas(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_API_KEYS", f" {API_KEY} ,{OTHER_API_KEY},, ")

    keys = [key.get_secret_value() for key in load_settings().api_keys]

    assert keys == [API_KEY, OTHER_API_KEY]


def test_short_api_key_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_API_KEYS", f"{API_KEY},tooshort")

    message = _config_error()

    assert "IMAGEJOBS_API_KEYS" in message
    assert "tooshort" not in message


def test_providers_without_credentials_use_the_emulator(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_EMULATOR_URL", "http://127.0.0.1:9555/")

    settings = load_settings()

    assert settings.kling.base_url == "http://127.0.0.1:9555/kling"
    assert settings.kling.access_key is not None and settings.kling.secret_key is not None
    assert settings.kling.access_key.get_secret_value() == EMULATOR_KLING_ACCESS_KEY
    assert settings.kling.secret_key.get_secret_value() == EMULATOR_KLING_SECRET_KEY
    assert settings.openai.base_url == "http://127.0.0.1:9555/openai"
    assert settings.openai.api_key is not None
    assert settings.openai.api_key.get_secret_value() == EMULATOR_OPENAI_API_KEY
    assert provider_modes(settings) == dict.fromkeys(settings.provider_sections(), "emulated")


def test_provider_with_credentials_keeps_its_real_base_url(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_KLING__ACCESS_KEY", "real-ak")
    env.setenv("IMAGEJOBS_KLING__SECRET_KEY", "real-sk")
    env.setenv("IMAGEJOBS_OPENAI__API_KEY", "sk-real")

    settings = load_settings()

    assert settings.kling.base_url == "https://api-singapore.klingai.com"
    assert settings.kling.access_key is not None
    assert settings.kling.access_key.get_secret_value() == "real-ak"
    assert settings.openai.base_url == "https://api.openai.com"
    assert settings.openai.api_key is not None
    assert settings.openai.api_key.get_secret_value() == "sk-real"


def test_provider_with_credentials_and_a_base_url_uses_that_url(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_OPENAI__API_KEY", "sk-relay")
    env.setenv("IMAGEJOBS_OPENAI__BASE_URL", "https://relay.example.com/")

    settings = load_settings()

    assert settings.openai.base_url == "https://relay.example.com"
    assert settings.kling.mode == "disabled"  # no credentials and no emulator: not pointed anywhere
    assert settings.kling.access_key is None


def test_providers_without_credentials_are_disabled_unless_the_emulator_is_chosen(env: pytest.MonkeyPatch) -> None:
    settings = load_settings()

    assert provider_modes(settings) == dict.fromkeys(settings.provider_sections(), "disabled")
    assert settings.openai.api_key is None and settings.kling.access_key is None
    assert settings.openai.base_url == "https://api.openai.com"  # never the emulator
    assert settings.kling.credential_settings("kling") == ("IMAGEJOBS_KLING__ACCESS_KEY", "IMAGEJOBS_KLING__SECRET_KEY")
    assert settings.openai.credential_settings("openai") == ("IMAGEJOBS_OPENAI__API_KEY",)
    assert all(section.channel_names() == [] for section in settings.provider_sections().values())


def test_providers_are_live_emulated_or_disabled(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_EMULATOR_URL", "http://127.0.0.1:9555")
    env.setenv("IMAGEJOBS_OPENAI__API_KEY", "sk-real")
    env.setenv("IMAGEJOBS_BFL__CHANNELS", '[{"name": "bfl-b", "api_key": "bfl-real"}]')

    modes = provider_modes(load_settings())

    assert modes == {
        "kling": "emulated",
        "openai": "live",
        "gemini": "emulated",
        "ark": "emulated",
        "bfl": "live",  # its extra channel has credentials
        "relay": "emulated",
    }


def test_the_provider_mode_cannot_be_set_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("IMAGEJOBS_OPENAI___MODE", "live")
    env.setenv("IMAGEJOBS_OPENAI__MODE", "live")

    assert load_settings().openai.mode == "disabled"


def test_secrets_are_not_shown_in_the_settings_repr() -> None:
    text = repr(make_settings())

    assert SIGNING_KEY not in text
    assert WEBHOOK_SECRET not in text
    assert API_KEY not in text


# -- celery_config -----------------------------------------------------------------------------------


@pytest.fixture
def settings() -> Settings:
    return make_settings(celery={"visibility_timeout_s": 700, "soft_time_limit_s": 200, "time_limit_s": 230})


def test_celery_config_acknowledges_late_and_requeues_lost_work(settings: Settings) -> None:
    config = celery_config(settings)

    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["worker_eta_task_limit"] == settings.celery.eta_task_limit
    assert config["broker_url"] == settings.redis_url


def test_celery_config_speaks_json_only(settings: Settings) -> None:
    config = celery_config(settings)

    assert config["task_serializer"] == "json"
    assert config["accept_content"] == ["json"]


def test_celery_config_uses_one_visibility_timeout_everywhere(settings: Settings) -> None:
    config = celery_config(settings)

    assert config["visibility_timeout"] == 700
    assert config["broker_transport_options"]["visibility_timeout"] == 700
    assert config["result_backend_transport_options"]["visibility_timeout"] == 700


def test_celery_config_orders_soft_hard_and_visibility(settings: Settings) -> None:
    config = celery_config(settings)

    assert (config["task_soft_time_limit"], config["task_time_limit"]) == (200, 230)
    assert config["task_soft_time_limit"] < config["task_time_limit"] < config["visibility_timeout"]


def test_celery_config_default_timings_are_ordered() -> None:
    config = celery_config(make_settings())

    assert config["task_soft_time_limit"] < config["task_time_limit"] < config["visibility_timeout"]
    assert config["visibility_timeout"] > MAX_COUNTDOWN_S


def test_celery_config_routes_every_task_to_its_queue(settings: Settings) -> None:
    config = celery_config(settings)

    assert {queue.name for queue in config["task_queues"]} == {
        *(f"{queue}.{provider}" for queue in ("submit", "poll") for provider in PROVIDER_NAMES),
        QueueName.WEBHOOKS.value,
        QueueName.MAINTENANCE.value,
    }
    assert config["task_routes"] == {
        "imagejobs.deliver_webhook": {"queue": "webhooks"},
        "imagejobs.sweep": {"queue": "maintenance"},
        "imagejobs.purge_expired": {"queue": "maintenance"},
    }
    assert config["broker_transport_options"]["queue_order_strategy"] == "priority"
    assert config["beat_schedule"]["sweep"]["task"] == TaskName.SWEEP.value
    assert config["beat_schedule"]["sweep"]["schedule"] == settings.sweeper.interval_s
    assert config["beat_schedule"]["purge-expired"]["task"] == TaskName.PURGE_EXPIRED.value
    assert config["beat_schedule"]["purge-expired"]["schedule"] == settings.retention.interval_s


# -- TaskSender ----------------------------------------------------------------------------------------


class _RecordingCelery:
    """Just enough of ``celery.Celery`` for ``TaskSender``: records ``send_task`` calls, connects nowhere."""

    def __init__(self, broker_url: str = "redis://127.0.0.1:6379/0") -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.conf = SimpleNamespace(broker_url=broker_url)

    def send_task(self, name: str, **options: Any) -> None:
        self.sent.append((name, options))


@pytest.fixture
def celery() -> _RecordingCelery:
    return _RecordingCelery()


@pytest.fixture
def sender(celery: _RecordingCelery) -> TaskSender:
    return TaskSender(celery)  # type: ignore[arg-type]


KLING = Route(provider="kling")


def test_task_sender_sends_ids_only_to_the_providers_queue_at_the_jobs_priority(
    celery: _RecordingCelery, sender: TaskSender
) -> None:
    sender.submit("job-1", route=KLING)
    sender.poll("job-1", 3, route=Route(provider="gemini", priority=Priority.HIGH), countdown_s=4.5)
    sender.webhook(17, countdown_s=30)

    assert celery.sent == [
        ("imagejobs.submit_job", {"args": ("job-1",), "queue": "submit.kling", "countdown": None, "priority": 3,
                                  "headers": None}),
        ("imagejobs.poll_job", {"args": ("job-1", 3), "queue": "poll.gemini", "countdown": 4.5, "priority": 0,
                                "headers": None}),
        ("imagejobs.deliver_webhook", {"args": (17,), "queue": "webhooks", "countdown": 30, "priority": 3,
                                       "headers": None}),
    ]  # fmt: skip


def test_the_request_id_travels_in_a_message_header_never_in_the_arguments(
    celery: _RecordingCelery, sender: TaskSender
) -> None:
    from shared.logs import bound, request_ids_for_jobs

    with bound(request_id="req-1"):
        sender.submit("job-1", route=KLING)
        with request_ids_for_jobs({"job-2": "req-2"}):
            sender.submit("job-2", route=KLING)
            sender.submit("job-3", route=KLING)

    headers = [(options["args"], options["headers"]) for _, options in celery.sent]
    assert headers == [(("job-1",), {"request_id": "req-1"}), (("job-2",), {"request_id": "req-2"}),
                       (("job-3",), {"request_id": "req-1"})]  # fmt: skip


def test_every_provider_queue_is_declared() -> None:
    declared = {queue.name for queue in celery_config(make_settings())["task_queues"]}

    assert {f"submit.{name}" for name in PROVIDER_NAMES} | {f"poll.{name}" for name in PROVIDER_NAMES} <= declared
    assert set(PROVIDER_NAMES) == set(make_settings().provider_sections())


def test_task_sender_accepts_a_countdown_of_exactly_300_s(celery: _RecordingCelery, sender: TaskSender) -> None:
    sender.submit("job-1", route=KLING, countdown_s=300)

    assert celery.sent[0][1]["countdown"] == 300


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(lambda s: s.submit("job-1", route=KLING, countdown_s=300.5), id="submit"),
        pytest.param(lambda s: s.poll("job-1", 0, route=KLING, countdown_s=301), id="poll"),
        pytest.param(lambda s: s.webhook(1, countdown_s=3600), id="webhook"),
    ],
)
def test_task_sender_refuses_countdowns_above_300_s(celery: _RecordingCelery, sender: TaskSender, send: Any) -> None:
    with pytest.raises(ValueError, match="sweeper"):
        send(sender)

    assert celery.sent == []


# -- storage and retention ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"IMAGEJOBS_STORAGE__URL": "s3://Bad_Bucket"}, "IMAGEJOBS_STORAGE__URL"),
        ({"IMAGEJOBS_STORAGE__URL": "file://"}, "IMAGEJOBS_STORAGE__URL"),
        ({"IMAGEJOBS_STORAGE__ENDPOINT_URL": "minio:9000"}, "IMAGEJOBS_STORAGE__ENDPOINT_URL"),
        ({"IMAGEJOBS_STORAGE__SECRET_ACCESS_KEY": "half-a-pair"}, "IMAGEJOBS_STORAGE"),
        ({"IMAGEJOBS_STORAGE__URL": "s3://bucket1", "IMAGEJOBS_FILE_URL_TTL_S": "604801"}, "IMAGEJOBS_FILE_URL_TTL_S"),
        ({"IMAGEJOBS_RETENTION__JOBS_S": "60"}, "IMAGEJOBS_RETENTION"),
        ({"IMAGEJOBS_RETENTION__BATCH_SIZE": "0"}, "IMAGEJOBS_RETENTION__BATCH_SIZE"),
    ],
)
def test_bad_storage_and_retention_settings_are_named(
    env: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    for name, value in variables.items():
        env.setenv(name, value)

    message = _config_error()

    assert named in message
    assert "half-a-pair" not in message


def test_storage_defaults_to_the_files_dir_and_s3_settings_are_read(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("IMAGEJOBS_FILES_DIR", str(tmp_path))
    assert load_settings().storage.url == f"file://{tmp_path}"

    env.setenv("IMAGEJOBS_STORAGE__URL", "s3://images-bucket/prod/")
    env.setenv("IMAGEJOBS_STORAGE__ENDPOINT_URL", "https://abc.r2.cloudflarestorage.com/")
    env.setenv("IMAGEJOBS_STORAGE__REGION", "auto")
    env.setenv("IMAGEJOBS_STORAGE__ACCESS_KEY_ID", "AKIAEXAMPLE")
    env.setenv("IMAGEJOBS_STORAGE__SECRET_ACCESS_KEY", "s3-secret-value")
    env.setenv("IMAGEJOBS_STORAGE__PRESIGN", "false")
    storage = load_settings().storage

    assert (storage.url, storage.endpoint_url, storage.region, storage.presign) == (
        "s3://images-bucket/prod",
        "https://abc.r2.cloudflarestorage.com",
        "auto",
        False,
    )
    assert storage.is_s3()
    assert "s3-secret-value" not in repr(load_settings())
