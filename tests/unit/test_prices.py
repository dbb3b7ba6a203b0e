"""Every row of every price table, the estimate a request reserves, and the cost a succeeded job records."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from shared.catalog import Price, load_catalog, validate_request
from shared.catalog.entries import ModelEntry
from shared.catalog.pricing import UsageRates, cost_of
from shared.jobs import ImageRequest

IMAGE_URL = "https://images.example.com/fox.png"
MILLION = Decimal(1_000_000)

# OpenAI's output image tokens per image (https://platform.openai.com/docs/guides/image-generation, "Cost and
# latency"), and each GPT image model's image output price per 1M tokens (https://platform.openai.com/docs/pricing).
OUTPUT_TOKENS = {
    ("low", "1024x1024"): 272,
    ("low", "1024x1536"): 408,
    ("low", "1536x1024"): 400,
    ("medium", "1024x1024"): 1056,
    ("medium", "1024x1536"): 1584,
    ("medium", "1536x1024"): 1568,
    ("high", "1024x1024"): 4160,
    ("high", "1024x1536"): 6240,
    ("high", "1536x1024"): 6208,
}
IMAGE_OUTPUT_PER_MILLION = {
    "gpt-image-1-mini": Decimal("8"),
    "gpt-image-1": Decimal("40"),
    "gpt-image-1.5": Decimal("32"),
    "gpt-image-2": Decimal("30"),
}


def _validate(**fields: Any) -> Any:
    return validate_request(ImageRequest.model_validate(fields), catalog=load_catalog())


def _gpt_rows() -> Iterator[Any]:
    for model, rate in IMAGE_OUTPUT_PER_MILLION.items():
        for (quality, size), tokens in OUTPUT_TOKENS.items():
            expected = Decimal(tokens) * rate / MILLION
            yield pytest.param(model, {"quality": quality, "size": size}, expected, id=f"{model}-{quality}-{size}")
        for size in ("1024x1024", "1024x1536", "1536x1024"):  # auto quality is priced as medium
            expected = Decimal(OUTPUT_TOKENS["medium", size]) * rate / MILLION
            yield pytest.param(model, {"quality": "auto", "size": size}, expected, id=f"{model}-auto-{size}")
        for quality in ("low", "medium", "high", "auto"):  # auto (or no) size: the dearer non-square estimate
            tokens = OUTPUT_TOKENS["medium" if quality == "auto" else quality, "1024x1536"]
            expected = Decimal(tokens) * rate / MILLION
            yield pytest.param(model, {"quality": quality, "size": "auto"}, expected, id=f"{model}-{quality}-auto")
            yield pytest.param(model, {"quality": quality}, expected, id=f"{model}-{quality}-no-size")
        medium_auto = Decimal(OUTPUT_TOKENS["medium", "1024x1536"]) * rate / MILLION
        yield pytest.param(model, {}, medium_auto, id=f"{model}-defaults")


@pytest.mark.parametrize(("model", "params", "expected"), list(_gpt_rows()))
@pytest.mark.parametrize("with_image", [False, True], ids=["generation", "edit"])
def test_gpt_image_price_is_the_output_tokens_of_its_quality_and_size(
    model: str, params: dict[str, str], expected: Decimal, with_image: bool
) -> None:
    extra = {"image": IMAGE_URL} if with_image else {}
    validated = _validate(model=model, prompt="a lighthouse", **params, **extra)

    assert validated.operation == ("edit" if with_image else "text2img")
    assert validated.price.per == "image"
    assert validated.price.unit_amount == expected
    assert validated.price.inputs == {"quality": "auto", "size": "auto"} | params
    assert validated.price.usage is not None


def test_non_square_gpt_images_cost_more_than_square_ones() -> None:
    square = _validate(model="gpt-image-1", prompt="x", quality="high", size="1024x1024").price.unit_amount
    for size in ("1536x1024", "1024x1536"):
        assert _validate(model="gpt-image-1", prompt="x", quality="high", size=size).price.unit_amount > square


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("2048x1152", Decimal("0.1248") * 2048 * 1152 / (1024 * 1024)),
        ("3840x2160", Decimal("0.1248") * 3840 * 2160 / (1024 * 1024)),
        ("1024x1024", Decimal("0.1248")),
    ],
)
def test_gpt_image_2_custom_sizes_are_estimated_by_area(size: str, expected: Decimal) -> None:
    validated = _validate(model="gpt-image-2", prompt="x", quality="high", size=size)

    assert validated.price.unit_amount == expected.quantize(Decimal("0.000001"))
    assert validated.upstream_params["size"] == size


@pytest.mark.parametrize(
    ("model", "params", "expected"),
    [
        ("dall-e-3", {}, "0.04"),
        ("dall-e-3", {"size": "1024x1024", "quality": "standard"}, "0.04"),
        ("dall-e-3", {"size": "1792x1024", "quality": "standard"}, "0.08"),
        ("dall-e-3", {"size": "1024x1792", "quality": "standard"}, "0.08"),
        ("dall-e-3", {"size": "1024x1024", "quality": "hd"}, "0.08"),
        ("dall-e-3", {"size": "1792x1024", "quality": "hd"}, "0.12"),
        ("dall-e-3", {"size": "1024x1792", "quality": "hd"}, "0.12"),
        ("dall-e-2", {"size": "256x256"}, "0.016"),
        ("dall-e-2", {"size": "512x512"}, "0.018"),
        ("dall-e-2", {"size": "1024x1024"}, "0.020"),
        ("dall-e-2", {"size": "256x256", "image": IMAGE_URL}, "0.016"),
        ("dall-e-2", {"size": "512x512", "image": IMAGE_URL}, "0.018"),
        ("dall-e-2", {"size": "1024x1024", "image": IMAGE_URL}, "0.020"),
        ("nano-banana", {}, "0.039"),
        ("nano-banana", {"image": IMAGE_URL}, "0.039"),
        ("nano-banana-pro", {"resolution": "1K"}, "0.134"),
        ("nano-banana-pro", {"resolution": "2K"}, "0.134"),
        ("nano-banana-pro", {"resolution": "4K"}, "0.24"),
        ("nano-banana-pro-2k", {}, "0.134"),
        ("nano-banana-pro-4k", {}, "0.24"),
        ("nano-banana-2", {"resolution": "512"}, "0.045"),
        ("nano-banana-2", {"resolution": "1K"}, "0.067"),
        ("nano-banana-2", {"resolution": "2K"}, "0.101"),
        ("nano-banana-2", {"resolution": "4K"}, "0.151"),
        ("nano-banana-2-2k", {}, "0.101"),
        ("nano-banana-2-4k", {}, "0.151"),
        ("kling-omni-image", {"model_name": "kling-v3-omni", "resolution": "1k"}, "0.151"),
        ("kling-omni-image", {"model_name": "kling-v3-omni", "resolution": "2k"}, "0.151"),
        ("kling-omni-image", {"model_name": "kling-v3-omni", "resolution": "4k"}, "0.302"),
        ("kling-omni-image", {"model_name": "kling-image-o1", "resolution": "2k"}, "1.80"),
    ],
)
def test_price_by_tier(model: str, params: dict[str, str], expected: str) -> None:
    validated = _validate(model=model, prompt="a fox", **params)

    assert validated.price.unit_amount == Decimal(expected)
    assert validated.price.usage is None  # these upstreams report no token usage: the table is the bill


@pytest.mark.parametrize(
    ("model", "per", "expected"),
    [("doubao-seedream-4-5-251128", "request", "0.06"), ("doubao-seedream-5-0-260128", "request", "0.05")],
)
def test_per_request_prices_as_the_seed_says(model: str, per: str, expected: str) -> None:
    validated = _validate(model=model, prompt="a fox", n=1)

    assert (validated.price.per, validated.price.unit_amount) == (per, Decimal(expected))


def _table_rows() -> Iterator[Any]:
    """(model, model_name, operation, price, row) for every row of every table in the shipped catalog."""
    for name, entry in load_catalog().models.items():
        priced: list[tuple[str | None, str, Price]] = [
            (None, op.name, op.price) for op in entry.operations if op.price is not None
        ]
        for value, variant in entry.variants.items():
            priced.extend((value, op_name, price) for op_name, price in variant.prices.items())
        for variant_name, op_name, price in priced:
            rules = {**entry.params, **(entry.variants[variant_name].params if variant_name else {})}
            for row in price.amounts or {"": price.amount}:
                if not _reachable(rules, price, row):
                    continue  # an alias narrowing a parameter (nano-banana-pro-4k) inherits rows it cannot take
                yield pytest.param(
                    name, variant_name, op_name, price, row, id=f"{name}-{variant_name or ''}-{op_name}-{row}"
                )


def _sample(kind: str, name: str) -> Any:
    if kind == "object_list":
        return [{"subject_image": IMAGE_URL}, {"subject_image": IMAGE_URL}]
    if kind == "number":
        return 0.25
    return IMAGE_URL if kind in ("image", "string") else [IMAGE_URL]


def _reachable(rules: dict[str, Any], price: Price, row: str) -> bool:
    values = dict(zip(price.by_params, row.split("/"), strict=True)) if row else {}
    return all(rules[name].choices is None or value in rules[name].choices for name, value in values.items())


def _request_for(entry: ModelEntry, variant: str | None, operation: str, price: Price, row: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"model": entry.name, "prompt": "a fox in the snow"}
    if variant is not None:
        fields["model_name"] = variant
    op = next(op for op in entry.operations if op.name == operation)
    rules = {**entry.params, **(entry.variants[variant].params if variant else {})}
    for name, rule in rules.items():
        if rule.required and name not in fields:
            fields[name] = _sample(rule.type, name)
    expands = any(name.endswith("_expansion_ratio") for name in (*op.when_any, *fields))
    if "input_image_required" in entry.checks or expands:
        fields.setdefault("image", IMAGE_URL)
    if op.when_any:
        field = op.when_any[0]
        rule = entry.params[field]
        if rule.type == "image_list":
            fields[field] = [IMAGE_URL] * max(op.min_images, 2 if operation == "multi-img" else 1)
        else:
            fields.setdefault(field, _sample(rule.type, field))
    if row:
        fields.update(dict(zip(price.by_params, row.split("/"), strict=True)))
    return fields


@pytest.mark.parametrize(("model", "variant", "operation", "price", "row"), list(_table_rows()))
def test_every_price_row_is_what_a_request_for_it_reserves(
    model: str, variant: str | None, operation: str, price: Price, row: str
) -> None:
    entry = load_catalog().models[model]
    fields = _request_for(entry, variant, operation, price, row)
    try:
        validated = _validate(**fields)
    except Exception as exc:  # a row no request can reach is a defect of the table
        pytest.fail(f"{fields} refused: {exc}")

    assert validated.operation == operation
    assert validated.price.unit_amount == (price.amounts[row] if row else price.amount)
    assert validated.price.currency == entry.currency


# -- the recorded cost -------------------------------------------------------------------------------------------

GPT_IMAGE_1 = UsageRates(text_input=Decimal("5"), image_input=Decimal("10"), image_output=Decimal("40"))
USAGE = {
    "input_tokens": 50,
    "input_tokens_details": {"image_tokens": 40, "text_tokens": 10},
    "output_tokens": 4160,
    "output_tokens_details": {"image_tokens": 4160, "text_tokens": 0},
    "total_tokens": 4210,
}


def test_usage_is_priced_by_token_kind() -> None:
    # 10 text in × $5 + 40 image in × $10 + 4160 image out × $40, per 1M
    assert GPT_IMAGE_1.cost(USAGE) == Decimal("0.16685")


def test_usage_without_details_counts_inputs_as_text_and_outputs_as_images() -> None:
    assert GPT_IMAGE_1.cost({"input_tokens": 100, "output_tokens": 1000}) == Decimal("0.0405")


@pytest.mark.parametrize(
    "usage", [{}, {"input_tokens": "10", "output_tokens": 5}, {"input_tokens": -1, "output_tokens": 5}]
)
def test_usage_that_says_too_little_is_not_priced(usage: dict[str, Any]) -> None:
    assert GPT_IMAGE_1.cost(usage) is None


def test_cost_from_usage_keeps_the_estimate_and_the_inputs() -> None:
    pricing = {"inputs": {"quality": "high", "size": "1024x1024"}, "usage": GPT_IMAGE_1.model_dump(mode="json")}

    cost = cost_of(per="image", unit_price=Decimal("0.1664"), images_delivered=1, pricing=pricing, usage=USAGE)

    assert (cost.basis, cost.amount, cost.quantity) == ("usage", Decimal("0.16685"), 1)
    assert cost.inputs["quality"] == "high" and cost.inputs["usage"] == USAGE
    assert cost.inputs["estimate"] == "0.1664"


@pytest.mark.parametrize(
    ("per", "pricing", "usage", "basis", "amount", "quantity"),
    [
        ("image", None, None, "per_image", "0.228", 3),
        ("request", None, None, "per_request", "0.076", 1),
        ("image", {"inputs": {}, "usage": None}, USAGE, "per_image", "0.228", 3),  # no rates: the table's price
        ("image", {"inputs": {}, "usage": GPT_IMAGE_1.model_dump(mode="json")}, None, "per_image", "0.228", 3),
    ],
)
def test_cost_without_usage_is_the_price_snapshot(
    per: str, pricing: dict[str, Any] | None, usage: dict[str, Any] | None, basis: str, amount: str, quantity: int
) -> None:
    cost = cost_of(per=per, unit_price=Decimal("0.076"), images_delivered=3, pricing=pricing, usage=usage)

    assert (cost.basis, cost.amount, cost.quantity) == (basis, Decimal(amount), quantity)
