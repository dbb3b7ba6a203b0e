"""Tenancy and per-key limits, with the API in-process over the real private Redis and a real SQLite file.

Database keys authenticate and own their jobs; revoked keys stop working; the requests-per-minute limit is
shared through Redis (two API instances, one bucket) and answers 429 with ``Retry-After``; the spend budget
answers 402 in every dialect with nothing written; oversized bodies answer 413; and a job of one key is a 404
for any other key on every job endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import Engine
from sqlmodel import Session

from producer.http.app import create_app
from producer.http.limits import RATE_LIMIT_PREFIX
from producer.keys import KEY_REVOKED_CHANNEL, create_key, owner_id, revoke_key
from shared.db.engine import make_engine
from shared.db.tables import Job
from shared.queue import QueueName
from tests.conftest import make_settings
from tests.integration.harness import Rows
from tests.support import API_KEY, OTHER_API_KEY, queued_count, wait_until

pytestmark = pytest.mark.integration

GENERATIONS = "/v1/images/generations"
PROMPT = "a lighthouse at dusk"
GPT_HIGH = {
    "model": "gpt-image-1",
    "prompt": PROMPT,
    "quality": "high",
    "size": "1024x1024",
}  # at most 0.1664 USD per image


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Api:
    client: TestClient
    redis: Redis
    rows: Rows
    engine: Engine

    def new_key(self, **limits: Any) -> str:
        with Session(self.engine, expire_on_commit=False) as session:
            key, _ = create_key(session=session, **limits)
        return key

    def submit_count(self) -> int:
        return queued_count(self.redis, QueueName.SUBMIT.value)

    def paths(self) -> dict[str, set[str]]:
        """Every documented path and its methods, as the app serves them now."""
        schema = self.client.get("/openapi.json").json()
        return {path: {method.upper() for method in methods} for path, methods in schema["paths"].items()}


ApiFactory = Callable[..., Api]


@pytest.fixture
def make_api(isolated_redis_url: str, sqlite_url: str, tmp_path: Path) -> Iterator[ApiFactory]:
    """``make_api(**settings_overrides)`` → an API in-process; several share one Redis and one database."""
    with ExitStack() as stack:
        redis = Redis.from_url(isolated_redis_url)
        stack.callback(redis.close)
        rows = Rows(sqlite_url)
        stack.callback(rows.close)
        engine = make_engine(sqlite_url, pool_size=2)
        stack.callback(engine.dispose)

        def make(**overrides: Any) -> Api:
            settings = make_settings(
                redis_url=isolated_redis_url,
                database_url=sqlite_url,
                files_dir=tmp_path / "files",
                sync_timeout_s=0,
                **overrides,
            )
            client = stack.enter_context(TestClient(create_app(settings)))
            return Api(client=client, redis=redis, rows=rows, engine=engine)

        yield make


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    return make_api()


def assert_openai_error(response: Any, *, status: int, code: str, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert (error["type"], error["code"]) == (error_type, code), error
    return dict(error)


# -- database keys --------------------------------------------------------------------------------------


def test_a_database_key_authenticates_and_owns_its_jobs(api: Api) -> None:
    key = api.new_key(name="ci")

    created = api.client.post(GENERATIONS, json={**GPT_HIGH, "async": True}, headers=bearer(key))

    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert api.rows.job(job_id).owner == owner_id(key)
    assert api.client.get(f"{GENERATIONS}/{job_id}", headers=bearer(key)).status_code == 200
    assert api.client.get("/v1/models", headers=bearer(key)).status_code == 200


def test_a_revoked_key_is_refused_once_the_cache_ttl_has_passed(make_api: ApiFactory) -> None:
    api = make_api(limits={"key_cache_ttl_s": 0.5})
    key = api.new_key()
    assert api.client.get("/v1/models", headers=bearer(key)).status_code == 200

    with Session(api.engine) as session:
        revoke_key(session=session, reference=key)
    time.sleep(0.6)
    response = api.client.get("/v1/models", headers=bearer(key))

    error = assert_openai_error(response, status=401, code="invalid_api_key", error_type="authentication_error")
    assert "revoked" in error["message"]
    assert key not in response.text
    posted = api.client.post(GENERATIONS, json={**GPT_HIGH, "async": True}, headers=bearer(key))
    assert posted.status_code == 401
    assert api.rows.count(Job) == 0


def test_an_announced_revocation_refuses_the_key_at_once_whatever_the_cache_ttl(make_api: ApiFactory) -> None:
    # Given two API processes that cache keys for five minutes and have both just seen the key
    first, second = make_api(limits={"key_cache_ttl_s": 300}), make_api(limits={"key_cache_ttl_s": 300})
    key = first.new_key()
    for api in (first, second):
        assert api.client.get("/v1/models", headers=bearer(key)).status_code == 200

    # When the key is revoked as `imagejobs keys revoke` does it (commit, then announce on Redis)
    with Session(first.engine) as session:
        revoke_key(
            session=session, reference=key, announce=lambda digest: first.redis.publish(KEY_REVOKED_CHANNEL, digest)
        )

    # Then both refuse it within moments, long before the TTL
    for api in (first, second):
        wait_until(
            lambda api=api: api.client.get("/v1/models", headers=bearer(key)).status_code == 401,  # type: ignore[misc]
            timeout_s=5,
            what="the revocation to reach the API's cache",
        )
    assert first.client.post(GENERATIONS, json={**GPT_HIGH, "async": True}, headers=bearer(key)).status_code == 401
    assert first.rows.count(Job) == 0


# -- requests per minute ------------------------------------------------------------------------------------


def test_past_its_requests_per_minute_a_key_gets_429_with_retry_after(api: Api) -> None:
    # Given a key allowed 3 requests per minute
    key = api.new_key(requests_per_minute=3)

    # When it sends 3 requests, then a 4th (a submit)
    for _ in range(3):
        assert api.client.get("/v1/models", headers=bearer(key)).status_code == 200
    refused = api.client.post(GENERATIONS, json={**GPT_HIGH, "async": True}, headers=bearer(key))

    # Then the 4th answers 429 in the OpenAI shape, with the seconds until the next token (one per 20 s)
    error = assert_openai_error(refused, status=429, code="rate_limit_exceeded", error_type="rate_limit_error")
    assert error["param"] is None
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert "3 requests per minute" in error["message"]
    # and nothing was written or sent
    assert api.rows.count(Job) == 0
    assert api.submit_count() == 0
    # while other keys are not limited by it
    for _ in range(5):
        assert api.client.get("/v1/models", headers=bearer(API_KEY)).status_code == 200
    # and the bucket lives under the limiter's own prefix, expiring once it would be full again
    bucket = f"{RATE_LIMIT_PREFIX}{owner_id(key)}"
    assert api.redis.exists(bucket)
    assert 0 < api.redis.pttl(bucket) <= 61_000


def test_the_limit_is_shared_by_every_api_process(make_api: ApiFactory) -> None:
    first, second = make_api(), make_api()
    key = first.new_key(requests_per_minute=4)

    statuses = [api.client.get("/v1/models", headers=bearer(key)).status_code for api in (first, second) * 3]

    assert statuses == [200, 200, 200, 200, 429, 429]


def test_bootstrap_keys_are_limited_only_when_configured(make_api: ApiFactory) -> None:
    api = make_api(limits={"bootstrap_requests_per_minute": 2})

    statuses = [api.client.get("/v1/models", headers=bearer(API_KEY)).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert api.client.get("/v1/models", headers=bearer(OTHER_API_KEY)).status_code == 200


def test_a_limited_key_in_another_dialect_gets_429_too(api: Api) -> None:
    if "/kling/v1/images/generations/{task_id}" not in api.paths():
        pytest.fail("the Kling dialect is not served")
    key = api.new_key(requests_per_minute=1)
    api.client.get("/v1/models", headers=bearer(key))

    response = api.client.get("/kling/v1/images/generations/anything", headers=bearer(key))

    assert response.status_code == 429, response.text


# -- spend budget -------------------------------------------------------------------------------------------

BUDGETED_SUBMITS = [
    pytest.param(GENERATIONS, {**GPT_HIGH, "async": True}, id="openai"),
    pytest.param("/kling/v1/images/generations", {"model_name": "kling-v2-1", "prompt": PROMPT, "n": 2}, id="kling"),
    pytest.param("/api/v1/images/generations", GPT_HIGH, id="apimodels"),
]


@pytest.mark.parametrize(("path", "body"), BUDGETED_SUBMITS)
def test_a_submit_that_would_pass_the_spend_budget_answers_402_and_writes_nothing(
    api: Api, path: str, body: dict[str, Any]
) -> None:
    if "POST" not in api.paths().get(path, set()):
        pytest.fail(f"POST {path} is not served")
    # Given a key with a budget of 0.2 (USD or credits) and one accepted job of at most 0.1664 / 0.152
    key = api.new_key(spend_budget=Decimal("0.2"))
    first = api.client.post(path, json=body, headers=bearer(key))
    assert first.status_code in (200, 202), first.text

    # When a second such job would take the committed cost past the budget
    second = api.client.post(path, json=body, headers=bearer(key))

    # Then it answers 402 and neither a job row nor a broker message is added
    assert second.status_code == 402, second.text
    if path == GENERATIONS:
        error = assert_openai_error(second, status=402, code="insufficient_quota", error_type="insufficient_quota")
        assert error["param"] is None
        assert "spend budget of 0.2" in error["message"]
    assert api.rows.count(Job) == 1
    assert api.submit_count() == 1


def test_a_batch_that_would_pass_the_spend_budget_answers_402_and_writes_nothing(api: Api) -> None:
    key = api.new_key(spend_budget=Decimal("0.4"))  # GPT_HIGH: at most 0.1664 each

    refused = api.client.post("/v1/images/batches", json={"requests": [GPT_HIGH] * 3}, headers=bearer(key))
    accepted = api.client.post("/v1/images/batches", json={"requests": [GPT_HIGH] * 2}, headers=bearer(key))
    refused_after = api.client.post("/v1/images/batches", json={"requests": [GPT_HIGH]}, headers=bearer(key))

    error = assert_openai_error(refused, status=402, code="insufficient_quota", error_type="insufficient_quota")
    assert "These 3 requests could cost up to 0.4992 USD" in error["message"]
    assert accepted.status_code == 202, accepted.text
    assert refused_after.status_code == 402, refused_after.text
    assert api.rows.count(Job) == 2
    assert api.submit_count() == 2


# -- body sizes -------------------------------------------------------------------------------------------


def test_oversized_bodies_answer_413_and_write_nothing(make_api: ApiFactory) -> None:
    api = make_api(limits={"max_json_body_bytes": 4096, "max_multipart_body_bytes": 8192})
    big = {**GPT_HIGH, "async": True, "prompt": "x" * 5000}

    declared = api.client.post(GENERATIONS, json=big, headers=bearer(API_KEY))

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "gpt-image-1", "async": true, "prompt": "'
        for _ in range(50):
            yield b"x" * 100
        yield b'"}'

    streamed = api.client.post(
        GENERATIONS, content=chunks(), headers={**bearer(API_KEY), "content-type": "application/json"}
    )

    for response in (declared, streamed):
        error = assert_openai_error(response, status=413, code="request_too_large", error_type="invalid_request_error")
        assert "4096 bytes" in error["message"]
    assert api.rows.count(Job) == 0
    assert api.submit_count() == 0
    if "POST" in api.paths().get("/v1/images/edits", set()):
        files = {"image": ("a.png", b"\x89PNG" + b"0" * 9000, "image/png")}
        upload = api.client.post(
            "/v1/images/edits", data={"model": "gpt-image-1"}, files=files, headers=bearer(API_KEY)
        )
        assert_openai_error(upload, status=413, code="request_too_large", error_type="invalid_request_error")


# -- cross-key access ---------------------------------------------------------------------------------------

#: every endpoint that shows or acts on one job: (method, documented path, how to address the job)
JOB_ENDPOINTS = [
    pytest.param("GET", "/v1/images/generations/{task_id}", "path", id="openai-get"),
    pytest.param("GET", "/v1/images/generations", "query", id="openai-query"),
    pytest.param("GET", "/kling/v1/images/generations/{task_id}", "path", id="kling-get"),
    pytest.param("GET", "/api/v1/images/generations", "query", id="apimodels-query"),
    pytest.param("GET", "/v1/images/generations/{task_id}/webhooks", "path", id="webhook-log"),
    pytest.param("POST", "/v1/images/generations/{task_id}/webhooks/redeliver", "path", id="webhook-redeliver"),
    pytest.param("GET", "/v1/images/generations/{task_id}/timeline", "path", id="timeline"),
]

OWNERS = [
    pytest.param("database", "bootstrap", id="database-key-vs-bootstrap-key"),
    pytest.param("bootstrap", "database", id="bootstrap-key-vs-database-key"),
]


@pytest.mark.parametrize(("owner_kind", "intruder_kind"), OWNERS)
@pytest.mark.parametrize(("method", "template", "address"), JOB_ENDPOINTS)
def test_a_job_of_one_key_is_not_found_for_another_key(
    api: Api, method: str, template: str, address: str, owner_kind: str, intruder_kind: str
) -> None:
    if method not in api.paths().get(template, set()):
        pytest.fail(f"{method} {template} is not served")
    database_key = api.new_key()
    keys = {"database": database_key, "bootstrap": API_KEY}
    owner, intruder = keys[owner_kind], keys[intruder_kind]
    body = {**GPT_HIGH, "async": True, "callback_url": "https://hooks.example.com/imagejobs"}
    created = api.client.post(GENERATIONS, json=body, headers=bearer(owner))
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]

    def call(key: str) -> Any:
        if address == "path":
            return api.client.request(method, template.replace("{task_id}", job_id), headers=bearer(key))
        return api.client.request(method, template, params={"task_id": job_id}, headers=bearer(key))

    assert call(owner).status_code != 404
    foreign = call(intruder)
    assert foreign.status_code == 404, foreign.text
    # nothing of the job leaks (the id the caller sent may be echoed)
    assert PROMPT not in foreign.text and "gpt-image-1" not in foreign.text and "hooks.example.com" not in foreign.text
