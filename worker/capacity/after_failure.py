"""What a failed submit does next: retry on its channel, retry on whichever channel admits it, or fail.

A pure decision (no Redis, no database): the error, whose fault it is (``channels.fault_of``) and whether another
channel could take the job now are all it needs.

- A failure that may have reached the upstream (a timeout after sending, decided at the HTTP boundary and carried
  on the error as ``may_have_reached_upstream``) or that is not the channel's fault keeps the job on its channel
  (*pinned*): the upstream may hold its task there, and its idempotency look-up can find it.
- Otherwise the upstream surely has no task: a transient failure retries on whichever channel admits the job (at
  once when another channel can take it), and refused credentials fail over to another channel when there is one.
- Everything else fails the job.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ProviderError, RateLimitedError, TransientProviderError
from worker.capacity.channels import Fault


@dataclass(frozen=True, slots=True)
class RetryHere:
    """Retry on the same channel after the usual back-off; the job keeps its slots there."""


@dataclass(frozen=True, slots=True)
class RetryElsewhere:
    """Retry on whichever channel admits the job: ``at_once`` when another channel can take it now, else after
    the usual back-off. The job's slots on the failed channel are already released."""

    at_once: bool


@dataclass(frozen=True, slots=True)
class Fail:
    """Retrying cannot help: the job fails with the error's code."""


SubmitPlan = RetryHere | RetryElsewhere | Fail


def pinned_to_channel(error: ProviderError, fault: Fault | None) -> bool:
    """Whether the job must stay on the channel that failed (see the module docstring)."""
    return fault is None or error.may_have_reached_upstream


def plan_after_failure(error: ProviderError, *, fault: Fault | None, alternative: bool) -> SubmitPlan:
    """The next step after ``error`` on a submit; ``alternative``: another channel could take the job now."""
    pinned = pinned_to_channel(error, fault)
    elsewhere = not pinned and alternative
    if isinstance(error, TransientProviderError):
        return RetryHere() if pinned else RetryElsewhere(at_once=elsewhere)
    if elsewhere and fault == Fault.CREDENTIAL:
        return RetryElsewhere(at_once=True)
    return Fail()


def retry_delay(attempt: int, error: ProviderError) -> float:
    """The back-off before submit attempt ``attempt + 1``: a 429's ``Retry-After`` (1 s to 5 min), else 5 s · 3^k."""
    if isinstance(error, RateLimitedError) and error.retry_after_s is not None:
        return min(max(error.retry_after_s, 1.0), 300.0)
    return float(min(5 * 3 ** (attempt - 1), 300))
