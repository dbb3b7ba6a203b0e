"""The explicit provider registry: provider name → factory, and one adapter per channel (credential)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from shared.config import DEFAULT_CHANNEL, Settings
from worker.inputs import ImageLoader
from worker.providers.ark import ArkProvider
from worker.providers.base import ImageProvider
from worker.providers.bfl import BflProvider
from worker.providers.gemini import GeminiProvider
from worker.providers.kling import KlingProvider
from worker.providers.openai_images import OpenAIImagesProvider
from worker.providers.relay import RelayProvider

#: builds the adapter of one channel (``"default"``: the provider section's own credentials) from the settings and
#: the loader for caller-supplied input images
ProviderFactory = Callable[[Settings, str, ImageLoader], ImageProvider]

PROVIDERS: Final[Mapping[str, ProviderFactory]] = {
    "kling": lambda settings, channel, images: KlingProvider(settings.kling.for_channel(channel), images=images),
    "openai": lambda settings, channel, images: OpenAIImagesProvider(
        settings.openai.for_channel(channel), images=images
    ),
    "ark": lambda settings, channel, images: ArkProvider(settings.ark.for_channel(channel), images=images),
    "gemini": lambda settings, channel, images: GeminiProvider(settings.gemini.for_channel(channel), images=images),
    "bfl": lambda settings, channel, images: BflProvider(settings.bfl.for_channel(channel), images=images),
    "relay": lambda settings, channel, images: RelayProvider(settings.relay.for_channel(channel), images=images),
}


def build_providers(settings: Settings, images: ImageLoader) -> dict[str, dict[str, ImageProvider]]:
    """provider → channel → adapter, for every usable channel (each adapter holds its own HTTP connection pool)."""
    sections = settings.provider_sections()
    return {
        name: {channel: factory(settings, channel, images) for channel in sections[name].channel_names()}
        for name, factory in PROVIDERS.items()
    }


def split_default(
    adapters: Mapping[str, Mapping[str, ImageProvider]],
) -> tuple[dict[str, ImageProvider], dict[str, dict[str, ImageProvider]]]:
    """``build_providers``' answer as ``Runtime`` keeps it: the default channels' adapters, and the others."""
    default = {name: channels[DEFAULT_CHANNEL] for name, channels in adapters.items() if DEFAULT_CHANNEL in channels}
    others = {
        name: {channel: adapter for channel, adapter in channels.items() if channel != DEFAULT_CHANNEL}
        for name, channels in adapters.items()
    }
    return default, {name: channels for name, channels in others.items() if channels}
