"""``GET /v1/models`` and ``GET /v1/models/{model}``: every public model in OpenAI's shape (``{object: "list",
data: [{id, object: "model", created, owned_by}]}``, so ``openai``'s ``client.models.list()`` and ``retrieve()``
work), each with our additions: whether it can be served now, its prices and a JSON Schema of its parameters.

https://platform.openai.com/docs/api-reference/models/list
https://platform.openai.com/docs/api-reference/models/retrieve
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from producer.http.auth import Owner
from producer.http.context import ApiContext, api_context
from producer.http.errors import ApiError
from shared.catalog import Availability, ModelEntry
from shared.catalog.entries import Operation
from shared.catalog.pricing import Price
from shared.catalog.schema import parameters_schema

router = APIRouter(tags=["Models"])
Context = Annotated[ApiContext, Depends(api_context)]


@router.get("/v1/models")
async def list_models(_owner: Owner, context: Context) -> dict[str, Any]:
    """Every public model: availability (``live``, ``emulated``, ``disabled``), prices and parameters."""
    catalog = context.catalog
    data = [model_card(catalog.models[name], catalog.availability(catalog.models[name])) for name in catalog.names()]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model}")
async def get_model(model: str, _owner: Owner, context: Context) -> dict[str, Any]:
    """One public model, as the list shows it; 404 naming it when there is no such model."""
    entry = context.catalog.get(model)
    if entry is None:
        raise ApiError(404, f"The model '{model}' does not exist.", param="model", code="model_not_found")
    return model_card(entry, context.catalog.availability(entry))


def model_card(entry: ModelEntry, availability: Availability) -> dict[str, Any]:
    """One model as ``GET /v1/models`` lists it."""
    card: dict[str, Any] = {
        "id": entry.name,
        "object": "model",
        "created": 0,
        "owned_by": entry.provider,
        "availability": availability.mode,
        "available": availability.mode != "disabled",
    }
    if availability.missing:
        card["missing_settings"] = list(availability.missing)
    card |= {"currency": entry.currency, "price_source": entry.price_source, "parameters": parameters_schema(entry)}
    if entry.variant_param is None:
        card["prices"] = [_price(operation, operation.price) for operation in entry.operations if operation.price]
    else:
        card["variant_param"] = entry.variant_param
        card["variants"] = {
            name: {
                "upstream_model": variant.upstream_model,
                "prices": [
                    _price(operation, variant.prices[operation.name])
                    for operation in entry.operations
                    if operation.name in variant.prices
                ],
                "parameters": parameters_schema(entry, name),
            }
            for name, variant in entry.variants.items()
        }
    return card


def _price(operation: Operation, price: Price) -> dict[str, Any]:
    """A price of one operation; ``when_any``: the fields whose presence chooses it (none: the default)."""
    return {"operation": operation.name, "when_any": list(operation.when_any), **price.model_dump(mode="json")}
