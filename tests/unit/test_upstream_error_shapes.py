"""Each upstream's documented error answers → the exact class and a message that keeps the upstream's reason.

Quota is not a rate limit: an answer saying the account has no allowance at all (a limit of 0 for the model,
billing not enabled, an exhausted balance or credit) is ``QuotaExceededError`` — the channel fails over as a
credential fault — while per-minute throttling stays ``RateLimitedError``. Bodies follow the upstreams' public
docs: OpenAI https://platform.openai.com/docs/guides/error-codes, Gemini
https://ai.google.dev/gemini-api/docs/troubleshooting, Ark https://www.volcengine.com/docs/82379/1299023,
Kling's error-code table, BFL's 402/429.

The decisions are driven through ``worker.providers._http.answer_error`` with each adapter's reader (pure: no
transport); the broken-answer matrix over HTTP is ``test_providers_status_matrix.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shared.errors import (
    ContentPolicyError,
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    TransientProviderError,
    UnexpectedResponseError,
    UpstreamRejectedError,
)
from worker.capacity.channels import Fault, fault_of
from worker.providers import ark, bfl, gemini, kling, openai_images
from worker.providers._http import Phase, ReadError, answer_error, status_class

READERS: dict[str, ReadError] = {
    "openai": openai_images.read_error,
    "gemini": gemini.read_error,
    "ark": ark.read_error,
    "kling": kling.read_error,
    "bfl": bfl.read_error,
}


@dataclass(frozen=True)
class Case:
    provider: str
    status: int
    body: Any
    expected: type[ProviderError]
    #: the upstream's own reason, which the message must carry
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    retry_after_s: float | None = None
    phase: Phase = Phase.SUBMIT


def _response(case: Case) -> httpx.Response:
    content = case.body if isinstance(case.body, str) else json.dumps(case.body)
    kind = "text/plain" if isinstance(case.body, str) else "application/json"
    return httpx.Response(case.status, content=content.encode(), headers=[("content-type", kind), *case.headers])


def _gemini(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": list(details)}}


def _quota_failure(quota_id: str, value: str | None = None) -> dict[str, Any]:
    violation: dict[str, Any] = {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content",
        "quotaId": quota_id,
    }
    if value is not None:
        violation["quotaValue"] = value
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}


RETRY_INFO = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "28s"}
FREE_TIER_ZERO = (
    "You exceeded your current quota, please check your plan and billing details. * Quota exceeded for metric: "
    "generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 0, model: gemini-2.5-flash-image"
)


def _openai(code: str | None, message: str, type_: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _ark(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "param": "", "type": "TooManyRequests"}}


def _kling(code: int, message: str, data: Any = None) -> dict[str, Any]:
    return {"code": code, "message": message, "request_id": "req-1", "data": data}


CASES = {
    # -- OpenAI ---------------------------------------------------------------------------------------------
    "openai-insufficient-quota": Case(
        "openai", 429, _openai("insufficient_quota", "You exceeded your current quota", "insufficient_quota"),
        QuotaExceededError, "You exceeded your current quota"),
    "openai-quota-type-only": Case(
        "openai", 429, _openai(None, "You exceeded your current quota", "insufficient_quota"),
        QuotaExceededError, "exceeded your current quota"),
    "openai-billing-hard-limit": Case(
        "openai", 400, _openai("billing_hard_limit_reached", "Billing hard limit has been reached"),
        QuotaExceededError, "Billing hard limit has been reached"),
    "openai-rate-limit": Case(
        "openai", 429, _openai("rate_limit_exceeded", "Rate limit reached for images per minute", "requests"),
        RateLimitedError, "Rate limit reached", headers=(("retry-after", "2"),), retry_after_s=2.0),
    "openai-5xx-never-permanent": Case(
        "openai", 500, _openai("insufficient_quota", "The server had an error", "server_error"),
        TransientProviderError, "The server had an error"),
    "openai-gateway-json": Case(
        "openai", 503, {"message": "upstream connect error or disconnect/reset before headers"},
        TransientProviderError, "upstream connect error"),
    "openai-nested-string-error": Case(
        "openai", 400, {"error": "model gpt-image-9 does not exist"}, UpstreamRejectedError, "gpt-image-9"),
    "openai-moderation": Case(
        "openai", 400, _openai("moderation_blocked", "Your request was rejected by the safety system"),
        ContentPolicyError, "rejected by the safety system"),
    # -- Gemini ---------------------------------------------------------------------------------------------
    "gemini-quota-value-zero": Case(
        "gemini", 429, _gemini(429, "RESOURCE_EXHAUSTED", "Quota exceeded",
                               _quota_failure("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "0")),
        QuotaExceededError, "Quota exceeded"),
    "gemini-limit-zero-in-message": Case(
        "gemini", 429, _gemini(429, "RESOURCE_EXHAUSTED", FREE_TIER_ZERO, RETRY_INFO),
        QuotaExceededError, "limit: 0, model: gemini-2.5-flash-image"),
    "gemini-per-day-used-up": Case(
        "gemini", 429, _gemini(429, "RESOURCE_EXHAUSTED", "Quota exceeded",
                               _quota_failure("GenerateRequestsPerDayPerProjectPerModel", "250")),
        QuotaExceededError, "Quota exceeded"),
    "gemini-per-minute-throttle": Case(
        "gemini", 429, _gemini(429, "RESOURCE_EXHAUSTED", "Quota exceeded, limit: 10, model: gemini-3-pro-image",
                               _quota_failure("GenerateRequestsPerMinutePerProjectPerModel", "10"), RETRY_INFO),
        RateLimitedError, "limit: 10", retry_after_s=28.0),
    "gemini-billing-precondition": Case(
        "gemini", 400, _gemini(400, "FAILED_PRECONDITION", "Gemini API free tier is not available in your country. "
                               "Please enable billing on your project in Google AI Studio."),
        QuotaExceededError, "enable billing"),
    "gemini-billing-disabled-403": Case(
        "gemini", 403, _gemini(403, "PERMISSION_DENIED", "This API method requires billing to be enabled.",
                               {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "BILLING_DISABLED"}),
        QuotaExceededError, "requires billing"),
    "gemini-bad-key-400": Case(
        "gemini", 400, _gemini(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                               {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}),
        ProviderAuthError, "API key not valid"),
    "gemini-overloaded": Case(
        "gemini", 503, _gemini(503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
        TransientProviderError, "The model is overloaded"),
    # -- Ark ------------------------------------------------------------------------------------------------
    "ark-account-overdue": Case(
        "ark", 403, _ark("AccountOverdueError", "The request failed because your account has an overdue balance."),
        QuotaExceededError, "overdue balance"),
    "ark-free-quota-used-up": Case(
        "ark", 429, _ark("QuotaExceeded", "Your account has exhausted its free trial quota for the model."),
        QuotaExceededError, "exhausted its free trial quota"),
    "ark-own-spending-cap": Case(
        "ark", 429, _ark("SetLimitExceeded", "Your account has reached its set inference limit."),
        QuotaExceededError, "set inference limit"),
    "ark-endpoint-rpm": Case(
        "ark", 429, _ark("RateLimitExceeded.EndpointRPMExceeded", "Your account has exceeded the RPM limit."),
        RateLimitedError, "RPM limit"),
    "ark-account-ipm": Case(
        "ark", 429, _ark("ModelAccountIpmRateLimitExceeded", "Your account has exceeded the images per minute."),
        RateLimitedError, "images per minute"),
    "ark-overloaded": Case(
        "ark", 429, _ark("ServerOverloaded", "The service is currently unable to handle additional requests."),
        RateLimitedError, "unable to handle"),
    "ark-bad-key": Case(
        "ark", 401, _ark("AuthenticationError", "The API key in the request is missing or invalid."),
        ProviderAuthError, "missing or invalid"),
    # -- Kling ----------------------------------------------------------------------------------------------
    "kling-account-exception": Case("kling", 429, _kling(1100, "account exception"), QuotaExceededError,
                                    "account exception"),
    "kling-in-arrears": Case("kling", 429, _kling(1101, "account in arrears"), QuotaExceededError, "in arrears"),
    "kling-pack-depleted": Case("kling", 429, _kling(1102, "resource pack depleted or expired"), QuotaExceededError,
                                "resource pack depleted"),
    "kling-too-fast": Case("kling", 429, _kling(1302, "request too fast, please slow down"), RateLimitedError,
                           "too fast", headers=(("retry-after", "3"),), retry_after_s=3.0),
    "kling-parallel-limit": Case("kling", 429, _kling(1303, "parallel task over resource pack limit"),
                                 RateLimitedError, "parallel task"),
    "kling-bad-token": Case("kling", 401, _kling(1004, "authorization is invalid"), ProviderAuthError,
                            "authorization is invalid"),
    "kling-task-body-on-4xx": Case(
        "kling", 400, _kling(1201, "", {"task_id": "t-1", "task_status": "failed",
                                        "task_status_msg": "image exceeds 10MB"}),
        UpstreamRejectedError, "image exceeds 10MB", phase=Phase.POLL),
    "kling-200-with-error-code": Case("kling", 200, _kling(1102, "resource pack depleted"), QuotaExceededError,
                                      "resource pack depleted"),
    "kling-200-unknown-code-on-poll": Case("kling", 200, _kling(1999, "something new"), TransientProviderError,
                                           "something new", phase=Phase.POLL),
    "kling-200-unknown-code-on-submit": Case("kling", 200, _kling(1999, "something new"), UnexpectedResponseError,
                                             "something new"),
    "kling-internal": Case("kling", 500, _kling(5000, "internal error"), TransientProviderError, "internal error"),
    # -- BFL ------------------------------------------------------------------------------------------------
    "bfl-no-credits": Case("bfl", 402, {"detail": "Insufficient credits. Add credits to continue."},
                           QuotaExceededError, "Insufficient credits"),
    "bfl-no-credits-text": Case("bfl", 402, "Payment Required", QuotaExceededError, "Payment Required"),
    "bfl-active-tasks": Case("bfl", 429, {"detail": "Too many active tasks (limit 24)"}, RateLimitedError,
                             "Too many active tasks"),
    "bfl-rate-gateway": Case("bfl", 429, {"error": "rate_limit_exceeded", "message": "slow down"},
                             RateLimitedError, "rate_limit_exceeded slow down"),
    "bfl-task-body-on-4xx": Case(
        "bfl", 400, {"id": "t-1", "status": "Error", "details": {"error": "Failed to fetch input_image"}},
        UpstreamRejectedError, "Failed to fetch input_image", phase=Phase.POLL),
    "bfl-moderated-task-on-4xx": Case(
        "bfl", 400, {"id": "t-1", "status": "Content Moderated", "details": {"Moderation Reasons": ["Violence"]}},
        ContentPolicyError, "Violence", phase=Phase.POLL),
    "bfl-nested-error": Case("bfl", 403, {"error": {"message": "API key revoked"}}, ProviderAuthError,
                             "API key revoked"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_an_error_answer_is_classified_and_keeps_the_upstreams_reason(case: Case) -> None:
    error = answer_error(_response(case), provider=case.provider, phase=case.phase, read_error=READERS[case.provider])

    assert type(error) is case.expected, error.message
    assert case.reason in error.message
    assert "no details" not in error.message
    if case.retry_after_s is not None:
        assert isinstance(error, RateLimitedError)
        assert error.retry_after_s == case.retry_after_s


LIMITS = [case for case in CASES.values() if case.expected in (QuotaExceededError, RateLimitedError)]


@pytest.mark.parametrize("case", LIMITS)
def test_quota_fails_the_channel_over_and_throttling_makes_it_rest(case: Case) -> None:
    error = answer_error(_response(case), provider=case.provider, phase=case.phase, read_error=READERS[case.provider])

    expected = Fault.CREDENTIAL if case.expected is QuotaExceededError else Fault.RATE_LIMITED
    assert fault_of(error, provider=case.provider) == expected


# -- status first ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "submit", "poll"),
    [
        (429, RateLimitedError, RateLimitedError),
        (408, TransientProviderError, TransientProviderError),
        (500, TransientProviderError, TransientProviderError),
        (502, TransientProviderError, TransientProviderError),
        (504, TransientProviderError, TransientProviderError),
        (401, ProviderAuthError, ProviderAuthError),
        (403, ProviderAuthError, ProviderAuthError),
        (402, QuotaExceededError, QuotaExceededError),
        (400, UpstreamRejectedError, UpstreamRejectedError),
        (404, UpstreamRejectedError, UpstreamRejectedError),
        (422, UpstreamRejectedError, UpstreamRejectedError),
        (302, UnexpectedResponseError, TransientProviderError),
        (204, UnexpectedResponseError, TransientProviderError),
    ],
)
def test_the_status_alone_decides_the_class(
    status: int, submit: type[ProviderError], poll: type[ProviderError]
) -> None:
    assert status_class(status, Phase.SUBMIT) is submit
    assert status_class(status, Phase.POLL) is poll


@pytest.mark.parametrize("provider", list(READERS))
@pytest.mark.parametrize(("status", "reached"), [(500, True), (504, True), (502, False), (503, False)])
def test_a_submit_answered_500_or_504_may_have_created_the_task(provider: str, status: int, reached: bool) -> None:
    html = httpx.Response(status, text="<html><title>oops</title></html>", headers={"content-type": "text/html"})

    on_submit = answer_error(html, provider=provider, phase=Phase.SUBMIT, read_error=READERS[provider])
    on_poll = answer_error(html, provider=provider, phase=Phase.POLL, read_error=READERS[provider])

    assert type(on_submit) is TransientProviderError
    assert on_submit.may_have_reached_upstream is reached
    assert on_poll.may_have_reached_upstream is False
