"""Google Gemini image generation (nano-banana family)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import make_settings
from tests.unit.contracts import Contract, emulator_http, emulator_images
from worker.providers import ImageProvider
from worker.providers.gemini import GeminiProvider


def build(emulator: TestClient, good_credentials: bool) -> ImageProvider:
    settings = make_settings().gemini
    if not good_credentials:
        settings = settings.model_copy(update={"api_key": SecretStr("AIzaSy-wrong-key")})
    return GeminiProvider(settings, http=emulator_http(emulator, settings.base_url), images=emulator_images(emulator))


CONTRACT = Contract(
    provider="gemini",
    request={"model": "nano-banana", "aspect_ratio": "1:1", "n": 2},
    build=build,
    # gemini-2.5-flash-image has a single 1K tier: any other imageSize is refused naming the field
    refused_params={"imageSize": "4K"},
)
