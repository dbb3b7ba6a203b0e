"""``worker.capacity.after_failure``: what a failed submit does next (a pure decision: no Redis, no database)."""

from __future__ import annotations

import pytest

from shared.errors import (
    ContentPolicyError,
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    TransientProviderError,
    UpstreamRejectedError,
)
from worker.capacity import Fail, RetryElsewhere, RetryHere, SubmitPlan
from worker.capacity.after_failure import pinned_to_channel, plan_after_failure
from worker.capacity.channels import Fault, fault_of

TIMEOUT_AFTER_SENDING = TransientProviderError("read timeout", provider="kling", may_have_reached_upstream=True)
HTTP_503 = TransientProviderError("HTTP 503", provider="kling")
HTTP_429 = RateLimitedError("429", provider="kling", retry_after_s=3)
REFUSED_KEY = ProviderAuthError("401", provider="kling")
NO_CREDIT = QuotaExceededError("no credit", provider="kling")
MODERATION = ContentPolicyError("blocked", provider="kling")
BAD_PARAMS = UpstreamRejectedError("bad size", provider="kling")
#: a transient error that is not the channel's fault (another provider's, e.g. a result download elsewhere)
NOT_THE_CHANNELS = TransientProviderError("HTTP 503", provider="bfl")


def _plan(error: ProviderError, *, alternative: bool) -> SubmitPlan:
    return plan_after_failure(error, fault=fault_of(error, provider="kling"), alternative=alternative)


@pytest.mark.parametrize("alternative", [True, False])
def test_a_timeout_after_sending_stays_on_its_channel(alternative: bool) -> None:
    assert _plan(TIMEOUT_AFTER_SENDING, alternative=alternative) == RetryHere()


@pytest.mark.parametrize("error", [HTTP_503, HTTP_429])
def test_a_transient_failure_before_the_upstream_took_a_task_moves_on_at_once_when_it_can(error: ProviderError) -> None:
    assert _plan(error, alternative=True) == RetryElsewhere(at_once=True)
    assert _plan(error, alternative=False) == RetryElsewhere(at_once=False)


@pytest.mark.parametrize("error", [REFUSED_KEY, NO_CREDIT])
def test_refused_credentials_fail_over_to_another_channel_or_fail(error: ProviderError) -> None:
    assert _plan(error, alternative=True) == RetryElsewhere(at_once=True)
    assert _plan(error, alternative=False) == Fail()


@pytest.mark.parametrize("error", [MODERATION, BAD_PARAMS])
@pytest.mark.parametrize("alternative", [True, False])
def test_the_requests_own_problems_fail_wherever_they_would_go(error: ProviderError, alternative: bool) -> None:
    assert _plan(error, alternative=alternative) == Fail()


def test_a_failure_that_is_not_the_channels_fault_keeps_the_channel() -> None:
    assert fault_of(NOT_THE_CHANNELS, provider="kling") is None
    assert pinned_to_channel(NOT_THE_CHANNELS, None)
    assert _plan(NOT_THE_CHANNELS, alternative=True) == RetryHere()


def test_only_a_failure_that_may_have_reached_the_upstream_pins_a_channel_fault() -> None:
    assert pinned_to_channel(TIMEOUT_AFTER_SENDING, Fault.UNAVAILABLE)
    assert not pinned_to_channel(HTTP_503, Fault.UNAVAILABLE)
