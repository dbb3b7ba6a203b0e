"""Kling fault injection: magic prompt markers and the random knobs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

PATH = "/v1/images/generations"


def post(client: TestClient, headers: dict[str, str], prompt: str) -> tuple[int, Any]:
    response = client.post(PATH, json={"prompt": prompt}, headers=headers)
    if response.headers["content-type"].startswith("application/json"):
        return response.status_code, response.json()
    return response.status_code, response.text


def final_state(client: TestClient, headers: dict[str, str], task_id: str) -> dict[str, Any]:
    return client.get(f"{PATH}/{task_id}", headers=headers).json()["data"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("marker", "status", "code"),
    [
        pytest.param("[moderated]", 400, 1301, id="moderated"),
        pytest.param("[429]", 429, 1302, id="rate-limited"),
        pytest.param("[quota]", 429, 1102, id="quota"),
        pytest.param("[500]", 500, 5000, id="server-error"),
    ],
)
def test_submit_time_markers_answer_kling_errors(
    client: TestClient, kling_headers: dict[str, str], marker: str, status: int, code: int
) -> None:
    got_status, body = post(client, kling_headers, f"a cat {marker}")
    assert (got_status, body["code"]) == (status, code)
    assert body["data"] is None and body["message"]
    assert client.get("/_emulator/stats").json()["kling"] == {"submits": 1, "queries": 0, "rejected": 1}


def test_garbage_marker_answers_200_html(client: TestClient, kling_headers: dict[str, str]) -> None:
    response = client.post(PATH, json={"prompt": "x [garbage]"}, headers=kling_headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        pytest.param("[fail]", "internal error", id="fail"),
        pytest.param("[moderated-async]", "Failure to pass the risk control system", id="moderated-async"),
    ],
)
def test_generation_markers_end_the_task_failed(
    client: TestClient, kling_headers: dict[str, str], marker: str, message: str
) -> None:
    status, body = post(client, kling_headers, f"a cat {marker}")
    assert status == 200 and body["data"]["task_status"] == "submitted"
    data = final_state(client, kling_headers, body["data"]["task_id"])
    assert data["task_status"] == "failed"
    assert message in data["task_status_msg"]
    assert data["task_result"] == {} and "final_unit_deduction" not in data


def test_hang_marker_keeps_the_task_processing(client: TestClient, kling_headers: dict[str, str]) -> None:
    _, body = post(client, kling_headers, "a cat [hang] [latency=0.1]")
    time.sleep(0.55)
    data = final_state(client, kling_headers, body["data"]["task_id"])
    assert data["task_status"] == "processing"


def test_latency_marker_overrides_the_config(client: TestClient, kling_headers: dict[str, str]) -> None:
    client.put("/_emulator/config", json={"kling": {"latency": {"kind": "fixed", "value_s": 600}}})
    _, slow = post(client, kling_headers, "slow cat")
    _, quick = post(client, kling_headers, "quick cat [latency=0.1]")
    time.sleep(0.15)
    assert final_state(client, kling_headers, slow["data"]["task_id"])["task_status"] in ("submitted", "processing")
    assert final_state(client, kling_headers, quick["data"]["task_id"])["task_status"] == "succeed"


@pytest.mark.parametrize(
    ("knob", "status", "code"),
    [
        pytest.param("error_rate", 500, 5000, id="error-rate"),
        pytest.param("rate_limit_rate", 429, 1302, id="rate-limit-rate"),
    ],
)
def test_random_submit_faults_at_rate_one(
    client: TestClient, kling_headers: dict[str, str], knob: str, status: int, code: int
) -> None:
    client.put("/_emulator/config", json={"kling": {knob: 1.0}})
    got_status, body = post(client, kling_headers, "a cat")
    assert (got_status, body["code"]) == (status, code)


def test_failure_rate_one_fails_every_task(client: TestClient, kling_headers: dict[str, str]) -> None:
    client.put("/_emulator/config", json={"kling": {"failure_rate": 1.0}})
    _, body = post(client, kling_headers, "a cat")
    assert final_state(client, kling_headers, body["data"]["task_id"])["task_status"] == "failed"
