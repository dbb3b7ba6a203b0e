"""Checking a request against its catalog entry, before any job exists."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.catalog.checks import CHECKS
from shared.catalog.entries import (
    Catalog,
    ModelEntry,
    Operation,
    ParamRule,
    PollingPolicy,
)
from shared.catalog.pricing import Price, PriceSnapshot
from shared.errors import InvalidRequestError
from shared.jobs import ImageRequest, JsonObject

_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]{16,}$")


@dataclass(frozen=True, slots=True)
class ValidatedRequest:
    """A request that passed every rule: what the job row stores."""

    model: str
    variant: str | None
    provider: str
    upstream_model: str
    operation: str
    #: parameters under their upstream names, defaults applied
    upstream_params: JsonObject
    image_count: int
    price: PriceSnapshot
    polling: PollingPolicy


def validate_request(request: ImageRequest, *, catalog: Catalog) -> ValidatedRequest:
    """Apply the model's rules; raises ``InvalidRequestError`` naming the first offending parameter."""
    entry = catalog.get(request.model)
    if entry is None:
        raise InvalidRequestError(
            f"The model '{request.model}' does not exist. Known models: {', '.join(catalog.names())}.",
            param="model",
            code="model_not_found",
        )
    availability = catalog.availability(entry)
    if availability.mode == "disabled":
        raise InvalidRequestError(
            f"The model '{entry.name}' is not available: its provider '{entry.provider}' has no credentials"
            f" configured (set {' and '.join(availability.missing)}).",
            param="model",
            code="model_not_available",
        )
    variant_name, upstream_model = _resolve_variant(entry, request.model_name)
    rules = entry.params if variant_name is None else {**entry.params, **entry.variants[variant_name].params}
    params = request.model_params()
    for name, value in params.items():
        rule = rules.get(name)
        if rule is None:
            raise InvalidRequestError(f"The parameter '{name}' is not supported by model '{entry.name}'.", param=name)
        _check_value(name, value, rule)
    for name, rule in rules.items():
        if name in params:
            continue
        if rule.required:
            raise InvalidRequestError(f"The parameter '{name}' is required for model '{entry.name}'.", param=name)
        if rule.default is not None:
            params[name] = rule.default
    for check in entry.checks:
        CHECKS[check](params)
    operation = _choose_operation(entry, params)
    price = _price_for(entry, variant_name, operation, params)
    upstream_params = {
        upstream: value for name, value in params.items() if (upstream := rules[name].upstream_name(name)) is not None
    }
    count = params.get("n", 1)
    return ValidatedRequest(
        model=entry.name,
        variant=variant_name,
        provider=entry.provider,
        upstream_model=upstream_model,
        operation=operation.name,
        upstream_params=upstream_params,
        image_count=count if isinstance(count, int) else 1,
        price=price.snapshot(params, currency=entry.currency),
        polling=entry.polling,
    )


def _resolve_variant(entry: ModelEntry, model_name: str | None) -> tuple[str | None, str]:
    if entry.variant_param is None:
        if model_name is not None:
            raise InvalidRequestError(
                f"The parameter 'model_name' is not supported by model '{entry.name}'.", param="model_name"
            )
        assert entry.upstream_model is not None  # guaranteed by ModelEntry validation
        return None, entry.upstream_model
    choices = ", ".join(entry.variants)
    if model_name is None:
        raise InvalidRequestError(
            f"The parameter 'model_name' is required for model '{entry.name}' (one of: {choices}).",
            param="model_name",
        )
    variant = entry.variants.get(model_name)
    if variant is None:
        raise InvalidRequestError(
            f"Unknown model_name '{model_name}' for model '{entry.name}' (one of: {choices}).",
            param="model_name",
        )
    return model_name, variant.upstream_model


def _check_value(name: str, value: Any, rule: ParamRule) -> None:  # noqa: C901 - one branch per rule kind
    def fail(why: str) -> InvalidRequestError:
        return InvalidRequestError(f"Invalid value for '{name}': {why}.", param=name)

    if isinstance(value, str) and value in rule.also:
        return

    if rule.type == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        raise fail("expected an integer")
    if rule.type == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise fail("expected a number")
    if rule.type in ("string", "image") and not isinstance(value, str):
        raise fail("expected a string")
    if rule.type in ("image_list", "object_list") and not isinstance(value, list):
        raise fail("expected a list")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if rule.min is not None and value < rule.min:
            raise fail(f"must be at least {_fmt(rule.min)}, got {value}")
        if rule.max is not None and value > rule.max:
            raise fail(f"must be at most {_fmt(rule.max)}, got {value}")
    if isinstance(value, str):
        if rule.required and not value:
            raise fail("must not be empty")
        if rule.max_length is not None and len(value) > rule.max_length:
            raise fail(f"at most {rule.max_length} characters, got {len(value)}")
        if rule.choices is not None and value not in rule.choices:
            raise fail(f"'{value}' is not one of {', '.join(rule.choices)}")
        if rule.type == "image" and not _looks_like_image(value):
            raise fail("expected an http(s) URL, a data URI or base64 image data")
    if isinstance(value, list) and rule.max_items is not None and len(value) > rule.max_items:
        raise fail(f"at most {rule.max_items} items, got {len(value)}")


def _looks_like_image(value: str) -> bool:
    return value.startswith(("http://", "https://", "data:image/")) or bool(_BASE64.match(value))


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _choose_operation(entry: ModelEntry, params: JsonObject) -> Operation:
    for operation in entry.operations:
        if not operation.when_any:
            return operation
        present = [name for name in operation.when_any if name in params]
        if present and sum(_image_count(params[name]) for name in present) >= operation.min_images:
            return operation
    return entry.operations[-1]  # pragma: no cover - the last operation always matches


def _image_count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 1


def _price_for(entry: ModelEntry, variant_name: str | None, operation: Operation, params: JsonObject) -> Price:
    if variant_name is None:
        assert operation.price is not None  # guaranteed by ModelEntry validation
        return operation.price
    prices = entry.variants[variant_name].prices
    price = prices.get(operation.name)
    if price is not None:
        return price
    supported = [op for op in entry.operations if op.name in prices]
    if operation.when_any:
        param = next(name for name in operation.when_any if name in params)
        message = f"The parameter '{param}' is not supported by model_name '{variant_name}'."
    else:
        param = next((name for op in supported for name in op.when_any), "model_name")
        message = f"model_name '{variant_name}' needs '{param}' (it supports: {', '.join(prices)})."
    raise InvalidRequestError(message, param=param)
