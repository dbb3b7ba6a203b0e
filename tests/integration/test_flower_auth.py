"""Flower behind basic auth (R19): the dashboard and its API refuse anonymous callers, accept the configured ones.

Flower runs as a real subprocess (``celery -A worker.app flower``) on the private Redis, with
``FLOWER_BASIC_AUTH`` from our settings (``IMAGEJOBS_FLOWER_USER`` / ``IMAGEJOBS_FLOWER_PASSWORD``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import make_settings
from tests.support import Process, base_env, free_port, python_command, wait_until

# one xdist worker runs the module: its Flower (a module fixture) starts once
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("flower")]

USER = "ops"
PASSWORD = "flower-test-password-7c1d"


@dataclass
class Flower:
    url: str
    process: Process


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def flower(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flower]:
    """One Flower for the module (it only reads the broker: the private Redis's DB 0 is enough)."""
    tmp_path = tmp_path_factory.mktemp("flower")
    basic_auth = make_settings(flower_user=USER, flower_password=PASSWORD).flower_basic_auth()
    assert basic_auth == f"{USER}:{PASSWORD}"
    env = base_env(
        redis_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'imagejobs.db'}",
        files_dir=tmp_path / "files",
        emulator_url="http://127.0.0.1:9",
        FLOWER_BASIC_AUTH=basic_auth,
    )
    assert "FLOWER_UNAUTHENTICATED_API" not in env
    port = free_port()
    command = python_command("-m", "celery", "-A", "worker.app", "flower", "--address=127.0.0.1", f"--port={port}")
    process = Process("flower", command, env=env, log_dir=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url) or not process.alive(), timeout_s=30, what="Flower")
        assert process.alive(), f"Flower exited:\n{process.output()[-4000:]}"
        yield Flower(url=url, process=process)
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/", id="dashboard"),
        pytest.param("GET", "/api/workers", id="api-workers"),
        pytest.param("POST", "/api/worker/shutdown/x", id="api-shutdown"),
        pytest.param("POST", "/api/task/async-apply/imagejobs.submit_job", id="api-send-task"),
    ],
)
@pytest.mark.parametrize(
    "auth",
    [pytest.param(None, id="anonymous"), pytest.param((USER, "wrong-password"), id="wrong-password")],
)
def test_flower_refuses_callers_without_the_credentials(
    flower: Flower, method: str, path: str, auth: tuple[str, str] | None
) -> None:
    response = httpx.request(method, f"{flower.url}{path}", auth=auth, timeout=10, follow_redirects=False)

    assert response.status_code == 401, (response.status_code, response.text[:500])


def test_flower_answers_the_configured_credentials(flower: Flower) -> None:
    workers = httpx.get(f"{flower.url}/api/workers", auth=(USER, PASSWORD), timeout=10)
    dashboard = httpx.get(f"{flower.url}/", auth=(USER, PASSWORD), timeout=10, follow_redirects=True)

    assert workers.status_code == 200, workers.text[:500]
    assert isinstance(workers.json(), dict)
    assert dashboard.status_code == 200
    assert PASSWORD not in flower.process.output()
