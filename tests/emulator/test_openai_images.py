"""OpenAI Images dialect: auth, generations output, validation errors and fault injection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

PATH = "/v1/images/generations"
Decode = Callable[[bytes | str], Image.Image]


def generate(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    # Any: the TestClient answers httpx or httpx2 responses, by Starlette version.
    return client.post(PATH, json={"prompt": "a blue whale", **body}, headers=headers)


@pytest.fixture
def dalle_served(client: TestClient) -> TestClient:
    """The emulator as before DALL·E's retirement (2026-05-12): dall-e-2/3 served, dall-e-2 the default."""
    response = client.put("/_emulator/config", json={"openai": {"dalle_retired": False}})
    assert response.status_code == 200
    return client


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "emulator-openai-key"])
def test_bad_or_missing_api_key_is_401_invalid_api_key(client: TestClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.post("/openai" + PATH, json={"prompt": "x", "model": "gpt-image-1"}, headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_api_key"
    assert error["param"] is None
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("model", "size", "expected"),
    [
        pytest.param("gpt-image-1", "1024x1024", (1024, 1024), id="square"),
        pytest.param("gpt-image-1", "1536x1024", (1536, 1024), id="landscape"),
        pytest.param("gpt-image-1-mini", "1024x1536", (1024, 1536), id="portrait"),
        pytest.param("gpt-image-1.5", "auto", (1024, 1024), id="auto"),
        pytest.param("gpt-image-2", "1280x720", (1280, 720), id="gpt-image-2-custom"),
    ],
)
def test_gpt_image_b64_json_decodes_to_a_png_of_the_requested_size(
    client: TestClient,
    openai_headers: dict[str, str],
    decode_image: Decode,
    model: str,
    size: str,
    expected: tuple[int, int],
) -> None:
    response = generate(client, openai_headers, model=model, size=size, quality="low", n=2)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert isinstance(body["created"], int)
    assert len(body["data"]) == 2
    for item in body["data"]:
        assert item["revised_prompt"] is None
        image = decode_image(item["b64_json"])
        assert (image.format, image.size) == ("PNG", expected)
    assert body["background"] == "opaque" and body["output_format"] == "png" and body["quality"] == "low"
    assert body["size"] == f"{expected[0]}x{expected[1]}"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"]["text_tokens"] >= 1
    assert usage["input_tokens_details"]["image_tokens"] == 0


def test_usage_matches_the_published_token_table(client: TestClient, openai_headers: dict[str, str]) -> None:
    body = generate(client, openai_headers, model="gpt-image-1", quality="high", size="1024x1536").json()
    assert body["usage"]["output_tokens"] == 6240


@pytest.mark.parametrize(("fmt", "pil_format"), [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_output_format_is_honoured(
    client: TestClient, openai_headers: dict[str, str], decode_image: Decode, fmt: str, pil_format: str
) -> None:
    body = generate(client, openai_headers, model="gpt-image-1", output_format=fmt, output_compression=50).json()
    assert body["output_format"] == fmt
    assert decode_image(body["data"][0]["b64_json"]).format == pil_format


def test_transparent_background(client: TestClient, openai_headers: dict[str, str], decode_image: Decode) -> None:
    body = generate(client, openai_headers, model="gpt-image-1", background="transparent").json()
    assert body["background"] == "transparent"
    assert "transparency" in decode_image(body["data"][0]["b64_json"]).info


def test_dall_e_is_the_default_and_answers_urls(
    dalle_served: TestClient, openai_headers: dict[str, str], decode_image: Decode
) -> None:
    client = dalle_served
    response = generate(client, openai_headers, size="512x512", n=2)
    body = response.json()
    assert set(body) == {"created", "data"}
    urls = [item["url"] for item in body["data"]]
    assert all(url.startswith("http://testserver/_emulator/files/openai/") for url in urls)
    for url in urls:
        image = client.get(url)
        assert image.headers["content-type"] == "image/png"
        assert decode_image(image.content).size == (512, 512)
    assert client.get(urls[0].replace("/0.png", "/7.png")).status_code == 404


def test_dall_e_3_b64_json_with_revised_prompt(
    dalle_served: TestClient, openai_headers: dict[str, str], decode_image: Decode
) -> None:
    body = generate(dalle_served, openai_headers, model="dall-e-3", size="1792x1024", response_format="b64_json").json()
    assert body["data"][0]["revised_prompt"] == "a blue whale"
    assert decode_image(body["data"][0]["b64_json"]).size == (1792, 1024)


def test_gpt_only_parameter_switches_the_default_model(
    dalle_served: TestClient, openai_headers: dict[str, str]
) -> None:
    body = generate(dalle_served, openai_headers, output_format="png").json()
    assert "b64_json" in body["data"][0] and "usage" in body


# -- DALL·E retired (the default) ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["dall-e-3", "dall-e-2"])
def test_retired_dall_e_is_404_model_not_found(client: TestClient, openai_headers: dict[str, str], model: str) -> None:
    assert client.get("/_emulator/config").json()["openai"]["dalle_retired"] is True
    response = generate(client, openai_headers, model=model)
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "model_not_found", None)
    assert f"`{model}` has been deprecated" in error["message"]
    assert client.get("/_emulator/stats").json()["openai"] == {"requests": 1, "rejected": 1}


def test_without_model_a_gpt_image_model_answers_after_retirement(
    client: TestClient, openai_headers: dict[str, str], decode_image: Decode
) -> None:
    response = generate(client, openai_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "usage" in body and body["size"] == "1024x1024"
    assert decode_image(body["data"][0]["b64_json"]).format == "PNG"


def test_retirement_is_a_knob(client: TestClient, openai_headers: dict[str, str]) -> None:
    client.put("/_emulator/config", json={"openai": {"dalle_retired": False}})
    assert generate(client, openai_headers, model="dall-e-3").status_code == 200
    client.put("/_emulator/config", json={"openai": {"dalle_retired": True}})
    assert generate(client, openai_headers, model="dall-e-3").status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"prompt": None}, "prompt", id="prompt-missing"),
        pytest.param({"prompt": 7}, "prompt", id="prompt-not-string"),
        pytest.param({"prompt": "x" * 1001}, "prompt", id="dall-e-2-prompt-limit"),
        pytest.param({"model": "gpt-image-1", "size": "256x256"}, "size", id="gpt-size"),
        pytest.param({"model": "dall-e-2", "size": "1536x1024"}, "size", id="dall-e-2-size"),
        pytest.param({"model": "dall-e-3", "size": "512x512"}, "size", id="dall-e-3-size"),
        pytest.param({"model": "gpt-image-2", "size": "1000x1000"}, "size", id="gpt-image-2-not-16"),
        pytest.param({"model": "gpt-image-2", "size": "3840x960"}, "size", id="gpt-image-2-aspect"),
        pytest.param({"model": "dall-e-3", "n": 2}, "n", id="dall-e-3-n"),
        pytest.param({"n": 11}, "n", id="n-too-big"),
        pytest.param({"n": True}, "n", id="n-bool"),
        pytest.param({"model": "gpt-image-1", "response_format": "url"}, "response_format", id="gpt-url"),
        pytest.param({"response_format": "png"}, "response_format", id="bad-response-format"),
        pytest.param({"model": "gpt-image-1", "quality": "hd"}, "quality", id="gpt-quality"),
        pytest.param({"model": "dall-e-2", "quality": "hd"}, "quality", id="dall-e-2-quality"),
        pytest.param({"model": "dall-e-2", "style": "vivid"}, "style", id="style-dall-e-3-only"),
        pytest.param({"model": "dall-e-3", "background": "opaque"}, "background", id="background-gpt-only"),
        pytest.param(
            {"model": "gpt-image-1", "background": "transparent", "output_format": "jpeg"},
            "background",
            id="transparent-jpeg",
        ),
        pytest.param({"model": "gpt-image-1", "output_compression": 101}, "output_compression", id="compression"),
        pytest.param({"model": "gpt-image-1", "stream": "yes"}, "stream", id="stream-type"),
        pytest.param({"model": "gpt-image-1", "stream": True, "partial_images": 4}, "partial_images", id="partials"),
        pytest.param({"user": 5}, "user", id="user-type"),
    ],
)
def test_invalid_parameters_are_400_with_param(
    dalle_served: TestClient, openai_headers: dict[str, str], body: dict[str, Any], param: str
) -> None:
    response = generate(dalle_served, openai_headers, **body)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {
            "message": response.json()["error"]["message"],
            "type": "invalid_request_error",
            "param": param,
            "code": None,
        }
    }


def test_unknown_model_is_404_model_not_found(client: TestClient, openai_headers: dict[str, str]) -> None:
    response = generate(client, openai_headers, model="imagen-9")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_unparseable_json_is_400(client: TestClient, openai_headers: dict[str, str]) -> None:
    headers = {**openai_headers, "content-type": "application/json"}
    response = client.post("/openai" + PATH, content=b"[1, 2", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("marker", "status", "type_", "code"),
    [
        pytest.param("[moderated]", 400, "image_generation_user_error", "moderation_blocked", id="moderated"),
        pytest.param("[429]", 429, "requests", "rate_limit_exceeded", id="rate-limited"),
        pytest.param("[quota]", 429, "insufficient_quota", "insufficient_quota", id="quota"),
        pytest.param("[500]", 500, "server_error", None, id="server-error"),
        pytest.param("[fail]", 500, "server_error", None, id="fail"),
    ],
)
def test_markers_answer_openai_errors(
    client: TestClient, openai_headers: dict[str, str], marker: str, status: int, type_: str, code: str | None
) -> None:
    response = generate(client, openai_headers, prompt=f"a whale {marker}", model="gpt-image-1")
    assert response.status_code == status
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (type_, code)
    assert response.headers["x-request-id"].startswith("req_")
    if status >= 429:
        assert response.headers["x-should-retry"] == "false"
    if marker == "[429]":
        assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("1", "1000")
        assert "gpt-image-1" in error["message"] and "images per minute" in error["message"]
    assert client.get("/_emulator/stats").json()["openai"] == {"requests": 1, "rejected": 1}


def test_moderation_block_names_the_input_stage_and_categories(
    client: TestClient, openai_headers: dict[str, str]
) -> None:
    response = generate(client, openai_headers, prompt="a whale [moderated]", model="gpt-image-1.5")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["moderation_details"]["moderation_stage"] == "input"
    assert error["moderation_details"]["categories"]
    assert error["message"].startswith("Your request was rejected by the safety system")


def test_moderated_async_blocks_the_output_after_the_generation_time(
    client: TestClient, openai_headers: dict[str, str]
) -> None:
    started = time.monotonic()
    response = generate(client, openai_headers, prompt="a whale [moderated-async] [latency=0.2]", model="gpt-image-1")
    assert time.monotonic() - started >= 0.2
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("image_generation_user_error", "moderation_blocked")
    assert error["moderation_details"]["moderation_stage"] == "output"


@pytest.mark.parametrize(("marker", "subject"), [("[moderated]", "Your prompt"), ("[moderated-async]", "Image desc")])
def test_dall_e_safety_block_is_content_policy_violation(
    dalle_served: TestClient, openai_headers: dict[str, str], marker: str, subject: str
) -> None:
    response = generate(dalle_served, openai_headers, prompt=f"a whale {marker}", model="dall-e-3")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "content_policy_violation")
    assert "moderation_details" not in error
    assert subject in error["message"]


def test_garbage_marker_answers_200_html(client: TestClient, openai_headers: dict[str, str]) -> None:
    response = generate(client, openai_headers, prompt="a whale [garbage]")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()


def test_latency_marker_delays_the_answer(client: TestClient, openai_headers: dict[str, str]) -> None:
    started = time.monotonic()
    response = generate(client, openai_headers, prompt="a whale [latency=0.2]", model="gpt-image-1")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2
    assert int(response.headers["openai-processing-ms"]) >= 200


def test_hang_marker_never_answers(app: FastAPI, openai_headers: dict[str, str]) -> None:
    async def call() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as http:
            await asyncio.wait_for(http.post(PATH, json={"prompt": "[hang]"}, headers=openai_headers), timeout=0.3)

    with pytest.raises(TimeoutError):
        asyncio.run(call())


@pytest.mark.parametrize(
    ("knob", "status", "code"),
    [
        pytest.param("error_rate", 500, None, id="error-rate"),
        pytest.param("rate_limit_rate", 429, "rate_limit_exceeded", id="rate-limit-rate"),
        pytest.param("failure_rate", 500, None, id="failure-rate"),
    ],
)
def test_random_faults_at_rate_one(
    client: TestClient, openai_headers: dict[str, str], knob: str, status: int, code: str | None
) -> None:
    client.put("/_emulator/config", json={"openai": {knob: 1.0}})
    response = generate(client, openai_headers, model="gpt-image-1")
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.headers["x-should-retry"] == "false"
