"""BFL webhooks: a task submitted with ``webhook_url`` POSTs its end there (payload format UNVERIFIED: the poll's
answer plus ``timestamp``), signed with ``webhook_secret`` when one is given."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from emulator.app import create_app
from emulator.bfl.callbacks import SIGNATURE_HEADER
from tests.emulator.test_kling_callbacks import Receiver

KEY = "test-bfl-key"
HEADERS = {"x-key": KEY}
HOOK = "http://receiver.test/internal/callbacks/bfl/job-1?token=t"


@pytest.fixture
def bfl_app(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setenv("EMULATOR_BFL_API_KEY", KEY)
    return create_app()


@pytest.fixture
def receiver(bfl_app: FastAPI) -> Receiver:
    answer = Receiver()
    bfl_app.state.callbacks.http = httpx.Client(transport=httpx.MockTransport(answer))
    return answer


@pytest.fixture
def bfl(bfl_app: FastAPI, receiver: Receiver) -> Iterator[TestClient]:
    with TestClient(bfl_app) as client:
        response = client.put("/_emulator/config", json={"bfl": {"latency": {"kind": "fixed", "value_s": 0.2}}})
        assert response.status_code == 200
        yield client


def submit(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/bfl/v1/flux-2-pro", json={"prompt": "a fox", "webhook_url": HOOK, **body}, headers=HEADERS)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_a_ready_task_posts_what_its_poll_answers(bfl: TestClient, receiver: Receiver) -> None:
    submitted = submit(bfl)

    [body] = receiver.wait_for(1)

    polled = bfl.get(submitted["polling_url"], headers=HEADERS).json()
    assert body["id"] == submitted["id"]
    assert body["status"] == "Ready"
    assert body["result"] == polled["result"]
    assert body["timestamp"].endswith("Z")
    assert bfl.get(body["result"]["sample"]).status_code == 200
    assert SIGNATURE_HEADER not in receiver.requests[0].headers


def test_a_secret_signs_the_exact_body(bfl: TestClient, receiver: Receiver) -> None:
    submit(bfl, webhook_secret="s3cret")

    receiver.wait_for(1)

    request = receiver.requests[0]
    expected = "sha256=" + hmac.new(b"s3cret", request.content, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == expected


@pytest.mark.parametrize(
    ("marker", "status"), [("[fail]", "Error"), ("[moderated-async]", "Request Moderated")], ids=["error", "moderated"]
)
def test_a_failed_task_posts_its_status_and_details(
    bfl: TestClient, receiver: Receiver, marker: str, status: str
) -> None:
    submit(bfl, prompt=f"a fox {marker}")

    [body] = receiver.wait_for(1)

    assert (body["status"], body["result"]) == (status, None)
    assert body["details"]


def test_no_webhook_without_url_or_for_a_hanging_task(bfl: TestClient, receiver: Receiver) -> None:
    submit(bfl, webhook_url=None)
    submit(bfl, prompt="stuck [hang]")

    assert receiver.wait_for(1, timeout_s=0.8) == []


def test_knobs_drop_bfl_webhooks(bfl: TestClient, receiver: Receiver) -> None:
    assert bfl.put("/_emulator/config", json={"bfl": {"callbacks": {"drop_rate": 1}}}).status_code == 200

    submit(bfl)

    assert receiver.wait_for(1, timeout_s=0.8) == []
    assert bfl.get("/_emulator/stats").json()["callbacks"]["dropped"] == 1
