"""Black Forest Labs Flux: one image per task, so the contract asks for one."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import make_settings
from tests.unit.contracts import Contract, emulator_http, emulator_images
from worker.providers import ImageProvider
from worker.providers.bfl import BflProvider


def build(emulator: TestClient, good_credentials: bool) -> ImageProvider:
    settings = make_settings().bfl
    if not good_credentials:
        settings = settings.model_copy(update={"api_key": SecretStr("bfl-wrong-key")})
    return BflProvider(settings, http=emulator_http(emulator, settings.base_url), images=emulator_images(emulator))


CONTRACT = Contract(
    provider="bfl",
    request={"model": "flux-pro-1.1", "size": "1024x1024"},
    build=build,
    # width must be a multiple of 32 within 256–1440: the 422 names it
    refused_params={"width": 1000},
    # BFL reports moderation of a task and failed generations as poll statuses
    async_markers=("[moderated-async]", "[fail]"),
    polled=True,
    images_expected=1,
)
