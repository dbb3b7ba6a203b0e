"""Upstream capacity as one object: which channel takes a job, whether a poll may go out, what a failed submit
does next, and giving a job's slots back.

``Capacity.redis`` shares limits and channel health across the fleet (workers); ``Capacity.in_memory`` is the
stand-in for code without Redis (unlimited, every channel healthy), as dramatiq's ``StubBroker`` stands in for a
broker: https://dramatiq.io/reference.html#dramatiq.brokers.stub.StubBroker. Book-keeping in Redis never fails a
job: an unreachable Redis means ``Waiting(None)`` (the sweeper sends the job again) or is logged and skipped.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from redis import Redis
from redis.exceptions import RedisError

from shared.config import DEFAULT_CHANNEL, Settings
from shared.db.tables import Job
from shared.errors import ProviderError, RateLimitedError
from worker.capacity import channels
from worker.capacity.after_failure import SubmitPlan, pinned_to_channel, plan_after_failure
from worker.capacity.channels import Admitted, ChannelHealth, Health, Refusing, Waiting
from worker.capacity.in_memory import AlwaysHealthy, Unlimited
from worker.capacity.limits import Granted, Limits, UpstreamLimits
from worker.providers.base import ProviderFacts
from worker.providers.registry import facts_of

log = logging.getLogger(__name__)


class Capacity:
    """The single capacity object a worker's ``Runtime`` holds (see the module docstring)."""

    def __init__(
        self, settings: Settings, *, limits: Limits, health: Health, facts: Callable[[str], ProviderFacts] = facts_of
    ) -> None:
        self._settings = settings
        self._facts = facts
        self.limits = limits
        self.health = health

    @classmethod
    def in_memory(cls, settings: Settings) -> Capacity:
        return cls(settings, limits=Unlimited(), health=AlwaysHealthy())

    @classmethod
    def redis(cls, redis: Redis, settings: Settings) -> Capacity:
        upstream = settings.upstream
        limits = UpstreamLimits(redis, prefix=upstream.key_prefix)
        return cls(settings, limits=limits, health=ChannelHealth(redis, settings=upstream))

    def admit(self, job: Job, *, now: datetime) -> Admitted | Waiting | Refusing:
        """A channel with a token and the job's slots, or how long to wait (jittered), or a refusal."""
        try:
            admission = channels.admit(job, settings=self._settings, limits=self.limits, health=self.health,
                                       facts=self._facts(job.provider), now=now)  # fmt: skip
        except RedisError:
            log.warning("job %s: upstream limits unavailable (Redis); left for the sweeper", job.id, exc_info=True)
            return Waiting(None, "upstream limits unavailable")
        if isinstance(admission, Waiting) and admission.wait_s is not None:
            return Waiting(jittered(admission.wait_s), admission.why)
        return admission

    def admit_poll(self, job: Job) -> Admitted | Waiting:
        """A token of the job's channel for one poll (polls take no slots)."""
        name = job.channel or DEFAULT_CHANNEL
        channel = next((c for c in channels.channels_of(self._settings, job.provider) if c.name == name), None)
        if channel is None or channel.limits.requests_per_second is None:
            return Admitted(name)
        try:
            outcome = self.limits.acquire(job.provider, name, limits=channel.limits, holder=job.id, slots=0)
        except RedisError:
            log.warning("job %s: upstream limits unavailable (Redis); poll left for the sweeper", job.id, exc_info=True)
            return Waiting(None, "upstream limits unavailable")
        if isinstance(outcome, Granted):
            return Admitted(name)
        return Waiting(jittered(outcome.wait_s or 0.0), f"no poll token on {job.provider} {name}")

    def after_submit_success(self, job: Job, channel: str) -> None:
        with _tolerating_redis(job.id, "end the channel's failure streak"):
            self.health.succeeded(job.provider, channel)

    def after_submit_failure(self, job: Job, channel: str, error: ProviderError) -> SubmitPlan:
        """Count the failure against the channel if it is the channel's fault, free the slots when the upstream
        surely has no task, and say what the job does next (``after_failure.plan_after_failure``)."""
        fault = channels.fault_of(error, provider=job.provider)
        pinned = pinned_to_channel(error, fault)
        alternative = False
        if fault is not None:
            with _tolerating_redis(job.id, "count a failure against its channel"):
                retry_after = error.retry_after_s if isinstance(error, RateLimitedError) else None
                rest = self.health.failed(job.provider, channel, fault, code=error.code, retry_after_s=retry_after)
                if rest > 0:
                    log.warning("%s channel %s rests %.0fs after %s", job.provider, channel, rest, error.code)
                if not pinned:
                    self.health.avoid(job.id, channel)
                    alternative = channels.has_alternative(
                        job.provider, channel, settings=self._settings, health=self.health
                    )
        if not pinned:
            self.release(job, channel)  # the upstream has no task: nothing holds the slots
        return plan_after_failure(error, fault=fault, alternative=alternative)

    def release(self, job: Job, channel: str | None = None) -> None:
        """Free the job's concurrency slots on ``channel`` (default: the job's); if Redis is unreachable they
        expire with the job's hold."""
        name = channel or job.channel
        if name is None:
            return
        with _tolerating_redis(job.id, "release its concurrency slots"):
            self.limits.release(job.provider, name, job.id)


def jittered(wait_s: float) -> float:
    """``wait_s`` stretched by up to half (at least 0.1 s, at most a minute), so waiting jobs do not all ask again
    at once."""
    return min(max(wait_s, 0.1) * random.uniform(1.0, 1.5), channels.MAX_WAIT_S)


@contextmanager
def _tolerating_redis(job_id: str, what: str) -> Iterator[None]:
    try:
        yield
    except RedisError:
        log.warning("job %s: could not %s (Redis unreachable)", job_id, what, exc_info=True)
