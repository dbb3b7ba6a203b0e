"""One exception tree for the whole system.

    ImageJobsError
    ├── ConfigurationError
    ├── JobNotFoundError
    ├── InvalidRequestError          .param, .code       → HTTP 400, nothing enqueued
    ├── StorageUnavailableError      the object store cannot be reached → retried, never fails a job
    ├── ApiError                     .status, .param, .code → that HTTP answer (producer/http/errors.py)
    │   └── SpendBudgetExceededError a job would take its key past its spend budget → 402 (producer/keys.py)
    ├── JobAlreadyEndedError         a cancel found the job terminal already (producer/cancel.py)
    ├── KeyReferenceError            no API key, or several, match an operator's reference (producer/keys.py)
    ├── StorageKeyError              a storage key that is not one of ours (shared/storage.py)
    ├── EgressRefusedError           the SSRF guard refused a caller-supplied URL (shared/egress.py)
    └── ProviderError                .provider, .code, .may_have_reached_upstream (raised by adapters only)
        ├── TransientProviderError   timeouts, connection errors, 5xx      → retried
        │   └── RateLimitedError     429; .retry_after_s                   → retried after
        └── PermanentProviderError   → job fails with .code, never retried
            ├── ProviderAuthError        401/403 from the upstream
            ├── QuotaExceededError       account out of credit / quota
            ├── ContentPolicyError       moderation: the caller's problem, not the provider's health
            ├── UpstreamRejectedError    the upstream refused the parameters
            ├── UnexpectedResponseError  the upstream answered something we cannot parse
            └── InputImageError          a caller's input image cannot be read (worker/inputs.py)

The classes defined elsewhere live next to the one module that raises them; all of them are ``ImageJobsError``.
Error *codes* stored on jobs are short stable strings (see ``ErrorCode``).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Normalised error codes stored on failed jobs and shown to callers."""

    CONTENT_POLICY_VIOLATION = "content_policy_violation"
    UPSTREAM_AUTH = "upstream_auth_error"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    UPSTREAM_REJECTED = "upstream_rejected"
    UPSTREAM_BAD_RESPONSE = "upstream_bad_response"
    INVALID_INPUT_IMAGE = "invalid_input_image"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_FAILED = "upstream_failed"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    INTERNAL_ERROR = "internal_error"
    STORAGE_UNAVAILABLE = "storage_unavailable"


class ImageJobsError(Exception):
    """Base of every error raised by imagejobs code."""


class ConfigurationError(ImageJobsError):
    """Settings or catalog are invalid; raised at start-up."""


class JobNotFoundError(ImageJobsError):
    """No job with this id is visible to the caller."""


class InvalidRequestError(ImageJobsError):
    """A request breaks a rule; names the offending parameter."""

    def __init__(self, message: str, *, param: str | None, code: str = "invalid_parameter") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class StorageUnavailableError(ImageJobsError):
    """The object store did not answer or refused (``shared/storage``); worth retrying."""

    code = ErrorCode.STORAGE_UNAVAILABLE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProviderError(ImageJobsError):
    """An upstream provider call did not succeed."""

    code: ErrorCode = ErrorCode.UPSTREAM_FAILED
    #: the request may have reached the upstream and created a task there (a timeout or a dropped connection
    #: after sending). Decided once, at the HTTP boundary (``worker/providers/_http.py``); nothing above it
    #: inspects httpx.
    may_have_reached_upstream: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        code: ErrorCode | None = None,
        may_have_reached_upstream: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.may_have_reached_upstream = may_have_reached_upstream
        if code is not None:
            self.code = code


class TransientProviderError(ProviderError):
    """Worth retrying: timeouts, connection errors, 5xx."""

    code = ErrorCode.UPSTREAM_UNAVAILABLE


class RateLimitedError(TransientProviderError):
    """The upstream asked us to slow down."""

    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, provider: str, retry_after_s: float | None = None) -> None:
        super().__init__(message, provider=provider)
        self.retry_after_s = retry_after_s


class PermanentProviderError(ProviderError):
    """Retrying cannot help; the job fails."""


class ProviderAuthError(PermanentProviderError):
    """The upstream refused our credentials."""

    code = ErrorCode.UPSTREAM_AUTH


class QuotaExceededError(PermanentProviderError):
    """The upstream account is out of credit or quota."""

    code = ErrorCode.INSUFFICIENT_QUOTA


class ContentPolicyError(PermanentProviderError):
    """The upstream's moderation rejected the prompt or the output."""

    code = ErrorCode.CONTENT_POLICY_VIOLATION


class UpstreamRejectedError(PermanentProviderError):
    """The upstream refused the request parameters."""

    code = ErrorCode.UPSTREAM_REJECTED


class UnexpectedResponseError(PermanentProviderError):
    """The upstream answered with something we cannot parse."""

    code = ErrorCode.UPSTREAM_BAD_RESPONSE
