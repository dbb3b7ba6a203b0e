"""The in-memory stand-ins for capacity's Redis parts: nothing is limited, no channel ever rests.

``Capacity.in_memory`` uses them where no Redis is wired (tests, tools), as dramatiq's ``StubBroker`` stands in
for a broker: https://dramatiq.io/reference.html#dramatiq.brokers.stub.StubBroker.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.capacity.channels import Fault, Health, Resting
from worker.capacity.limits import DEFAULT_HOLD_S, Acquired, ChannelLimits, Granted, Limits


class Unlimited(Limits):
    """The in-memory stand-in: every request may go out, no slot is ever counted."""

    def acquire(
        self,
        provider: str,
        channel: str,
        *,
        limits: ChannelLimits,
        holder: str,
        slots: int = 0,
        hold_s: float = DEFAULT_HOLD_S,
        cost: float = 1.0,
    ) -> Acquired:
        return Granted()

    def release(self, provider: str, channel: str, holder: str) -> None:
        return None


class AlwaysHealthy(Health):
    """The in-memory stand-in: no channel ever rests, no failure is remembered."""

    def failed(
        self,
        provider: str,
        channel: str,
        fault: Fault,
        *,
        code: str,
        retry_after_s: float | None = None,
    ) -> float:
        return 0.0

    def succeeded(self, provider: str, channel: str) -> None:
        return None

    def resting(self, provider: str, channels: Sequence[str]) -> dict[str, Resting]:
        return {}

    def look(
        self,
        provider: str,
        channels: Sequence[str],
        *,
        job_id: str | None,
    ) -> tuple[dict[str, Resting], str | None]:
        return {}, None

    def avoid(self, job_id: str, channel: str) -> None:
        return None
