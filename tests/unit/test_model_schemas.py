"""The JSON Schema of each model's parameters (``GET /v1/models``) is valid draft 2020-12 and agrees with the
catalog's own validation: what the schema refuses, ``validate_request`` refuses naming the same parameter."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from producer.http.models_routes import model_card
from shared.catalog import Availability, ParamRule, load_catalog, validate_request
from shared.catalog.schema import parameters_schema, rule_schema
from shared.errors import InvalidRequestError
from shared.jobs import ImageRequest

CATALOG = load_catalog()
#: fields of the unified request (the schema names only those a model takes)
REQUEST_FIELDS = set(ImageRequest.model_fields) | {"async"}


def _schemas() -> list[Any]:
    cases = []
    for name in CATALOG.names():
        entry = CATALOG.models[name]
        cases.append(pytest.param(name, None, id=name))
        cases.extend(pytest.param(name, variant, id=f"{name}:{variant}") for variant in entry.variants)
    return cases


def _probes(rules: dict[str, ParamRule]) -> list[tuple[str, object]]:
    """One value per rule that breaks its bound, its length or its choices."""
    probes: list[tuple[str, object]] = []
    for name, rule in rules.items():
        if rule.also:
            continue
        if rule.max is not None:
            probes.append((name, int(rule.max) + 1 if rule.type == "integer" else rule.max + 1))
        if rule.min is not None:
            probes.append((name, int(rule.min) - 1 if rule.type == "integer" else rule.min - 1))
        if rule.choices is not None:
            probes.append((name, "not-a-choice"))
        if rule.max_length is not None:
            probes.append((name, "x" * (rule.max_length + 1)))
        if rule.type == "integer":
            probes.append((name, "three"))
    return probes


@pytest.mark.parametrize(("model", "variant"), _schemas())
def test_each_models_schema_is_valid_json_schema_and_agrees_with_the_catalog(model: str, variant: str | None) -> None:
    entry = CATALOG.models[model]
    schema = parameters_schema(entry, variant)
    rules = dict(entry.params) | (entry.variants[variant].params if variant else {})

    assert jsonschema_rs.meta.is_valid(schema)
    assert set(schema["properties"]) <= REQUEST_FIELDS
    validator = jsonschema_rs.Draft202012Validator(schema)
    assert set(schema["required"]) <= set(schema["properties"])
    if entry.variant_param is not None and variant is None:
        return  # the union of the variants' rules: each variant's own schema is checked against the catalog
    for name, value in _probes(rules):
        base: dict[str, Any] = {"model": model, "prompt": "a fox"}
        if variant is not None:
            base["model_name"] = variant
        request = {**base, name: value}
        assert not validator.is_valid({key: item for key, item in request.items() if key != "model"}), (name, value)
        with pytest.raises((InvalidRequestError, ValueError)) as caught:
            validate_request(ImageRequest.model_validate(request), catalog=CATALOG)
        if isinstance(caught.value, InvalidRequestError):
            assert caught.value.param == name


def test_a_rule_becomes_its_json_schema() -> None:
    rule = ParamRule(type="integer", min=1, max=4, default=1, also=("auto",))

    assert rule_schema(rule) == {
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": 4}, {"enum": ["auto"]}],
        "default": 1,
    }
    assert rule_schema(ParamRule(type="image_list", max_items=3))["maxItems"] == 3
    assert rule_schema(ParamRule(required=True, choices=("a", "b"))) == {
        "type": "string",
        "minLength": 1,
        "enum": ["a", "b"],
    }


def test_a_model_card_keeps_openais_fields_and_adds_prices_and_parameters() -> None:
    card = model_card(CATALOG.models["gpt-image-1"], Availability(mode="emulated"))

    assert (card["id"], card["object"], card["owned_by"]) == ("gpt-image-1", "model", "openai")
    assert isinstance(card["created"], int)
    assert (card["availability"], card["available"]) == ("emulated", True)
    assert card["currency"] == "USD" and card["parameters"]["properties"]["prompt"]["type"] == "string"
    operations = [price["operation"] for price in card["prices"]]
    assert operations == [operation.name for operation in CATALOG.models["gpt-image-1"].operations]
    text2img = next(price for price in card["prices"] if price["operation"] == "text2img")
    assert text2img["per"] == "image" and text2img["when_any"] == []


def test_a_variant_models_card_has_each_variants_prices_and_parameters() -> None:
    entry = CATALOG.models["kling-image"]

    card = model_card(entry, Availability(mode="disabled", missing=("IMAGEJOBS_KLING__ACCESS_KEY",)))

    assert card["available"] is False and card["missing_settings"] == ["IMAGEJOBS_KLING__ACCESS_KEY"]
    assert set(card["variants"]) == set(entry.variants)
    v3 = card["variants"]["kling-v3"]
    assert v3["upstream_model"] == entry.variants["kling-v3"].upstream_model
    assert {price["operation"] for price in v3["prices"]} == set(entry.variants["kling-v3"].prices)
    assert v3["parameters"]["properties"]["model_name"] == {"type": "string", "enum": ["kling-v3"]}
    assert card["parameters"]["properties"]["model_name"]["enum"] == list(entry.variants)
