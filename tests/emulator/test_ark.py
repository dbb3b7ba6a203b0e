"""Ark (Seedream) dialect: auth, per-model parameter rules and sizes, groups, results, markers and knobs."""

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
from emulator.ark.routes import URL_TTL_S, ArkEmulator
from emulator.knobs import Knobs

PATH = "/ark/api/v3/images/generations"
ARK_KEY = "test-ark-key"
HEADERS = {"Authorization": f"Bearer {ARK_KEY}"}
SEEDREAM_3 = "doubao-seedream-3-0-t2i-250415"
SEEDREAM_4 = "doubao-seedream-4-0-250828"
SEEDREAM_4_5 = "doubao-seedream-4-5-251128"
SEEDREAM_5 = "doubao-seedream-5-0-260128"
Decode = Callable[[bytes | str], Image.Image]


@pytest.fixture
def ark(app: FastAPI) -> Iterator[TestClient]:
    """The emulator (built by ``app`` after the key is set) with zero Ark latency."""
    with TestClient(app) as client:
        assert client.put("/_emulator/config", json={"ark": {"latency": {"kind": "fixed", "value_s": 0}}}).is_success
        yield client


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setenv("EMULATOR_ARK_API_KEY", ARK_KEY)
    return create_app()


def generate(client: TestClient, model: str = SEEDREAM_4, headers: dict[str, str] | None = None, **body: Any) -> Any:
    # Any: the TestClient answers httpx or httpx2 responses, by Starlette version.
    payload = {"model": model, "prompt": "a red panda", "response_format": "b64_json", **body}
    return client.post(PATH, json=payload, headers=HEADERS if headers is None else headers)


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"code", "message", "param", "type"}
    assert error["message"].endswith(f"Request id: {response.headers['x-request-id']}")
    return error


# -- auth -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", ARK_KEY, "Bearer emulator-ark-key"])
def test_bad_or_missing_key_is_401_authentication_error(ark: TestClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}

    error = _error(generate(ark, headers=headers), 401)

    assert (error["code"], error["type"], error["param"]) == ("AuthenticationError", "Unauthorized", "")
    assert ark.get("/_emulator/stats").json()["ark"] == {"requests": 1, "rejected": 1}


def test_the_default_key_is_emulator_ark_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMULATOR_ARK_API_KEY", raising=False)
    with TestClient(create_app()) as client:
        client.put("/_emulator/config", json={"ark": {"latency": {"kind": "fixed", "value_s": 0}}})
        response = generate(client, headers={"Authorization": "Bearer emulator-ark-key"})

    assert response.status_code == 200, response.text


# -- sizes and images -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size", "expected"),
    [
        pytest.param(SEEDREAM_3, None, (1024, 1024), id="3.0-default"),
        pytest.param(SEEDREAM_3, "1280x720", (1280, 720), id="3.0-wxh"),
        pytest.param("seedream-3-0-t2i-250415", "512x2048", (512, 2048), id="3.0-byteplus-id"),
        pytest.param(SEEDREAM_4, None, (2048, 2048), id="4.0-default"),
        pytest.param(SEEDREAM_4, "1K", (1024, 1024), id="4.0-1k"),
        pytest.param(SEEDREAM_4, "1280x720", (1280, 720), id="4.0-min"),
        pytest.param(SEEDREAM_4_5, "2K", (2048, 2048), id="4.5-2k"),
        pytest.param("seedream-4-5-251128", "2560x1440", (2560, 1440), id="4.5-min"),
        pytest.param(SEEDREAM_5, "3K", (3072, 3072), id="5.0-3k"),
        pytest.param("doubao-seedream-5-0-lite-260128", "1440x2560", (1440, 2560), id="5.0-lite-alias"),
    ],
)
def test_images_are_pngs_of_the_size_asked(
    ark: TestClient, decode_image: Decode, model: str, size: str | None, expected: tuple[int, int]
) -> None:
    fields: dict[str, Any] = {} if size is None else {"size": size}
    response = generate(ark, model, **fields)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and isinstance(body["created"], int)
    [item] = body["data"]
    image = decode_image(item["b64_json"])
    assert (image.format, image.size) == ("PNG", expected)
    assert item["size"] == f"{expected[0]}x{expected[1]}"
    tokens = expected[0] * expected[1] // 256
    assert body["usage"] == {"generated_images": 1, "output_tokens": tokens, "total_tokens": tokens}


@pytest.mark.parametrize(
    ("model", "size"),
    [
        pytest.param(SEEDREAM_3, "2K", id="3.0-no-tiers"),
        pytest.param(SEEDREAM_3, "2049x1024", id="3.0-side"),
        pytest.param(SEEDREAM_4, "3K", id="4.0-no-3k"),
        pytest.param(SEEDREAM_4, "1024x768", id="4.0-too-few-pixels"),
        pytest.param(SEEDREAM_4, "4096x4097", id="4.0-too-many-pixels"),
        pytest.param(SEEDREAM_4, "9000x500", id="4.0-ratio"),
        pytest.param(SEEDREAM_4_5, "1K", id="4.5-no-1k"),
        pytest.param(SEEDREAM_4_5, "1024x1024", id="4.5-below-3686400"),
        pytest.param(SEEDREAM_5, "4K", id="5.0-no-4k"),
        pytest.param(SEEDREAM_5, "4096x4096", id="5.0-above-3k"),
        pytest.param(SEEDREAM_5, "2048*2048", id="malformed"),
    ],
)
def test_a_size_the_model_refuses_is_400_invalid_parameter_size(ark: TestClient, model: str, size: str) -> None:
    error = _error(generate(ark, model, size=size), 400)

    assert (error["code"], error["param"], error["type"]) == ("InvalidParameter", "size", "BadRequest")
    assert "`size`" in error["message"]


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        pytest.param(SEEDREAM_4, "seed", 7, id="seed-4.0"),
        pytest.param(SEEDREAM_4_5, "guidance_scale", 5.0, id="guidance-4.5"),
        pytest.param(SEEDREAM_3, "image", "https://example.com/a.png", id="image-3.0"),
        pytest.param(SEEDREAM_3, "sequential_image_generation", "auto", id="sequential-3.0"),
        pytest.param(SEEDREAM_3, "optimize_prompt_options", {"mode": "standard"}, id="optimize-3.0"),
        pytest.param(SEEDREAM_4_5, "output_format", "png", id="output-format-4.5"),
        pytest.param(SEEDREAM_4, "tools", [{"type": "web_search"}], id="tools-4.0"),
    ],
)
def test_a_parameter_the_model_does_not_take_is_refused_naming_it(
    ark: TestClient, model: str, field: str, value: Any
) -> None:
    error = _error(generate(ark, model, **{field: value}), 400)

    assert (error["code"], error["param"]) == ("InvalidParameter", field)
    assert f"not supported by model {model}" in error["message"]


@pytest.mark.parametrize(
    ("model", "body", "param"),
    [
        pytest.param(SEEDREAM_3, {"seed": 2**31}, "seed", id="seed-range"),
        pytest.param(SEEDREAM_3, {"guidance_scale": 11}, "guidance_scale", id="guidance-range"),
        pytest.param(SEEDREAM_4_5, {"optimize_prompt_options": {"mode": "fast"}}, "optimize_prompt_options", id="fast"),
        pytest.param(SEEDREAM_4, {"sequential_image_generation": "on"}, "sequential_image_generation", id="mode"),
        pytest.param(
            SEEDREAM_4,
            {"sequential_image_generation": "auto", "sequential_image_generation_options": {"max_images": 16}},
            "max_images",
            id="max-images",
        ),
        pytest.param(SEEDREAM_4, {"watermark": "no"}, "watermark", id="watermark-type"),
        pytest.param(SEEDREAM_4, {"response_format": "png"}, "response_format", id="response-format"),
        pytest.param(SEEDREAM_4, {"stream": True}, "stream", id="stream"),
        pytest.param(SEEDREAM_5, {"output_format": "webp"}, "output_format", id="output-format-value"),
    ],
)
def test_invalid_values_are_400_naming_the_parameter(
    ark: TestClient, model: str, body: dict[str, Any], param: str
) -> None:
    assert _error(generate(ark, model, **body), 400)["param"] == param


def test_seedream_3_takes_seed_and_guidance_scale(ark: TestClient) -> None:
    response = generate(ark, SEEDREAM_3, seed=-1, guidance_scale=2.5, watermark=False)

    assert response.status_code == 200, response.text


def test_missing_model_or_prompt_is_missing_parameter_and_an_unknown_model_is_404(ark: TestClient) -> None:
    no_model = _error(ark.post(PATH, json={"prompt": "x"}, headers=HEADERS), 400)
    no_prompt = _error(ark.post(PATH, json={"model": SEEDREAM_4}, headers=HEADERS), 400)
    unknown = _error(generate(ark, "doubao-seedream-9-9"), 404)
    not_json = _error(ark.post(PATH, content=b"{", headers=HEADERS), 400)

    assert (no_model["code"], no_model["param"]) == ("MissingParameter", "model")
    assert (no_prompt["code"], no_prompt["param"]) == ("MissingParameter", "prompt")
    assert (unknown["code"], unknown["type"]) == ("InvalidEndpointOrModel.NotFound", "NotFound")
    assert not_json["code"] == "InvalidParameter"


def _data_uri(width: int = 64, height: int = 64, fmt: str = "PNG", mime: str = "png") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format=fmt)
    return f"data:image/{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def test_reference_images_are_urls_or_data_uris(ark: TestClient) -> None:
    images = ["https://example.com/a.png", _data_uri(), _data_uri(fmt="JPEG", mime="jpeg")]

    assert generate(ark, SEEDREAM_4_5, image=images).status_code == 200
    assert generate(ark, SEEDREAM_5, image=_data_uri(fmt="WEBP", mime="webp")).status_code == 200


@pytest.mark.parametrize(
    ("image", "code"),
    [
        pytest.param(_data_uri().split(",", 1)[1], "InvalidParameter", id="raw-base64"),
        pytest.param(_data_uri(mime="PNG"), "InvalidParameter", id="upper-case-format"),
        pytest.param("data:image/png;base64,@@@", "InvalidParameter", id="bad-base64"),
        pytest.param(_data_uri(mime="heic"), "InvalidParameter.UnsupportedImageFormat", id="unknown-format"),
        pytest.param(
            "data:image/png;base64," + base64.b64encode(b"not an image").decode(),
            "InvalidParameter.UnsupportedImageFormat",
            id="not-an-image",
        ),
        pytest.param(_data_uri(10, 64), "InvalidParameter.OversizedImage", id="side-too-small"),
        pytest.param(_data_uri(1700, 100), "InvalidParameter", id="ratio"),
        pytest.param(["https://example.com/a.png"] * 15, "InvalidParameter.UnsupportedImageCount", id="15-images"),
        pytest.param([], "InvalidParameter", id="empty-list"),
    ],
)
def test_a_reference_image_ark_cannot_take_is_refused(ark: TestClient, image: Any, code: str) -> None:
    error = _error(generate(ark, SEEDREAM_4, image=image), 400)

    assert (error["code"], error["param"]) == (code, "image")


# -- groups and result URLs ---------------------------------------------------------------------------


def _group(max_images: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"sequential_image_generation": "auto"}
    if max_images is not None:
        body["sequential_image_generation_options"] = {"max_images": max_images}
    return body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(_group(3), 3, id="max-3"),
        pytest.param({**_group(5), "image": ["https://example.com/a.png"] * 13}, 2, id="capped-by-references"),
        pytest.param({**_group(3), "sequential_image_generation": "disabled"}, 1, id="disabled"),
        pytest.param(_group(), 15, id="default-15"),
    ],
)
def test_a_group_has_max_images_within_15_with_the_references(
    ark: TestClient, body: dict[str, Any], expected: int
) -> None:
    response = generate(ark, SEEDREAM_4, size="1K", **body)

    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == expected
    assert response.json()["usage"]["generated_images"] == expected


def test_url_results_are_served_as_pngs(ark: TestClient, decode_image: Decode) -> None:
    response = generate(ark, SEEDREAM_4_5, response_format="url", **_group(2))

    urls = [item["url"] for item in response.json()["data"]]
    assert len(urls) == 2
    for url in urls:
        assert "/_emulator/files/ark/" in url and url.endswith("?X-Tos-Expires=86400")
        image = ark.get(url)
        assert image.headers["content-type"] == "image/png"
        assert decode_image(image.content).size == (2048, 2048)


def test_seedream_5_renders_jpeg_when_asked(ark: TestClient, decode_image: Decode) -> None:
    inline = generate(ark, SEEDREAM_5, output_format="jpeg").json()["data"][0]
    linked = generate(ark, SEEDREAM_5, output_format="jpeg", response_format="url").json()["data"][0]

    assert decode_image(inline["b64_json"]).format == "JPEG"
    assert linked["url"].split("?")[0].endswith(".jpeg")
    assert ark.get(linked["url"]).headers["content-type"] == "image/jpeg"


def test_result_urls_expire_after_24_hours() -> None:
    now = [1_000_000.0]
    ark = ArkEmulator(Knobs(), api_key=ARK_KEY, clock=lambda: now[0])
    ark.knobs.update({"ark": {"latency": {"kind": "fixed", "value_s": 0}}})
    app = FastAPI()
    app.include_router(ark.build_router(), prefix="/ark")
    app.include_router(ark.files_router())
    with TestClient(app) as client:
        url = generate(client, response_format="url", size="1K").json()["data"][0]["url"]
        assert client.get(url).status_code == 200
        assert client.get(url.replace("/0.png", "/1.png")).status_code == 404
        now[0] += URL_TTL_S + 1
        expired = client.get(url)

    assert expired.status_code == 403
    assert b"Request has expired" in expired.content


def test_reset_forgets_url_results(ark: TestClient) -> None:
    url = generate(ark, response_format="url", size="1K").json()["data"][0]["url"]

    ark.post("/_emulator/reset")

    assert ark.get(url).status_code == 404


# -- markers and knobs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "status", "code"),
    [
        pytest.param("[moderated]", 400, "InputTextSensitiveContentDetected", id="moderated"),
        pytest.param("[moderated-async]", 400, "OutputImageSensitiveContentDetected", id="moderated-output"),
        pytest.param("[429]", 429, "RateLimitExceeded.EndpointRPMExceeded", id="429"),
        pytest.param("[quota]", 403, "AccountOverdueError", id="quota"),
        pytest.param("[500]", 500, "InternalServiceError", id="500"),
        pytest.param("[fail]", 500, "InternalServiceError", id="fail"),
    ],
)
def test_markers_answer_arks_real_errors(ark: TestClient, marker: str, status: int, code: str) -> None:
    error = _error(generate(ark, prompt=f"a red panda {marker}"), status)

    assert error["code"] == code
    assert (
        error["type"]
        == {400: "BadRequest", 403: "Forbidden", 429: "TooManyRequests", 500: "InternalServerError"}[status]
    )
    assert ark.get("/_emulator/stats").json()["ark"] == {"requests": 1, "rejected": 1}


def test_garbage_is_html_with_200(ark: TestClient) -> None:
    response = generate(ark, prompt="[garbage]")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


def test_moderated_output_in_a_group_fails_only_its_slot(ark: TestClient) -> None:
    response = generate(ark, prompt="a red panda [moderated-async]", size="1K", **_group(3))

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [("b64_json" in item) for item in data] == [True, True, False]
    assert data[2]["error"]["code"] == "OutputImageSensitiveContentDetected"
    assert response.json()["usage"]["generated_images"] == 2


def test_latency_marker_delays_the_answer(ark: TestClient) -> None:
    started = time.monotonic()

    response = generate(ark, prompt="a red panda [latency=0.2]", size="1K")

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


def test_hang_marker_never_answers(app: FastAPI) -> None:
    async def call() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as http:
            body = {"model": SEEDREAM_4, "prompt": "[hang]"}
            await asyncio.wait_for(http.post(PATH, json=body, headers=HEADERS), timeout=0.3)

    with pytest.raises(TimeoutError):
        asyncio.run(call())


@pytest.mark.parametrize(
    ("knob", "status", "code"),
    [
        pytest.param("error_rate", 500, "InternalServiceError", id="error-rate"),
        pytest.param("rate_limit_rate", 429, "RateLimitExceeded.EndpointRPMExceeded", id="rate-limit-rate"),
        pytest.param("failure_rate", 500, "InternalServiceError", id="failure-rate"),
    ],
)
def test_fault_rates_of_one_always_fail(ark: TestClient, knob: str, status: int, code: str) -> None:
    assert ark.put("/_emulator/config", json={"ark": {knob: 1.0}}).is_success

    assert _error(generate(ark, size="1K"), status)["code"] == code


def test_configured_latency_is_waited(ark: TestClient) -> None:
    ark.put("/_emulator/config", json={"ark": {"latency": {"kind": "fixed", "value_s": 0.2}}})
    started = time.monotonic()

    assert generate(ark, size="1K").status_code == 200
    assert time.monotonic() - started >= 0.2
