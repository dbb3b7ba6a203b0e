"""ByteDance Ark (Seedream)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import make_settings
from tests.unit.contracts import Contract, emulator_http, emulator_images
from worker.providers import ImageProvider
from worker.providers.ark import ArkProvider


def build(emulator: TestClient, good_credentials: bool) -> ImageProvider:
    settings = make_settings().ark
    if not good_credentials:
        settings = settings.model_copy(update={"api_key": SecretStr("ark-wrong-key")})
    return ArkProvider(settings, http=emulator_http(emulator, settings.base_url), images=emulator_images(emulator))


CONTRACT = Contract(
    provider="ark",
    # Seedream 4.0: n > 1 is a group (sequential_image_generation=auto); 1024x1024 is within its pixel range.
    request={"model": "doubao-seedream-4-0-250828", "size": "1024x1024", "n": 2},
    build=build,
    # below Seedream 4.0's minimum of 1280x720 pixels
    refused_params={"size": "640x640"},
)
