"""Production never talks to the emulator by accident: without credentials and without ``IMAGEJOBS_EMULATOR_URL``
a provider is disabled — the API starts, lists its models as unavailable and refuses them with a 400 in each
dialect's envelope naming the model and the missing setting, nothing enqueued; API and worker report at start
which providers are live, emulated or disabled (the worker with one warning).

In-process API against the private Redis and SQLite for the answers; real API and worker processes for the
start-up reports and for a bad setting, which stops a process with one line and no traceback.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from redis import Redis

from producer.http.app import create_app
from shared.db.tables import Job, JobEvent
from shared.queue import QueueName
from tests.conftest import make_settings
from tests.integration.harness import ProcessesFactory, Rows
from tests.support import API_KEY, api_command, base_env, celery_worker_command, free_port, queued_count, wait_until

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_KEY}"}
PROVIDERS = ("kling", "openai", "gemini", "ark", "bfl", "relay")


class Api:
    def __init__(self, client: TestClient, rows: Rows, redis: Redis) -> None:
        self.client, self.rows, self.redis = client, rows, redis

    def assert_nothing_written(self) -> None:
        assert self.rows.count(Job) == 0 and self.rows.count(JobEvent) == 0
        assert queued_count(self.redis, QueueName.SUBMIT.value) == 0


@pytest.fixture
def api(isolated_redis_url: str, sqlite_url: str, tmp_path: Path) -> Iterator[Api]:
    """No credentials, no emulator; OpenAI alone has a (real-looking) key, so it is live."""
    settings = make_settings(
        redis_url=isolated_redis_url,
        database_url=sqlite_url,
        files_dir=tmp_path / "files",
        emulator_url=None,
        openai={"api_key": "sk-not-used-in-this-test"},
    )
    redis = Redis.from_url(isolated_redis_url)
    rows = Rows(sqlite_url)
    try:
        with TestClient(create_app(settings)) as client:
            yield Api(client, rows, redis)
    finally:
        rows.close()
        redis.close()


def test_models_of_disabled_providers_are_listed_as_unavailable(api: Api) -> None:
    response = api.client.get("/v1/models", headers=AUTH)

    assert response.status_code == 200
    cards = {card["id"]: card for card in response.json()["data"]}
    assert cards["gpt-image-1"]["availability"] == "live" and cards["gpt-image-1"]["available"] is True
    assert "missing_settings" not in cards["gpt-image-1"]
    kling = cards["kling-image"]
    assert (kling["availability"], kling["available"]) == ("disabled", False)
    assert kling["missing_settings"] == ["IMAGEJOBS_KLING__ACCESS_KEY", "IMAGEJOBS_KLING__SECRET_KEY"]
    disabled = {card["owned_by"] for card in cards.values() if card["availability"] == "disabled"}
    assert disabled == set(PROVIDERS) - {"openai"}


def test_the_openai_sdk_lists_the_models(api: Api) -> None:
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=API_KEY, http_client=api.client, max_retries=0)

    models = list(sdk.models.list())

    assert {model.id for model in models} >= {"gpt-image-1", "kling-image"}
    assert all(model.object == "model" for model in models)


def test_the_openai_sdk_retrieves_one_model_with_its_availability(api: Api) -> None:
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=API_KEY, http_client=api.client, max_retries=0)

    model = sdk.models.retrieve("kling-v2")

    assert (model.id, model.object, model.owned_by) == ("kling-v2", "model", "kling")
    assert model.model_extra is not None and model.model_extra["availability"] == "disabled"
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


def test_an_openai_request_for_a_disabled_model_is_refused_naming_the_setting(api: Api) -> None:
    body = {"model": "nano-banana", "prompt": "a fox"}

    response = api.client.post("/v1/images/generations", json=body, headers=AUTH)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("model", "model_not_available")
    assert "nano-banana" in error["message"] and "IMAGEJOBS_GEMINI__API_KEY" in error["message"]
    api.assert_nothing_written()


def test_an_edit_for_a_disabled_model_is_refused_naming_the_setting(api: Api) -> None:
    body = {"model": "nano-banana", "prompt": "a fox", "image": "https://example.com/in.png"}

    response = api.client.post("/v1/images/edits", json=body, headers=AUTH)

    assert response.status_code == 400, response.text
    assert "IMAGEJOBS_GEMINI__API_KEY" in response.json()["error"]["message"]
    api.assert_nothing_written()


def test_a_kling_task_for_a_disabled_provider_is_refused_in_klings_envelope(api: Api) -> None:
    response = api.client.post("/kling/v1/images/generations", json={"prompt": "a fox"}, headers=AUTH)

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 1201 and "data" not in body
    assert "kling-image" in body["message"]
    assert "IMAGEJOBS_KLING__ACCESS_KEY" in body["message"] and "IMAGEJOBS_KLING__SECRET_KEY" in body["message"]
    api.assert_nothing_written()


def test_an_apimodels_task_for_a_disabled_provider_is_refused_in_its_envelope(api: Api) -> None:
    body = {"model": "kling-v2", "prompt": "a fox"}

    response = api.client.post("/api/v1/images/generations", json=body, headers=AUTH)

    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == 400 and answer["data"] is None
    assert "kling-v2" in answer["msg"] and "IMAGEJOBS_KLING__ACCESS_KEY" in answer["msg"]
    api.assert_nothing_written()


def test_a_live_provider_still_takes_requests(api: Api) -> None:
    body = {"model": "gpt-image-1", "prompt": "a fox", "async": True}

    response = api.client.post("/v1/images/generations", json=body, headers=AUTH)

    assert response.status_code == 202, response.text
    assert api.rows.count(Job) == 1


# -- real processes ----------------------------------------------------------------------------------------


def test_api_and_worker_without_credentials_start_and_report_the_disabled_providers(
    processes: ProcessesFactory, sqlite_url: str
) -> None:
    # no provider credentials at all, and no emulator setting (the harness sets one; "" unsets it)
    group = processes(sqlite_url, IMAGEJOBS_EMULATOR_URL="")

    url = group.api()
    worker = group.worker(concurrency=1)
    wait_until(lambda: "providers disabled" in worker.output() or not worker.alive(), timeout_s=60, what="report")

    models = httpx.get(f"{url}/v1/models", headers=AUTH).json()["data"]
    assert models and {card["availability"] for card in models} == {"disabled"}
    refused = httpx.post(f"{url}/kling/v1/images/generations", json={"prompt": "a fox"}, headers=AUTH)
    assert refused.status_code == 400 and "IMAGEJOBS_KLING__ACCESS_KEY" in refused.json()["message"]
    api_log = group.started[0].output()
    assert "providers: " + ", ".join(f"{name}=disabled" for name in PROVIDERS) in api_log
    worker_log = worker.output()
    warnings = [line for line in worker_log.splitlines() if "providers disabled" in line]
    assert len(warnings) == 1, worker_log
    assert json.loads(warnings[0])["level"] == "warning"  # JSON log lines by default
    assert "kling (set IMAGEJOBS_KLING__ACCESS_KEY and IMAGEJOBS_KLING__SECRET_KEY)" in warnings[0]
    assert all(f"IMAGEJOBS_{name.upper()}__" in warnings[0] for name in PROVIDERS)


def test_a_provider_with_credentials_is_reported_live_without_its_key(
    processes: ProcessesFactory, sqlite_url: str
) -> None:
    group = processes(sqlite_url, IMAGEJOBS_EMULATOR_URL="", IMAGEJOBS_BFL__API_KEY="bfl-real-key-for-the-report")

    url = group.api()

    cards = httpx.get(f"{url}/v1/models", headers=AUTH).json()["data"]
    assert {card["availability"] for card in cards if card["owned_by"] == "bfl"} == {"live"}
    api_log = group.started[0].output()
    assert "bfl=live" in api_log and "kling=disabled" in api_log
    assert "bfl-real-key-for-the-report" not in api_log


def test_the_emulator_is_reported_when_chosen(processes: ProcessesFactory, sqlite_url: str) -> None:
    group = processes(sqlite_url)

    group.api()

    log = group.started[0].output()
    assert "providers: kling=emulated" in log and "(emulator at http://127.0.0.1:" in log
    assert "providers disabled" not in log


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        pytest.param("IMAGEJOBS_CATALOG_DIR", "/nonexistent/catalog", "IMAGEJOBS_CATALOG_DIR", id="catalog-dir"),
        pytest.param("IMAGEJOBS_SYNC_TIMEOUT_S", "-1", "IMAGEJOBS_SYNC_TIMEOUT_S", id="bad-setting"),
    ],
)
@pytest.mark.parametrize("process", ["api", "worker"])
def test_a_bad_setting_stops_a_process_with_one_line(
    tmp_path: Path, sqlite_url: str, redis_url: str, process: str, variable: str, value: str, named: str
) -> None:
    env = base_env(redis_url=redis_url, database_url=sqlite_url, files_dir=tmp_path, emulator_url="")
    env[variable] = value
    command = api_command(free_port()) if process == "api" else celery_worker_command(1)

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert finished.returncode != 0
    lines = [line for line in finished.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, finished.stderr
    assert lines[0].startswith("imagejobs: ") and named in lines[0]
    assert "Traceback" not in finished.stderr + finished.stdout


def test_a_bad_catalog_file_stops_the_api_naming_file_model_and_field(
    tmp_path: Path, sqlite_url: str, redis_url: str
) -> None:
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "prices.toml").write_text('[models."gpt-image-1".polling]\ndeadline_s = -5\n', encoding="utf-8")
    env = base_env(redis_url=redis_url, database_url=sqlite_url, files_dir=tmp_path, emulator_url="")
    env["IMAGEJOBS_CATALOG_DIR"] = str(folder)

    finished = subprocess.run(api_command(free_port()), env=env, capture_output=True, text=True, timeout=60)

    assert finished.returncode != 0
    lines = [line for line in finished.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, finished.stderr
    assert str(folder / "prices.toml") in lines[0] and "models.gpt-image-1.polling.deadline_s" in lines[0]
