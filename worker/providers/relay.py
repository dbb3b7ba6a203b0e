"""The relay: another OpenAI-compatible gateway (``settings.relay``: base URL and key) that models can be routed to.

It speaks the OpenAI Images API, so the OpenAI adapter does the work (generations, multipart edits, answers,
error mapping) pointed at the relay; errors are reported as the relay's. DALL·E names are passed through
unchanged (the relay decides what serves them), asking for ``b64_json``.
"""

from __future__ import annotations

import httpx

from shared.config import OpenAISettings, RelaySettings
from shared.errors import ProviderError
from worker.inputs import ImageLoader
from worker.providers import openai_images
from worker.providers.base import JobSpec, ProviderFacts, Submission

NAME = "relay"
FACTS = ProviderFacts(name=NAME, asynchronous=False)


class RelayProvider:
    """OpenAI Images requests to an OpenAI-compatible gateway."""

    name = NAME

    def __init__(
        self, settings: RelaySettings, *, http: httpx.Client | None = None, images: ImageLoader | None = None
    ) -> None:
        assert settings.base_url and settings.api_key  # filled by Settings
        as_openai = OpenAISettings(
            base_url=settings.base_url, api_key=settings.api_key, timeout_s=settings.timeout_s, dalle_replacement=""
        )
        self._openai = openai_images.OpenAIImagesProvider(as_openai, http=http, images=images)

    def submit(self, spec: JobSpec) -> Submission:
        try:
            return self._openai.submit(spec)
        except ProviderError as exc:
            _as_relay(exc)
            raise

    def close(self) -> None:
        self._openai.close()


def _as_relay(error: ProviderError) -> None:
    """An error the OpenAI adapter raised, relabelled as the relay's (input-image errors stay the caller's)."""
    if error.provider != openai_images.NAME:
        return
    error.provider = NAME
    if error.message.startswith("OpenAI"):
        error.message = "relay" + error.message.removeprefix("OpenAI")
    else:
        error.message = f"relay: {error.message}"
    error.args = (error.message,)
