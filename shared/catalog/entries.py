"""Catalog entries as pydantic models (loaded and checked at start-up by ``shared.catalog.loading``)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.catalog.checks import CHECKS
from shared.catalog.pricing import Price

ParamType = Literal["string", "integer", "number", "image", "image_list", "object_list"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamRule(_Strict):
    """What one parameter accepts for one model, and the upstream field it maps to."""

    type: ParamType = "string"
    required: bool = False
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    max_items: int | None = None
    choices: tuple[str, ...] | None = None
    default: str | int | float | None = None
    upstream: str | Literal[False] | None = None
    #: string values accepted besides the type's (e.g. ``"auto"`` for an integer)
    also: tuple[str, ...] = ()

    def upstream_name(self, name: str) -> str | None:
        if self.upstream is False:
            return None
        return self.upstream or name


class Operation(_Strict):
    """One kind of work a model does, chosen by which parameters are present."""

    name: str
    when_any: tuple[str, ...] = ()
    #: with ``when_any``: match only when those fields carry at least this many images in all
    min_images: int = Field(default=0, ge=0)
    price: Price | None = None


class PollingPolicy(_Strict):
    """How an async job is polled (``worker.scheduling.polling``): first poll near the early completion quantile, short
    intervals across the usual window, exponential back-off past it, capped, with jitter and a deadline.

    ``first_poll_s`` and ``usual_window_s`` are the catalog's defaults: once a model's completions are learned
    (``worker.scheduling.latency``), its p10 and p95 take their place.
    """

    #: the first poll: the model's early completion quantile (p10), seconds after the upstream accepted the task
    first_poll_s: float = Field(default=4.0, gt=0, le=300)
    #: the shortest wait between later polls (without a usual window: the first wait of a plain back-off)
    base_s: float = Field(default=2.0, gt=0, le=300)
    factor: float = Field(default=1.5, ge=1.0, le=4.0)
    max_s: float = Field(default=30.0, gt=0, le=300)
    jitter: float = Field(default=0.1, ge=0, le=0.5)
    deadline_s: float = Field(default=900.0, gt=0, le=7 * 24 * 3600)
    #: the end of the model's usual window (p95); ``None``: unknown, back off right after the first poll
    usual_window_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    #: the longest wait between polls inside the usual window (detection lag ≈ half of it)
    interval_s: float = Field(default=4.0, gt=0, le=300)


class Variant(_Strict):
    """One value of a model's variant parameter (e.g. Kling ``model_name``)."""

    upstream_model: str
    prices: dict[str, Price]
    #: rules replacing the model's for this variant (e.g. a narrower ``choices``)
    params: dict[str, ParamRule] = Field(default_factory=dict)


class ModelEntry(_Strict):
    """One public model name."""

    name: str = ""
    provider: str
    upstream_model: str | None = None
    variant_param: str | None = None
    variants: dict[str, Variant] = Field(default_factory=dict)
    currency: str
    price_source: str
    params: dict[str, ParamRule]
    operations: tuple[Operation, ...] = Field(min_length=1)
    checks: tuple[str, ...] = ()
    polling: PollingPolicy = PollingPolicy()

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.variant_param is None:
            if self.upstream_model is None:
                raise ValueError("a model without variants needs upstream_model")
            if any(op.price is None for op in self.operations):
                raise ValueError("every operation of a model without variants needs a price")
        else:
            if not self.variants:
                raise ValueError(f"variant_param {self.variant_param!r} needs variants")
            op_names = {op.name for op in self.operations}
            for value, variant in self.variants.items():
                unknown = set(variant.prices) - op_names
                if unknown:
                    raise ValueError(f"variant {value!r} prices unknown operations {sorted(unknown)}")
        if self.operations[-1].when_any:
            raise ValueError("the last operation is the default and must not have when_any")
        unknown_checks = set(self.checks) - set(CHECKS)
        if unknown_checks:
            raise ValueError(f"unknown checks {sorted(unknown_checks)}")
        for operation in self.operations:
            unknown = set(operation.when_any) - set(self.params)
            if unknown:
                raise ValueError(f"operation {operation.name!r} names fields without a rule: {sorted(unknown)}")
        return self


class Availability(_Strict):
    """Whether a provider's models can be served: ``live`` (real credentials), ``emulated`` (the emulator, an
    explicit choice) or ``disabled`` (no credentials: ``missing`` names the settings that would enable it)."""

    mode: Literal["live", "emulated", "disabled"] = "live"
    missing: tuple[str, ...] = ()


LIVE = Availability()


class Catalog(_Strict):
    """Every public model, by name, and whether each provider can serve them."""

    models: dict[str, ModelEntry]
    #: by provider; a provider not listed is live (a catalog without settings, e.g. in tools and unit tests)
    providers: dict[str, Availability] = Field(default_factory=dict)

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def names(self) -> list[str]:
        return sorted(self.models)

    def availability(self, entry: ModelEntry) -> Availability:
        return self.providers.get(entry.provider, LIVE)

    def with_providers(self, providers: dict[str, Availability]) -> Catalog:
        """This catalog as served by a process whose settings gave ``providers`` their availability."""
        return self.model_copy(update={"providers": providers})
