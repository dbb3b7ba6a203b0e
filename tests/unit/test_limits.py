"""Request limits without sockets: the Redis token bucket on fakeredis (Lua), the body-size middleware in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from producer.http.errors import install_error_handlers
from producer.http.limits import RATE_LIMIT_PREFIX, BodySizeLimit, RateDecision, RateLimiter

# -- the token bucket ------------------------------------------------------------------------------------


def _limiter(server: fakeredis.FakeServer | None = None) -> RateLimiter:
    return RateLimiter(fakeredis.FakeAsyncRedis(server=server or fakeredis.FakeServer()))


def _take(limiter: RateLimiter, owner: str, per_minute: int, times: int) -> list[RateDecision]:
    async def run() -> list[RateDecision]:
        return [await limiter.acquire(owner, per_minute=per_minute) for _ in range(times)]

    return asyncio.run(run())


def test_a_key_gets_its_per_minute_burst_then_429_with_the_wait_for_one_token() -> None:
    limiter = _limiter()

    decisions = _take(limiter, "tenant-a", 6, 8)

    assert [decision.allowed for decision in decisions] == [True] * 6 + [False, False]
    # six a minute: one token every 10 s
    assert all(9 <= decision.retry_after_s <= 10 for decision in decisions[6:]), decisions


def test_each_key_has_its_own_bucket_under_the_rate_limit_prefix() -> None:
    server = fakeredis.FakeServer()
    limiter = _limiter(server)

    assert all(decision.allowed for decision in _take(limiter, "tenant-a", 2, 2))
    assert not _take(limiter, "tenant-a", 2, 1)[0].allowed
    assert all(decision.allowed for decision in _take(limiter, "tenant-b", 2, 2))

    keys = sorted(fakeredis.FakeRedis(server=server, decode_responses=True).keys("*"))
    assert keys == [f"{RATE_LIMIT_PREFIX}tenant-a", f"{RATE_LIMIT_PREFIX}tenant-b"]
    ttl_ms = fakeredis.FakeRedis(server=server).pttl(f"{RATE_LIMIT_PREFIX}tenant-a")
    assert 0 < ttl_ms <= 61_000  # the bucket expires once it would be full again


def test_tokens_come_back_at_the_sustained_rate() -> None:
    # Given a bucket of 60 a minute (one token a second), emptied
    limiter = _limiter()
    assert all(decision.allowed for decision in _take(limiter, "tenant-a", 60, 60))
    assert _take(limiter, "tenant-a", 60, 1)[0] == RateDecision(allowed=False, retry_after_s=1)

    # When a little more than a second passes, one more request is allowed, then none
    time.sleep(1.1)
    assert [decision.allowed for decision in _take(limiter, "tenant-a", 60, 2)] == [True, False]


def test_two_limiters_on_one_redis_share_the_bucket() -> None:
    server = fakeredis.FakeServer()
    first, second = _limiter(server), _limiter(server)

    assert _take(first, "tenant-a", 3, 2)[-1].allowed
    assert _take(second, "tenant-a", 3, 1)[0].allowed
    assert not _take(first, "tenant-a", 3, 1)[0].allowed


def test_the_limiter_lets_requests_through_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    limiter = _limiter(server)

    assert _take(limiter, "tenant-a", 1, 3) == [RateDecision(allowed=True)] * 3
    assert "rate limiter unavailable" in caplog.text


# -- body sizes -------------------------------------------------------------------------------------------


class Seen:
    bodies: list[int]

    def __init__(self) -> None:
        self.bodies = []


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def client(seen: Seen) -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_json_bytes=1024, max_multipart_bytes=4096)

    @app.post("/json")
    async def take_json(payload: dict[str, Any]) -> dict[str, int]:
        seen.bodies.append(len(str(payload)))
        return {"keys": len(payload)}

    @app.post("/raw")
    async def take_raw(request: Request) -> dict[str, int]:
        body = await request.body()
        seen.bodies.append(len(body))
        return {"bytes": len(body)}

    with TestClient(app) as test_client:
        yield test_client


def _assert_413(response: Any, limit: int) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "request_too_large"
    assert str(limit) in error["message"]


def test_bodies_within_the_limits_reach_the_app(client: TestClient, seen: Seen) -> None:
    assert client.post("/json", json={"prompt": "x" * 900}).status_code == 200
    files = {"image": ("a.png", b"\x89PNG" + b"0" * 3000, "image/png")}
    assert client.post("/raw", files=files).status_code == 200
    assert len(seen.bodies) == 2


def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs(client: TestClient, seen: Seen) -> None:
    response = client.post("/json", json={"prompt": "x" * 2000})

    _assert_413(response, 1024)
    assert seen.bodies == []


def test_multipart_uploads_have_their_own_limit(client: TestClient, seen: Seen) -> None:
    files = {"image": ("a.png", b"0" * 5000, "image/png")}

    _assert_413(client.post("/raw", files=files), 4096)
    assert seen.bodies == []


@pytest.mark.parametrize("path", ["/json", "/raw"])
def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(client: TestClient, seen: Seen, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    request = client.build_request("POST", path, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in request.headers  # no declared length: only counting the stream can stop it
    response = client.send(request)

    _assert_413(response, 1024)
    assert seen.bodies == []


def test_a_small_chunked_body_passes(client: TestClient, seen: Seen) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": '
        yield b'"short"}'

    response = client.post("/json", content=chunks(), headers={"content-type": "application/json"})

    assert response.status_code == 200, response.text
    assert seen.bodies == [len(str({"prompt": "short"}))]
