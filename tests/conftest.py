"""Fixtures shared by every layer: real Redis, PostgreSQL and RabbitMQ when asked for, test settings, the emulator."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from amqp.exceptions import AMQPError
from kombu import Connection
from kombu.exceptions import OperationalError
from redis import Redis

from devstack.services import start_private_redis
from shared.config import Settings
from shared.db.migrate import upgrade
from tests.s3 import S3Bucket, fresh_bucket, s3_server
from tests.support import (
    API_KEY,
    OTHER_API_KEY,
    SIGNING_KEY,
    WEBHOOK_SECRET,
    Process,
    emulator_command,
    free_port,
    http_ok,
    wait_until,
)

#: the chaos suite's tally is printed by the process that owns the terminal (the xdist controller too)
pytest_plugins = ["tests.chaos.summary"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_ADMIN_URL = os.environ.get("IMAGEJOBS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: the machine's RabbitMQ (guest may only log in from loopback); tests use a vhost of their own, never "/"
RABBITMQ_URL = os.environ.get("IMAGEJOBS_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``--dist loadgroup``) the chaos tests run one after another on one worker: each kills
    and restarts processes and waits out shortened leases and sweeper intervals, so they stay apart from each
    other (the other workers go on with the rest). https://pytest-xdist.readthedocs.io/en/stable/distribution.html
    """
    for item in items:
        if item.get_closest_marker("chaos") is not None:
            item.add_marker(pytest.mark.xdist_group("chaos"))


#: tests whose xdist group this worker's collection lost (see ``pytest_collection_finish``)
_LOST_GROUPS: set[str] = set()


def pytest_collection_finish(session: pytest.Session) -> None:
    """In an xdist worker under ``--dist loadgroup``, xdist has suffixed each grouped test's id with ``@group`` by
    now (that suffix is all its scheduler goes by); where it has not, the groups would be spread silently, so those
    tests fail instead (``pytest_runtest_setup``)."""
    if session.config.getoption("loadgroup", default=False):
        _LOST_GROUPS.update(
            item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
        )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.nodeid in _LOST_GROUPS:
        pytest.fail("--dist loadgroup lost this test's xdist_group (pytest-xdist does not support this pytest)")


def make_settings(**overrides: object) -> Settings:
    """Settings built explicitly (the environment is not read for required values)."""
    values: dict[str, object] = {
        "api_keys": [API_KEY, OTHER_API_KEY],
        "signing_key": SIGNING_KEY,
        "webhooks": {"secret": WEBHOOK_SECRET, "retry_delays_s": [0.5, 1.0], "jitter": 0},
        "database_url": "sqlite:///:memory:",
        "emulator_url": "http://127.0.0.1:9",
        "egress": {"allow_networks": ["127.0.0.0/8"]},
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's IMAGEJOBS_* variables."""
    for name in list(os.environ):
        if name.startswith("IMAGEJOBS_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for this test session (never the machine's shared one)."""
    port = free_port()
    process = start_private_redis(tmp_path_factory.mktemp("redis"), port=port, appendonly=False)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


def _postgres_available() -> bool:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    if not _postgres_available():
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true but {POSTGRES_ADMIN_URL} does not answer")
        pytest.skip("PostgreSQL is not available (set IMAGEJOBS_TEST_POSTGRES_URL)")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test, dropped afterwards."""
    name = f"imagejobs_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres_server_url.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    yield url
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False)


def _rabbitmq_available() -> str | None:
    """None when the broker answers AMQP on ``RABBITMQ_URL`` and ``rabbitmqctl`` can manage it, else why not."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed"
    try:
        with Connection(f"{RABBITMQ_URL}/", connect_timeout=3) as connection:
            connection.connect()
    except (OSError, AMQPError, OperationalError) as exc:
        return f"{RABBITMQ_URL} does not answer ({exc})"
    done = _rabbitmqctl("list_vhosts")
    return None if done.returncode == 0 else f"rabbitmqctl cannot reach the node: {done.stderr.strip()[:200]}"


@pytest.fixture(scope="session")
def rabbitmq_server_url() -> str:
    if (problem := _rabbitmq_available()) is not None:
        if IN_CI:
            pytest.fail(f"RabbitMQ is required under CI=true but {problem}")
        pytest.skip(f"RabbitMQ is not available: {problem} (set IMAGEJOBS_TEST_RABBITMQ_URL)")
    return RABBITMQ_URL


@pytest.fixture
def rabbitmq_url(rabbitmq_server_url: str) -> Iterator[str]:
    """An ``amqp://`` URL of a vhost made for this test (guest may use it), deleted with its queues afterwards."""
    vhost = f"imagejobs-test-{uuid.uuid4().hex[:12]}"
    for args in (("add_vhost", vhost), ("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        done = _rabbitmqctl(*args)
        assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr}"
    try:
        yield f"{rabbitmq_server_url}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite database file."""
    url = f"sqlite:///{tmp_path / 'imagejobs.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs a test on both databases."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture(scope="session")
def emulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The upstream emulator as a real HTTP server (a separate process, like in production)."""
    port = free_port()
    logs = tmp_path_factory.mktemp("emulator")
    process = Process("emulator", emulator_command(port), env=dict(os.environ), log_dir=logs)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/_emulator/config"), timeout_s=20, what="the emulator")
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3 API server (moto's) for this test session, on loopback."""
    with s3_server(tmp_path_factory.mktemp("s3")) as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[S3Bucket]:
    """An empty bucket of its own for one test, removed afterwards."""
    with fresh_bucket(s3_endpoint) as bucket:
        yield bucket
