"""The BFL adapter (the body it builds per endpoint, what it polls, how it reads statuses and errors) and
the relay adapter (the OpenAI adapter pointed at another gateway, its errors reported as the relay's).

Wire-level cases use an ``httpx.MockTransport`` scripted with BFL's documented bodies (https://docs.bfl.ai/);
end-to-end cases run every Flux model of the catalog, with every size and aspect ratio it offers, against
the in-process emulator (whose endpoints enforce BFL's own rules), and the relay through the catalog.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from emulator.app import create_app
from shared.catalog import load_catalog, validate_request
from shared.config import BflSettings, RelaySettings
from shared.errors import (
    ContentPolicyError,
    ErrorCode,
    InvalidRequestError,
    PermanentProviderError,
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
from tests.unit.contracts import emulator_http, small_png_base64
from tests.unit.contracts.bfl import CONTRACT
from tests.unit.contracts.relay import CONTRACT as RELAY
from worker.inputs import InputImage
from worker.providers import Accepted, Completed, JobSpec, PollResult, UpstreamState
from worker.providers.base import as_pollable
from worker.providers.bfl import MAX_UPSTREAM_ID, BflProvider
from worker.providers.relay import RelayProvider

Handler = Callable[[httpx.Request], httpx.Response]
BASE_URL = "https://api.bfl.ai"
TASK_ID = "6aeb9987-de91-4079-b518-8ada7a3f47b2"
POLLING_URL = f"https://api.us1.bfl.ai/v1/get_result?id={TASK_ID}"
PNG_B64 = small_png_base64(64)


class Recorder:
    """A scripted BFL: answers from ``handler`` and keeps every request."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._handler = handler or (
            lambda request: httpx.Response(200, json={"id": TASK_ID, "polling_url": POLLING_URL})
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._handler(request)

    def body(self, index: int = -1) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.requests[index].content)
        return body


def _adapter(recorder: Recorder, *, base_url: str = BASE_URL) -> BflProvider:
    settings = BflSettings(base_url=base_url, api_key="bfl-test-key")
    http = httpx.Client(base_url=base_url, transport=httpx.MockTransport(recorder))
    return BflProvider(settings, http=http)


def _spec(model: str, **params: Any) -> JobSpec:
    return JobSpec(job_id="job-1", upstream_model=model, operation="text2img", params=params, image_count=1)


def _answer(status: int, body: Any, **headers: str) -> Handler:
    return lambda request: httpx.Response(status, json=body, headers=headers)


def _poll(body: dict[str, Any]) -> PollResult:
    return _adapter(Recorder(_answer(200, body))).poll(POLLING_URL)


# -- the request -------------------------------------------------------------------------------------


def test_submit_posts_to_the_model_endpoint_with_the_x_key() -> None:
    recorder = Recorder()

    submission = _adapter(recorder).submit(_spec("flux-pro-1.1", prompt="a fox", size="1024x768", seed=7))

    assert submission == Accepted(upstream_id=POLLING_URL)
    request = recorder.requests[0]
    assert (request.method, str(request.url)) == ("POST", f"{BASE_URL}/v1/flux-pro-1.1")
    assert request.headers["x-key"] == "bfl-test-key"
    assert "authorization" not in request.headers
    assert recorder.body() == {"prompt": "a fox", "width": 1024, "height": 768, "seed": 7}


@pytest.mark.parametrize(
    ("model", "params", "expected"),
    [
        pytest.param("flux-2-pro", {"aspect_ratio": "16:9"}, {"width": 1344, "height": 768}, id="ratio-to-size"),
        pytest.param("flux-2-pro", {"aspect_ratio": "7:3"}, {"width": 1440, "height": 608}, id="other-ratio"),
        pytest.param("flux-2-pro", {"size": "720x1280"}, {"width": 720, "height": 1280}, id="size"),
        pytest.param(
            "flux-pro-1.1", {"size": "512x512", "aspect_ratio": "16:9"}, {"width": 512, "height": 512}, id="size-wins"
        ),
        pytest.param("flux-kontext-pro", {"size": "1344x768"}, {"aspect_ratio": "7:4"}, id="size-to-ratio"),
        pytest.param("flux-kontext-max", {"aspect_ratio": "21:9"}, {"aspect_ratio": "21:9"}, id="ratio"),
        pytest.param(
            "flux-pro-1.1-ultra", {"size": "1024x1024", "aspect_ratio": "3:2"}, {"aspect_ratio": "3:2"}, id="ratio-wins"
        ),
        pytest.param("flux-pro-1.1", {}, {}, id="upstream-default"),
    ],
)
def test_size_and_aspect_ratio_become_the_endpoints_own_notion(
    model: str, params: dict[str, Any], expected: dict[str, Any]
) -> None:
    recorder = Recorder()

    _adapter(recorder).submit(_spec(model, prompt="a fox", **params))

    assert recorder.body() == {"prompt": "a fox", **expected}


def test_reference_images_become_numbered_input_images_without_data_uri_prefixes() -> None:
    recorder = Recorder()
    urls = [f"https://img.example.com/{i}.png" for i in range(6)]

    _adapter(recorder).submit(
        _spec(
            "flux-2-pro", prompt="merge", input_image=f"data:image/png;base64,{PNG_B64}", input_images=[*urls, "AB=="]
        )
    )

    body = recorder.body()
    assert body["input_image"] == PNG_B64
    assert [body[f"input_image_{i}"] for i in range(2, 9)] == [*urls, "AB=="]
    assert "input_images" not in body


def test_more_than_eight_input_images_are_refused_before_calling() -> None:
    recorder = Recorder()
    urls = [f"https://img.example.com/{i}.png" for i in range(8)]

    with pytest.raises(UpstreamRejectedError, match="at most 8 input images"):
        _adapter(recorder).submit(_spec("flux-2-pro", prompt="x", input_image=PNG_B64, input_images=urls))

    assert recorder.requests == []


def test_image_prompt_urls_are_fetched_and_sent_as_base64() -> None:
    png = base64.b64decode(PNG_B64)
    loaded: list[str] = []

    class Loader:
        def load(self, ref: str) -> InputImage:
            loaded.append(ref)
            return InputImage(data=png, mime_type="image/png")

    recorder = Recorder()
    settings = BflSettings(base_url=BASE_URL, api_key="k")
    http = httpx.Client(base_url=BASE_URL, transport=httpx.MockTransport(recorder))
    adapter = BflProvider(settings, http=http, images=Loader())

    adapter.submit(_spec("flux-pro-1.1-ultra", prompt="remix", image_prompt="https://img.example.com/a.png"))
    adapter.submit(_spec("flux-pro-1.1", prompt="remix", image_prompt=f"data:image/png;base64,{PNG_B64}"))

    assert loaded == ["https://img.example.com/a.png"]
    assert [base64.b64decode(recorder.body(i)["image_prompt"]) for i in (0, 1)] == [png, png]


# -- the polling URL -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "polling_url", "kept"),
    [
        pytest.param(BASE_URL, POLLING_URL, True, id="regional-host-of-the-same-domain"),
        pytest.param(BASE_URL, f"{BASE_URL}/v1/get_result?id={TASK_ID}", True, id="same-host"),
        pytest.param("https://api.eu.bfl.ai", f"https://api.eu1.bfl.ai/v1/get_result?id={TASK_ID}", True, id="eu"),
        pytest.param(BASE_URL, f"https://evil.example.com/v1/get_result?id={TASK_ID}", False, id="foreign-host"),
        pytest.param(BASE_URL, f"https://bfl.ai.example.com/r?id={TASK_ID}", False, id="look-alike"),
        pytest.param(BASE_URL, f"http://api.us1.bfl.ai/v1/get_result?id={TASK_ID}", False, id="downgrade-to-http"),
        pytest.param(
            "http://127.0.0.1:9100/bfl", f"http://127.0.0.1:9100/bfl/v1/get_result?id={TASK_ID}", True, id="ip"
        ),
        pytest.param("http://127.0.0.1:9100/bfl", f"http://10.0.0.1/v1/get_result?id={TASK_ID}", False, id="other-ip"),
        pytest.param(
            BASE_URL,
            f"https://api.us1.bfl.ai/v1/get_result?id={TASK_ID}&{'x' * MAX_UPSTREAM_ID}",
            False,
            id="too-long-for-the-column",
        ),
    ],
)
def test_the_polling_url_is_the_upstream_id_when_our_key_may_go_there(
    base_url: str, polling_url: str, kept: bool
) -> None:
    recorder = Recorder(_answer(200, {"id": TASK_ID, "polling_url": polling_url}))

    submission = _adapter(recorder, base_url=base_url).submit(_spec("flux-2-pro", prompt="x"))

    assert submission == Accepted(upstream_id=polling_url if kept else TASK_ID)


def test_poll_gets_the_polling_url_with_the_x_key() -> None:
    recorder = Recorder(_answer(200, {"id": TASK_ID, "status": "Pending", "progress": 0.4}))

    result = _adapter(recorder).poll(POLLING_URL)

    assert result == PollResult(state=UpstreamState.PENDING)
    assert str(recorder.requests[0].url) == POLLING_URL
    assert recorder.requests[0].headers["x-key"] == "bfl-test-key"


def test_poll_of_a_bare_id_gets_get_result_on_the_configured_host() -> None:
    recorder = Recorder(_answer(200, {"id": TASK_ID, "status": "Pending"}))

    _adapter(recorder, base_url="https://api.eu.bfl.ai").poll(TASK_ID)

    assert str(recorder.requests[0].url) == f"https://api.eu.bfl.ai/v1/get_result?id={TASK_ID}"


def test_submit_answer_without_a_polling_url_keeps_the_id() -> None:
    recorder = Recorder(_answer(200, {"id": TASK_ID}))

    assert _adapter(recorder).submit(_spec("flux-dev", prompt="x")) == Accepted(upstream_id=TASK_ID)


# -- poll statuses -----------------------------------------------------------------------------------


def test_ready_is_the_sample_url_to_download() -> None:
    sample = "https://delivery-eu1.bfl.ai/results/ab/cd/sample.png?se=2026-01-01T00%3A10%3A00Z&sig=x"

    result = _poll({"id": TASK_ID, "status": "Ready", "result": {"sample": sample, "seed": 42, "prompt": "x"}})

    assert result.state == UpstreamState.SUCCEEDED
    assert [image.url for image in result.images] == [sample]
    assert result.images[0].data is None


@pytest.mark.parametrize(
    ("body", "error_type", "code", "text"),
    [
        pytest.param(
            {"status": "Request Moderated", "details": {"Moderation Reasons": ["Derivative Works Filter"]}},
            ContentPolicyError,
            ErrorCode.CONTENT_POLICY_VIOLATION,
            "Request Moderated (Derivative Works Filter)",
            id="request-moderated",
        ),
        pytest.param(
            {"status": "Content Moderated", "details": None},
            ContentPolicyError,
            ErrorCode.CONTENT_POLICY_VIOLATION,
            "Content Moderated",
            id="content-moderated",
        ),
        pytest.param(
            {"status": "Error", "details": {"error": "out of memory"}},
            ProviderError,
            ErrorCode.UPSTREAM_FAILED,
            "out of memory",
            id="error",
        ),
        pytest.param(
            {"status": "Task not found"}, PermanentProviderError, ErrorCode.UPSTREAM_FAILED, "not found", id="not-found"
        ),
        pytest.param(
            {"status": "Ready", "result": {"seed": 1}},
            UnexpectedResponseError,
            ErrorCode.UPSTREAM_BAD_RESPONSE,
            "without result.sample",
            id="ready-without-sample",
        ),
    ],
)
def test_terminal_statuses_fail_the_task(
    body: dict[str, Any], error_type: type[ProviderError], code: ErrorCode, text: str
) -> None:
    result = _poll({"id": TASK_ID, **body})

    assert result.state == UpstreamState.FAILED
    assert result.images == ()
    assert type(result.error) is error_type
    assert result.error.code == code
    assert result.error.provider == "bfl"
    assert text in result.error.message


@pytest.mark.parametrize(
    "body", [{"id": TASK_ID, "status": "Processing"}, {"id": TASK_ID}, ["Ready"]], ids=["unknown", "none", "list"]
)
def test_a_poll_answer_of_another_shape_keeps_the_job_polling(body: Any) -> None:
    # a 200 we cannot read says nothing about a task the upstream has: transient, never a failed job
    with pytest.raises(TransientProviderError) as caught:
        _poll(body)

    assert type(caught.value) is TransientProviderError


# -- HTTP errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        pytest.param(401, {"detail": "Invalid API key"}, ProviderAuthError, id="401"),
        pytest.param(403, {"detail": "Not authenticated"}, ProviderAuthError, id="403"),
        pytest.param(402, {"detail": "Insufficient credits"}, QuotaExceededError, id="402"),
        pytest.param(429, {"error": "rate_limit_exceeded", "message": "Too many"}, RateLimitedError, id="429"),
        pytest.param(400, {"detail": "Request Moderated"}, ContentPolicyError, id="400-moderated"),
        pytest.param(400, {"detail": "Bad request"}, UpstreamRejectedError, id="400"),
        pytest.param(404, {"detail": "Not Found"}, UpstreamRejectedError, id="unknown-endpoint"),
        pytest.param(500, {"detail": "Internal Server Error"}, TransientProviderError, id="500"),
        pytest.param(503, "upstream connect error", TransientProviderError, id="503-text"),
    ],
)
def test_http_errors_map_onto_the_error_tree(status: int, body: Any, error_type: type[ProviderError]) -> None:
    with pytest.raises(ProviderError) as caught:
        _adapter(Recorder(_answer(status, body))).submit(_spec("flux-pro-1.1", prompt="x"))

    assert type(caught.value) is error_type
    assert caught.value.provider == "bfl"
    assert caught.value.message.startswith(f"BFL {status}: ")


def test_rate_limit_carries_retry_after() -> None:
    with pytest.raises(RateLimitedError) as caught:
        _adapter(Recorder(_answer(429, {"detail": "slow down"}, **{"retry-after": "7"}))).poll(POLLING_URL)

    assert caught.value.retry_after_s == 7.0


def test_validation_error_names_the_field() -> None:
    detail = [
        {"type": "value_error", "loc": ["body", "width"], "msg": "Input should be a multiple of 32", "input": 100}
    ]

    with pytest.raises(UpstreamRejectedError) as caught:
        _adapter(Recorder(_answer(422, {"detail": detail}))).submit(_spec("flux-pro-1.1", prompt="x"))

    assert caught.value.message == "BFL 422: width: Input should be a multiple of 32"


@pytest.mark.parametrize(
    "handler",
    [
        lambda request: httpx.Response(200, text="<html>hi</html>", headers={"content-type": "text/html"}),
        _answer(200, {"polling_url": POLLING_URL}),
    ],
    ids=["html", "no-id"],
)
def test_a_submit_answer_we_cannot_read_is_unexpected(handler: Handler) -> None:
    with pytest.raises(UnexpectedResponseError):
        _adapter(Recorder(handler)).submit(_spec("flux-pro-1.1", prompt="x"))


def test_transport_failures_are_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(TransientProviderError):
        _adapter(Recorder(refuse)).poll(POLLING_URL)


# -- the catalog -------------------------------------------------------------------------------------

FLUX_MODELS = sorted(name for name, entry in load_catalog().models.items() if entry.provider == "bfl")


def _validate(**fields: Any) -> Any:
    return validate_request(ImageRequest.model_validate(fields), catalog=load_catalog())


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("flux-pro-1.1", "0.04"),
        ("flux-pro-1.1-ultra", "0.06"),
        ("flux-kontext-pro", "0.04"),
        ("flux-kontext-max", "0.08"),
        ("flux-2-pro", "0.03"),
    ],
)
def test_flux_models_cost_the_list_price_per_image(model: str, price: str) -> None:
    validated = _validate(model=model, prompt="a fox")

    assert (validated.provider, validated.upstream_model, validated.image_count) == ("bfl", model, 1)
    assert validated.price.per == "image"
    assert validated.price.cost(images_delivered=1) == Decimal(price)
    assert validated.upstream_params == {"prompt": "a fox", "output_format": "png"}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": "flux-pro-1.1", "prompt": "x", "n": 2}, "n"),
        ({"model": "flux-pro-1.1", "prompt": "x", "size": "1000x1000"}, "size"),
        ({"model": "flux-pro-1.1", "prompt": "x", "size": "1536x1024"}, "size"),
        ({"model": "flux-2-pro", "prompt": "x", "size": "1440x1440"}, "size"),
        ({"model": "flux-kontext-pro", "prompt": "x", "aspect_ratio": "3:1"}, "aspect_ratio"),
        ({"model": "flux-kontext-pro", "prompt": "x", "image_urls": ["https://a.example/x.png"]}, "image_urls"),
        ({"model": "flux-2-pro", "prompt": "x", "image_urls": ["https://a.example/x.png"] * 9}, "image_urls"),
        ({"model": "flux-2-pro", "prompt": "x", "output_format": "webp"}, "output_format"),
        ({"model": "flux-2-pro"}, "prompt"),
        ({"model": "flux-pro-1.1", "prompt": "x" * 2501}, "prompt"),
        ({"model": "flux-pro-1.1", "prompt": "x", "quality": "hd"}, "quality"),
        ({"model": "flux-pro-1.1", "prompt": "x", "safety_tolerance": 7}, "safety_tolerance"),
        ({"model": "flux-kontext-pro", "prompt": "x", "safety_tolerance": 3}, "safety_tolerance"),
        ({"model": "flux-2-pro", "prompt": "x", "safety_tolerance": 6}, "safety_tolerance"),
        ({"model": "flux-2-pro", "prompt": "x", "seed": -1}, "seed"),
    ],
)
def test_flux_parameter_rules_name_the_parameter(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        _validate(**fields)

    assert caught.value.param == param


@pytest.mark.parametrize(
    ("fields", "operation", "upstream"),
    [
        ({"model": "flux-kontext-max", "image": PNG_B64}, "edit", {"input_image": PNG_B64}),
        (
            {"model": "flux-2-pro", "image_urls": ["https://a.example/x.png"]},
            "edit",
            {"input_images": ["https://a.example/x.png"]},
        ),
        (
            {"model": "flux-pro-1.1", "image_url": "https://a.example/x.png"},
            "img2img",
            {"image_prompt": "https://a.example/x.png"},
        ),
        ({"model": "flux-2-pro", "aspect_ratio": "9:16"}, "text2img", {"aspect_ratio": "9:16"}),
    ],
)
def test_input_images_choose_the_operation_and_their_upstream_field(
    fields: dict[str, Any], operation: str, upstream: dict[str, Any]
) -> None:
    validated = _validate(prompt="x", **fields)

    assert validated.operation == operation
    assert validated.upstream_params == {"prompt": "x", "output_format": "png", **upstream}


def test_seed_and_safety_tolerance_reach_the_upstream(emulator: TestClient) -> None:
    spec = _spec_for(model="flux-2-pro", prompt="a fox", seed=1234, safety_tolerance=5, size="512x512")
    adapter = CONTRACT.build(emulator, True)

    submission = adapter.submit(spec)
    assert isinstance(submission, Accepted)
    answer = emulator.get(submission.upstream_id, headers={"x-key": "emulator-bfl-key"}).json()

    assert spec.params == {"prompt": "a fox", "seed": 1234, "safety_tolerance": 5, "size": "512x512",
                           "output_format": "png"}  # fmt: skip
    assert answer["result"]["seed"] == 1234


def test_the_relay_model_is_gpt_image_1_at_its_price_through_the_relay() -> None:
    relayed = _validate(model="relay-gpt-image-1", prompt="x", quality="high", n=3)
    direct = _validate(model="gpt-image-1", prompt="x", quality="high", n=3)

    assert (relayed.provider, relayed.upstream_model, relayed.image_count) == ("relay", "gpt-image-1", 3)
    assert relayed.price == direct.price
    assert relayed.upstream_params == direct.upstream_params
    assert "relay" in load_catalog().models["relay-gpt-image-1"].price_source


# -- against the emulator --------------------------------------------------------------------------


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv("EMULATOR_BFL_API_KEY", raising=False)
    with TestClient(create_app(), base_url="http://emulator") as client:
        client.put("/_emulator/config", json={"bfl": {"latency": {"kind": "fixed", "value_s": 0}}})
        yield client


def _choices(model: str, param: str) -> list[str]:
    rule = load_catalog().models[model].params.get(param)
    return list(rule.choices or ()) if rule else []


def _run(emulator: TestClient, spec: JobSpec) -> Image.Image:
    adapter = CONTRACT.build(emulator, True)
    submission = adapter.submit(spec)
    assert isinstance(submission, Accepted)
    assert submission.upstream_id.startswith("http://emulator/bfl/v1/get_result?id=")
    result = as_pollable(adapter).poll(submission.upstream_id)
    assert result.state == UpstreamState.SUCCEEDED, result
    (image,) = result.images
    assert image.url is not None
    response = emulator.get(image.url)
    assert response.status_code == 200
    picture = Image.open(io.BytesIO(response.content))
    picture.load()
    return picture


def _spec_for(**fields: Any) -> JobSpec:
    validated = _validate(**fields)
    return JobSpec(
        job_id="job-1",
        upstream_model=validated.upstream_model,
        operation=validated.operation,
        params=validated.upstream_params,
        image_count=validated.image_count,
    )


@pytest.mark.parametrize("model", FLUX_MODELS)
def test_every_size_and_ratio_the_catalog_offers_is_accepted_upstream(emulator: TestClient, model: str) -> None:
    adapter = CONTRACT.build(emulator, True)
    offered = [(field, value) for field in ("size", "aspect_ratio") for value in _choices(model, field)]
    assert offered

    refused = []
    for field, value in offered:
        try:
            adapter.submit(_spec_for(model=model, prompt="a fox", **{field: value}))
        except UpstreamRejectedError as exc:
            refused.append(f"{field}={value}: {exc.message}")

    assert refused == []


def test_a_width_height_model_renders_the_requested_size(emulator: TestClient) -> None:
    picture = _run(emulator, _spec_for(model="flux-2-pro", prompt="a fox", size="1280x720", output_format="jpeg"))

    assert (picture.format, picture.size) == ("JPEG", (1280, 720))


def test_an_aspect_ratio_model_renders_its_megapixels_in_that_shape(emulator: TestClient) -> None:
    kontext = _run(emulator, _spec_for(model="flux-kontext-pro", prompt="a fox", size="1344x768"))
    ultra = _run(emulator, _spec_for(model="flux-pro-1.1-ultra", prompt="a fox", aspect_ratio="16:9"))

    assert kontext.format == "PNG" and kontext.size == (1344, 768)
    assert ultra.size == (2720, 1536)


def test_an_edit_sends_caller_images_in_the_form_bfl_takes(emulator: TestClient) -> None:
    data_uri = f"data:image/png;base64,{PNG_B64}"

    picture = _run(
        emulator,
        _spec_for(model="flux-2-pro", prompt="merge", image=data_uri, image_urls=["https://img.example.com/a.png"]),
    )

    assert picture.format == "PNG"


def test_kontext_edit_with_a_data_uri_image(emulator: TestClient) -> None:
    spec = _spec_for(model="flux-kontext-max", prompt="make it blue", image=f"data:image/png;base64,{PNG_B64}")

    picture = _run(emulator, spec)

    assert picture.size == (1024, 1024)


def test_a_hanging_task_stays_pending(emulator: TestClient) -> None:
    adapter = CONTRACT.build(emulator, True)
    submission = adapter.submit(_spec_for(model="flux-pro-1.1", prompt="a fox [hang]"))
    assert isinstance(submission, Accepted)

    assert as_pollable(adapter).poll(submission.upstream_id).state == UpstreamState.PENDING


def test_an_unknown_task_is_failed_not_found(emulator: TestClient) -> None:
    result = as_pollable(CONTRACT.build(emulator, True)).poll("no-such-task")

    assert result.state == UpstreamState.FAILED
    assert type(result.error) is PermanentProviderError


def test_more_active_tasks_than_the_account_limit_are_rate_limited(emulator: TestClient) -> None:
    emulator.put("/_emulator/config", json={"bfl": {"concurrency_limit": 2}})
    adapter = CONTRACT.build(emulator, True)
    for _ in range(2):
        adapter.submit(_spec_for(model="flux-pro-1.1", prompt="slow [latency=60]"))

    with pytest.raises(RateLimitedError):
        adapter.submit(_spec_for(model="flux-pro-1.1", prompt="one more"))


def test_the_key_is_checked_on_polls_too(emulator: TestClient) -> None:
    submission = CONTRACT.build(emulator, True).submit(_spec_for(model="flux-pro-1.1", prompt="x"))
    assert isinstance(submission, Accepted)

    with pytest.raises(ProviderAuthError):
        as_pollable(CONTRACT.build(emulator, False)).poll(submission.upstream_id)


def test_the_adapter_is_built_from_the_settings_fallback(emulator: TestClient) -> None:
    settings = make_settings().bfl
    assert settings.base_url == "http://127.0.0.1:9/bfl"
    adapter = BflProvider(settings, http=emulator_http(emulator, settings.base_url))

    assert isinstance(adapter.submit(_spec_for(model="flux-pro-1.1", prompt="x")), Accepted)


# -- the relay (an OpenAI-compatible gateway driven by the OpenAI adapter) ---------------------------------


def _relay(handler: Handler, recorder: list[httpx.Request]) -> RelayProvider:
    def record(request: httpx.Request) -> httpx.Response:
        recorder.append(request)
        return handler(request)

    settings = RelaySettings(base_url="https://relay.example.com/gw", api_key="relay-key")
    http = httpx.Client(base_url="https://relay.example.com/gw", transport=httpx.MockTransport(record))
    return RelayProvider(settings, http=http)


def test_the_relay_gets_openai_requests_with_its_own_key() -> None:
    sent: list[httpx.Request] = []
    answer = {"created": 1, "data": [{"b64_json": PNG_B64}]}

    submission = _relay(_answer(200, answer), sent).submit(
        JobSpec(job_id="j", upstream_model="gpt-image-1", operation="text2img", params={"prompt": "x"}, image_count=1)
    )

    assert isinstance(submission, Completed)
    assert submission.images[0].data == base64.b64decode(PNG_B64)
    assert str(sent[0].url) == "https://relay.example.com/gw/v1/images/generations"
    assert sent[0].headers["authorization"] == "Bearer relay-key"
    assert json.loads(sent[0].content) == {"model": "gpt-image-1", "prompt": "x"}


def test_the_relay_passes_dall_e_names_through() -> None:
    sent: list[httpx.Request] = []
    answer = {"created": 1, "data": [{"b64_json": PNG_B64}]}
    spec = JobSpec(job_id="j", upstream_model="dall-e-3", operation="text2img", params={"prompt": "x"}, image_count=1)

    submission = _relay(_answer(200, answer), sent).submit(spec)

    assert isinstance(submission, Completed) and submission.served_model is None
    assert json.loads(sent[0].content)["model"] == "dall-e-3"


@pytest.mark.parametrize(
    ("status", "body", "error_type", "message"),
    [
        (401, {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}, ProviderAuthError,
         "relay 401: Incorrect API key"),
        (400, {"error": {"message": "Invalid 'n'", "param": "n"}}, UpstreamRejectedError, "relay 400: Invalid 'n'"),
        (502, {"error": {"message": "bad gateway"}}, TransientProviderError, "relay 502: bad gateway"),
    ],
)  # fmt: skip
def test_relay_errors_are_the_relays(
    status: int, body: dict[str, Any], error_type: type[ProviderError], message: str
) -> None:
    spec = JobSpec(
        job_id="j", upstream_model="gpt-image-1", operation="text2img", params={"prompt": "x"}, image_count=1
    )

    with pytest.raises(ProviderError) as caught:
        _relay(_answer(status, body), []).submit(spec)

    assert type(caught.value) is error_type
    assert caught.value.provider == "relay"
    assert caught.value.message.startswith(message)  # what follows is the OpenAI adapter's detail
    assert str(caught.value) == caught.value.message


def test_a_relayed_edit_uploads_the_caller_image(emulator: TestClient) -> None:
    validated = _validate(model="relay-gpt-image-1", prompt="add a hat", quality="low", image=PNG_B64)
    spec = JobSpec(
        job_id="j",
        upstream_model=validated.upstream_model,
        operation=validated.operation,
        params=validated.upstream_params,
        image_count=1,
    )
    emulator.put("/_emulator/config", json={"relay": {"latency": {"kind": "fixed", "value_s": 0}}})

    submission = RELAY.build(emulator, True).submit(spec)

    assert validated.operation == "edit"
    assert isinstance(submission, Completed) and len(submission.images) == 1
    stats = emulator.get("/_emulator/stats").json()
    assert (stats["relay"]["requests"], stats["openai"]["requests"]) == (1, 0)


def test_a_broken_input_image_stays_the_callers_error(emulator: TestClient) -> None:
    spec = JobSpec(
        job_id="j", upstream_model="gpt-image-1", operation="edit", params={"prompt": "x", "image": "bm90IGFuIGltYWdl"},
        image_count=1,
    )  # fmt: skip

    with pytest.raises(PermanentProviderError) as caught:
        RELAY.build(emulator, True).submit(spec)

    assert caught.value.provider == "input"
    assert caught.value.code == ErrorCode.INVALID_INPUT_IMAGE
