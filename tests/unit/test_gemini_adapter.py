"""The Gemini adapter: the request it builds, how it reads answers and errors, ``n`` by repeated calls.

Wire-level cases use an ``httpx.MockTransport`` scripted with Gemini's documented bodies
(https://ai.google.dev/gemini-api/docs/image-generation);
end-to-end cases run every nano-banana model of the catalog against the in-process emulator.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emulator.app import create_app
from shared.errors import (
    ContentPolicyError,
    ErrorCode,
    PermanentProviderError,
    ProviderAuthError,
    QuotaExceededError,
    RateLimitedError,
    TransientProviderError,
    UnexpectedResponseError,
    UpstreamRejectedError,
)
from tests.conftest import make_settings
from tests.unit.contracts import Contract, small_png_base64
from tests.unit.contracts.gemini import CONTRACT
from worker.inputs import HttpImageLoader
from worker.providers import Completed, JobSpec
from worker.providers.gemini import GeminiProvider

MODEL = "gemini-3-pro-image-preview"
PATH = f"/v1beta/models/{MODEL}:generateContent"
Handler = Callable[[httpx.Request], httpx.Response]


def _png(width: int = 64, height: int = 64, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


FINAL = _png(color="green")
THOUGHT = _png(color="gray")


def _image_part(data: bytes, **extra: Any) -> dict[str, Any]:
    return {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}, **extra}


def _success(*parts: dict[str, Any]) -> dict[str, Any]:
    parts = parts or (_image_part(FINAL),)
    return {
        "candidates": [{"content": {"role": "model", "parts": list(parts)}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1120, "totalTokenCount": 1125},
        "modelVersion": MODEL,
        "responseId": "abc",
    }


def _error(code: int, status: str, message: str, *details: dict[str, Any]) -> httpx.Response:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = list(details)
    return httpx.Response(code, json={"error": body})


def _quota_failure(quota_id: str, value: str = "10") -> dict[str, Any]:
    violation = {"quotaMetric": "generativelanguage.googleapis.com/x", "quotaId": quota_id, "quotaValue": value}
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}


def _retry_info(delay: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}


class Upstream:
    """A scripted Gemini: answers in order (the last one repeats), records every request."""

    def __init__(self, *answers: httpx.Response | dict[str, Any]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]


def _provider(upstream: Handler) -> GeminiProvider:
    settings = make_settings().gemini
    http = httpx.Client(base_url=str(settings.base_url), transport=httpx.MockTransport(upstream))
    images = HttpImageLoader(httpx.Client(transport=httpx.MockTransport(_image_server)), max_bytes=1 << 20)
    return GeminiProvider(settings, http=http, images=images)


def _image_server(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=_png(8, 8, "blue"), headers={"content-type": "image/png"})


def _spec(n: int = 1, model: str = MODEL, **params: Any) -> JobSpec:
    return JobSpec(
        job_id="job-1",
        upstream_model=model,
        operation="text2img",
        params={"prompt": "a fox", **params},
        image_count=n,
    )


def _submit(upstream: Upstream, spec: JobSpec | None = None) -> Completed:
    result = _provider(upstream).submit(spec or _spec())
    assert isinstance(result, Completed)
    return result


# -- the request ---------------------------------------------------------------------------------------


def test_text_to_image_request_has_the_prompt_key_and_image_modality() -> None:
    upstream = Upstream(_success())

    _submit(upstream)

    (request,) = upstream.requests
    assert request.method == "POST"
    assert request.url.path == f"/gemini{PATH}"
    assert request.headers["x-goog-api-key"] == "emulator-gemini-key"
    assert "authorization" not in request.headers
    assert upstream.bodies()[0] == {
        "contents": [{"role": "user", "parts": [{"text": "a fox"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"]},
    }


@pytest.mark.parametrize(
    ("params", "model", "image_config"),
    [
        pytest.param({"size": "1024x1792"}, MODEL, {"aspectRatio": "9:16"}, id="dall-e-portrait"),
        pytest.param({"size": "1792x1024"}, MODEL, {"aspectRatio": "16:9"}, id="dall-e-landscape"),
        pytest.param({"size": "1536x1024"}, MODEL, {"aspectRatio": "3:2"}, id="gpt-landscape"),
        pytest.param({"size": "1536x672"}, MODEL, {"aspectRatio": "21:9"}, id="gemini-wide"),
        pytest.param({"size": "1024x1024"}, MODEL, {"aspectRatio": "1:1"}, id="square"),
        pytest.param({"size": "512x2048"}, MODEL, {"aspectRatio": "9:16"}, id="tall-on-a-10-ratio-model"),
        pytest.param({"size": "512x2048"}, "gemini-3.1-flash-image-preview", {"aspectRatio": "1:4"}, id="tall-nb2"),
        pytest.param({"size": "auto"}, MODEL, None, id="auto"),
        pytest.param({"size": "1024x1792", "aspectRatio": "4:3"}, MODEL, {"aspectRatio": "4:3"}, id="ratio-wins"),
        pytest.param({"imageSize": "2k"}, MODEL, {"imageSize": "2K"}, id="tier-upper-cased"),
        pytest.param({"imageSize": "0.5K"}, MODEL, {"imageSize": "512"}, id="half-k-is-512"),
        pytest.param({"aspectRatio": "1:1", "imageSize": "4K"}, MODEL, {"aspectRatio": "1:1", "imageSize": "4K"}),
    ],
)
def test_size_aspect_ratio_and_tier_become_image_config(
    params: dict[str, Any], model: str, image_config: dict[str, str] | None
) -> None:
    upstream = Upstream(_success())

    _submit(upstream, _spec(model=model, **params))

    config = upstream.bodies()[0]["generationConfig"]
    assert config.get("imageConfig") == image_config
    assert "size" not in json.dumps(config)


def test_input_images_are_sent_inline_after_the_prompt_in_field_order() -> None:
    upstream = Upstream(_success())
    raw = small_png_base64(16)

    _submit(
        upstream,
        _spec(
            image=f"data:image/png;base64,{raw}",
            image_url="https://example.com/a.png",
            image_urls=[raw],
            images=["https://example.com/b.png"],
        ),
    )

    parts = upstream.bodies()[0]["contents"][0]["parts"]
    assert parts[0] == {"text": "a fox"}
    assert [part["inlineData"]["mimeType"] for part in parts[1:]] == ["image/png"] * 4
    sizes = [Image.open(io.BytesIO(base64.b64decode(part["inlineData"]["data"]))).size for part in parts[1:]]
    assert sizes == [(16, 16), (8, 8), (16, 16), (8, 8)]
    assert all(set(part) == {"inlineData"} for part in parts[1:])


# -- the answer ----------------------------------------------------------------------------------------


def test_thought_parts_are_skipped_and_the_last_final_image_is_taken() -> None:
    upstream = Upstream(
        _success(
            {"text": "**Planning**", "thought": True},
            _image_part(THOUGHT, thought=True),
            _image_part(FINAL, thoughtSignature="c2ln"),
            {"text": "Here it is"},
        )
    )

    result = _submit(upstream)

    assert [image.data for image in result.images] == [FINAL]
    assert result.images[0].url is None


def test_snake_case_answers_are_read_too() -> None:
    part = {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(FINAL).decode()}}
    upstream = Upstream({"candidates": [{"content": {"parts": [part]}, "finish_reason": "STOP"}]})

    assert _submit(upstream).images[0].data == FINAL


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}, id="prompt-blocked"),
        pytest.param({"promptFeedback": {"blockReason": "SAFETY"}, "candidates": []}, id="prompt-safety"),
        pytest.param({"candidates": [{"finishReason": "IMAGE_SAFETY", "finishMessage": "filtered"}]}, id="image"),
        pytest.param({"candidates": [{"finishReason": "IMAGE_PROHIBITED_CONTENT"}]}, id="image-prohibited"),
        pytest.param(
            {"candidates": [{"content": {"parts": [{"text": "no"}]}, "finishReason": "SAFETY"}]}, id="text-safety"
        ),
    ],
)
def test_blocks_on_http_200_are_content_policy(body: dict[str, Any]) -> None:
    with pytest.raises(ContentPolicyError) as caught:
        _provider(Upstream(body)).submit(_spec())

    assert caught.value.code == ErrorCode.CONTENT_POLICY_VIOLATION
    assert caught.value.provider == "gemini"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param({"candidates": [{"finishReason": "NO_IMAGE"}]}, "NO_IMAGE", id="no-image"),
        pytest.param(
            {"candidates": [{"content": {"parts": [{"text": "Which cat?"}]}, "finishReason": "STOP"}]},
            "STOP",
            id="text-only",
        ),
        pytest.param(
            {"candidates": [{"content": {"parts": [_image_part(THOUGHT, thought=True)]}, "finishReason": "STOP"}]},
            "STOP",
            id="thoughts-only",
        ),
    ],
)
def test_an_answer_without_a_final_image_fails_permanently(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(PermanentProviderError) as caught:
        _provider(Upstream(body)).submit(_spec())

    assert type(caught.value) is PermanentProviderError
    assert caught.value.code == ErrorCode.UPSTREAM_FAILED
    assert reason in caught.value.message


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(httpx.Response(200, text="<html>proxy</html>"), id="html"),
        pytest.param({"candidates": "nope"}, id="wrong-shape"),
        pytest.param({"candidates": []}, id="no-candidates"),
        pytest.param(_success({"inlineData": {"mimeType": "image/png", "data": "@@not base64@@"}}), id="bad-base64"),
    ],
)
def test_garbage_is_an_unexpected_response(answer: httpx.Response | dict[str, Any]) -> None:
    with pytest.raises(UnexpectedResponseError):
        _provider(Upstream(answer)).submit(_spec())


# -- errors ----------------------------------------------------------------------------------------------


API_KEY_INVALID = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "API_KEY_INVALID",
    "domain": "googleapis.com",
}


@pytest.mark.parametrize(
    ("response", "error_type"),
    [
        pytest.param(
            _error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", API_KEY_INVALID),
            ProviderAuthError,
            id="bad-key-400",
        ),
        pytest.param(_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers"), ProviderAuthError),
        pytest.param(_error(401, "UNAUTHENTICATED", "Request had invalid credentials."), ProviderAuthError),
        pytest.param(
            _error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.generation_config.image_config: bad imageSize"),
            UpstreamRejectedError,
            id="bad-field",
        ),
        pytest.param(_error(404, "NOT_FOUND", "models/x is not found"), UpstreamRejectedError, id="unknown-model"),
        pytest.param(
            _error(
                400,
                "FAILED_PRECONDITION",
                "Gemini API free tier is not available in your country. Please enable "
                "billing on your project in Google AI Studio.",
            ),
            QuotaExceededError,
            id="billing-required",
        ),
        pytest.param(
            _error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
            UpstreamRejectedError,
            id="location",
        ),
        pytest.param(
            _error(429, "RESOURCE_EXHAUSTED", "quota", _quota_failure("GenerateRequestsPerDayPerProjectPerModel")),
            QuotaExceededError,
            id="per-day",
        ),
        pytest.param(
            _error(
                429,
                "RESOURCE_EXHAUSTED",
                "quota",
                _quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "0"),
                _retry_info("20s"),
            ),
            QuotaExceededError,
            id="no-free-tier",
        ),
        pytest.param(_error(500, "INTERNAL", "An internal error has occurred."), TransientProviderError),
        pytest.param(_error(503, "UNAVAILABLE", "The model is overloaded."), TransientProviderError),
        pytest.param(_error(504, "DEADLINE_EXCEEDED", "Deadline expired."), TransientProviderError),
        pytest.param(httpx.Response(502, text="<html>bad gateway</html>"), TransientProviderError, id="html-502"),
    ],
)
def test_google_errors_map_onto_the_error_tree(response: httpx.Response, error_type: type[Exception]) -> None:
    with pytest.raises(error_type) as caught:
        _provider(Upstream(response)).submit(_spec())

    assert type(caught.value) is error_type


def test_per_minute_exhaustion_is_a_rate_limit_with_the_retry_delay() -> None:
    response = _error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota",
        _quota_failure("GenerateRequestsPerMinutePerProjectPerModel"),
        _retry_info("28.5s"),
    )

    with pytest.raises(RateLimitedError) as caught:
        _provider(Upstream(response)).submit(_spec())

    assert caught.value.retry_after_s == 28.5
    assert "RESOURCE_EXHAUSTED" in caught.value.message


def test_a_refused_field_is_named_in_the_error() -> None:
    message = "* GenerateContentRequest.generation_config.image_config.image_size: imageSize '8K' is not supported"

    with pytest.raises(UpstreamRejectedError) as caught:
        _provider(Upstream(_error(400, "INVALID_ARGUMENT", message))).submit(_spec(imageSize="8K"))

    assert "imageSize" in caught.value.message


def test_transport_failures_are_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TransientProviderError):
        _provider(refuse).submit(_spec())


# -- n by repeated calls -------------------------------------------------------------------------------


def test_n_images_are_n_calls_with_the_same_body() -> None:
    upstream = Upstream(_success())

    result = _submit(upstream, _spec(n=3))

    assert len(result.images) == 3
    assert len(upstream.requests) == 3
    bodies = upstream.bodies()
    assert bodies[0] == bodies[1] == bodies[2]
    assert "candidateCount" not in json.dumps(bodies[0])


def test_a_failing_first_call_stops_before_the_others() -> None:
    upstream = Upstream(_error(400, "INVALID_ARGUMENT", "API key not valid.", API_KEY_INVALID))

    with pytest.raises(ProviderAuthError):
        _provider(upstream).submit(_spec(n=4))

    assert len(upstream.requests) == 1


def test_later_failures_deliver_the_images_that_were_made() -> None:
    blocked = {"candidates": [{"finishReason": "IMAGE_SAFETY"}]}
    upstream = Upstream(_success(), blocked, _error(503, "UNAVAILABLE", "overloaded"), _success())

    result = _submit(upstream, _spec(n=4))

    assert len(upstream.requests) == 4
    assert [image.data for image in result.images] == [FINAL, FINAL]


# -- against the emulator: every nano-banana model -----------------------------------------------------


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv("EMULATOR_GEMINI_API_KEY", raising=False)
    with TestClient(create_app(), base_url="http://emulator") as client:
        response = client.put("/_emulator/config", json={"gemini": {"latency": {"kind": "fixed", "value_s": 0}}})
        assert response.status_code == 200
        yield client


@pytest.mark.parametrize(
    ("request_fields", "expected_size"),
    [
        pytest.param({"model": "nano-banana", "size": "1024x1792"}, (768, 1360), id="nano-banana-portrait"),
        pytest.param({"model": "nano-banana-pro", "aspect_ratio": "1:1"}, (1024, 1024), id="pro-1k"),
        pytest.param({"model": "nano-banana-pro", "resolution": "2k", "aspect_ratio": "1:1"}, (2048, 2048)),
        pytest.param({"model": "nano-banana-pro-2k", "aspect_ratio": "1:1"}, (2048, 2048), id="pro-2k"),
        pytest.param({"model": "nano-banana-pro-4k", "aspect_ratio": "1:1"}, (4096, 4096), id="pro-4k"),
        pytest.param({"model": "nano-banana-2", "aspect_ratio": "1:4", "resolution": "512"}, (256, 1024), id="nb2"),
        pytest.param({"model": "nano-banana-2-2k", "size": "1792x1024"}, (2736, 1536), id="nb2-2k-landscape"),
        pytest.param({"model": "nano-banana-2-4k", "aspect_ratio": "1:1"}, (4096, 4096), id="nb2-4k"),
    ],
)
def test_every_model_renders_at_its_ratio_and_tier(
    emulator: TestClient, request_fields: dict[str, Any], expected_size: tuple[int, int]
) -> None:
    contract = Contract(provider="gemini", request={**request_fields, "n": 1}, build=CONTRACT.build)
    adapter = contract.build(emulator, True)

    result = adapter.submit(contract.spec("a lighthouse"))

    assert isinstance(result, Completed)
    (image,) = result.images
    assert image.data is not None
    with Image.open(io.BytesIO(image.data)) as picture:
        assert picture.size == expected_size
        assert picture.format in ("PNG", "JPEG")


def test_editing_sends_the_images_and_keeps_their_shape(emulator: TestClient) -> None:
    wide = base64.b64encode(_png(320, 180)).decode()
    contract = Contract(
        provider="gemini",
        request={"model": "nano-banana-pro", "image": f"data:image/png;base64,{wide}", "images": [wide]},
        build=CONTRACT.build,
    )
    spec = contract.spec("make it night")
    assert spec.operation == "img2img"

    result = contract.build(emulator, True).submit(spec)

    assert isinstance(result, Completed)
    data = result.images[0].data
    assert data is not None
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.size == (1360, 768)  # 16:9 like the input, at 1K


def test_moderation_markers_are_content_policy_on_http_200(emulator: TestClient) -> None:
    adapter = CONTRACT.build(emulator, True)
    for marker in ("[moderated]", "[moderated-async]"):
        with pytest.raises(ContentPolicyError):
            adapter.submit(CONTRACT.spec(f"a fox {marker}"))

    assert emulator.get("/_emulator/stats").json()["gemini"] == {"requests": 2, "rejected": 0}


def test_emulator_rate_limit_carries_its_retry_delay(emulator: TestClient) -> None:
    with pytest.raises(RateLimitedError) as caught:
        CONTRACT.build(emulator, True).submit(CONTRACT.spec("a fox [429]"))

    assert caught.value.retry_after_s == 1.0


def test_failure_after_generation_is_transient(emulator: TestClient) -> None:
    with pytest.raises(TransientProviderError):
        CONTRACT.build(emulator, True).submit(CONTRACT.spec("a fox [fail]"))
