"""Seedream on Ark: the catalog's per-model rules, the request translation, and the error mapping.

Translation and error mapping use an ``httpx.MockTransport`` that records the request and answers a scripted
response; the end-to-end cases run the adapter against the in-process emulator (no sockets).
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
from shared.catalog.checks import CHECKS
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
from tests.unit.contracts import CONTRACTS, small_png_base64
from worker.inputs import HttpImageLoader
from worker.providers import Completed, JobSpec
from worker.providers.ark import ArkProvider

SEEDREAM_3 = "doubao-seedream-3-0-t2i-250415"
SEEDREAM_4 = "doubao-seedream-4-0-250828"
SEEDREAM_4_5 = "doubao-seedream-4-5-251128"
SEEDREAM_5 = "doubao-seedream-5-0-260128"
SEEDREAMS = (SEEDREAM_3, SEEDREAM_4, SEEDREAM_4_5, SEEDREAM_5)
RATIOS = ("1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9")
TIERS = {SEEDREAM_3: (), SEEDREAM_4: ("1K", "2K", "4K"), SEEDREAM_4_5: ("2K", "4K"), SEEDREAM_5: ("2K", "3K")}
IMAGE_URL = "https://images.example.com/fox.png"
ARK = CONTRACTS["ark"]


def _validate(model: str, **fields: Any) -> Any:
    return validate_request(
        ImageRequest.model_validate({"model": model, "prompt": "a fox", **fields}), catalog=load_catalog()
    )


def _rejection(model: str, **fields: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        _validate(model, **fields)
    return caught.value


def _spec(model: str, **fields: Any) -> JobSpec:
    validated = _validate(model, **fields)
    return JobSpec(
        job_id="job-1",
        upstream_model=validated.upstream_model,
        operation=validated.operation,
        params=validated.upstream_params,
        image_count=validated.image_count,
    )


def _png(width: int = 32, height: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "orange").save(buffer, format="PNG")
    return buffer.getvalue()


def _ok(*items: dict[str, Any], model: str = "seedream-4-0-250828") -> httpx.Response:
    body = {"model": model, "created": 1757323224, "data": list(items), "usage": {"generated_images": len(items)}}
    return httpx.Response(200, json=body)


def _b64_item() -> dict[str, Any]:
    return {"b64_json": base64.b64encode(_png()).decode("ascii"), "size": "32x32"}


class Scripted:
    """A mock upstream: records each request body and answers the scripted response."""

    def __init__(self, answer: httpx.Response | Callable[[], httpx.Response]) -> None:
        self.answer = answer
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        self.headers.append(request.headers)
        return self.answer() if callable(self.answer) else self.answer


def _provider(upstream: Scripted) -> ArkProvider:
    settings = make_settings().ark
    http = httpx.Client(base_url=str(settings.base_url), transport=httpx.MockTransport(upstream))
    loader = HttpImageLoader(httpx.Client(transport=httpx.MockTransport(upstream)), max_bytes=1024 * 1024)
    return ArkProvider(settings, http=http, images=loader)


def _sent(model: str, **fields: Any) -> dict[str, Any]:
    upstream = Scripted(_ok(_b64_item()))
    _provider(upstream).submit(_spec(model, **fields))
    return upstream.bodies[0]


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv("EMULATOR_ARK_API_KEY", raising=False)
    with TestClient(create_app(), base_url="http://emulator") as client:
        assert client.put("/_emulator/config", json={"ark": {"latency": {"kind": "fixed", "value_s": 0}}}).is_success
        yield client


# -- the catalog ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "upstream"),
    [
        (SEEDREAM_3, "seedream-3-0-t2i-250415"),
        (SEEDREAM_4, "seedream-4-0-250828"),
        (SEEDREAM_4_5, "seedream-4-5-251128"),
        (SEEDREAM_5, "seedream-5-0-260128"),
    ],
)
def test_every_seedream_of_seed_000_routes_to_ark_with_its_byteplus_id(model: str, upstream: str) -> None:
    entry = load_catalog().models[model]

    assert (entry.provider, entry.upstream_model, entry.currency) == ("ark", upstream, "USD")


PRICES = [
    (SEEDREAM_3, "image", "0.03", "BytePlus ModelArk list price"),
    (SEEDREAM_4, "image", "0.03", "BytePlus ModelArk list price"),
    (SEEDREAM_4_5, "request", "0.06", "gateway price table"),
    (SEEDREAM_5, "request", "0.05", "gateway price table"),
]


@pytest.mark.parametrize(
    ("model", "per", "amount", "source", "extra"),
    [(*row, {}) for row in PRICES] + [(*row, {"image": IMAGE_URL}) for row in PRICES if row[0] != SEEDREAM_3],
)
def test_prices_are_seed_000_per_request_or_the_list_price_per_image(
    model: str, per: str, amount: str, source: str, extra: dict[str, Any]
) -> None:
    validated = _validate(model, **extra)

    assert (validated.price.per, validated.price.unit_amount) == (per, Decimal(amount))
    assert source in load_catalog().models[model].price_source
    assert validated.operation == ("img2img" if extra else "text2img")


@pytest.mark.parametrize(
    ("model", "size"),
    [
        (SEEDREAM_3, "512x512"),
        (SEEDREAM_3, "2048x1024"),
        (SEEDREAM_4, "1K"),
        (SEEDREAM_4, "4k"),
        (SEEDREAM_4, "1280x720"),
        (SEEDREAM_4, "4096x4096"),
        (SEEDREAM_4_5, "2K"),
        (SEEDREAM_4_5, "2560x1440"),
        (SEEDREAM_4_5, "1920x1920"),
        (SEEDREAM_5, "3K"),
        (SEEDREAM_5, "3072x3072"),
    ],
)
def test_sizes_each_model_takes(model: str, size: str) -> None:
    assert _validate(model, size=size).upstream_params["size"] == size


@pytest.mark.parametrize(
    ("model", "size", "why"),
    [
        (SEEDREAM_3, "1K", "WIDTHxHEIGHT"),
        (SEEDREAM_3, "511x1024", "[512, 2048]"),
        (SEEDREAM_3, "2049x1024", "[512, 2048]"),
        (SEEDREAM_4, "3K", "1K, 2K, 4K"),
        (SEEDREAM_4, "1024x768", "pixels"),
        (SEEDREAM_4, "4097x4096", "pixels"),
        (SEEDREAM_4, "8000x400", "aspect ratio"),
        (SEEDREAM_4_5, "1K", "2K, 4K"),
        (SEEDREAM_4_5, "2048x1024", "3686400"),
        (SEEDREAM_4_5, "1024x1024", "3686400"),
        (SEEDREAM_5, "4K", "2K, 3K"),
        (SEEDREAM_5, "4096x4096", "9437184"),
        (SEEDREAM_5, "big", "WIDTHxHEIGHT"),
    ],
)
def test_sizes_a_model_refuses_are_400_naming_size(model: str, size: str, why: str) -> None:
    error = _rejection(model, size=size)

    assert error.param == "size"
    assert why in error.message


def test_aspect_ratio_goes_with_a_tier_but_not_with_width_x_height() -> None:
    assert _validate(SEEDREAM_4, size="4K", aspect_ratio="16:9").upstream_params["aspect_ratio"] == "16:9"
    assert _rejection(SEEDREAM_4, size="2048x2048", aspect_ratio="16:9").param == "aspect_ratio"
    assert _rejection(SEEDREAM_4, aspect_ratio="5:4").param == "aspect_ratio"


def test_seedream_3_is_text_to_image_with_one_image_and_its_own_options() -> None:
    assert _validate(SEEDREAM_3, seed=-1, guidance_scale=10).upstream_params["guidance_scale"] == 10
    assert _rejection(SEEDREAM_3, seed=2**31).param == "seed"
    assert _rejection(SEEDREAM_3, guidance_scale=0.5).param == "guidance_scale"
    assert _rejection(SEEDREAM_3, image=IMAGE_URL).param == "image"
    assert _rejection(SEEDREAM_3, n=2).param == "n"
    assert _rejection(SEEDREAM_3, output_format="png").param == "output_format"
    for model in (SEEDREAM_4, SEEDREAM_4_5, SEEDREAM_5):
        assert _rejection(model, seed=7).param == "seed"
        assert _rejection(model, guidance_scale=5).param == "guidance_scale"


def test_groups_allow_up_to_15_images_with_the_references() -> None:
    assert _validate(SEEDREAM_4, n=15).image_count == 15
    assert _validate(SEEDREAM_4, n=5, image_urls=[IMAGE_URL] * 10).image_count == 5
    assert _rejection(SEEDREAM_4, n=16).param == "n"
    assert _rejection(SEEDREAM_4, n=6, image_urls=[IMAGE_URL] * 10).param == "n"
    assert _rejection(SEEDREAM_4, image=IMAGE_URL, images=[IMAGE_URL] * 14).param == "images"


def test_output_format_is_seedream_5_only() -> None:
    assert _validate(SEEDREAM_5, output_format="png").upstream_params["output_format"] == "png"
    assert _rejection(SEEDREAM_4_5, output_format="png").param == "output_format"


def test_the_prompt_is_required_and_at_most_2500_characters() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_request(ImageRequest.model_validate({"model": SEEDREAM_4}), catalog=load_catalog())
    assert caught.value.param == "prompt"
    assert _rejection(SEEDREAM_4, prompt="x" * 2501).param == "prompt"


# -- the request sent to Ark -------------------------------------------------------------------------


def test_a_plain_request_asks_for_base64_without_watermark() -> None:
    upstream = Scripted(_ok(_b64_item()))

    _provider(upstream).submit(_spec(SEEDREAM_4, size="2K"))

    assert upstream.bodies == [
        {"model": "seedream-4-0-250828", "prompt": "a fox", "size": "2K", "response_format": "b64_json",
         "watermark": False}
    ]  # fmt: skip
    assert upstream.headers[0]["authorization"] == "Bearer emulator-ark-key"


@pytest.mark.parametrize(
    ("model", "fields", "size"),
    [
        (SEEDREAM_3, {"aspect_ratio": "16:9"}, "1280x720"),
        (SEEDREAM_3, {"aspect_ratio": "21:9"}, "1512x648"),
        (SEEDREAM_4, {"aspect_ratio": "16:9"}, "2560x1440"),
        (SEEDREAM_4, {"aspect_ratio": "3:4", "size": "1k"}, "864x1152"),
        (SEEDREAM_4_5, {"aspect_ratio": "16:9", "size": "4K"}, "5504x3040"),
        (SEEDREAM_5, {"aspect_ratio": "21:9", "size": "3K"}, "4620x1980"),
        (SEEDREAM_5, {"size": "3k"}, "3K"),
        (SEEDREAM_3, {"size": "1024x768"}, "1024x768"),
        (SEEDREAM_4, {}, None),
    ],
)
def test_size_and_aspect_ratio_become_arks_size(model: str, fields: dict[str, Any], size: str | None) -> None:
    body = _sent(model, **fields)

    assert body.get("size") == size
    assert "aspect_ratio" not in body


@pytest.mark.parametrize("model", SEEDREAMS)
def test_every_mapped_aspect_ratio_is_a_size_the_model_takes(model: str) -> None:
    check = CHECKS[load_catalog().models[model].checks[0]]
    for tier in (None, *TIERS[model]):
        for ratio in RATIOS:
            fields = {"aspect_ratio": ratio} if tier is None else {"aspect_ratio": ratio, "size": tier}
            size = _sent(model, **fields)["size"]
            check({"size": size})  # raises if the model would refuse it


def test_n_becomes_a_group_of_at_most_n_images() -> None:
    assert "sequential_image_generation" not in _sent(SEEDREAM_4, n=1)
    body = _sent(SEEDREAM_4_5, n=3, size="2K")

    assert body["sequential_image_generation"] == "auto"
    assert body["sequential_image_generation_options"] == {"max_images": 3}
    assert "n" not in body


def test_reference_images_are_sent_as_urls_or_data_uris_in_order() -> None:
    raw = small_png_base64(32)

    body = _sent(SEEDREAM_4, image=IMAGE_URL, image_urls=[f"data:image/PNG;base64,{raw}"], images=[raw])

    assert body["image"] == [IMAGE_URL, f"data:image/png;base64,{raw}", f"data:image/png;base64,{raw}"]
    for name in ("image_url", "image_urls", "images"):
        assert name not in body


def test_one_reference_image_is_sent_as_a_string() -> None:
    assert _sent(SEEDREAM_5, image_url=IMAGE_URL)["image"] == IMAGE_URL


def test_seedream_3_options_and_output_format_pass_through() -> None:
    assert _sent(SEEDREAM_5, output_format="png")["output_format"] == "png"
    body = _sent(SEEDREAM_3, seed=7, guidance_scale=3.5)

    assert (body["seed"], body["guidance_scale"]) == (7, 3.5)


# -- Ark's answer --------------------------------------------------------------------------------------


def test_base64_images_are_returned_as_bytes_and_urls_as_urls() -> None:
    url = "https://ark-content-generation-v2-ap-southeast-1.tos.example/x.jpeg?X-Tos-Expires=86400"
    submission = _provider(Scripted(_ok(_b64_item(), {"url": url, "size": "32x32"}))).submit(_spec(SEEDREAM_4, n=2))

    assert isinstance(submission, Completed)
    assert submission.images[0].data == _png()
    assert (submission.images[1].url, submission.images[1].data) == (url, None)
    assert submission.served_model is None


def test_a_different_serving_model_is_reported() -> None:
    submission = _provider(Scripted(_ok(_b64_item(), model="seedream-4-0-250901"))).submit(_spec(SEEDREAM_4))

    assert isinstance(submission, Completed)
    assert submission.served_model == "seedream-4-0-250901"


def test_a_group_keeps_the_images_that_passed_moderation() -> None:
    moderated = {"error": {"code": "OutputImageSensitiveContentDetected", "message": "may be sensitive"}}

    submission = _provider(Scripted(_ok(_b64_item(), moderated))).submit(_spec(SEEDREAM_4, n=2))

    assert isinstance(submission, Completed)
    assert len(submission.images) == 1


def test_a_group_whose_every_image_was_moderated_is_a_content_policy_error() -> None:
    moderated = {"error": {"code": "OutputImageSensitiveContentDetected", "message": "may be sensitive"}}

    with pytest.raises(ContentPolicyError):
        _provider(Scripted(_ok(moderated, moderated))).submit(_spec(SEEDREAM_4, n=2))


def _error(status: int, code: str, param: str = "", headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened. Request id: 021", "param": param, "type": "X"}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        pytest.param(_error(401, "AuthenticationError"), ProviderAuthError, id="401-auth"),
        pytest.param(_error(403, "AccessDenied"), ProviderAuthError, id="403-access-denied"),
        pytest.param(_error(404, "ModelNotOpen"), ProviderAuthError, id="404-model-not-open"),
        pytest.param(_error(403, "AccountOverdueError"), QuotaExceededError, id="403-arrears"),
        pytest.param(_error(429, "QuotaExceeded"), QuotaExceededError, id="429-quota"),
        pytest.param(_error(429, "RateLimitExceeded.EndpointRPMExceeded"), RateLimitedError, id="429-rpm"),
        pytest.param(_error(429, "ServerOverloaded"), RateLimitedError, id="429-overloaded"),
        pytest.param(_error(400, "InputTextSensitiveContentDetected"), ContentPolicyError, id="input-text"),
        pytest.param(_error(400, "InputImageSensitiveContentDetected"), ContentPolicyError, id="input-image"),
        pytest.param(_error(400, "OutputImageSensitiveContentDetected"), ContentPolicyError, id="output-image"),
        pytest.param(_error(400, "SensitiveContentDetected.SevereViolation"), ContentPolicyError, id="severe"),
        pytest.param(_error(400, "OutputImageRiskDetection"), ContentPolicyError, id="output-risk"),
        pytest.param(_error(400, "InvalidParameter", "size"), UpstreamRejectedError, id="invalid-param"),
        pytest.param(_error(404, "InvalidEndpointOrModel.NotFound", "model"), UpstreamRejectedError, id="no-model"),
        pytest.param(_error(400, "InvalidEndpoint.ClosedEndpoint"), UpstreamRejectedError, id="closed-endpoint"),
        pytest.param(_error(500, "InternalServiceError"), TransientProviderError, id="500"),
        pytest.param(httpx.Response(502, text="<html>bad gateway</html>"), TransientProviderError, id="502-html"),
        pytest.param(httpx.Response(200, text="<html>hi</html>"), UnexpectedResponseError, id="200-html"),
        pytest.param(httpx.Response(200, json=["not", "an", "object"]), UnexpectedResponseError, id="json-list"),
        pytest.param(_error(200, "InternalServiceError"), TransientProviderError, id="200-with-error"),
        pytest.param(_ok(), UnexpectedResponseError, id="no-images"),
        pytest.param(_ok({"b64_json": "%%%"}), UnexpectedResponseError, id="bad-base64"),
        pytest.param(_ok({"size": "1x1"}), UnexpectedResponseError, id="empty-item"),
    ],
)
def test_ark_answers_map_onto_the_error_tree(answer: httpx.Response, error_type: type[ProviderError]) -> None:
    with pytest.raises(ProviderError) as caught:
        _provider(Scripted(answer)).submit(_spec(SEEDREAM_4))

    assert type(caught.value) is error_type
    assert caught.value.provider == "ark"


def test_a_rejected_parameter_is_named_and_a_rate_limit_carries_retry_after() -> None:
    with pytest.raises(UpstreamRejectedError) as rejected:
        _provider(Scripted(_error(400, "InvalidParameter", "size"))).submit(_spec(SEEDREAM_4))
    with pytest.raises(RateLimitedError) as limited:
        _provider(Scripted(_error(429, "RateLimitExceeded.EndpointIPMExceeded", headers={"retry-after": "3"}))).submit(
            _spec(SEEDREAM_4)
        )

    assert "'size'" in rejected.value.message and "InvalidParameter" in rejected.value.message
    assert limited.value.retry_after_s == 3.0


def test_a_timeout_is_transient() -> None:
    def timeout() -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    with pytest.raises(TransientProviderError):
        _provider(Scripted(timeout)).submit(_spec(SEEDREAM_4))


# -- against the emulator ----------------------------------------------------------------------------


def _run(emulator: TestClient, spec: JobSpec) -> Completed:
    submission = ARK.build(emulator, True).submit(spec)
    assert isinstance(submission, Completed)
    return submission


def _size_of(data: bytes | None) -> tuple[int, int]:
    assert data is not None
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "PNG"
        return picture.size


@pytest.mark.parametrize(
    ("model", "fields", "size"),
    [
        (SEEDREAM_3, {"aspect_ratio": "16:9"}, (1280, 720)),
        (SEEDREAM_4, {"aspect_ratio": "9:16", "size": "1K"}, (720, 1280)),
        (SEEDREAM_4_5, {}, (2048, 2048)),
        (SEEDREAM_5, {"size": "2560x1440"}, (2560, 1440)),
    ],
)
def test_the_emulator_renders_the_size_the_adapter_asked_for(
    emulator: TestClient, model: str, fields: dict[str, Any], size: tuple[int, int]
) -> None:
    images = _run(emulator, _spec(model, **fields)).images

    assert [_size_of(image.data) for image in images] == [size]


def test_reference_images_in_every_form_reach_the_emulator(emulator: TestClient) -> None:
    raw = small_png_base64(64)
    spec = _spec(SEEDREAM_4_5, image=IMAGE_URL, image_urls=[f"data:image/png;base64,{raw}"], images=[raw], n=2)

    assert len(_run(emulator, spec).images) == 2


def test_a_group_with_a_moderated_image_delivers_the_rest(emulator: TestClient) -> None:
    images = _run(emulator, _spec(SEEDREAM_4, prompt="a fox [moderated-async]", n=3, size="1K")).images

    assert len(images) == 2


def test_seedream_3_takes_seed_and_guidance_scale_upstream(emulator: TestClient) -> None:
    assert len(_run(emulator, _spec(SEEDREAM_3, seed=42, guidance_scale=7.5)).images) == 1


def test_seed_is_refused_by_seedream_4_naming_it(emulator: TestClient) -> None:
    spec = _spec(SEEDREAM_4_5)
    spec = JobSpec(spec.job_id, spec.upstream_model, spec.operation, {**spec.params, "seed": 7}, 1)

    with pytest.raises(UpstreamRejectedError) as caught:
        ARK.build(emulator, True).submit(spec)

    assert "'seed'" in caught.value.message
