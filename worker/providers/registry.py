"""The explicit provider registry: each upstream's facts and the factory of its adapters (one per channel).

An adapter module declares its ``FACTS`` (``base.ProviderFacts``) next to its adapter class; this module only lists
the modules. ``register`` adds one more (a test's toy upstream, a plug-in).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from shared.config import DEFAULT_CHANNEL, ProviderSettings, Settings
from worker.inputs import ImageLoader
from worker.providers import ark, bfl, gemini, kling, openai_images, relay
from worker.providers.base import ImageProvider, ProviderFacts

#: builds the adapter of one channel (``"default"``: the provider section's own credentials) from the settings and
#: the loader for caller-supplied input images
ProviderFactory = Callable[[Settings, str, ImageLoader], ImageProvider]


@dataclass(frozen=True, slots=True)
class Registration:
    facts: ProviderFacts
    factory: ProviderFactory


_REGISTRY: dict[str, Registration] = {}


def register(facts: ProviderFacts, factory: ProviderFactory) -> None:
    """Make ``facts.name`` a provider: its adapters are built by ``factory``, its rules come from ``facts``."""
    _REGISTRY[facts.name] = Registration(facts, factory)


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


#: provider name → its registration (a live, read-only view)
PROVIDERS: Final[Mapping[str, Registration]] = _REGISTRY


#: what an unknown provider name gets (a job from before a provider was removed): one slot, one request
_UNKNOWN: Final = ProviderFacts(name="unknown", asynchronous=False)


def section_of(settings: Settings, name: str) -> ProviderSettings:
    """The provider's settings section: its own (``ProviderFacts.section``) or the one ``Settings`` holds."""
    section = facts_of(name).section
    return section(settings) if section is not None else settings.provider_sections()[name]


def facts_of(name: str) -> ProviderFacts:
    registration = _REGISTRY.get(name)
    return registration.facts if registration is not None else _UNKNOWN


register(kling.FACTS, lambda settings, channel, images: kling.KlingProvider(settings.kling.for_channel(channel),
                                                                             images=images))  # fmt: skip
register(
    openai_images.FACTS,
    lambda settings, channel, images: openai_images.OpenAIImagesProvider(
        settings.openai.for_channel(channel), images=images
    ),
)
register(ark.FACTS, lambda settings, channel, images: ark.ArkProvider(settings.ark.for_channel(channel), images=images))
register(gemini.FACTS, lambda settings, channel, images: gemini.GeminiProvider(settings.gemini.for_channel(channel),
                                                                                images=images))  # fmt: skip
register(bfl.FACTS, lambda settings, channel, images: bfl.BflProvider(settings.bfl.for_channel(channel), images=images))
register(relay.FACTS, lambda settings, channel, images: relay.RelayProvider(settings.relay.for_channel(channel),
                                                                             images=images))  # fmt: skip


def build_providers(settings: Settings, images: ImageLoader) -> dict[str, dict[str, ImageProvider]]:
    """provider → channel → adapter, for every usable channel (each adapter holds its own HTTP connection pool)."""
    return {
        name: {
            channel: registration.factory(settings, channel, images)
            for channel in section_of(settings, name).channel_names()
        }
        for name, registration in _REGISTRY.items()
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
