"""The public model catalog: TOML data files and the pydantic models that load and check them."""

from shared.catalog.entries import (
    Availability,
    Catalog,
    ModelEntry,
    ParamRule,
    PollingPolicy,
)
from shared.catalog.loading import catalog_for, load_catalog
from shared.catalog.pricing import Price, PriceSnapshot
from shared.catalog.validation import ValidatedRequest, validate_request

__all__ = [
    "Availability",
    "Catalog",
    "ModelEntry",
    "ParamRule",
    "PollingPolicy",
    "Price",
    "PriceSnapshot",
    "ValidatedRequest",
    "catalog_for",
    "load_catalog",
    "validate_request",
]
