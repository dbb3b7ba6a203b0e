"""Prices: what a catalog price row says, the snapshot a job keeps, and the cost recorded when it succeeds.

A price is per delivered image or per request and may vary with one or more request parameters
(``by = ["quality", "size"]``: the row ``"high/1536x1024"``). A model whose upstream reports token usage
(OpenAI's ``usage``) also has ``usage`` rates: its recorded cost is computed from the tokens it was billed
for, and the table's price is only the estimate used for budgets before the job runs.
OpenAI bills GPT image models by tokens: https://platform.openai.com/docs/pricing
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Basis = Literal["per_image", "per_request", "usage"]

#: one million: token rates are quoted per 1M tokens
_MILLION: Final = Decimal(1_000_000)
_CENT_MICROS: Final = Decimal("0.000001")
_SIZE: Final = re.compile(r"^(\d+)x(\d+)$")
#: the size the per-area scaling starts from (the smallest GPT image size, 1024x1024)
_BASE_SIZE: Final = "1024x1024"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UsageRates(_Strict):
    """Prices per 1M tokens of each kind the upstream reports in ``usage``."""

    text_input: Decimal = Field(ge=0)
    image_input: Decimal = Field(ge=0)
    image_output: Decimal = Field(ge=0)
    text_output: Decimal = Field(default=Decimal(0), ge=0)

    def cost(self, usage: Mapping[str, Any]) -> Decimal | None:
        """The cost of an OpenAI-style ``usage`` block; None when it does not say enough to price it."""
        tokens = TokenUsage.read(usage)
        if tokens is None:
            return None
        total = (
            tokens.text_input * self.text_input
            + tokens.image_input * self.image_input
            + tokens.image_output * self.image_output
            + tokens.text_output * self.text_output
        )
        return (total / _MILLION).quantize(_CENT_MICROS, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens by kind, read from ``{input_tokens, input_tokens_details, output_tokens, output_tokens_details}``."""

    text_input: int
    image_input: int
    image_output: int
    text_output: int

    @classmethod
    def read(cls, usage: Mapping[str, Any]) -> TokenUsage | None:
        input_total, output_total = usage.get("input_tokens"), usage.get("output_tokens")
        if not _count(input_total) or not _count(output_total):
            return None
        assert isinstance(input_total, int) and isinstance(output_total, int)
        inputs = usage.get("input_tokens_details") or {}
        outputs = usage.get("output_tokens_details") or {}
        image_in = inputs.get("image_tokens", 0) if isinstance(inputs, Mapping) else 0
        text_out = outputs.get("text_tokens", 0) if isinstance(outputs, Mapping) else 0
        if not _count(image_in) or not _count(text_out):
            return None
        # without details, every input token is text and every output token an image (the GPT image default)
        return cls(
            text_input=max(input_total - image_in, 0),
            image_input=image_in,
            image_output=max(output_total - text_out, 0),
            text_output=text_out,
        )


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class Price(_Strict):
    """A price per delivered image or per request, optionally varying with request parameters.

    ``by``: the parameters whose values pick the row in ``amounts`` (values joined by ``/``); ``assume``: the
    value priced for a parameter the caller left out (the upstream's own default); ``scale_by_area``: a
    ``WIDTHxHEIGHT`` parameter whose value has no row is priced as the 1024x1024 row times its area ratio
    (e.g. gpt-image-2's custom sizes); ``usage``: token rates, for upstreams that report what they billed.
    """

    per: Literal["image", "request"]
    amount: Decimal = Field(ge=0)
    by: str | tuple[str, ...] | None = None
    amounts: dict[str, Decimal] = Field(default_factory=dict)
    assume: dict[str, str] = Field(default_factory=dict)
    scale_by_area: str | None = None
    usage: UsageRates | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        width = len(self.by_params)
        for key in self.amounts:
            if len(key.split("/")) != width:
                raise ValueError(f"amounts row {key!r} does not name one value for each of {list(self.by_params)}")
        if self.scale_by_area is not None and self.scale_by_area not in self.by_params:
            raise ValueError(f"scale_by_area {self.scale_by_area!r} is not one of by")
        return self

    @property
    def by_params(self) -> tuple[str, ...]:
        if self.by is None:
            return ()
        return (self.by,) if isinstance(self.by, str) else self.by

    def inputs(self, params: Mapping[str, object]) -> dict[str, str]:
        """The value of each ``by`` parameter this price is taken at (given, else assumed)."""
        found: dict[str, str] = {}
        for name in self.by_params:
            value = params.get(name, self.assume.get(name))
            if value is not None:
                found[name] = str(value)
        return found

    def unit_amount(self, params: Mapping[str, object]) -> Decimal:
        if not self.by_params:
            return self.amount
        inputs = self.inputs(params)
        values = [inputs.get(name, "") for name in self.by_params]
        exact = self.amounts.get("/".join(values))
        if exact is not None:
            return exact
        if self.scale_by_area is not None:
            return self._scaled(values) or self.amount
        return self.amount

    def _scaled(self, values: list[str]) -> Decimal | None:
        assert self.scale_by_area is not None
        index = self.by_params.index(self.scale_by_area)
        match = _SIZE.match(values[index])
        base_row = self.amounts.get("/".join([*values[:index], _BASE_SIZE, *values[index + 1 :]]))
        if match is None or base_row is None:
            return None
        ratio = Decimal(int(match[1]) * int(match[2])) / Decimal(1024 * 1024)
        return (base_row * ratio).quantize(_CENT_MICROS, rounding=ROUND_HALF_UP)

    def snapshot(self, params: Mapping[str, object], *, currency: str) -> PriceSnapshot:
        return PriceSnapshot(
            per=self.per,
            unit_amount=self.unit_amount(params),
            currency=currency,
            inputs=self.inputs(params),
            usage=self.usage,
        )


class PriceSnapshot(_Strict):
    """The price taken at submit time (what budgets reserve); cost is computed from it on success only."""

    per: Literal["image", "request"]
    unit_amount: Decimal
    currency: str
    #: the parameter values the unit amount was taken at (e.g. ``{"quality": "high", "size": "1536x1024"}``)
    inputs: dict[str, str] = Field(default_factory=dict)
    #: token rates: the recorded cost comes from the upstream's reported usage when it has one
    usage: UsageRates | None = None

    def cost(self, *, images_delivered: int) -> Decimal:
        return self.unit_amount if self.per == "request" else self.unit_amount * images_delivered

    def stored(self) -> dict[str, Any]:
        """What the job row keeps beside ``price_per`` / ``unit_price`` to compute and explain its cost."""
        return {"inputs": self.inputs, "usage": self.usage.model_dump(mode="json") if self.usage else None}


@dataclass(frozen=True, slots=True)
class Cost:
    """A job's cost and how it was computed."""

    amount: Decimal
    basis: Basis
    unit_price: Decimal
    quantity: int
    #: what it was computed from: the price's parameter values, and the usage when billed by tokens
    inputs: dict[str, Any]


def cost_of(
    *,
    per: str,
    unit_price: Decimal,
    images_delivered: int,
    pricing: Mapping[str, Any] | None,
    usage: Mapping[str, Any] | None,
) -> Cost:
    """The cost of a succeeded job: from reported usage at the model's token rates when both exist, else
    from the price snapshot (per image delivered, or once per request)."""
    stored = pricing or {}
    inputs: dict[str, Any] = dict(stored.get("inputs") or {})
    rates = UsageRates.model_validate(stored["usage"]) if stored.get("usage") else None
    if rates is not None and usage is not None and (billed := rates.cost(usage)) is not None:
        estimate = unit_price if per == "request" else unit_price * images_delivered
        return Cost(
            amount=billed,
            basis="usage",
            unit_price=unit_price,
            quantity=images_delivered,
            inputs={
                **inputs,
                "usage": dict(usage),
                "rates_per_million": rates.model_dump(mode="json"),
                "estimate": str(estimate),
            },
        )
    if per == "request":
        return Cost(amount=unit_price, basis="per_request", unit_price=unit_price, quantity=1, inputs=inputs)
    return Cost(
        amount=unit_price * images_delivered,
        basis="per_image",
        unit_price=unit_price,
        quantity=images_delivered,
        inputs=inputs,
    )
