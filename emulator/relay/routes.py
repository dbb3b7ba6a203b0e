"""The relay dialect: another OpenAI-compatible gateway (``/v1/images/generations``, ``/v1/images/edits``).

It is the OpenAI dialect (emulator/openai/images.py: same parameters, answers, errors and markers) with its
own API key, its own knobs section (``relay``: latency and rates) and its own counters (``stats["relay"]``).
The OpenAI code is reused as is, seeing the shared knobs through ``RelayKnobs``, whose ``openai`` sections
are the relay's; knobs only the OpenAI section has (DALL·E's lifecycle) are shared with it.
DALL·E ``url`` results of the relay point at ``/_emulator/files/openai/…``, which only the OpenAI dialect
serves (GPT image models answer ``b64_json`` and are unaffected).
"""

from __future__ import annotations

import random

from fastapi import APIRouter

from emulator.knobs import EmulatorConfig, Knobs, Stats
from emulator.openai.images import OpenAIEmulator


class RelayKnobs(Knobs):
    """The shared knobs as the OpenAI dialect code sees them: ``config.openai`` / ``stats.openai`` are the relay's.

    All state stays in the shared knobs (so ``PUT /_emulator/config``, reset and the random source apply).
    """

    def __init__(self, shared: Knobs) -> None:  # no super().__init__(): nothing of its own to hold
        self._shared = shared

    @property
    def config(self) -> EmulatorConfig:  # type: ignore[override]  # a read-only view
        """The shared config whose ``openai`` section has the relay's knobs (OpenAI-only knobs stay OpenAI's)."""
        config = self._shared.config
        relay = {name: getattr(config.relay, name) for name in type(config.relay).model_fields}
        return config.model_copy(update={"openai": config.openai.model_copy(update=relay)})

    @property
    def stats(self) -> Stats:  # type: ignore[override]
        return Stats(openai=self._shared.stats.relay)

    @property
    def rng(self) -> random.Random:  # type: ignore[override]
        return self._shared.rng


class RelayEmulator:
    """The relay account: its key and the OpenAI-compatible routes."""

    def __init__(self, knobs: Knobs, *, api_key: str) -> None:
        self.api_key = api_key
        self._openai = OpenAIEmulator(RelayKnobs(knobs), api_key=api_key)

    def reset(self) -> None:
        self._openai.reset()

    def build_router(self) -> APIRouter:
        return self._openai.build_router()
