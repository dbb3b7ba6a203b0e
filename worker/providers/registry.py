"""The explicit provider registry: provider name → factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from shared.config import Settings
from worker.providers.base import ImageProvider
from worker.providers.kling import KlingProvider
from worker.providers.openai_images import OpenAIImagesProvider

ProviderFactory = Callable[[Settings], ImageProvider]

PROVIDERS: Final[Mapping[str, ProviderFactory]] = {
    "kling": lambda settings: KlingProvider(settings.kling),
    "openai": lambda settings: OpenAIImagesProvider(settings.openai),
}


def build_providers(settings: Settings) -> dict[str, ImageProvider]:
    """One adapter instance per provider (each holds its own HTTP connection pool)."""
    return {name: factory(settings) for name, factory in PROVIDERS.items()}
