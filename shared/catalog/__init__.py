"""The public model catalog: a TOML data file and the pydantic models that load and check it."""

from shared.catalog.entries import (
    Catalog,
    ModelEntry,
    ParamRule,
    PollingPolicy,
    load_catalog,
)
from shared.catalog.pricing import Price, PriceSnapshot
from shared.catalog.validation import ValidatedRequest, validate_request

__all__ = [
    "Catalog",
    "ModelEntry",
    "ParamRule",
    "PollingPolicy",
    "Price",
    "PriceSnapshot",
    "ValidatedRequest",
    "load_catalog",
    "validate_request",
]
