"""Completeness: every public model name the gateways list is in the catalog; every catalog entry has an adapter,
an emulator dialect and a contract; every catalog parameter is a request field."""

from __future__ import annotations

import pytest

from emulator.app import create_app
from shared.catalog import load_catalog
from shared.jobs import ImageRequest
from tests.unit.contracts import CONTRACTS
from worker.providers import PROVIDERS

#: every public model name the OpenAI-compatible gateway, the Kling image API and apimodels list (and the issue's table)
SEED_MODEL_NAMES = [
    # the OpenAI-compatible gateway's model list
    "nano-banana", "nano-banana-pro", "nano-banana-pro-2k", "nano-banana-pro-4k",
    "nano-banana-2", "nano-banana-2-2k", "nano-banana-2-4k",
    "doubao-seedream-3-0-t2i-250415", "doubao-seedream-4-0-250828", "doubao-seedream-4-5-251128",
    "doubao-seedream-5-0-260128",
    "kling-image", "kling-omni-image", "kolors-virtual-try-on-v1", "kolors-virtual-try-on-v1-5",
    "kling-image-v3", "dall-e-3",
    # the OpenAI-style Kling image API
    "kling-img-v1",
    # the apimodels price table
    "kling-v2", "kling-v2-new", "kling-v2-1", "kling-v3-image", "kling-multi-image", "kling-expand",
    "kling-image-o1",
    # the table
    "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "dall-e-2", "flux-pro-1.1", "flux-kontext-pro",
]  # fmt: skip

SEED_MODEL_NAME_VALUES = {
    "kling-image": ["kling-v1", "kling-v1-5", "kling-v2", "kling-v2-new", "kling-v2-1", "kling-v3"],
    "kling-omni-image": ["kling-image-o1", "kling-v3-omni"],
}


@pytest.mark.parametrize("name", SEED_MODEL_NAMES)
def test_every_seed_model_name_is_in_the_catalog(name: str) -> None:
    assert load_catalog().get(name) is not None, f"{name} is missing from shared/catalog/models/"


@pytest.mark.parametrize("model", sorted(SEED_MODEL_NAME_VALUES))
def test_every_seed_model_name_value_is_a_variant(model: str) -> None:
    entry = load_catalog().models[model]
    assert entry.variant_param == "model_name"
    assert set(SEED_MODEL_NAME_VALUES[model]) <= set(entry.variants)


def _emulator_prefixes() -> set[str]:
    return {path.split("/")[1] for path in create_app().openapi()["paths"]}


@pytest.mark.parametrize("name", load_catalog().names())
def test_every_catalog_entry_has_an_adapter_an_emulator_dialect_and_a_contract(name: str) -> None:
    provider = load_catalog().models[name].provider

    assert provider in PROVIDERS, f"{name}: no adapter registered for provider {provider!r}"
    assert provider in _emulator_prefixes(), f"{name}: the emulator has no /{provider}/ dialect"
    assert provider in CONTRACTS, f"{name}: no contract in tests/unit/contracts/ for {provider!r}"


@pytest.mark.parametrize("name", load_catalog().names())
def test_every_catalog_parameter_is_a_request_field(name: str) -> None:
    fields = set(ImageRequest.model_fields)
    unknown = set(load_catalog().models[name].params) - fields
    assert not unknown, f"{name}: catalog params {sorted(unknown)} are not ImageRequest fields"


def test_every_catalog_entry_names_its_price_source() -> None:
    for entry in load_catalog().models.values():
        assert len(entry.price_source) > 10, entry.name
