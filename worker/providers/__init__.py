"""Upstream adapters: one module per upstream API behind the ``ImageProvider`` protocol."""

from worker.providers.base import (
    Accepted,
    Completed,
    ImageProvider,
    JobSpec,
    Pollable,
    PollResult,
    ProviderFacts,
    ResultImage,
    UpstreamState,
)
from worker.providers.registry import PROVIDERS, build_providers

__all__ = [
    "PROVIDERS",
    "Accepted",
    "Completed",
    "ImageProvider",
    "JobSpec",
    "PollResult",
    "Pollable",
    "ProviderFacts",
    "ResultImage",
    "UpstreamState",
    "build_providers",
]
