"""The relay dialect: the OpenAI Images API under ``/relay`` with its own key, knobs section and counters."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emulator.app import create_app

RELAY_KEY = "test-relay-key"
OPENAI_KEY = "test-openai-key"
RELAY = {"Authorization": f"Bearer {RELAY_KEY}"}
OPENAI = {"Authorization": f"Bearer {OPENAI_KEY}"}
Decode = Callable[[bytes | str], Image.Image]


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("EMULATOR_RELAY_API_KEY", RELAY_KEY)
    monkeypatch.setenv("EMULATOR_OPENAI_API_KEY", OPENAI_KEY)
    with TestClient(create_app()) as client:
        zero = {"latency": {"kind": "fixed", "value_s": 0}}
        assert client.put("/_emulator/config", json={"relay": zero, "openai": zero}).status_code == 200
        yield client


def generate(client: TestClient, prefix: str, headers: dict[str, str], **body: Any) -> Any:
    payload = {"model": "gpt-image-1", "prompt": "a blue whale", "quality": "low", **body}
    return client.post(f"{prefix}/v1/images/generations", json=payload, headers=headers)


def stats(client: TestClient) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = client.get("/_emulator/stats").json()
    return result


def test_generations_answer_the_openai_images_response(emulator: TestClient, decode_image: Decode) -> None:
    response = generate(emulator, "/relay", RELAY, n=2, size="1536x1024")

    assert response.status_code == 200, response.text
    body = response.json()
    assert [decode_image(item["b64_json"]).size for item in body["data"]] == [(1536, 1024)] * 2
    assert body["usage"]["output_tokens"] == 2 * 400
    assert response.headers["x-request-id"].startswith("req_")
    assert stats(emulator)["relay"] == {"requests": 1, "rejected": 0}
    assert stats(emulator)["openai"] == {"requests": 0, "rejected": 0}


def test_the_relay_has_its_own_key(emulator: TestClient) -> None:
    openai_key_at_relay = generate(emulator, "/relay", OPENAI)
    relay_key_at_openai = generate(emulator, "/openai", RELAY)

    assert (openai_key_at_relay.status_code, openai_key_at_relay.json()["error"]["code"]) == (401, "invalid_api_key")
    assert relay_key_at_openai.status_code == 401
    assert stats(emulator)["relay"] == {"requests": 1, "rejected": 1}
    assert stats(emulator)["openai"] == {"requests": 1, "rejected": 1}


def test_the_default_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMULATOR_RELAY_API_KEY", raising=False)
    with TestClient(create_app()) as client:
        client.put("/_emulator/config", json={"relay": {"latency": {"kind": "fixed", "value_s": 0}}})
        response = generate(client, "/relay", {"Authorization": "Bearer emulator-relay-key"})

    assert response.status_code == 200


def test_the_relay_knobs_are_its_own(emulator: TestClient) -> None:
    emulator.put("/_emulator/config", json={"relay": {"error_rate": 1.0}})

    relay = generate(emulator, "/relay", RELAY)
    openai = generate(emulator, "/openai", OPENAI)

    assert (relay.status_code, relay.json()["error"]["type"]) == (500, "server_error")
    assert openai.status_code == 200


def test_openai_knobs_do_not_reach_the_relay(emulator: TestClient) -> None:
    emulator.put("/_emulator/config", json={"openai": {"rate_limit_rate": 1.0}})

    assert generate(emulator, "/relay", RELAY).status_code == 200
    assert generate(emulator, "/openai", OPENAI).status_code == 429


def test_the_relay_latency_applies(emulator: TestClient) -> None:
    emulator.put("/_emulator/config", json={"relay": {"latency": {"kind": "fixed", "value_s": 0.3}}})

    response = generate(emulator, "/relay", RELAY)

    assert response.status_code == 200
    assert int(response.headers["openai-processing-ms"]) >= 300


@pytest.mark.parametrize(
    ("marker", "status", "code"),
    [
        ("[moderated]", 400, "moderation_blocked"),
        ("[429]", 429, "rate_limit_exceeded"),
        ("[quota]", 429, "insufficient_quota"),
        ("[500]", 500, None),
    ],
)
def test_markers_behave_as_openai(emulator: TestClient, marker: str, status: int, code: str | None) -> None:
    response = generate(emulator, "/relay", RELAY, prompt=f"a fox {marker}")

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert stats(emulator)["relay"]["rejected"] == 1


def test_invalid_parameters_name_the_param(emulator: TestClient) -> None:
    response = generate(emulator, "/relay", RELAY, n=99)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "n"


def test_edits_are_relayed_too(emulator: TestClient, decode_image: Decode) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "PNG")
    files = [("image", ("a.png", buffer.getvalue(), "image/png"))]
    data = {"model": "gpt-image-1", "prompt": "add a hat", "size": "1024x1024", "quality": "low"}

    response = emulator.post("/relay/v1/images/edits", data=data, files=files, headers=RELAY)

    assert response.status_code == 200, response.text
    assert decode_image(response.json()["data"][0]["b64_json"]).size == (1024, 1024)
    assert stats(emulator)["relay"]["requests"] == 1


def test_reset_clears_the_relay_counters(emulator: TestClient) -> None:
    generate(emulator, "/relay", RELAY)

    emulator.post("/_emulator/reset")

    assert stats(emulator)["relay"] == {"requests": 0, "rejected": 0}
