"""The relay: an OpenAI-compatible gateway, driven by the OpenAI adapter."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import make_settings
from tests.unit.contracts import Contract, emulator_http, emulator_images
from worker.providers import ImageProvider
from worker.providers.relay import RelayProvider


def build(emulator: TestClient, good_credentials: bool) -> ImageProvider:
    settings = make_settings().relay
    if not good_credentials:
        settings = settings.model_copy(update={"api_key": SecretStr("sk-relay-wrong-key")})
    return RelayProvider(settings, http=emulator_http(emulator, settings.base_url), images=emulator_images(emulator))


CONTRACT = Contract(
    provider="relay",
    request={"model": "relay-gpt-image-1", "quality": "low", "size": "1024x1024", "n": 2},
    build=build,
)
