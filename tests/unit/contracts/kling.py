"""Kling image generation."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import make_settings
from tests.unit.contracts import Contract, emulator_http, emulator_images
from worker.providers import ImageProvider
from worker.providers.kling import KlingProvider


def build(emulator: TestClient, good_credentials: bool) -> ImageProvider:
    settings = make_settings().kling
    if not good_credentials:
        settings = settings.model_copy(
            update={"access_key": SecretStr("wrong-ak"), "secret_key": SecretStr("wrong-secret-key-" + "x" * 20)}
        )
    return KlingProvider(settings, http=emulator_http(emulator, settings.base_url), images=emulator_images(emulator))


CONTRACT = Contract(
    provider="kling",
    request={"model": "kling-image", "model_name": "kling-v2-1", "aspect_ratio": "1:1", "n": 2},
    build=build,
    async_markers=("[moderated-async]", "[fail]"),
    polled=True,
)
