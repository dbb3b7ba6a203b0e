"""OpenAI ``POST /v1/images/edits``: multipart images (``image`` / ``image[]``), mask and model rules."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

PATH = "/v1/images/edits"
Decode = Callable[[bytes | str], Image.Image]
Files = list[tuple[str, tuple[str, bytes, str]]]


def picture(size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA" if fmt == "PNG" else "RGB", size, (10, 20, 30)).save(buffer, fmt)
    return buffer.getvalue()


def png_file(field: str, size: tuple[int, int] = (64, 64)) -> tuple[str, tuple[str, bytes, str]]:
    return field, (f"{field}.png", picture(size), "image/png")


def edit(client: TestClient, headers: dict[str, str], files: Files, **fields: Any) -> Any:
    # Any: the TestClient answers httpx or httpx2 responses, by Starlette version.
    data = {"prompt": "add a hat", **{key: str(value) for key, value in fields.items()}}
    return client.post(PATH, data=data, files=files, headers=headers)


@pytest.fixture
def dalle_served(client: TestClient) -> TestClient:
    """The emulator as before DALL·E's retirement (2026-05-12): dall-e-2 served and the default."""
    response = client.put("/_emulator/config", json={"openai": {"dalle_retired": False}})
    assert response.status_code == 200
    return client


def test_gpt_edit_with_image_list_and_mask_returns_b64_png(
    client: TestClient, openai_headers: dict[str, str], decode_image: Decode
) -> None:
    files = [png_file("image[]"), ("image[]", ("b.jpg", picture((32, 48), "JPEG"), "image/jpeg")), png_file("mask")]
    response = edit(client, openai_headers, files, model="gpt-image-1", n=2, size="1024x1536", quality="medium")
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["data"]) == 2
    image = decode_image(body["data"][0]["b64_json"])
    assert (image.format, image.size) == ("PNG", (1024, 1536))
    assert body["usage"]["input_tokens_details"]["image_tokens"] > 0
    assert body["quality"] == "medium" and body["size"] == "1024x1536"


def test_single_image_field_and_default_model_before_retirement(
    dalle_served: TestClient, openai_headers: dict[str, str], decode_image: Decode
) -> None:
    response = edit(dalle_served, openai_headers, [png_file("image")], size="256x256")
    assert response.status_code == 200, response.text
    url = response.json()["data"][0]["url"]  # dall-e-2 by default: a URL
    assert decode_image(dalle_served.get(url).content).size == (256, 256)


def test_default_model_after_retirement_is_a_gpt_image_model(
    client: TestClient, openai_headers: dict[str, str], decode_image: Decode
) -> None:
    response = edit(client, openai_headers, [png_file("image")], input_fidelity="high")
    assert response.status_code == 200, response.text
    body = response.json()
    assert "usage" in body
    assert decode_image(body["data"][0]["b64_json"]).size == (1024, 1024)


def test_retired_dall_e_2_edit_is_404(client: TestClient, openai_headers: dict[str, str]) -> None:
    response = edit(client, openai_headers, [png_file("image")], model="dall-e-2")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("first", "expected"),
    [((96, 64), (1536, 1024)), ((64, 96), (1024, 1536)), ((64, 64), (1024, 1024))],
    ids=["landscape", "portrait", "square"],
)
def test_auto_size_follows_the_first_image(
    client: TestClient,
    openai_headers: dict[str, str],
    decode_image: Decode,
    first: tuple[int, int],
    expected: tuple[int, int],
) -> None:
    files = [png_file("image[]", first), png_file("image[]", (40, 40))]
    body = edit(client, openai_headers, files, model="gpt-image-1", size="auto").json()
    assert body["size"] == f"{expected[0]}x{expected[1]}"
    assert decode_image(body["data"][0]["b64_json"]).size == expected


def test_mask_applies_to_the_first_image(client: TestClient, openai_headers: dict[str, str]) -> None:
    first, second = png_file("image[]", (64, 64)), png_file("image[]", (32, 48))
    fits_first = edit(client, openai_headers, [first, second, png_file("mask", (64, 64))], model="gpt-image-1")
    fits_second = edit(client, openai_headers, [first, second, png_file("mask", (32, 48))], model="gpt-image-1")
    assert fits_first.status_code == 200, fits_first.text
    assert fits_second.status_code == 400
    assert fits_second.json()["error"]["param"] == "mask"
    assert "does not match image size" in fits_second.json()["error"]["message"]


def test_mask_must_be_png(client: TestClient, openai_headers: dict[str, str]) -> None:
    jpeg_mask = ("mask", ("mask.jpg", picture((64, 64), "JPEG"), "image/jpeg"))
    response = edit(client, openai_headers, [png_file("image"), jpeg_mask], model="gpt-image-1")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "mask"


@pytest.mark.parametrize(
    ("files", "fields", "param"),
    [
        pytest.param([png_file("mask")], {"model": "gpt-image-1"}, "image", id="no-image"),
        pytest.param([png_file("image", (64, 32))], {"model": "dall-e-2"}, "image", id="dall-e-2-not-square"),
        pytest.param([png_file("image[]"), png_file("image[]")], {"model": "dall-e-2"}, "image", id="dall-e-2-two"),
        pytest.param([("image", ("a.txt", b"hello", "text/plain"))], {"model": "gpt-image-1"}, "image", id="not-image"),
        pytest.param([png_file("image"), png_file("mask", (32, 32))], {"model": "gpt-image-1"}, "mask", id="mask-size"),
        pytest.param([png_file("image")], {"model": "dall-e-3"}, "model", id="dall-e-3"),
        pytest.param([png_file("image")], {"model": "gpt-image-1", "n": "two"}, "n", id="n-not-int"),
        pytest.param(
            [png_file("image")], {"model": "gpt-image-1-mini", "input_fidelity": "high"}, "input_fidelity", id="mini"
        ),
        pytest.param([png_file("image")], {"model": "gpt-image-1", "size": "512x512"}, "size", id="gpt-size"),
    ],
)
def test_invalid_edits_are_400_with_param(
    dalle_served: TestClient, openai_headers: dict[str, str], files: Files, fields: dict[str, Any], param: str
) -> None:
    response = edit(dalle_served, openai_headers, files, **fields)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_edit_needs_multipart(client: TestClient, openai_headers: dict[str, str]) -> None:
    response = client.post(PATH, json={"prompt": "x", "image": "abc"}, headers=openai_headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_edit_markers_and_auth(client: TestClient, openai_headers: dict[str, str]) -> None:
    moderated = edit(client, openai_headers, [png_file("image")], model="gpt-image-1", prompt="x [moderated]")
    assert moderated.json()["error"]["code"] == "moderation_blocked"
    assert moderated.json()["error"]["moderation_details"]["moderation_stage"] == "input"
    unauthorised = edit(client, {"Authorization": "Bearer nope"}, [png_file("image")])
    assert unauthorised.status_code == 401
    assert client.get("/_emulator/stats").json()["openai"] == {"requests": 2, "rejected": 2}
