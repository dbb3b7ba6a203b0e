"""Each adapter's declared facts agree with what it is and with the lists the API side keeps."""

from __future__ import annotations

import httpx
import pytest

from shared.queue import PROVIDER_NAMES
from shared.upstream_callbacks import CALLBACK_PROVIDERS
from tests.conftest import make_settings
from worker.inputs import HttpImageLoader
from worker.providers.base import Pollable
from worker.providers.registry import PROVIDERS, build_providers


def test_every_provider_the_catalog_names_is_registered_and_has_queues() -> None:
    assert set(PROVIDERS) == set(PROVIDER_NAMES)


def test_the_providers_that_call_back_are_the_ones_the_api_accepts_callbacks_for() -> None:
    assert {name for name, registration in PROVIDERS.items() if registration.facts.calls_back} == CALLBACK_PROVIDERS


@pytest.mark.parametrize("name", sorted(PROVIDER_NAMES))
def test_an_adapter_is_pollable_exactly_when_its_facts_say_it_is_asynchronous(name: str) -> None:
    loader = HttpImageLoader(httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(404))), max_bytes=1)
    adapters = build_providers(make_settings(), loader)[name]
    for adapter in adapters.values():
        assert isinstance(adapter, Pollable) == PROVIDERS[name].facts.asynchronous
        adapter.close()
