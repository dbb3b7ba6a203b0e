"""Kling JWT authentication: codes 1001–1004 (HTTP 401) and the accepted cases."""

from __future__ import annotations

from collections.abc import Callable

import jwt
import pytest
from fastapi.testclient import TestClient

from emulator.kling.auth import check_kling_auth

TokenFactory = Callable[..., str]
BODY = {"prompt": "a lighthouse"}


def submit(client: TestClient, authorization: str | None) -> tuple[int, dict[str, object]]:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.post("/kling/v1/images/generations", json=BODY, headers=headers)
    return response.status_code, response.json()


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer   "], ids=["absent", "empty", "no-token", "blank"]
)
def test_missing_authorization_is_1001(client: TestClient, authorization: str | None) -> None:
    status, body = submit(client, authorization)
    assert status == 401
    assert body["code"] == 1001
    assert body["data"] is None and body["request_id"]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"secret": "not-the-secret"}, id="bad-signature"),
        pytest.param({"iss": "someone-else"}, id="unknown-access-key"),
        pytest.param({"exp_in": -3600, "iss": "someone-else"}, id="unknown-key-wins-over-expiry"),
    ],
)
def test_invalid_token_is_1002(client: TestClient, make_token: TokenFactory, kwargs: dict[str, object]) -> None:
    status, body = submit(client, f"Bearer {make_token(**kwargs)}")
    assert (status, body["code"]) == (401, 1002)


@pytest.mark.parametrize("authorization", ["Bearer not.a.jwt", "Bearer abc", "Basic dXNlcjpwYXNz"])
def test_malformed_authorization_is_1002(client: TestClient, authorization: str) -> None:
    status, body = submit(client, authorization)
    assert (status, body["code"]) == (401, 1002)


def test_token_not_yet_valid_is_1003(client: TestClient, make_token: TokenFactory) -> None:
    status, body = submit(client, f"Bearer {make_token(nbf_in=60)}")
    assert (status, body["code"]) == (401, 1003)


def test_expired_token_is_1004(client: TestClient, make_token: TokenFactory) -> None:
    status, body = submit(client, f"Bearer {make_token(exp_in=-60)}")
    assert (status, body["code"]) == (401, 1004)


def test_clock_skew_within_five_seconds_is_tolerated(client: TestClient, make_token: TokenFactory) -> None:
    status, body = submit(client, f"Bearer {make_token(exp_in=-2, nbf_in=2)}")
    assert (status, body["code"]) == (200, 0)


def test_queries_need_auth_too(client: TestClient, make_token: TokenFactory) -> None:
    assert client.get("/v1/images/generations/some-id").json()["code"] == 1001
    expired = {"Authorization": f"Bearer {make_token(exp_in=-60)}"}
    assert client.get("/v1/images/generations", headers=expired).json()["code"] == 1004


def test_token_without_exp_is_invalid(make_token: TokenFactory) -> None:
    token = make_token()
    assert check_kling_auth(f"Bearer {token}", access_key="test-ak", secret_key="test-sk") is None
    no_exp = jwt.encode({"iss": "test-ak"}, "k" * 32, algorithm="HS256")
    failure = check_kling_auth(f"Bearer {no_exp}", access_key="test-ak", secret_key="k" * 32)
    assert failure is not None and failure.code == 1002
