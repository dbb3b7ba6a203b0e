"""Kling callbacks: a task created with ``callback_url`` POSTs itself there on every status change (the legacy
payload of Kling's callback protocol), from the emulator's sender thread; knobs turn them off, drop or double them; the
sender itself (due times, failures, reset) on a settable clock."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from emulator.callbacks import CallbackSender
from emulator.kling.tasks import FAILED, PROCESSING, SUBMITTED, SUCCEED
from emulator.knobs import CallbackKnobs, Knobs

PATH = "/v1/images/generations"
HOOK = "http://receiver.test/internal/callbacks/kling/job-1?token=t"


class Receiver:
    """Records every callback (an ``httpx.MockTransport`` handler answering ``status``)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.lock = threading.Lock()
        self.requests: list[httpx.Request] = []
        self.at: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        with self.lock:
            self.requests.append(request)
            self.at.append(time.time())
        return httpx.Response(self.status)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(request.content) for request in self.requests]

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.bodies()) < count:
            time.sleep(0.01)
        return self.bodies()


@pytest.fixture
def receiver(app: FastAPI) -> Receiver:
    """The app's callbacks go here (no sockets)."""
    answer = Receiver()
    app.state.callbacks.http = httpx.Client(transport=httpx.MockTransport(answer))
    return answer


def submit(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(PATH, json={"prompt": "a red fox", "callback_url": HOOK, **body}, headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def configure(client: TestClient, patch: dict[str, Any]) -> None:
    response = client.put("/_emulator/config", json=patch)
    assert response.status_code == 200, response.text


def stats(client: TestClient) -> dict[str, int]:
    counts: dict[str, int] = client.get("/_emulator/stats").json()["callbacks"]
    return counts


def test_a_task_calls_back_on_every_status_change_with_the_legacy_payload(
    client: TestClient, kling_headers: dict[str, str], receiver: Receiver
) -> None:
    created = submit(client, kling_headers, prompt="a red fox [latency=0.4]", n=2, external_task_id="job-1")
    start = created["created_at"] / 1000

    bodies = receiver.wait_for(3)

    assert [body["task_status"] for body in bodies] == [SUBMITTED, PROCESSING, SUCCEED]
    assert {body["task_id"] for body in bodies} == {created["task_id"]}
    changes = [body["updated_at"] - created["created_at"] for body in bodies]
    assert [round(change, -1) for change in changes] == [0, 100, 400]  # ms after creation
    final = bodies[-1]
    assert final["task_info"] == {"external_task_id": "job-1"}
    assert "final_unit_deduction" in final
    assert [image["index"] for image in final["task_result"]["images"]] == [0, 1]
    # the final callback is the task as a query now answers it, sent right at the change
    assert final == client.get(f"{PATH}/{created['task_id']}", headers=kling_headers).json()["data"]
    assert receiver.at[-1] - (start + 0.4) < 0.5
    headers = receiver.requests[-1].headers
    assert (receiver.requests[-1].method, headers["content-type"]) == ("POST", "application/json; charset=utf-8")
    assert str(receiver.requests[-1].url) == HOOK
    assert stats(client) == {"scheduled": 3, "sent": 3, "failed": 0, "dropped": 0, "duplicated": 0}


def test_a_failed_task_calls_back_failed_with_its_message(
    client: TestClient, kling_headers: dict[str, str], receiver: Receiver
) -> None:
    submit(client, kling_headers, prompt="a red fox [fail] [latency=0.1]")

    final = receiver.wait_for(3)[-1]

    assert final["task_status"] == FAILED
    assert final["task_status_msg"] and final["task_result"] == {}


def test_a_task_without_callback_url_and_a_hanging_task_never_report_an_end(
    client: TestClient, kling_headers: dict[str, str], receiver: Receiver
) -> None:
    submit(client, kling_headers, callback_url=None, prompt="quiet [latency=0]")
    submit(client, kling_headers, prompt="stuck [hang]")

    time.sleep(0.8)  # the hanging task's `processing` comes 0.5 s after creation

    assert [body["task_status"] for body in receiver.bodies()] == [SUBMITTED, PROCESSING]


def test_every_endpoint_calls_back(client: TestClient, kling_headers: dict[str, str], receiver: Receiver) -> None:
    ratios = {f"{side}_expansion_ratio": 0.25 for side in ("up", "down", "left", "right")}
    body = {"image": "https://images.example.com/in.png", **ratios, "callback_url": HOOK}
    response = client.post("/v1/images/editing/expand", json=body, headers=kling_headers)
    assert response.status_code == 200, response.text

    assert receiver.wait_for(1)[0]["task_id"] == response.json()["data"]["task_id"]


@pytest.mark.parametrize(
    ("knobs", "expected_calls", "counts"),
    [
        pytest.param({"enabled": False}, 0, {"scheduled": 0, "sent": 0, "dropped": 0, "duplicated": 0}, id="off"),
        pytest.param({"drop_rate": 1.0}, 0, {"scheduled": 3, "sent": 0, "dropped": 3, "duplicated": 0}, id="dropped"),
        pytest.param(
            {"duplicate_rate": 1.0}, 6, {"scheduled": 3, "sent": 6, "dropped": 0, "duplicated": 3}, id="doubled"
        ),
    ],
)
def test_knobs_turn_callbacks_off_drop_or_double_them(
    client: TestClient,
    kling_headers: dict[str, str],
    receiver: Receiver,
    knobs: dict[str, Any],
    expected_calls: int,
    counts: dict[str, int],
) -> None:
    configure(client, {"kling": {"callbacks": knobs}})

    submit(client, kling_headers, prompt="a fox [latency=0.1]")
    receiver.wait_for(expected_calls, timeout_s=2 if expected_calls else 0.6)

    assert len(receiver.bodies()) == expected_calls
    assert {key: stats(client)[key] for key in counts} == counts


def test_a_delay_knob_holds_callbacks_back(
    client: TestClient, kling_headers: dict[str, str], receiver: Receiver
) -> None:
    configure(client, {"kling": {"callbacks": {"delay_s": 0.5}}})
    created = submit(client, kling_headers, prompt="a fox [latency=0]")

    [body] = receiver.wait_for(1)

    assert body["task_status"] == SUCCEED
    assert receiver.at[0] - created["created_at"] / 1000 >= 0.45


def test_a_receiver_that_fails_is_counted_and_not_retried(
    client: TestClient, kling_headers: dict[str, str], receiver: Receiver
) -> None:
    receiver.status = 503
    submit(client, kling_headers, prompt="a fox [latency=0]")

    receiver.wait_for(1)
    time.sleep(0.3)

    assert len(receiver.bodies()) == 1
    assert stats(client)["failed"] == 1


def test_reset_forgets_callbacks_not_yet_due(
    client: TestClient, kling_headers: dict[str, str], receiver: Receiver, app: FastAPI
) -> None:
    configure(client, {"kling": {"callbacks": {"delay_s": 30}}})
    submit(client, kling_headers, prompt="a fox [latency=1]")
    assert app.state.callbacks.pending() == 3

    assert client.post("/_emulator/reset").status_code == 200

    assert app.state.callbacks.pending() == 0


# -- the sender on a settable clock ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sender() -> Iterator[tuple[CallbackSender, Clock, Receiver]]:
    clock, answer = Clock(), Receiver()
    http = httpx.Client(transport=httpx.MockTransport(answer))
    made = CallbackSender(Knobs(seed=1), clock=clock, http=http, background=False)
    yield made, clock, answer
    made.close()


def payload(value: int) -> Callable[[], dict[str, Any]]:
    return lambda: {"n": value}


def test_callbacks_fall_due_in_order_of_their_time(sender: tuple[CallbackSender, Clock, Receiver]) -> None:
    callbacks, clock, _ = sender
    knobs = CallbackKnobs(delay_s=1.0)
    for at, value in ((clock.now + 5, 2), (clock.now + 1, 1), (clock.now + 9, 3)):
        callbacks.schedule("http://r.test/cb", at, payload(value), knobs=knobs)

    assert callbacks.take_due(clock.now + 1.5) == []
    due = callbacks.take_due(clock.now + 6)
    assert [callback.payload() for callback in due] == [{"n": 1}, {"n": 2}]
    assert callbacks.pending() == 1


def test_a_signer_adds_its_headers_over_the_exact_body(sender: tuple[CallbackSender, Clock, Receiver]) -> None:
    callbacks, clock, answer = sender
    callbacks.schedule(
        "http://r.test/cb", clock.now, payload(7), knobs=CallbackKnobs(), sign=lambda body: {"x-sig": body.decode()}
    )
    [due] = callbacks.take_due(clock.now)

    assert callbacks.send(due)

    assert answer.requests[0].headers["x-sig"] == answer.requests[0].content.decode() == '{"n":7}'


def test_the_sender_thread_sends_when_the_clock_reaches_the_due_time() -> None:
    clock, answer = Clock(), Receiver()
    callbacks = CallbackSender(Knobs(), clock=clock, http=httpx.Client(transport=httpx.MockTransport(answer)))
    callbacks.schedule("http://r.test/cb", clock.now + 60, payload(1), knobs=CallbackKnobs())

    time.sleep(0.7)
    assert answer.bodies() == []
    clock.now += 60

    assert answer.wait_for(1, timeout_s=3) == [{"n": 1}]
    callbacks.close()


def test_a_connection_error_counts_as_failed() -> None:
    knobs = Knobs()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    callbacks = CallbackSender(knobs, http=httpx.Client(transport=httpx.MockTransport(refuse)), background=False)
    callbacks.schedule("http://r.test/cb", 0.0, payload(1), knobs=CallbackKnobs())

    assert not callbacks.send(callbacks.take_due(0.0)[0])
    assert knobs.stats.callbacks.failed == 1
    callbacks.close()
