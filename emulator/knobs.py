"""Scenario knobs: latency distributions, fault rates, call counters and the ``/_emulator/*`` routes.

``PUT /_emulator/config`` deep-merges a partial JSON object into the current config; a ``latency``
object that names a ``kind`` replaces the previous latency object as a whole.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
_Z95 = 1.645  # the standard normal's 95th percentile


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FixedLatency(_Strict):
    kind: Literal["fixed"] = "fixed"
    value_s: Seconds = 0.0


class UniformLatency(_Strict):
    kind: Literal["uniform"] = "uniform"
    low_s: Seconds
    high_s: Seconds

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.low_s > self.high_s:
            raise ValueError("low_s must not exceed high_s")
        return self


class LognormalLatency(_Strict):
    kind: Literal["lognormal"] = "lognormal"
    median_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    p95_s: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.p95_s < self.median_s:
            raise ValueError("p95_s must not be below median_s")
        return self


Latency = Annotated[FixedLatency | UniformLatency | LognormalLatency, Field(discriminator="kind")]


class ProviderKnobs(_Strict):
    """Per-provider behaviour. Rates are probabilities per submit (failure_rate: per generation)."""

    latency: Latency
    failure_rate: Rate = 0.0
    rate_limit_rate: Rate = 0.0
    error_rate: Rate = 0.0


class CallbackKnobs(_Strict):
    """Callbacks to a task's ``callback_url`` / ``webhook_url``: on or off, lost or doubled, late."""

    enabled: bool = True
    #: probability that one callback is never sent
    drop_rate: Rate = 0.0
    #: probability that one callback is sent twice
    duplicate_rate: Rate = 0.0
    #: how long after the status change a callback leaves
    delay_s: Seconds = 0.0


class KlingKnobs(ProviderKnobs):
    """Kling also has an account concurrency limit (``None``: unlimited); image tasks hold ``n`` slots."""

    concurrency_limit: Annotated[int, Field(ge=1)] | None = None
    callbacks: CallbackKnobs = CallbackKnobs()


class BflKnobs(ProviderKnobs):
    """BFL also has an account limit of in-flight tasks (24 by default; ``None``: unlimited)."""

    concurrency_limit: Annotated[int, Field(ge=1)] | None = 24
    callbacks: CallbackKnobs = CallbackKnobs()


class OpenAIKnobs(ProviderKnobs):
    """OpenAI also has DALL·E's lifecycle: retired (``model_not_found``, the default) or still served."""

    dalle_retired: bool = True


class EmulatorConfig(_Strict):
    kling: KlingKnobs = KlingKnobs(latency=UniformLatency(low_s=2.0, high_s=4.0))
    openai: OpenAIKnobs = OpenAIKnobs(latency=UniformLatency(low_s=0.5, high_s=1.5))
    gemini: ProviderKnobs = ProviderKnobs(latency=UniformLatency(low_s=0.5, high_s=1.5))
    ark: ProviderKnobs = ProviderKnobs(latency=UniformLatency(low_s=0.5, high_s=1.5))
    bfl: BflKnobs = BflKnobs(latency=UniformLatency(low_s=2.0, high_s=4.0))
    relay: ProviderKnobs = ProviderKnobs(latency=UniformLatency(low_s=0.5, high_s=1.5))
    image_long_side: Annotated[int, Field(ge=16, le=4096)] = 256
    status_latency_s: Seconds = 0.0


def sample_latency(latency: FixedLatency | UniformLatency | LognormalLatency, rng: random.Random) -> float:
    """Draw one generation time in seconds."""
    match latency:
        case FixedLatency():
            return latency.value_s
        case UniformLatency():
            return rng.uniform(latency.low_s, latency.high_s)
        case LognormalLatency():
            sigma = math.log(latency.p95_s / latency.median_s) / _Z95
            return rng.lognormvariate(math.log(latency.median_s), sigma)


def merge_patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``patch`` into a copy of ``base``; a dict carrying ``kind`` replaces wholesale."""
    merged = dict(base)
    for key, value in patch.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and "kind" not in value:
            merged[key] = merge_patch(old, value)
        else:
            merged[key] = value
    return merged


@dataclass(slots=True)
class KlingStats:
    submits: int = 0
    queries: int = 0
    rejected: int = 0


@dataclass(slots=True)
class LoadStats:
    """Kling's account load as the upstream sees it: image slots in flight (at the last request, and the peak after
    any submit), submits refused over the concurrency limit (1303), and the most API requests within 1 s."""

    in_flight_slots: int = 0
    peak_in_flight_slots: int = 0
    concurrency_rejected: int = 0
    peak_requests_per_s: int = 0


@dataclass(slots=True)
class OpenAIStats:
    requests: int = 0
    rejected: int = 0


@dataclass(slots=True)
class CallbackStats:
    """Callbacks (both dialects): ``sent`` got a 2xx answer; ``failed`` did not (or never connected)."""

    scheduled: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    duplicated: int = 0


@dataclass(slots=True)
class Stats:
    kling: KlingStats = field(default_factory=KlingStats)
    openai: OpenAIStats = field(default_factory=OpenAIStats)
    #: sync dialects count ``requests``; async ones (BFL) count ``submits`` and ``queries``
    gemini: OpenAIStats = field(default_factory=OpenAIStats)
    ark: OpenAIStats = field(default_factory=OpenAIStats)
    bfl: KlingStats = field(default_factory=KlingStats)
    relay: OpenAIStats = field(default_factory=OpenAIStats)
    callbacks: CallbackStats = field(default_factory=CallbackStats)
    kling_load: LoadStats = field(default_factory=LoadStats)


class Knobs:
    """The live config, call counters and random source shared by the dialects."""

    def __init__(self, *, seed: int | None = None) -> None:
        self.config = EmulatorConfig()
        self.stats = Stats()
        self.rng = random.Random(seed)

    def update(self, patch: dict[str, Any]) -> EmulatorConfig:
        """Apply a partial config; raises ``ValidationError`` and keeps the old config on bad input."""
        merged = merge_patch(self.config.model_dump(mode="json"), patch)
        self.config = EmulatorConfig.model_validate(merged)
        return self.config

    def reset(self) -> None:
        self.config = EmulatorConfig()
        self.stats = Stats()

    def chance(self, probability: float) -> bool:
        return probability > 0.0 and self.rng.random() < probability


def _invalid(detail: Any) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=422)


def build_knobs_router(knobs: Knobs, on_reset: Callable[[], None]) -> APIRouter:
    """``/_emulator/config``, ``/_emulator/reset``, ``/_emulator/stats`` and ``/_emulator/health``."""
    router = APIRouter(prefix="/_emulator", tags=["emulator"])

    @router.get("/config")
    async def get_config() -> JSONResponse:
        return JSONResponse(knobs.config.model_dump(mode="json"))

    @router.put("/config")
    async def put_config(request: Request) -> JSONResponse:
        try:
            patch = json.loads(await request.body())
        except ValueError:
            return _invalid("body must be a JSON object")
        if not isinstance(patch, dict):
            return _invalid("body must be a JSON object")
        try:
            config = knobs.update(patch)
        except ValidationError as exc:
            return _invalid(json.loads(exc.json(include_url=False)))
        return JSONResponse(config.model_dump(mode="json"))

    @router.post("/reset")
    async def reset() -> JSONResponse:
        on_reset()
        return JSONResponse({"reset": True, "config": knobs.config.model_dump(mode="json")})

    @router.get("/stats")
    async def stats() -> JSONResponse:
        return JSONResponse(asdict(knobs.stats))

    @router.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"ok": True})

    return router
