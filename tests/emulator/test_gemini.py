"""Gemini dialect: auth, generateContent answers per model, proto-JSON validation, markers and knobs."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from emulator.app import create_app

GEMINI_KEY = "test-gemini-key"
HEADERS = {"x-goog-api-key": GEMINI_KEY}
Decode = Callable[[bytes | str], Image.Image]


def path(model: str = "gemini-2.5-flash-image") -> str:
    return f"/gemini/v1beta/models/{model}:generateContent"


def body(prompt: str = "a blue whale", *images: bytes, **generation_config: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"text": prompt}]
    parts += [{"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}} for data in images]
    request: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}]}
    if generation_config:
        request["generationConfig"] = generation_config
    return request


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def gemini_app(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    """The emulator with a known Gemini key."""
    monkeypatch.setenv("EMULATOR_GEMINI_API_KEY", GEMINI_KEY)
    return create_app()


@pytest.fixture
def gemini(gemini_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(gemini_app) as client:
        response = client.put("/_emulator/config", json={"gemini": {"latency": {"kind": "fixed", "value_s": 0}}})
        assert response.status_code == 200
        yield client


def generate(client: TestClient, model: str = "gemini-2.5-flash-image", **request: Any) -> Any:
    # Any: the TestClient answers httpx or httpx2 responses, by Starlette version.
    return client.post(path(model), json=request or body(), headers=HEADERS)


def stats(client: TestClient) -> dict[str, int]:
    result: dict[str, int] = client.get("/_emulator/stats").json()["gemini"]
    return result


# -- auth ------------------------------------------------------------------------------------------------


def test_missing_key_is_403_permission_denied(gemini: TestClient) -> None:
    response = gemini.post(path(), json=body())

    assert response.status_code == 403
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (403, "PERMISSION_DENIED")
    assert "unregistered callers" in error["message"]
    assert stats(gemini) == {"requests": 1, "rejected": 1}


def test_a_bearer_token_is_not_a_gemini_key(gemini: TestClient) -> None:
    response = gemini.post(path(), json=body(), headers={"Authorization": f"Bearer {GEMINI_KEY}"})

    assert response.status_code == 403


def test_a_wrong_key_is_400_api_key_invalid(gemini: TestClient) -> None:
    response = gemini.post(path(), json=body(), headers={"x-goog-api-key": "AIza-wrong"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["status"], error["message"]) == (
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
    )
    info = next(detail for detail in error["details"] if detail["@type"].endswith("google.rpc.ErrorInfo"))
    assert info["reason"] == "API_KEY_INVALID"


def test_the_key_may_be_a_query_parameter(gemini: TestClient) -> None:
    response = gemini.post(path(), params={"key": GEMINI_KEY}, json=body())

    assert response.status_code == 200, response.text


def test_the_default_key_matches_the_gateway_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMULATOR_GEMINI_API_KEY", raising=False)
    with TestClient(create_app()) as client:
        client.put("/_emulator/config", json={"gemini": {"latency": {"kind": "fixed", "value_s": 0}}})
        response = client.post(path(), json=body(), headers={"x-goog-api-key": "emulator-gemini-key"})
    assert response.status_code == 200


# -- answers ---------------------------------------------------------------------------------------------


def test_flash_image_answers_one_png_without_thoughts(gemini: TestClient, decode_image: Decode) -> None:
    response = generate(gemini, **body(responseModalities=["IMAGE"], imageConfig={"aspectRatio": "16:9"}))

    assert response.status_code == 200, response.text
    answer = response.json()
    (candidate,) = answer["candidates"]
    assert (candidate["finishReason"], candidate["index"]) == ("STOP", 0)
    (part,) = candidate["content"]["parts"]
    assert candidate["content"]["role"] == "model"
    assert part["inlineData"]["mimeType"] == "image/png"
    image = decode_image(part["inlineData"]["data"])
    assert image.format == "PNG"
    assert image.width > image.height and abs(image.width / image.height - 16 / 9) < 0.02
    assert answer["modelVersion"] == "gemini-2.5-flash-image"
    assert answer["responseId"]
    usage = answer["usageMetadata"]
    assert usage["candidatesTokenCount"] == 1290
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert stats(gemini) == {"requests": 1, "rejected": 0}


def test_text_and_image_modalities_add_a_caption(gemini: TestClient) -> None:
    parts = generate(gemini, **body(responseModalities=["TEXT", "IMAGE"])).json()["candidates"][0]["content"]["parts"]

    assert [("text" in part, "inlineData" in part) for part in parts] == [(True, False), (False, True)]


def test_text_only_modality_answers_no_image(gemini: TestClient) -> None:
    answer = generate(gemini, **body(responseModalities=["TEXT"])).json()

    parts = answer["candidates"][0]["content"]["parts"]
    assert parts and all("inlineData" not in part for part in parts)


@pytest.mark.parametrize(
    ("model", "mime_type", "pil_format"),
    [("gemini-3-pro-image-preview", "image/jpeg", "JPEG"), ("gemini-3.1-flash-image-preview", "image/png", "PNG")],
)
def test_gemini_3_models_think_first_and_sign_the_final_image(
    gemini: TestClient, decode_image: Decode, model: str, mime_type: str, pil_format: str
) -> None:
    answer = generate(gemini, model, **body(responseModalities=["IMAGE"])).json()

    parts = answer["candidates"][0]["content"]["parts"]
    thoughts = [part for part in parts if part.get("thought")]
    final = [part for part in parts if "inlineData" in part and not part.get("thought")]
    assert any("text" in part for part in thoughts)
    assert any("inlineData" in part for part in thoughts)
    assert len(final) == 1
    assert parts.index(final[0]) > max(parts.index(part) for part in thoughts)
    assert final[0]["thoughtSignature"]
    assert final[0]["inlineData"]["mimeType"] == mime_type
    image = decode_image(final[0]["inlineData"]["data"])
    assert (image.format, image.size) == (pil_format, (1024, 1024))
    assert answer["usageMetadata"]["thoughtsTokenCount"] > 0


@pytest.mark.parametrize(
    ("model", "image_config", "shape"),
    [
        pytest.param("gemini-3-pro-image-preview", {"imageSize": "2K"}, (2048, 2048), id="pro-2k"),
        pytest.param("gemini-3-pro-image-preview", {"imageSize": "4K", "aspectRatio": "1:1"}, (4096, 4096)),
        pytest.param("gemini-3-pro-image-preview", {"aspectRatio": "9:16"}, "portrait", id="pro-9:16"),
        pytest.param("gemini-3.1-flash-image-preview", {"imageSize": "512"}, (512, 512), id="nb2-512"),
        pytest.param("gemini-3.1-flash-image-preview", {"aspectRatio": "8:1"}, "wide", id="nb2-8:1"),
        pytest.param("gemini-3.1-flash-image", {"aspectRatio": "1:4", "imageSize": "2K"}, "tall", id="nb2-ga"),
    ],
)
def test_images_have_the_asked_ratio_and_tier(
    gemini: TestClient, decode_image: Decode, model: str, image_config: dict[str, str], shape: Any
) -> None:
    response = generate(gemini, model, **body(imageConfig=image_config))

    assert response.status_code == 200, response.text
    parts = response.json()["candidates"][0]["content"]["parts"]
    image = decode_image(parts[-1]["inlineData"]["data"])
    if isinstance(shape, tuple):
        assert image.size == shape
        return
    ratio = {"portrait": 9 / 16, "wide": 8.0, "tall": 0.25}[shape]
    assert abs(image.width / image.height - ratio) / ratio < 0.05


def test_editing_keeps_the_input_shape_and_counts_input_tokens(gemini: TestClient, decode_image: Decode) -> None:
    response = generate(gemini, "gemini-3-pro-image-preview", **body("make it night", png(300, 400), png(40, 40)))

    assert response.status_code == 200, response.text
    answer = response.json()
    image = decode_image(answer["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"])
    assert image.height > image.width and abs(image.width / image.height - 3 / 4) < 0.02
    details = {d["modality"]: d["tokenCount"] for d in answer["usageMetadata"]["promptTokensDetails"]}
    assert details["IMAGE"] == 2 * 560


def test_snake_case_fields_are_accepted(gemini: TestClient) -> None:
    data = base64.urlsafe_b64encode(png(64, 32)).decode()
    request = {
        "contents": [{"parts": [{"text": "a whale"}, {"inline_data": {"mime_type": "image/png", "data": data}}]}],
        "generation_config": {"response_modalities": ["image"], "image_config": {"aspect_ratio": "2:3"}},
    }

    response = generate(gemini, "gemini-3-pro-image-preview", **request)

    assert response.status_code == 200, response.text


# -- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "request_body", "field"),
    [
        pytest.param("gemini-2.5-flash-image", body(imageConfig={"imageSize": "2K"}), "imageSize", id="flash-1k-only"),
        pytest.param("gemini-3-pro-image-preview", body(imageConfig={"imageSize": "512"}), "imageSize", id="pro-512"),
        pytest.param("gemini-3-pro-image-preview", body(imageConfig={"imageSize": "2k"}), "imageSize", id="lowercase"),
        pytest.param("gemini-3-pro-image-preview", body(imageConfig={"aspectRatio": "1:4"}), "aspectRatio"),
        pytest.param("gemini-2.5-flash-image", body(imageConfig={"aspectRatio": "7:3"}), "aspectRatio", id="7:3"),
        pytest.param("gemini-2.5-flash-image", body(candidateCount=2), "candidate_count", id="candidates"),
        pytest.param("gemini-2.5-flash-image", body(responseModalities=["AUDIO"]), "response_modalities"),
        pytest.param("gemini-2.5-flash-image", {**body(), "n": 2}, '"n"', id="unknown-top-level"),
        pytest.param("gemini-2.5-flash-image", body(numberOfImages=2), '"numberOfImages"', id="unknown-config"),
        pytest.param(
            "gemini-2.5-flash-image", body(imageConfig={"personGeneration": "ALLOW"}), "personGeneration", id="vertex"
        ),
        pytest.param("gemini-2.5-flash-image", {"contents": []}, "contents", id="no-contents"),
        pytest.param("gemini-2.5-flash-image", {"contents": [{"parts": [{}]}]}, "data", id="empty-part"),
        pytest.param(
            "gemini-3-pro-image-preview", body("x", *[png(8, 8)] * 15), "at most 14 input images", id="15-images"
        ),
    ],
)
def test_invalid_requests_are_400_invalid_argument_naming_the_field(
    gemini: TestClient, model: str, request_body: dict[str, Any], field: str
) -> None:
    response = generate(gemini, model, **request_body)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert field in error["message"]
    violation = next(d for d in error["details"] if d["@type"].endswith("google.rpc.BadRequest"))
    assert violation["fieldViolations"][0]["field"]
    assert stats(gemini) == {"requests": 1, "rejected": 1}


@pytest.mark.parametrize(
    ("inline_data", "message"),
    [
        pytest.param({"mimeType": "image/png", "data": "!!!"}, "Base64 decoding failed", id="bad-base64"),
        pytest.param(
            {"mimeType": "image/png", "data": base64.b64encode(b"not an image").decode()}, "Unable to process"
        ),
        pytest.param({"mimeType": "application/pdf", "data": "AAAA"}, "Unsupported MIME type", id="pdf"),
        pytest.param({"data": "AAAA"}, "mime_type", id="no-mime-type"),
    ],
)
def test_bad_inline_images_are_refused(gemini: TestClient, inline_data: dict[str, str], message: str) -> None:
    request: dict[str, Any] = {"contents": [{"parts": [{"text": "x"}, {"inlineData": inline_data}]}]}

    response = generate(gemini, **request)

    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_unknown_model_is_404_not_found(gemini: TestClient) -> None:
    response = generate(gemini, "imagen-9")

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["status"] == "NOT_FOUND"
    assert error["message"].startswith("models/imagen-9 is not found for API version v1beta")


def test_unparseable_json_is_400(gemini: TestClient) -> None:
    response = gemini.post(path(), content=b"{nope", headers={**HEADERS, "content-type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Invalid JSON payload received.")


# -- markers and knobs ---------------------------------------------------------------------------------------


def test_moderated_is_image_safety_on_http_200(gemini: TestClient) -> None:
    response = generate(gemini, **body("a whale [moderated]"))

    assert response.status_code == 200
    (candidate,) = response.json()["candidates"]
    assert candidate["finishReason"] == "IMAGE_SAFETY"
    assert "content" not in candidate
    assert "filtered out" in candidate["finishMessage"]
    assert stats(gemini) == {"requests": 1, "rejected": 0}


def test_moderated_async_is_a_blocked_prompt_on_http_200(gemini: TestClient) -> None:
    response = generate(gemini, **body("a whale [moderated-async]"))

    assert response.status_code == 200
    answer = response.json()
    assert answer["promptFeedback"]["blockReason"] == "PROHIBITED_CONTENT"
    assert "candidates" not in answer


def _retry_delay(error: dict[str, Any]) -> str:
    info = next(detail for detail in error["details"] if detail["@type"].endswith("google.rpc.RetryInfo"))
    return str(info["retryDelay"])


def _quota_ids(error: dict[str, Any]) -> list[str]:
    failure = next(detail for detail in error["details"] if detail["@type"].endswith("google.rpc.QuotaFailure"))
    return [violation["quotaId"] for violation in failure["violations"]]


def test_429_marker_is_a_per_minute_resource_exhausted_with_retry_info(gemini: TestClient) -> None:
    response = generate(gemini, **body("a whale [429]"))

    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert _retry_delay(error) == "1s"
    assert _quota_ids(error) == ["GenerateRequestsPerMinutePerProjectPerModel"]


def test_quota_marker_is_a_per_day_resource_exhausted(gemini: TestClient) -> None:
    response = generate(gemini, **body("a whale [quota]"))

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert _quota_ids(error) == ["GenerateRequestsPerDayPerProjectPerModel"]
    assert "You exceeded your current quota" in error["message"]


@pytest.mark.parametrize(("marker", "status", "name"), [("[500]", 500, "INTERNAL"), ("[fail]", 503, "UNAVAILABLE")])
def test_server_error_markers(gemini: TestClient, marker: str, status: int, name: str) -> None:
    response = generate(gemini, **body(f"a whale {marker}"))

    assert response.status_code == status
    assert response.json()["error"] == {"code": status, "message": response.json()["error"]["message"], "status": name}
    assert stats(gemini) == {"requests": 1, "rejected": 1}


def test_garbage_marker_answers_200_html(gemini: TestClient) -> None:
    response = generate(gemini, **body("a whale [garbage]"))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


def test_markers_come_after_validation(gemini: TestClient) -> None:
    response = generate(gemini, **body("a whale [429]", imageConfig={"aspectRatio": "7:3"}))

    assert response.status_code == 400


def test_latency_marker_delays_the_answer(gemini: TestClient) -> None:
    started = time.monotonic()
    response = generate(gemini, **body("a whale [latency=0.2]"))

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2
    assert "dur=" in response.headers["server-timing"]


def test_latency_knob_applies(gemini: TestClient) -> None:
    gemini.put("/_emulator/config", json={"gemini": {"latency": {"kind": "fixed", "value_s": 0.2}}})
    started = time.monotonic()

    assert generate(gemini).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_hang_marker_never_answers(gemini_app: FastAPI) -> None:
    async def call() -> None:
        transport = httpx.ASGITransport(app=gemini_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as http:
            request = http.post(path(), json=body("[hang]"), headers=HEADERS)
            await asyncio.wait_for(request, timeout=0.3)

    with pytest.raises(TimeoutError):
        asyncio.run(call())


@pytest.mark.parametrize(
    ("knob", "status", "name"),
    [
        pytest.param("error_rate", 500, "INTERNAL", id="error-rate"),
        pytest.param("rate_limit_rate", 429, "RESOURCE_EXHAUSTED", id="rate-limit-rate"),
        pytest.param("failure_rate", 503, "UNAVAILABLE", id="failure-rate"),
    ],
)
def test_random_faults_at_rate_one(gemini: TestClient, knob: str, status: int, name: str) -> None:
    gemini.put("/_emulator/config", json={"gemini": {knob: 1.0}})

    response = generate(gemini)

    assert response.status_code == status
    assert response.json()["error"]["status"] == name


def test_reset_clears_the_gemini_stats(gemini: TestClient) -> None:
    generate(gemini)
    assert stats(gemini)["requests"] == 1

    gemini.post("/_emulator/reset")

    assert stats(gemini) == {"requests": 0, "rejected": 0}
