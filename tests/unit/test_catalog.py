"""The shipped model catalog: it loads, it is complete, and ``validate_request`` names the right parameter."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from shared.catalog import PriceSnapshot, ValidatedRequest, load_catalog, validate_request
from shared.catalog.loading import parse_catalog
from shared.errors import ConfigurationError, InvalidRequestError
from shared.jobs import ImageRequest
from worker.providers import PROVIDERS

KLING: dict[str, Any] = {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a red fox in snow"}
GPT: dict[str, Any] = {"model": "gpt-image-1", "prompt": "a lighthouse at dusk"}
IMAGE_URL = "https://images.example.com/fox.png"


def _validate(**fields: Any) -> ValidatedRequest:
    return validate_request(ImageRequest.model_validate(fields), catalog=load_catalog())


def _rejection(**fields: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        _validate(**fields)
    return caught.value


# -- the catalog itself ------------------------------------------------------------------------------


def test_shipped_catalog_loads_with_the_public_models() -> None:
    catalog = load_catalog()

    assert {"gpt-image-1", "kling-image"} <= set(catalog.names())  # every provider file adds its own
    for name, entry in catalog.models.items():
        assert entry.name == name


@pytest.mark.parametrize("model", load_catalog().names())
def test_every_models_provider_has_an_adapter(model: str) -> None:
    assert load_catalog().models[model].provider in PROVIDERS


def test_every_adapter_serves_at_least_one_model() -> None:
    assert {entry.provider for entry in load_catalog().models.values()} == set(PROVIDERS)


@pytest.mark.parametrize("model", load_catalog().names())
def test_every_models_polling_fits_in_one_countdown(model: str) -> None:
    polling = load_catalog().models[model].polling

    assert polling.first_poll_s * (1 + polling.jitter) <= 300
    assert polling.max_s * (1 + polling.jitter) <= 300
    assert polling.first_poll_s < polling.deadline_s


def test_every_kling_variant_prices_a_known_operation() -> None:
    entry = load_catalog().models["kling-image"]
    operations = {operation.name for operation in entry.operations}

    assert set(entry.variants) == {"kling-v1", "kling-v1-5", "kling-v2", "kling-v2-new", "kling-v2-1", "kling-v3"}
    for variant in entry.variants.values():
        assert variant.prices
        assert set(variant.prices) <= operations


_GOOD_TOML = """
[models."m"]
provider = "openai"
upstream_model = "m-1"
currency = "USD"
price_source = "test"
params = { prompt = { type = "string", required = true } }
operations = [{ name = "text2img", price = { per = "image", amount = "0.01" } }]
"""


def test_parse_catalog_accepts_a_minimal_entry() -> None:
    catalog = parse_catalog(_GOOD_TOML)

    assert catalog.names() == ["m"]
    assert catalog.models["m"].name == "m"


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(_GOOD_TOML.replace('upstream_model = "m-1"\n', ""), id="no-upstream-model"),
        pytest.param(_GOOD_TOML.replace('per = "image"', 'per = "pixel"'), id="unknown-price-unit"),
        pytest.param(_GOOD_TOML.replace('type = "string"', 'type = "colour"'), id="unknown-param-type"),
        pytest.param(_GOOD_TOML.replace('price_source = "test"', 'price_source = "test"\ncolour = "red"'), id="extra"),
        pytest.param(_GOOD_TOML.replace('name = "text2img"', 'name = "t", when_any = ["image"]'), id="no-default-op"),
        pytest.param(_GOOD_TOML.replace('amount = "0.01"', 'amount = "-1"'), id="negative-price"),
    ],
)
def test_parse_catalog_rejects_a_broken_entry_naming_it(broken: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid model catalog") as caught:
        parse_catalog(broken)
    assert "models.m" in str(caught.value)


def test_parse_catalog_rejects_broken_toml_syntax() -> None:
    with pytest.raises(ConfigurationError, match="invalid model catalog"):
        parse_catalog('[models."m"\nprovider = ')


def test_parse_catalog_rejects_a_variant_pricing_an_unknown_operation() -> None:
    toml = """
[models."v"]
provider = "kling"
variant_param = "model_name"
currency = "credits"
price_source = "test"
params = { prompt = { type = "string" } }
operations = [{ name = "text2img" }]
variants = { "v1" = { upstream_model = "v1", prices = { img2img = { per = "image", amount = "1" } } } }
"""
    with pytest.raises(ConfigurationError, match="img2img"):
        parse_catalog(toml)


# -- 400 cases: each names the offending parameter ----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        pytest.param({"model": "kling-image", "model_name": "kling-v2-1"}, "prompt", id="missing-prompt"),
        pytest.param({**KLING, "prompt": ""}, "prompt", id="empty-prompt"),
        pytest.param({**KLING, "prompt": "x" * 2501}, "prompt", id="prompt-too-long"),
        pytest.param({**KLING, "n": 10}, "n", id="n-above-max"),
        pytest.param({**KLING, "n": 0}, "n", id="n-below-min"),
        pytest.param({**GPT, "n": 11}, "n", id="gpt-n-above-max"),
        pytest.param({**KLING, "aspect_ratio": "5:4"}, "aspect_ratio", id="bad-aspect-ratio"),
        pytest.param({**KLING, "model_name": "kling-v9"}, "model_name", id="unknown-model-name"),
        pytest.param({k: v for k, v in KLING.items() if k != "model_name"}, "model_name", id="missing-model-name"),
        pytest.param({**GPT, "model_name": "kling-v2-1"}, "model_name", id="model-name-on-gpt"),
        pytest.param({**KLING, "style": "vivid"}, "style", id="style-on-kling"),
        pytest.param({**KLING, "quality": "high"}, "quality", id="quality-on-kling"),
        pytest.param({**GPT, "aspect_ratio": "1:1"}, "aspect_ratio", id="aspect-ratio-on-gpt"),
        pytest.param({**KLING, "image_fidelity": 1.5}, "image_fidelity", id="image-fidelity-above-1"),
        pytest.param({**KLING, "image": "not an image"}, "image", id="image-not-url-or-base64"),
        pytest.param({**KLING, "model_name": "kling-v2-new"}, "image", id="v2-new-needs-image"),
        pytest.param({**GPT, "quality": "ultra"}, "quality", id="unknown-quality"),
        pytest.param({**GPT, "size": "512x512"}, "size", id="unsupported-size"),
    ],
)
def test_invalid_request_names_the_offending_param(fields: dict[str, Any], param: str) -> None:
    error = _rejection(**fields)

    assert error.param == param
    assert error.code == "invalid_parameter"
    assert param in error.message


def test_unknown_model_is_model_not_found_and_lists_the_known_models() -> None:
    error = _rejection(model="dall-e-9", prompt="x")

    assert (error.param, error.code) == ("model", "model_not_found")
    assert "gpt-image-1" in error.message
    assert "kling-image" in error.message


# -- happy paths -------------------------------------------------------------------------------------


def test_kling_text_to_image_uses_the_variant_and_its_text2img_price() -> None:
    validated = _validate(**KLING)

    assert (validated.model, validated.variant, validated.provider) == ("kling-image", "kling-v2-1", "kling")
    assert (validated.upstream_model, validated.operation) == ("kling-v2-1", "text2img")
    assert validated.price == PriceSnapshot(per="image", unit_amount=Decimal("0.076"), currency="credits")
    assert validated.polling == load_catalog().models["kling-image"].polling


def test_kling_with_an_image_is_img2img_at_the_img2img_price() -> None:
    validated = _validate(**KLING, image=IMAGE_URL)

    assert validated.operation == "img2img"
    assert validated.price.unit_amount == Decimal("0.151")
    assert validated.upstream_params["image"] == IMAGE_URL


def test_kling_v2_new_with_an_image_is_accepted() -> None:
    validated = _validate(**{**KLING, "model_name": "kling-v2-new"}, image="data:image/png;base64,iVBORw0KGgo=")

    assert (validated.upstream_model, validated.operation) == ("kling-v2-new", "img2img")


def test_gpt_image_price_depends_on_quality_and_size() -> None:
    validated = _validate(**GPT, quality="high", size="1024x1024")

    assert validated.price == PriceSnapshot(
        per="image",
        unit_amount=Decimal("0.1664"),
        currency="USD",
        inputs={"quality": "high", "size": "1024x1024"},
        usage=validated.price.usage,
    )
    assert validated.price.usage is not None  # the recorded cost comes from the answer's usage
    assert (validated.variant, validated.upstream_model, validated.provider) == (None, "gpt-image-1", "openai")


def test_n_defaults_to_one() -> None:
    validated = _validate(**KLING)

    assert validated.image_count == 1
    assert validated.upstream_params["n"] == 1


def test_n_is_the_image_count() -> None:
    validated = _validate(**GPT, n=4)

    assert validated.image_count == 4
    assert validated.upstream_params["n"] == 4


def test_upstream_params_carry_the_model_params_only() -> None:
    validated = _validate(
        **KLING,
        aspect_ratio="1:1",
        negative_prompt="blurry",
        callback_url="https://hooks.example.com/x",
        external_task_id="mine-1",
        response_format="url",
        user="u-1",
    )

    assert validated.upstream_params == {
        "prompt": "a red fox in snow",
        "negative_prompt": "blurry",
        "aspect_ratio": "1:1",
        "n": 1,
    }


def test_request_strings_are_stripped() -> None:
    assert _validate(**{**KLING, "prompt": "  a fox  "}).upstream_params["prompt"] == "a fox"


@pytest.mark.parametrize(
    ("per", "delivered", "expected"),
    [("image", 3, "0.228"), ("image", 0, "0"), ("request", 3, "0.076"), ("request", 1, "0.076")],
)
def test_price_snapshot_cost(per: str, delivered: int, expected: str) -> None:
    snapshot = PriceSnapshot.model_validate({"per": per, "unit_amount": "0.076", "currency": "credits"})

    assert snapshot.cost(images_delivered=delivered) == Decimal(expected)
