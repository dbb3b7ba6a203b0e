"""Empty means absent, in every dialect: an optional field sent as ``""`` or ``null`` (Kling's own examples send
``""`` for unset optionals) is not given — ``""`` is never an idempotency key and never a callback URL.

The API in-process against the private Redis and a real SQLite file; no worker (the jobs stay queued).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from producer.http.app import create_app
from shared.db.tables import Job, WebhookDelivery
from shared.queue import QueueName
from tests.conftest import make_settings
from tests.integration.harness import Rows
from tests.support import API_KEY, queued_count

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_KEY}", "Prefer": "respond-async"}
EMPTY_VALUES = [pytest.param("", id="empty-string"), pytest.param(None, id="null"), pytest.param("  ", id="blank")]


def _openai(client: TestClient, fields: dict[str, Any]) -> str:
    response = client.post(
        "/v1/images/generations", json={"model": "gpt-image-1", "prompt": "a fox", **fields}, headers=AUTH
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _kling(client: TestClient, fields: dict[str, Any]) -> str:
    response = client.post("/kling/v1/images/generations", json={"prompt": "a fox", **fields}, headers=AUTH)
    assert response.status_code == 200 and response.json()["code"] == 0, response.text
    return str(response.json()["data"]["task_id"])


def _apimodels(client: TestClient, fields: dict[str, Any]) -> str:
    response = client.post(
        "/api/v1/images/generations", json={"model": "kling-v2", "prompt": "a fox", **fields}, headers=AUTH
    )
    assert response.status_code == 200 and response.json()["code"] == 200, response.text
    return str(response.json()["data"]["taskId"])


Submit = Callable[[TestClient, dict[str, Any]], str]
DIALECTS = [
    pytest.param(_openai, id="openai"),
    pytest.param(_kling, id="kling"),
    pytest.param(_apimodels, id="apimodels"),
]


class Api:
    def __init__(self, client: TestClient, rows: Rows, redis: Redis) -> None:
        self.client, self.rows, self.redis = client, rows, redis

    def queued(self) -> int:
        return queued_count(self.redis, QueueName.SUBMIT.value)


@pytest.fixture
def api(isolated_redis_url: str, sqlite_url: str, tmp_path: Path) -> Iterator[Api]:
    settings = make_settings(redis_url=isolated_redis_url, database_url=sqlite_url, files_dir=tmp_path / "files")
    redis = Redis.from_url(isolated_redis_url)
    rows = Rows(sqlite_url)
    try:
        with TestClient(create_app(settings)) as client:
            yield Api(client, rows, redis)
    finally:
        rows.close()
        redis.close()


@pytest.mark.parametrize("submit", DIALECTS)
@pytest.mark.parametrize("empty", EMPTY_VALUES)
def test_an_empty_external_task_id_is_no_idempotency_key(api: Api, submit: Submit, empty: str | None) -> None:
    first = submit(api.client, {"external_task_id": empty, "prompt": "a fox"})
    second = submit(api.client, {"external_task_id": empty, "prompt": "a different owl"})

    assert first != second  # two requests, two jobs (not the first job answered twice)
    assert api.rows.count(Job) == 2 and api.queued() == 2
    assert {job.external_task_id for job in api.rows.jobs()} == {None}
    assert {job.id: job.upstream_params["prompt"] for job in api.rows.jobs()} == {
        first: "a fox",
        second: "a different owl",
    }


@pytest.mark.parametrize("submit", DIALECTS)
def test_a_real_external_task_id_still_answers_the_first_job(api: Api, submit: Submit) -> None:
    first = submit(api.client, {"external_task_id": "order-7"})
    second = submit(api.client, {"external_task_id": "order-7"})

    assert first == second and api.rows.count(Job) == 1


@pytest.mark.parametrize("submit", DIALECTS)
@pytest.mark.parametrize("empty", EMPTY_VALUES)
def test_an_empty_callback_url_means_no_webhook(api: Api, submit: Submit, empty: str | None) -> None:
    job_id = submit(api.client, {"callback_url": empty})

    job = api.rows.job(job_id)
    assert job.callback_url is None
    assert api.rows.count(WebhookDelivery) == 0


@pytest.mark.parametrize("submit", DIALECTS)
def test_empty_optional_model_fields_are_not_sent_upstream(api: Api, submit: Submit) -> None:
    job_id = submit(api.client, {"negative_prompt": "", "aspect_ratio": None, "n": None})

    params = api.rows.job(job_id).upstream_params
    assert "negative_prompt" not in params and "aspect_ratio" not in params


def test_an_empty_required_field_is_refused_naming_it(api: Api) -> None:
    response = api.client.post("/kling/v1/images/generations", json={"prompt": ""}, headers=AUTH)

    assert response.status_code == 400
    assert "prompt" in response.json()["message"]
    assert api.rows.count(Job) == 0 and api.queued() == 0
