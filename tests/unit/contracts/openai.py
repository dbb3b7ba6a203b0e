"""OpenAI Images."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import make_settings
from tests.unit.contracts import Contract, emulator_http, emulator_images
from worker.providers import ImageProvider
from worker.providers.openai_images import OpenAIImagesProvider


def build(emulator: TestClient, good_credentials: bool) -> ImageProvider:
    settings = make_settings().openai
    if not good_credentials:
        settings = settings.model_copy(update={"api_key": SecretStr("sk-wrong-key")})
    return OpenAIImagesProvider(
        settings, http=emulator_http(emulator, settings.base_url), images=emulator_images(emulator)
    )


CONTRACT = Contract(
    provider="openai",
    request={"model": "gpt-image-1", "quality": "low", "size": "1024x1024", "n": 2},
    build=build,
)
