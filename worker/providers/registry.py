"""The explicit provider registry: provider name → factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from shared.config import Settings
from worker.inputs import ImageLoader
from worker.providers.ark import ArkProvider
from worker.providers.base import ImageProvider
from worker.providers.bfl import BflProvider
from worker.providers.gemini import GeminiProvider
from worker.providers.kling import KlingProvider
from worker.providers.openai_images import OpenAIImagesProvider
from worker.providers.relay import RelayProvider

#: builds one adapter from the settings and the loader for caller-supplied input images
ProviderFactory = Callable[[Settings, ImageLoader], ImageProvider]

PROVIDERS: Final[Mapping[str, ProviderFactory]] = {
    "kling": lambda settings, images: KlingProvider(settings.kling, images=images),
    "openai": lambda settings, images: OpenAIImagesProvider(settings.openai, images=images),
    "ark": lambda settings, images: ArkProvider(settings.ark, images=images),
    "gemini": lambda settings, images: GeminiProvider(settings.gemini, images=images),
    "bfl": lambda settings, images: BflProvider(settings.bfl, images=images),
    "relay": lambda settings, images: RelayProvider(settings.relay, images=images),
}


def build_providers(settings: Settings, images: ImageLoader) -> dict[str, ImageProvider]:
    """One adapter instance per provider (each holds its own HTTP connection pool)."""
    return {name: factory(settings, images) for name, factory in PROVIDERS.items()}
