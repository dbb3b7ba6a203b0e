"""The OpenAI Images adapter beyond the shared contract: edits as multipart files, the DALL·E replacement,
parameter mapping and error mapping; plus the catalog rules and prices of the OpenAI models.

The emulator runs in-process (``tests.unit.contracts``); every request the adapter sends is recorded.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from email.message import Message
from email.parser import BytesParser
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emulator.app import create_app
from shared.catalog import load_catalog, validate_request
from shared.config import EMULATOR_OPENAI_API_KEY
from shared.errors import (
    ContentPolicyError,
    InvalidRequestError,
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    TransientProviderError,
    UnexpectedResponseError,
    UpstreamRejectedError,
)
from shared.jobs import ImageRequest
from tests.conftest import make_settings
from tests.unit.contracts import InProcess, emulator_images
from worker.providers import Completed, JobSpec
from worker.providers.openai_images import OpenAIImagesProvider

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Recording(httpx.BaseTransport):
    """Keeps every request, then hands it on."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.inner.handle_request(request)


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv("EMULATOR_OPENAI_API_KEY", raising=False)
    with TestClient(create_app(), base_url="http://emulator") as client:
        response = client.put("/_emulator/config", json={"openai": {"latency": {"kind": "fixed", "value_s": 0}}})
        assert response.status_code == 200
        yield client


def build(emulator: TestClient, **settings: Any) -> tuple[OpenAIImagesProvider, list[httpx.Request]]:
    openai = make_settings().openai.model_copy(update=settings)
    assert openai.base_url is not None
    recording = Recording(InProcess(emulator))
    base_url = httpx.URL(openai.base_url).copy_with(scheme="http", host="emulator", port=None)
    http = httpx.Client(base_url=base_url, transport=recording)
    return OpenAIImagesProvider(openai, http=http, images=emulator_images(emulator)), recording.requests


def spec_for(**request: Any) -> JobSpec:
    """A job spec as the producer makes it: through the catalog."""
    validated = validate_request(ImageRequest.model_validate(request), catalog=load_catalog())
    return JobSpec(
        job_id=uuid.uuid4().hex,
        upstream_model=validated.upstream_model,
        operation=validated.operation,
        params=validated.upstream_params,
        image_count=validated.image_count,
    )


def picture(size: tuple[int, int], fmt: str = "PNG", color: str = "teal") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA" if fmt in ("PNG", "GIF") else "RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def emulator_url(emulator: TestClient) -> str:
    """A PNG URL the emulator serves (a DALL·E-era URL result, 256x256)."""
    emulator.put("/_emulator/config", json={"openai": {"dalle_retired": False}})
    body = {"model": "dall-e-2", "prompt": "a source picture", "size": "256x256", "response_format": "url"}
    headers = {"Authorization": f"Bearer {EMULATOR_OPENAI_API_KEY}"}
    url: str = emulator.post("/openai/v1/images/generations", json=body, headers=headers).json()["data"][0]["url"]
    emulator.put("/_emulator/config", json={"openai": {"dalle_retired": True}})
    return url


def json_of(request: httpx.Request) -> dict[str, Any]:
    assert request.headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(request.content)
    return body


def form_of(request: httpx.Request) -> list[Message]:
    """The multipart parts of an edits request."""
    content_type = request.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    message = BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.content)
    parts = message.get_payload()
    assert isinstance(parts, list)
    return [part for part in parts if isinstance(part, Message)]


def part_name(part: Message) -> str:
    return str(part.get_param("name", header="content-disposition"))


def fields_of(parts: list[Message]) -> dict[str, str]:
    return {part_name(part): str(part.get_payload()) for part in parts if part.get_filename() is None}


def files_of(parts: list[Message], name: str) -> list[tuple[str, str, bytes]]:
    """``(filename, content type, bytes)`` of every file part called ``name``."""
    found = []
    for part in parts:
        if part_name(part) == name and part.get_filename() is not None:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found.append((str(part.get_filename()), part.get_content_type(), payload))
    return found


def image_sizes(submission: object) -> list[tuple[int, int]]:
    assert isinstance(submission, Completed)
    sizes = []
    for image in submission.images:
        assert image.data is not None and image.data.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(image.data)) as opened:
            sizes.append(opened.size)
    return sizes


# -- generations -------------------------------------------------------------------------------------


def test_generation_posts_json_with_the_gpt_image_parameters(emulator: TestClient) -> None:
    adapter, sent = build(emulator)
    spec = spec_for(
        model="gpt-image-1.5", prompt="a lighthouse", size="1536x1024", quality="low", moderation="low", n=2
    )

    submission = adapter.submit(spec)

    assert image_sizes(submission) == [(1536, 1024), (1536, 1024)]
    assert isinstance(submission, Completed) and submission.served_model is None
    assert [request.url.path for request in sent] == ["/openai/v1/images/generations"]
    assert json_of(sent[0]) == {
        "model": "gpt-image-1.5",
        "prompt": "a lighthouse",
        "n": 2,
        "size": "1536x1024",
        "quality": "low",
        "moderation": "low",
    }


def test_input_fidelity_without_an_input_image_is_not_sent_to_generations(emulator: TestClient) -> None:
    adapter, sent = build(emulator)

    adapter.submit(spec_for(model="gpt-image-1", prompt="a lighthouse", input_fidelity="high"))

    assert "input_fidelity" not in json_of(sent[0])


# -- edits -------------------------------------------------------------------------------------------


def test_edit_with_one_data_uri_image_uploads_it_as_image(emulator: TestClient) -> None:
    adapter, sent = build(emulator)
    source = picture((96, 64))
    spec = spec_for(
        model="gpt-image-1", prompt="add a hat", image=data_uri(source), input_fidelity="high", moderation="low"
    )

    submission = adapter.submit(spec)

    assert spec.operation == "edit"
    assert image_sizes(submission) == [(1536, 1024)]  # size auto follows the landscape input
    assert [request.url.path for request in sent] == ["/openai/v1/images/edits"]
    parts = form_of(sent[0])
    assert files_of(parts, "image") == [("image-0.png", "image/png", source)]
    assert files_of(parts, "image[]") == []
    # moderation is not an edit parameter upstream
    assert fields_of(parts) == {"model": "gpt-image-1", "prompt": "add a hat", "n": "1", "input_fidelity": "high"}


def test_edit_with_several_images_uploads_image_array_and_mask(emulator: TestClient) -> None:
    adapter, sent = build(emulator)
    first, second = picture((64, 64), color="red"), picture((48, 32), "JPEG")
    url = emulator_url(emulator)
    mask = picture((64, 64), color=(0, 0, 0, 0))  # type: ignore[arg-type]
    spec = spec_for(
        model="gpt-image-1-mini",
        prompt="put them together",
        image=data_uri(first),
        image_urls=[base64.b64encode(second).decode("ascii"), url],
        mask=data_uri(mask),
        size="1024x1024",
        n=2,
    )

    submission = adapter.submit(spec)

    assert image_sizes(submission) == [(1024, 1024), (1024, 1024)]
    parts = form_of(sent[-1])
    uploaded = files_of(parts, "image[]")
    assert [(name, mime) for name, mime, _ in uploaded] == [
        ("image-0.png", "image/png"),
        ("image-1.jpg", "image/jpeg"),
        ("image-2.png", "image/png"),
    ]
    assert uploaded[0][2] == first and uploaded[1][2] == second
    assert uploaded[2][2] == emulator.get(url).content  # the URL was downloaded, then uploaded
    assert files_of(parts, "image") == []
    assert files_of(parts, "mask") == [("mask-0.png", "image/png", mask)]
    assert fields_of(parts) == {
        "model": "gpt-image-1-mini",
        "prompt": "put them together",
        "n": "2",
        "size": "1024x1024",
    }


def test_a_gif_input_is_uploaded_as_png(emulator: TestClient) -> None:
    adapter, sent = build(emulator)

    adapter.submit(spec_for(model="gpt-image-1", prompt="add a hat", images=[data_uri(picture((32, 32), "GIF"))]))

    [(name, mime, data)] = files_of(form_of(sent[0]), "image")
    assert (name, mime) == ("image-0.png", "image/png")
    assert data.startswith(PNG_MAGIC)


def test_a_mask_of_another_size_than_the_first_image_is_rejected_naming_mask(emulator: TestClient) -> None:
    adapter, _ = build(emulator)
    spec = spec_for(
        model="gpt-image-1", prompt="add a hat", image=data_uri(picture((64, 64))), mask=data_uri(picture((32, 32)))
    )

    with pytest.raises(UpstreamRejectedError) as caught:
        adapter.submit(spec)

    assert "mask" in caught.value.message


def test_a_mask_without_an_input_image_is_rejected_before_any_request(emulator: TestClient) -> None:
    adapter, sent = build(emulator)

    with pytest.raises(UpstreamRejectedError) as caught:
        adapter.submit(spec_for(model="gpt-image-1", prompt="add a hat", mask=data_uri(picture((64, 64)))))

    assert "'mask'" in caught.value.message
    assert sent == []


def test_an_unreadable_input_image_fails_the_job_before_any_request(emulator: TestClient) -> None:
    adapter, sent = build(emulator)

    with pytest.raises(ProviderError) as caught:
        adapter.submit(
            spec_for(model="gpt-image-1", prompt="add a hat", image="data:image/png;base64,bm90IGFuIGltYWdl")
        )

    assert caught.value.code == "invalid_input_image"
    assert sent == []


# -- DALL·E, served by the replacement ------------------------------------------------------------------


def test_dall_e_3_is_sent_to_the_replacement_with_its_parameters_mapped(emulator: TestClient) -> None:
    adapter, sent = build(emulator)
    spec = spec_for(model="dall-e-3", prompt="a fox", quality="hd", size="1792x1024", style="natural")

    submission = adapter.submit(spec)

    assert json_of(sent[0]) == {
        "model": "gpt-image-1",
        "prompt": "a fox",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
    }
    assert isinstance(submission, Completed) and submission.served_model == "gpt-image-1"
    assert image_sizes(submission) == [(1536, 1024)]


@pytest.mark.parametrize(
    ("request_fields", "size", "quality"),
    [
        pytest.param({"model": "dall-e-3"}, "1024x1024", "medium", id="dall-e-3-defaults"),
        pytest.param({"model": "dall-e-3", "size": "1024x1792", "style": "vivid"}, "1024x1536", "medium", id="tall"),
        pytest.param({"model": "dall-e-3", "quality": "standard"}, "1024x1024", "medium", id="standard"),
        pytest.param({"model": "dall-e-2", "size": "256x256"}, "1024x1024", "medium", id="dall-e-2-256"),
        pytest.param({"model": "dall-e-2", "size": "512x512", "n": 3}, "1024x1024", "medium", id="dall-e-2-512"),
    ],
)
def test_dall_e_parameter_mapping(
    emulator: TestClient, request_fields: dict[str, Any], size: str, quality: str
) -> None:
    adapter, sent = build(emulator)

    adapter.submit(spec_for(prompt="a fox", **request_fields))

    body = json_of(sent[0])
    assert (body["model"], body["size"], body["quality"]) == ("gpt-image-1", size, quality)
    assert body["n"] == request_fields.get("n", 1)
    assert "style" not in body and "response_format" not in body


def test_the_replacement_is_configurable(emulator: TestClient) -> None:
    adapter, sent = build(emulator, dalle_replacement="gpt-image-1-mini")

    submission = adapter.submit(spec_for(model="dall-e-3", prompt="a fox"))

    assert json_of(sent[0])["model"] == "gpt-image-1-mini"
    assert isinstance(submission, Completed) and submission.served_model == "gpt-image-1-mini"


def test_a_dall_e_2_edit_is_a_multipart_edit_on_the_replacement(emulator: TestClient) -> None:
    adapter, sent = build(emulator)
    spec = spec_for(model="dall-e-2", prompt="add a hat", image_url=data_uri(picture((64, 64))), size="512x512")

    submission = adapter.submit(spec)

    assert isinstance(submission, Completed) and submission.served_model == "gpt-image-1"
    parts = form_of(sent[0])
    assert fields_of(parts) == {
        "model": "gpt-image-1",
        "prompt": "add a hat",
        "n": "1",
        "size": "1024x1024",
        "quality": "medium",
    }
    assert len(files_of(parts, "image")) == 1


def test_a_dall_e_replacement_that_is_dall_e_gets_the_parameters_unchanged(emulator: TestClient) -> None:
    emulator.put("/_emulator/config", json={"openai": {"dalle_retired": False}})
    adapter, sent = build(emulator, dalle_replacement="dall-e-3")
    spec = spec_for(model="dall-e-3", prompt="a fox", quality="hd", size="1792x1024", style="vivid")

    submission = adapter.submit(spec)

    assert json_of(sent[0]) == {
        "model": "dall-e-3",
        "prompt": "a fox",
        "n": 1,
        "size": "1792x1024",
        "quality": "hd",
        "style": "vivid",
        "response_format": "b64_json",
    }
    assert isinstance(submission, Completed) and submission.served_model is None
    assert image_sizes(submission) == [(1792, 1024)]


def test_dall_e_sent_as_itself_to_an_upstream_that_retired_it_is_model_not_found(emulator: TestClient) -> None:
    adapter, _ = build(emulator, dalle_replacement="dall-e-3")

    with pytest.raises(UpstreamRejectedError) as caught:
        adapter.submit(spec_for(model="dall-e-3", prompt="a fox"))

    assert "model_not_found" in caught.value.message and "deprecated" in caught.value.message


# -- errors ------------------------------------------------------------------------------------------


def test_a_moderation_block_names_its_stage_and_categories(emulator: TestClient) -> None:
    adapter, _ = build(emulator)

    with pytest.raises(ContentPolicyError) as caught:
        adapter.submit(spec_for(model="gpt-image-1", prompt="a fox [moderated-async]"))

    assert "moderation_blocked" in caught.value.message
    assert "stage: output" in caught.value.message and "violence" in caught.value.message


def test_a_parameter_the_adapter_does_not_know_is_refused_by_name(emulator: TestClient) -> None:
    adapter, sent = build(emulator)
    spec = spec_for(model="gpt-image-1", prompt="a fox")

    with pytest.raises(UpstreamRejectedError) as caught:
        adapter.submit(dataclasses.replace(spec, params={**spec.params, "aspect_ratio": "1:1"}))

    assert "'aspect_ratio'" in caught.value.message
    assert sent == []


def _answering(status: int, body: bytes, headers: dict[str, str] | None = None) -> OpenAIImagesProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": "application/json", **(headers or {})})

    http = httpx.Client(base_url="http://upstream", transport=httpx.MockTransport(handler))
    return OpenAIImagesProvider(make_settings().openai, http=http)


def _error(code: str | None, type_: str = "invalid_request_error", message: str = "nope") -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        pytest.param(403, _error(None, message="Your organization must be verified"), ProviderAuthError, id="403"),
        pytest.param(404, _error("model_not_found"), UpstreamRejectedError, id="404-model-not-found"),
        pytest.param(400, _error("content_policy_violation"), ContentPolicyError, id="dall-e-policy"),
        pytest.param(429, _error("insufficient_quota", "insufficient_quota"), QuotaExceededError, id="quota"),
        pytest.param(
            503, _error("server_is_overloaded", "service_unavailable_error"), TransientProviderError, id="503"
        ),
        pytest.param(409, _error(None), TransientProviderError, id="409"),
        pytest.param(502, b"<html>bad gateway</html>", TransientProviderError, id="502-html"),
        pytest.param(200, b"<html>hi</html>", UnexpectedResponseError, id="200-html"),
        pytest.param(200, b'{"created": 1, "data": []}', UnexpectedResponseError, id="no-images"),
        pytest.param(200, b'{"created": 1, "data": [{"b64_json": "%%%"}]}', UnexpectedResponseError, id="bad-b64"),
        pytest.param(200, b'{"data": []}', UnexpectedResponseError, id="no-created"),
    ],
)
def test_error_mapping(status: int, body: bytes, error_type: type[ProviderError]) -> None:
    with pytest.raises(ProviderError) as caught:
        _answering(status, body).submit(spec_for(model="gpt-image-1", prompt="a fox"))

    assert type(caught.value) is error_type
    assert caught.value.provider == "openai"


def test_rate_limit_honours_retry_after_ms() -> None:
    adapter = _answering(429, _error("rate_limit_exceeded", "requests"), {"retry-after-ms": "1500"})

    with pytest.raises(RateLimitedError) as caught:
        adapter.submit(spec_for(model="gpt-image-1", prompt="a fox"))

    assert caught.value.retry_after_s == 1.5


def test_a_dall_e_url_answer_is_kept_as_a_url_to_download() -> None:
    body = b'{"created": 1, "data": [{"url": "https://files.example/1.png", "revised_prompt": "a fox"}]}'

    submission = _answering(200, body).submit(spec_for(model="gpt-image-1", prompt="a fox"))

    assert isinstance(submission, Completed)
    assert [image.url for image in submission.images] == ["https://files.example/1.png"]


# -- catalog rules and prices ------------------------------------------------------------------------


def _price(**request: Any) -> tuple[str, Decimal]:
    validated = validate_request(ImageRequest.model_validate({"prompt": "a fox", **request}), catalog=load_catalog())
    return validated.operation, validated.price.unit_amount


@pytest.mark.parametrize(
    ("request_fields", "operation", "amount"),
    [
        pytest.param(
            {"model": "gpt-image-1", "quality": "high", "size": "1024x1024"},
            "text2img",
            "0.1664",
            id="gpt-image-1-high",
        ),
        pytest.param(
            {"model": "gpt-image-1", "quality": "high", "size": "1536x1024"},
            "text2img",
            "0.24832",
            id="gpt-image-1-wide",
        ),
        pytest.param(
            {"model": "gpt-image-1-mini", "quality": "low", "size": "1024x1024"}, "text2img", "0.002176", id="mini-low"
        ),
        pytest.param({"model": "gpt-image-1-mini"}, "text2img", "0.012672", id="mini-default"),
        pytest.param(
            {"model": "gpt-image-1.5", "quality": "high", "size": "1024x1024"}, "text2img", "0.13312", id="1.5-high"
        ),
        pytest.param(
            {"model": "gpt-image-1.5", "quality": "medium", "size": "1024x1024", "image": "https://x.test/a.png"},
            "edit",
            "0.033792",
            id="1.5-edit",
        ),
        pytest.param({"model": "dall-e-3"}, "text2img", "0.04", id="dall-e-3-standard"),
        pytest.param({"model": "dall-e-3", "quality": "hd", "size": "1792x1024"}, "text2img", "0.12", id="dall-e-3-hd"),
        pytest.param({"model": "dall-e-2"}, "text2img", "0.020", id="dall-e-2-default"),
        pytest.param({"model": "dall-e-2", "size": "256x256"}, "text2img", "0.016", id="dall-e-2-256"),
        pytest.param(
            {"model": "dall-e-2", "size": "512x512", "images": ["https://x.test/a.png"]},
            "edit",
            "0.018",
            id="dall-e-2-edit",
        ),
    ],
)
def test_prices_follow_the_public_model(request_fields: dict[str, Any], operation: str, amount: str) -> None:
    assert _price(**request_fields) == (operation, Decimal(amount))


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        pytest.param({"model": "dall-e-3", "n": 2}, "n", id="dall-e-3-n"),
        pytest.param({"model": "dall-e-3", "size": "1536x1024"}, "size", id="dall-e-3-size"),
        pytest.param({"model": "dall-e-3", "image": "https://x.test/a.png"}, "image", id="dall-e-3-no-edits"),
        pytest.param({"model": "dall-e-3", "background": "opaque"}, "background", id="dall-e-3-gpt-only"),
        pytest.param({"model": "dall-e-2", "quality": "hd"}, "quality", id="dall-e-2-quality"),
        pytest.param({"model": "dall-e-2", "prompt": "x" * 1001}, "prompt", id="dall-e-2-prompt"),
        pytest.param(
            {"model": "dall-e-2", "image_urls": ["https://x.test/a.png"] * 2}, "image_urls", id="dall-e-2-one"
        ),
        pytest.param({"model": "gpt-image-1", "style": "vivid"}, "style", id="gpt-style"),
        pytest.param({"model": "gpt-image-1", "n": 11}, "n", id="gpt-n"),
        pytest.param({"model": "gpt-image-1", "size": "1792x1024"}, "size", id="gpt-size"),
        pytest.param({"model": "gpt-image-1", "images": ["https://x.test/a.png"] * 17}, "images", id="gpt-16-images"),
        pytest.param({"model": "gpt-image-1-mini", "input_fidelity": "high"}, "input_fidelity", id="mini-fidelity"),
        pytest.param({"model": "gpt-image-1", "input_fidelity": "max"}, "input_fidelity", id="fidelity-value"),
        pytest.param({"model": "gpt-image-1.5", "mask": "not an image"}, "mask", id="mask-not-an-image"),
        pytest.param({"model": "gpt-image-1", "prompt": None}, "prompt", id="prompt-required"),
        pytest.param({"model": "gpt-image-1", "output_compression": 101}, "output_compression", id="compression"),
        pytest.param({"model": "gpt-image-1", "partial_images": 4}, "partial_images", id="partials"),
        pytest.param({"model": "dall-e-3", "partial_images": 1}, "partial_images", id="dall-e-partials"),
        pytest.param(
            {"model": "gpt-image-1", "background": "transparent", "output_format": "jpeg"}, "background", id="alpha"
        ),
        pytest.param({"model": "gpt-image-1", "size": "1280x720"}, "size", id="custom-size-not-gpt-image-2"),
        pytest.param({"model": "gpt-image-2", "size": "1000x720"}, "size", id="gpt-image-2-multiple-of-16"),
        pytest.param({"model": "gpt-image-2", "size": "3856x2160"}, "size", id="gpt-image-2-edge"),
        pytest.param({"model": "gpt-image-2", "size": "2400x768"}, "size", id="gpt-image-2-ratio"),
        pytest.param({"model": "gpt-image-2", "size": "640x640"}, "size", id="gpt-image-2-pixels"),
        pytest.param({"model": "gpt-image-2", "size": "big"}, "size", id="gpt-image-2-shape"),
        pytest.param(
            {"model": "kling-image", "model_name": "kling-v2-1", "partial_images": 1},
            "partial_images",
            id="kling-partials",
        ),
    ],
)
def test_catalog_rules_name_the_parameter(request_fields: dict[str, Any], param: str) -> None:
    fields = {"prompt": "a fox", **request_fields}
    if fields["prompt"] is None:
        del fields["prompt"]
    with pytest.raises(InvalidRequestError) as caught:
        validate_request(ImageRequest.model_validate(fields), catalog=load_catalog())

    assert caught.value.param == param


@pytest.mark.parametrize("size", ["auto", "1024x1024", "1536x1024", "1280x720", "3840x2160", "2048x2048", "1008x2992"])
def test_gpt_image_2_takes_sizes_within_its_limits(size: str) -> None:
    validated = validate_request(
        ImageRequest.model_validate({"model": "gpt-image-2", "prompt": "a fox", "size": size}), catalog=load_catalog()
    )

    assert validated.upstream_params["size"] == size


# -- what the answer reports, and streamed answers ---------------------------------------------------------------


def test_the_answer_reports_size_quality_background_format_and_usage(emulator: TestClient) -> None:
    adapter, sent = build(emulator)

    submission = adapter.submit(
        spec_for(
            model="gpt-image-1",
            prompt="a lighthouse",
            size="1024x1536",
            quality="low",
            output_format="webp",
            output_compression=80,
        )
    )

    assert isinstance(submission, Completed) and submission.report is not None
    assert json_of(sent[0])["output_compression"] == 80
    report = submission.report
    assert (report["size"], report["quality"], report["background"], report["output_format"]) == (
        "1024x1536",
        "low",
        "opaque",
        "webp",
    )
    assert report["usage"]["output_tokens"] == 408  # OpenAI's low 1024x1536 token count
    assert submission.partials == ()


def test_partial_images_ask_for_a_streamed_answer_and_keep_the_partials(emulator: TestClient) -> None:
    adapter, sent = build(emulator)

    submission = adapter.submit(spec_for(model="gpt-image-1", prompt="a fox", n=2, partial_images=2, quality="low"))

    assert json_of(sent[0])["stream"] is True and json_of(sent[0])["partial_images"] == 2
    assert isinstance(submission, Completed)
    assert len(submission.images) == 2 and len(submission.partials) == 4
    assert image_sizes(submission) == [(1024, 1024), (1024, 1024)]
    assert submission.report is not None
    # the completed events' usage added up: the whole request's
    assert submission.report["usage"]["output_tokens"] == 2 * 272
    assert submission.report["size"] == "1024x1024"


def test_a_streamed_edit_sends_stream_as_a_form_field(emulator: TestClient) -> None:
    adapter, sent = build(emulator)

    submission = adapter.submit(
        spec_for(model="gpt-image-1", prompt="a fox", partial_images=1, image=data_uri(picture((64, 64))))
    )

    assert fields_of(form_of(sent[0]))["stream"] == "true"
    assert isinstance(submission, Completed) and len(submission.partials) == 1 and len(submission.images) == 1


@pytest.mark.parametrize(
    ("events", "error_type"),
    [
        pytest.param(
            b'event: error\ndata: {"error": {"message": "boom", "code": "x"}}\n\n',
            UpstreamRejectedError,
            id="error-event",
        ),
        pytest.param(b"event: image_generation.completed\ndata: {not json\n\n", UnexpectedResponseError, id="not-json"),
        pytest.param(b'data: {"type": "image_generation.completed"}\n\n', UnexpectedResponseError, id="no-image"),
    ],
)
def test_a_bad_streamed_answer_is_an_error(events: bytes, error_type: type[ProviderError]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=events, headers={"content-type": "text/event-stream"})

    settings = make_settings().openai
    http = httpx.Client(base_url="http://upstream", transport=httpx.MockTransport(answer))
    adapter = OpenAIImagesProvider(settings, http=http)

    with pytest.raises(error_type):
        adapter.submit(spec_for(model="gpt-image-1", prompt="a fox", partial_images=1))
