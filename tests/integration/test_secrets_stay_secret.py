"""Secrets never leave the places they belong (R21): not in logs, broker messages, task objects or error bodies.

The API runs in-process on the real private Redis and a SQLite file, with a recognisable bootstrap key and
webhook secret in its settings and a database key (with its own webhook secret). It answers accepted, refused,
rate-limited and over-budget requests in every dialect it serves; then the captured logs (DEBUG, before any
redaction), every value in Redis (the queues as raw messages) and every response body are searched for the
secrets.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlmodel import Session

from producer.http.app import create_app
from producer.keys import create_key
from shared.db.engine import make_engine
from tests.conftest import make_settings
from tests.integration.harness import decode_kombu_message

pytestmark = pytest.mark.integration

BOOTSTRAP_KEY = "sk-MARKER-bootstrap-key-4f7e2a9c1b"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"MARKER-webhook-secret-0123456789").decode()
CALLBACK = "https://hooks.example.com/imagejobs"
GPT = {"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "quality": "high", "size": "1024x1024"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def redis_dump(redis: Redis) -> list[str]:
    """Every key and value in the database, as text; queued messages also decoded (their bodies are base64)."""
    found: list[str] = []
    for raw_key in redis.keys("*"):
        kind = _text(redis.type(raw_key))
        values: list[Any] = []
        if kind == "list":
            values = list(redis.lrange(raw_key, 0, -1))
            for message in values:
                envelope, body = decode_kombu_message(_text(message).encode())
                found.append(repr(envelope) + repr(body))
        elif kind == "hash":
            values = [part for pair in redis.hgetall(raw_key).items() for part in pair]
        elif kind == "string":
            values = [redis.get(raw_key)]
        elif kind == "set":
            values = list(redis.smembers(raw_key))
        elif kind == "zset":
            values = list(redis.zrange(raw_key, 0, -1))
        found.append(_text(raw_key))
        found.extend(_text(value) for value in values if value is not None)
    return found


@pytest.fixture
def client(isolated_redis_url: str, sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        api_keys=[BOOTSTRAP_KEY],
        webhooks={"secret": WEBHOOK_SECRET},
        redis_url=isolated_redis_url,
        database_url=sqlite_url,
        files_dir=tmp_path / "files",
        sync_timeout_s=0,
        limits={"bootstrap_requests_per_minute": 1000},
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_keys_and_webhook_secrets_appear_in_no_log_message_or_response(
    client: TestClient, isolated_redis_url: str, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engine = make_engine(sqlite_url, pool_size=1)
    with Session(engine, expire_on_commit=False) as session:
        db_key, row = create_key(session=session, name="MARKER", requests_per_minute=3, spend_budget=Decimal("0.2"))
    engine.dispose()
    secrets = {
        "bootstrap key": BOOTSTRAP_KEY,
        "database key": db_key,
        "webhook secret": WEBHOOK_SECRET,
        "webhook secret body": WEBHOOK_SECRET.removeprefix("whsec_"),
        "database key's webhook secret": row.webhook_secret,
    }
    paths = set(client.get("/openapi.json").json()["paths"])
    responses: list[Any] = []

    def send(method: str, path: str, **kwargs: Any) -> Any:
        response = client.request(method, path, **kwargs)
        responses.append(response)
        return response

    # accepted jobs, each with a callback URL, and their task objects
    job_ids = []
    for key in (BOOTSTRAP_KEY, db_key):
        created = send("POST", "/v1/images/generations", json={**GPT, "callback_url": CALLBACK}, headers=bearer(key))
        assert created.status_code == 202, created.text
        job_ids.append(created.json()["id"])
        send("GET", f"/v1/images/generations/{created.json()['id']}", headers=bearer(key))
    if "/kling/v1/images/generations" in paths:
        kling = {"model_name": "kling-v2-1", "prompt": "a red fox", "callback_url": CALLBACK}
        created = send("POST", "/kling/v1/images/generations", json=kling, headers=bearer(BOOTSTRAP_KEY))
        assert created.status_code == 200, created.text
        task_id = created.json()["data"]["task_id"]
        send("GET", f"/kling/v1/images/generations/{task_id}", headers=bearer(BOOTSTRAP_KEY))
    if "/v1/images/generations/{task_id}/webhooks" in paths:
        send("GET", f"/v1/images/generations/{job_ids[0]}/webhooks", headers=bearer(BOOTSTRAP_KEY))
    # refusals: a bad parameter, near-miss keys, the database key over its budget and then its rate limit
    assert (
        send("POST", "/v1/images/generations", json={**GPT, "n": 99}, headers=bearer(BOOTSTRAP_KEY)).status_code == 400
    )
    for wrong in (BOOTSTRAP_KEY + "x", db_key[:-1], f"{BOOTSTRAP_KEY} {db_key}"):
        assert send("GET", "/v1/models", headers=bearer(wrong)).status_code == 401
    assert send("POST", "/v1/images/generations", json=GPT, headers=bearer(db_key)).status_code == 402
    assert send("GET", "/v1/models", headers=bearer(db_key)).status_code == 429
    assert send("GET", f"/v1/images/generations/{job_ids[0]}", headers=bearer(db_key)).status_code == 429

    redis = Redis.from_url(isolated_redis_url)
    try:
        broker = redis_dump(redis)
    finally:
        redis.close()
    assert any(job_ids[0] in value for value in broker), "the submit messages were not found in Redis"
    logs = [caplog.text, *(record.getMessage() for record in caplog.records)]
    logs += [repr(record.args) for record in caplog.records]
    places = {
        "logs": "\n".join(logs),
        "redis": "\n".join(broker),
        "responses": "\n".join(f"{response.status_code} {response.headers} {response.text}" for response in responses),
    }
    for place, text in places.items():
        for name, secret in secrets.items():
            assert secret not in text, f"the {name} appears in the {place}"
