"""Channels: the credentials of one provider, which one takes a job, and when one has to rest.

A provider's settings section holds its own credentials (the channel ``"default"``) and optionally more
(``IMAGEJOBS_<PROVIDER>__CHANNELS``), each with a ``weight``, a ``priority`` (lower is tried first) and its own
limits (``worker/capacity/limits.py``). ``admit`` picks a job's channel before the job is claimed:

- the healthy channels in preference order: best priority first, a weighted random order within a priority, the
  channel this job just failed on last; the first one with a token and free slots takes the job (a busy channel
  spills over to the next one);
- a job whose last attempt may have reached its upstream (a timeout after sending) is *pinned*: it goes back to
  the same channel, where the upstream's idempotency look-up (Kling ``external_task_id``) can find its task;
- no capacity anywhere → ``Waiting`` (the job goes back to its queue for a few seconds, unclaimed); every channel
  resting → ``Waiting`` until the first one recovers, or ``Refusing`` when they all rest because their
  credentials were refused (the job fails with that error at once instead of hammering the upstream).

Health (``ChannelHealth``, Redis): a failure that is the channel's fault (``fault_of``: 429, refused credentials
or exhausted quota, 5xx answers and timeouts) counts against it; a 429 or a credential error makes it rest at once,
5xx answers and timeouts after ``failures_before_cooldown`` in a row. It rests ``cooldown_base_s · 2^k`` seconds
(k: earlier failures in the same streak), at most ``cooldown_max_s``, and at least a 429's ``Retry-After``; the rest
is a Redis key with that TTL, so it recovers by itself. Failures while it already rests (requests that were in
flight) do not lengthen the rest; a success ends the streak. Content-policy rejections, refused parameters,
unreadable answers, callers' input images and our own errors never count.

Polls always use the channel that created the upstream task (``job.channel``) and are not part of health.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol

from redis import Redis

from shared.config import Settings, UpstreamSettings
from shared.db.tables import Job
from shared.errors import (
    ConfigurationError,
    ErrorCode,
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    TransientProviderError,
)
from worker.capacity.limits import ChannelLimits, Granted, Limits, hold_for
from worker.inputs import InputImageError
from worker.providers.base import JobSpec, ProviderFacts
from worker.providers.registry import facts_of, section_of

#: error codes of a channel resting because the upstream refused its credentials
CREDENTIAL_CODES: Final = frozenset({ErrorCode.UPSTREAM_AUTH.value, ErrorCode.INSUFFICIENT_QUOTA.value})
#: how long a job remembers the channel it just failed on (to try another one first)
AVOID_TTL_S: Final = 900
#: the longest a job waits in its queue before asking again
MAX_WAIT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class Channel:
    provider: str
    name: str
    weight: float
    priority: int
    limits: ChannelLimits


def channels_of(settings: Settings, provider: str) -> list[Channel]:
    """The provider's usable channels, as configured ("default" first when its section has credentials)."""
    section = section_of(settings, provider)
    channels = []
    for name in section.channel_names():
        view = section.for_channel(name)
        limits = ChannelLimits(view.requests_per_second, view.burst, view.max_concurrent)
        channels.append(Channel(provider, name, view.weight, view.priority, limits))
    return channels


class Fault(StrEnum):
    """Why a failure counts against a channel."""

    RATE_LIMITED = "rate_limited"  # 429 (Kling 1302/1303 too)
    CREDENTIAL = "credential"  # credentials refused, quota or credit exhausted, model not open to this key
    UNAVAILABLE = "unavailable"  # 5xx answers, timeouts, connection failures


def fault_of(error: BaseException, *, provider: str) -> Fault | None:
    """The channel's share of ``error``; None when it is not the channel's fault."""
    if not isinstance(error, ProviderError) or isinstance(error, InputImageError) or error.provider != provider:
        return None  # our own errors, and a caller's input image that could not be fetched
    if isinstance(error, RateLimitedError):
        return Fault.RATE_LIMITED
    if isinstance(error, TransientProviderError):
        return Fault.UNAVAILABLE
    if isinstance(error, ProviderAuthError | QuotaExceededError):
        return Fault.CREDENTIAL
    return None  # content policy, refused parameters, unreadable answers: the request's problem


def preference_order(
    channels: Sequence[Channel], *, avoid: str | None = None, rng: random.Random | None = None
) -> list[Channel]:
    """Best priority first; within a priority a weighted random order; ``avoid`` (if there are others) last."""
    draw = rng or random.Random()
    # Efraimidis–Spirakis: sorting by u^(1/w) (u uniform in [0, 1)) draws a weighted random order
    keys = {channel.name: draw.random() ** (1.0 / channel.weight) for channel in channels}
    return sorted(channels, key=lambda channel: (channel.name == avoid, channel.priority, -keys[channel.name]))


@dataclass(frozen=True, slots=True)
class Resting:
    """A channel cooling down: for how long still, and the error code that made it rest."""

    remaining_s: float
    code: str


#: KEYS: failures in a row, rest (value: error code). ARGV: code, threshold, base ms, cap ms, at least ms, streak ms.
#: → the rest in ms now in force (0: none)
_FAILED = """
local resting = redis.call('PTTL', KEYS[2])
if resting > 0 then return resting end
local failures = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local threshold = tonumber(ARGV[2])
if failures < threshold then return 0 end
local ms = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ (failures - threshold))
ms = math.floor(math.max(ms, tonumber(ARGV[5])))
redis.call('SET', KEYS[2], ARGV[1], 'PX', ms)
return ms
"""


class Health(Protocol):
    """Where failure streaks and rests are kept: Redis in workers (``ChannelHealth``), nowhere in tests."""

    def failed(
        self, provider: str, channel: str, fault: Fault, *, code: str, retry_after_s: float | None = None
    ) -> float: ...

    def succeeded(self, provider: str, channel: str) -> None: ...

    def resting(self, provider: str, channels: Sequence[str]) -> dict[str, Resting]: ...

    def look(
        self, provider: str, channels: Sequence[str], *, job_id: str | None
    ) -> tuple[dict[str, Resting], str | None]: ...

    def avoid(self, job_id: str, channel: str) -> None: ...


class ChannelHealth:
    """Channels' failure streaks and rests, and the channel each job just failed on (Redis, fleet-wide)."""

    def __init__(self, redis: Redis, *, settings: UpstreamSettings) -> None:
        self._redis = redis
        self._settings = settings
        self._failed = redis.register_script(_FAILED)

    def failed(
        self, provider: str, channel: str, fault: Fault, *, code: str, retry_after_s: float | None = None
    ) -> float:
        """Count a failure; returns the rest (seconds) now in force on the channel (0: none)."""
        settings = self._settings
        threshold = settings.failures_before_cooldown if fault == Fault.UNAVAILABLE else 1
        cap_ms = settings.cooldown_max_s * 1000
        at_least_ms = min(retry_after_s or 0.0, settings.cooldown_max_s) * 1000
        base_ms, streak_ms = settings.cooldown_base_s * 1000, int(cap_ms * 4)
        args: list[str | float] = [code, threshold, base_ms, cap_ms, at_least_ms, streak_ms]
        rest_ms = self._failed(keys=self._keys(provider, channel), args=args)
        return int(rest_ms) / 1000

    def succeeded(self, provider: str, channel: str) -> None:
        """The channel worked: its failure streak ends (a rest in force runs out by itself)."""
        self._redis.delete(self._keys(provider, channel)[0])

    def resting(self, provider: str, channels: Sequence[str]) -> dict[str, Resting]:
        """The channels among ``channels`` that rest now."""
        return self.look(provider, channels, job_id=None)[0]

    def look(
        self, provider: str, channels: Sequence[str], *, job_id: str | None
    ) -> tuple[dict[str, Resting], str | None]:
        """The resting channels, and the channel ``job_id`` just failed on (one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for channel in channels:
            rest = self._keys(provider, channel)[1]
            pipe.pttl(rest)
            pipe.get(rest)
        if job_id is not None:
            pipe.get(self._avoid_key(job_id))
        answers = pipe.execute()
        resting = {}
        for index, channel in enumerate(channels):
            ttl_ms, code = answers[2 * index], answers[2 * index + 1]
            if isinstance(ttl_ms, int) and ttl_ms > 0 and code is not None:
                resting[channel] = Resting(remaining_s=ttl_ms / 1000, code=_text(code))
        avoid = answers[-1] if job_id is not None else None
        return resting, _text(avoid) if avoid is not None else None

    def avoid(self, job_id: str, channel: str) -> None:
        """Remember that ``job_id`` just failed on ``channel``: its next attempt tries the others first."""
        self._redis.set(self._avoid_key(job_id), channel, ex=AVOID_TTL_S)

    def _keys(self, provider: str, channel: str) -> list[str]:
        base = f"{self._settings.key_prefix}:{{{provider}:{channel}}}"
        return [f"{base}:failures", f"{base}:rest"]

    def _avoid_key(self, job_id: str) -> str:
        return f"{self._settings.key_prefix}:avoid:{job_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Admitted:
    """The job may go to ``channel`` now: it holds a token and its slots there."""

    channel: str


@dataclass(frozen=True, slots=True)
class Waiting:
    """Not now: back to the queue for about ``wait_s`` (not a submit attempt). ``None``: capacity cannot be
    checked at the moment (Redis unreachable); the job stays where it is and the sweeper sends it again."""

    wait_s: float | None
    why: str


@dataclass(frozen=True, slots=True)
class Refusing:
    """Every channel rests after the upstream refused its credentials: the job fails with ``code``."""

    code: str
    message: str


Admission = Admitted | Waiting | Refusing


def admit(
    job: Job,
    *,
    settings: Settings,
    limits: Limits,
    health: Health,
    now: datetime,
    facts: ProviderFacts | None = None,
    rng: random.Random | None = None,
) -> Admission:
    """Choose ``job``'s channel and take a token and the job's slots there (see the module docstring); how many
    slots and tokens a job takes is the provider's to say (``facts``)."""
    channels = channels_of(settings, job.provider)
    if not channels:
        raise ConfigurationError(f"{job.provider}: no credentials configured")
    names = [channel.name for channel in channels]
    resting, avoid = health.look(job.provider, names, job_id=job.id)
    pinned = [channel for channel in channels if channel.name == job.channel]
    considered = pinned or channels
    candidates = preference_order([c for c in considered if c.name not in resting], avoid=avoid, rng=rng)
    if not candidates:
        return _all_resting(job.provider, [resting[channel.name] for channel in considered])
    waits = []
    facts = facts or facts_of(job.provider)
    attempt = job.submit_attempts + 1
    spec = JobSpec(job_id=job.id, upstream_model=job.upstream_model, operation=job.operation,
                   params=job.upstream_params, image_count=job.image_count, attempt=attempt)  # fmt: skip
    for channel in candidates:
        outcome = limits.acquire(
            job.provider,
            channel.name,
            limits=channel.limits,
            holder=job.id,
            slots=facts.slots(spec),
            hold_s=hold_for(job.deadline_at, now=now),
            cost=facts.requests(spec),
        )
        if isinstance(outcome, Granted):
            return Admitted(channel.name)
        waits.append(outcome.wait_s if outcome.wait_s is not None else settings.upstream.slot_wait_s)
    busy = ", ".join(channel.name for channel in candidates)
    return Waiting(min(min(waits), MAX_WAIT_S), f"no upstream capacity on {job.provider} ({busy})")


def _all_resting(provider: str, rests: Sequence[Resting]) -> Waiting | Refusing:
    soonest = min(rests, key=lambda rest: rest.remaining_s)
    if all(rest.code in CREDENTIAL_CODES for rest in rests):
        message = (
            f"every {provider} channel's credentials were refused recently (resting for {soonest.remaining_s:.0f}s)"
        )
        return Refusing(code=soonest.code, message=message)
    return Waiting(min(soonest.remaining_s, MAX_WAIT_S), f"every {provider} channel is resting")


def has_alternative(provider: str, channel: str, *, settings: Settings, health: Health) -> bool:
    """Whether another of the provider's channels could take a job now (it exists and does not rest)."""
    others = [name for name in section_of(settings, provider).channel_names() if name != channel]
    if not others:
        return False
    resting = health.resting(provider, others)
    return any(name not in resting for name in others)
