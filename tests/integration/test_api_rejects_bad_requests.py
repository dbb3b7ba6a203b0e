"""The API in-process against the real private Redis and a real SQLite file: what it refuses and what it sends.

A refused request must answer an OpenAI-style error naming the parameter and leave nothing behind: no job
row, no broker message. An accepted one writes one row and sends exactly one id-only message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from producer.http.app import create_app
from shared.db.tables import Job, JobEvent
from shared.queue import QueueName
from tests.conftest import make_settings
from tests.integration.harness import Rows, decode_kombu_message
from tests.support import API_KEY, OTHER_API_KEY, queued_count, queued_raw

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {API_KEY}"}
OTHER_AUTH = {"Authorization": f"Bearer {OTHER_API_KEY}"}
GENERATIONS = "/v1/images/generations"
PROMPT = "a lighthouse at dusk, marker-7f3a9c"
GPT = {"model": "gpt-image-1", "prompt": PROMPT}
KLING = {"model": "kling-image", "model_name": "kling-v2-1", "prompt": PROMPT}


@dataclass
class Api:
    client: TestClient
    redis: Redis
    rows: Rows

    def queue_lengths(self) -> dict[str, int]:
        return {queue.value: queued_count(self.redis, queue.value) for queue in QueueName}

    def submit_messages(self) -> list[bytes]:
        raw = queued_raw(self.redis, QueueName.SUBMIT.value)
        return [message if isinstance(message, bytes) else message.encode() for message in raw]


@pytest.fixture
def api(isolated_redis_url: str, sqlite_url: str, tmp_path: Path) -> Iterator[Api]:
    # a short sync wait: a request that wrongly passed validation answers 202 quickly instead of hanging
    settings = make_settings(
        redis_url=isolated_redis_url, database_url=sqlite_url, files_dir=tmp_path / "files", sync_timeout_s=1
    )
    redis = Redis.from_url(isolated_redis_url)
    rows = Rows(sqlite_url)
    try:
        with TestClient(create_app(settings)) as client:
            yield Api(client=client, redis=redis, rows=rows)
    finally:
        rows.close()
        redis.close()


def assert_openai_error(response: Any, *, status: int, param: str | None, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["type"] == error_type, error
    assert error["param"] == param, error
    assert error["code"] is None or isinstance(error["code"], str), error
    return dict(error)


def assert_nothing_left_behind(api: Api) -> None:
    assert api.rows.count(Job) == 0
    assert api.rows.count(JobEvent) == 0
    assert api.queue_lengths() == {queue.value: 0 for queue in QueueName}


BAD_REQUESTS = [
    pytest.param({"model": "gpt-image-1"}, "prompt", id="missing-prompt"),
    pytest.param({**KLING, "prompt": ""}, "prompt", id="empty-prompt"),
    pytest.param({**KLING, "n": 10}, "n", id="n-10-for-kling"),
    pytest.param({**GPT, "n": 11}, "n", id="n-11-for-gpt"),
    pytest.param({**GPT, "n": "two"}, "n", id="n-not-an-integer"),
    pytest.param({**GPT, "model": "dall-e-9"}, "model", id="unknown-model"),
    pytest.param({"prompt": PROMPT}, "model", id="missing-model"),
    pytest.param({**KLING, "aspect_ratio": "5:4"}, "aspect_ratio", id="bad-aspect-ratio"),
    pytest.param({**GPT, "aspect_ratio": "1:1"}, "aspect_ratio", id="parameter-the-model-does-not-take"),
    pytest.param({**KLING, "model_name": "kling-v9"}, "model_name", id="unknown-model-name"),
    pytest.param({"model": "kling-image", "prompt": PROMPT}, "model_name", id="missing-model-name"),
    pytest.param({**GPT, "model_name": "kling-v2-1"}, "model_name", id="model-name-for-a-model-without-variants"),
    pytest.param({**GPT, "colour": "red"}, "colour", id="unknown-extra-field"),
    pytest.param({**GPT, "size": "999x999"}, "size", id="bad-size"),
    pytest.param({**GPT, "response_format": "gif"}, "response_format", id="bad-response-format"),
    pytest.param({**GPT, "callback_url": "ftp://example.com/hook"}, "callback_url", id="bad-callback-url"),
]


@pytest.mark.parametrize(("body", "param"), BAD_REQUESTS)
def test_a_bad_request_is_refused_with_its_parameter_named_and_nothing_written(
    api: Api, body: dict[str, Any], param: str
) -> None:
    response = api.client.post(GENERATIONS, json={**body, "async": True}, headers=AUTH)

    error = assert_openai_error(response, status=400, param=param, error_type="invalid_request_error")
    assert PROMPT not in error["message"]
    assert_nothing_left_behind(api)


def test_a_body_that_is_not_json_is_refused(api: Api) -> None:
    response = api.client.post(
        GENERATIONS,
        content=b'{"model": "gpt-image-1", "prompt": ',
        headers={**AUTH, "content-type": "application/json"},
    )

    error = assert_openai_error(response, status=400, param=None, error_type="invalid_request_error")
    assert error["code"] == "invalid_json"
    assert_nothing_left_behind(api)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, "missing_api_key", id="no-header"),
        pytest.param({"Authorization": "Bearer "}, "missing_api_key", id="empty-token"),
        pytest.param({"Authorization": f"Basic {API_KEY}"}, "missing_api_key", id="not-bearer"),
        pytest.param({"Authorization": "Bearer sk-test-" + "z" * 24}, "invalid_api_key", id="unknown-key"),
        pytest.param({"Authorization": f"Bearer {API_KEY}x"}, "invalid_api_key", id="key-with-a-suffix"),
    ],
)
def test_a_request_without_a_valid_key_is_refused_with_401(api: Api, headers: dict[str, str], code: str) -> None:
    response = api.client.post(GENERATIONS, json={**GPT, "async": True}, headers=headers)

    error = assert_openai_error(response, status=401, param=None, error_type="authentication_error")
    assert error["code"] == code
    assert API_KEY not in response.text
    assert_nothing_left_behind(api)
    assert api.client.get(f"{GENERATIONS}/anything", headers=headers).status_code == 401
    assert api.client.get("/v1/models", headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param({**GPT, "async": True}, {}, id="async-true"),
        pytest.param(KLING, {"Prefer": "respond-async"}, id="prefer-respond-async"),
    ],
)
def test_an_async_request_answers_202_and_sends_one_id_only_message(
    api: Api, body: dict[str, Any], headers: dict[str, str]
) -> None:
    response = api.client.post(GENERATIONS, json=body, headers={**AUTH, **headers})

    assert response.status_code == 202, response.text
    task = response.json()
    job_id = task["id"]
    assert task["task_id"] == job_id
    assert task["object"] == "image.generation.task"
    assert task["status"] == "queued"
    assert task["model"] == body["model"]
    assert task["data"] == [] and task["cost"] is None and task["error"] is None

    job = api.rows.job(job_id)
    assert job.status == "queued"
    assert api.rows.event_path(job_id) == ["queued"]
    assert api.queue_lengths() == {"submit": 1, "poll": 0, "webhooks": 0, "maintenance": 0}

    [raw] = api.submit_messages()
    envelope, body_args = decode_kombu_message(raw)
    args, kwargs, _embed = body_args
    assert envelope["headers"]["task"] == "imagejobs.submit_job"
    assert args == [job_id]
    assert kwargs == {}
    everything = raw.decode() + json.dumps(body_args)  # the raw message and its base64-decoded body
    assert job_id in everything
    for secret in (PROMPT, "lighthouse", API_KEY, OTHER_API_KEY):
        assert secret not in everything


def test_external_task_id_makes_a_request_idempotent_per_key(api: Api) -> None:
    body = {**GPT, "async": True, "external_task_id": "order-42"}

    first = api.client.post(GENERATIONS, json=body, headers=AUTH)
    again = api.client.post(GENERATIONS, json=body, headers=AUTH)
    other = api.client.post(GENERATIONS, json=body, headers=OTHER_AUTH)

    assert first.status_code == 202, first.text
    assert again.status_code == 202, again.text
    assert other.status_code == 202, other.text
    job_id, other_id = first.json()["id"], other.json()["id"]
    assert again.json()["id"] == job_id
    assert other_id != job_id
    assert first.json()["external_task_id"] == other.json()["external_task_id"] == "order-42"
    assert api.rows.count(Job) == 2
    assert api.rows.job(job_id).owner != api.rows.job(other_id).owner
    # one message per created job; the repeated request did not send another
    assert api.queue_lengths()["submit"] == 2

    mine = api.client.get(f"{GENERATIONS}/{job_id}", headers=AUTH)
    assert mine.status_code == 200 and mine.json()["id"] == job_id
    by_query = api.client.get(GENERATIONS, params={"task_id": job_id}, headers=AUTH)
    assert by_query.status_code == 200 and by_query.json()["id"] == job_id
    for path, params in ((f"{GENERATIONS}/{job_id}", None), (GENERATIONS, {"task_id": job_id})):
        foreign = api.client.get(path, params=params, headers=OTHER_AUTH)
        error = assert_openai_error(foreign, status=404, param="task_id", error_type="not_found_error")
        assert error["code"] == "task_not_found"
    assert api.client.get(f"{GENERATIONS}/{other_id}", headers=OTHER_AUTH).json()["id"] == other_id
