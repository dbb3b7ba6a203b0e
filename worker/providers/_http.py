"""The one HTTP boundary of every adapter: status first, body second.

Every upstream answer is classified here, once, in this order:

1. Transport failures (timeouts, refused or reset connections) are transient; whether the request may have
   reached the upstream is decided from the exception (https://www.python-httpx.org/exceptions/).
2. Any status but 200 is an error whose *class* the status decides (``status_class``): 429 → rate
   limited (``Retry-After`` honoured), 408 and 5xx → transient, 401/403 → refused credentials, 402 → no
   credit left, any other 4xx → rejected. Only then is the body read, by the adapter (``ReadError``): when
   it is the upstream's own error shape it may name a finer class (an exhausted quota on a 429, moderation
   on a 400 …) and gives the upstream's own reason for the message. A body that is not the upstream's (an
   HTML page from a proxy or CDN, plain text, empty, truncated or commented JSON) never changes the class,
   and a 5xx or 408 is never made permanent by its body: the server said "later".
3. A 200 whose body is not the JSON the adapter expects is ``UnexpectedResponseError`` on a submit (nothing
   to wait for: the answer *was* the result). On a poll it is transient: the task exists upstream and may
   already be paid for, a broken page in front of the API says nothing about it, and the job's deadline
   still bounds how long it is polled (see ``Phase``).

A 5xx answer to a submit may mean the upstream created the task before failing (RFC 9110 §15.6): ``500``
and ``504`` (and unassigned 5xx) are answered *after* the request reached a server that may have acted on
it, so they set ``may_have_reached_upstream`` (the retry stays on the same channel, where Kling finds the
task by its external id instead of creating a second one); ``502`` and ``503`` are a gateway's "no
upstream to hand it to" / "not taking requests", which did not act on it.
"""

from __future__ import annotations

import contextlib
import email.utils
import html
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shared.errors import (
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    TransientProviderError,
    UnexpectedResponseError,
    UpstreamRejectedError,
)
from worker.http_transport import PerThreadTransport

M = TypeVar("M", bound=BaseModel)


class Phase(StrEnum):
    """Which call an answer belongs to: it decides what an unusable 200 means."""

    #: creating the task (or a synchronous generation): an unusable 200 is a bad response
    SUBMIT = "submit"
    #: asking after a task the upstream already has: an unusable 200 is transient (the job keeps running)
    POLL = "poll"


@dataclass(frozen=True, slots=True)
class ErrorReading:
    """What an adapter reads in an error answer's body."""

    #: the upstream's own reason, as the adapter words it (``Kling 1102: resource pack depleted``)
    message: str
    #: the class the body names (an exhausted quota, moderation, refused credentials …); None: the status decides
    kind: type[ProviderError] | None = None
    #: a delay the body names (e.g. Google's ``RetryInfo``); None: the ``Retry-After`` header, if any
    retry_after_s: float | None = None


#: an adapter's reading of an error answer (any status but 200, and a 200 carrying an error envelope)
ReadError = Callable[[httpx.Response], ErrorReading]


def make_client(*, base_url: str, timeout_s: float) -> httpx.Client:
    """An adapter's client: a connection pool per calling thread, as many calls in flight as there are threads."""
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        transport=PerThreadTransport(),
        trust_env=False,
        follow_redirects=False,
    )


#: transport failures that happen before any byte of the request was sent: the upstream cannot have a task
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@contextlib.contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """Timeouts and connection failures (refused, reset, dropped mid-answer) are transient; whether the request
    may have reached the upstream is decided here, once (https://www.python-httpx.org/exceptions/), and
    carried on the error."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransientProviderError(
            f"{provider} timed out: {type(exc).__name__}",
            provider=provider,
            may_have_reached_upstream=not isinstance(exc, _NOT_SENT),
        ) from exc
    except httpx.TransportError as exc:
        raise TransientProviderError(
            f"{provider} unreachable: {type(exc).__name__}",
            provider=provider,
            may_have_reached_upstream=not isinstance(exc, _NOT_SENT),
        ) from exc


def send(http: httpx.Client, method: str, url: str, *, provider: str, **kwargs: Any) -> httpx.Response:
    """One request; transport failures raised as transient ``ProviderError``s."""
    with map_transport_errors(provider):
        return http.request(method, url, **kwargs)


def call(
    http: httpx.Client,
    method: str,
    url: str,
    model: type[M],
    *,
    provider: str,
    phase: Phase,
    read_error: ReadError,
    **kwargs: Any,
) -> M:
    """One request whose only good answer is HTTP 200 with a JSON body of ``model``'s shape (see the module)."""
    response = send(http, method, url, provider=provider, **kwargs)
    if response.status_code != 200:
        raise answer_error(response, provider=provider, phase=phase, read_error=read_error)
    return parse_answer(response, model, provider=provider, phase=phase)


# -- status first ------------------------------------------------------------------------------------------


def status_class(status: int, phase: Phase) -> type[ProviderError]:
    """The error class an HTTP status alone decides (200 here: an answer whose body is unusable)."""
    if status == 429:
        return RateLimitedError
    if status == 408 or status >= 500:
        return TransientProviderError
    if status in (401, 403):
        return ProviderAuthError
    if status == 402:  # Payment Required: the account has no credit left (BFL's answer for it)
        return QuotaExceededError
    if 400 <= status < 500:
        return UpstreamRejectedError
    # 1xx/2xx/3xx where a 200 was due (we do not follow redirects: a login page or a moved API is not ours)
    return TransientProviderError if phase is Phase.POLL else UnexpectedResponseError


def settle(status: int, by_status: type[ProviderError], named: type[ProviderError] | None) -> type[ProviderError]:
    """The class of an error answer: the one the body names, except that a 5xx or 408 stays transient."""
    if named is None:
        return by_status
    if (status == 408 or status >= 500) and not issubclass(named, TransientProviderError):
        return by_status
    return named


def may_have_acted(status: int, phase: Phase) -> bool:
    """A submit answered 500, 504 or an unassigned 5xx may have created the task (module docstring)."""
    return phase is Phase.SUBMIT and status >= 500 and status not in (502, 503)


def answer_error(response: httpx.Response, *, provider: str, phase: Phase, read_error: ReadError) -> ProviderError:
    """The ``ProviderError`` of an error answer: its class by status, refined by what the body names."""
    status = response.status_code
    reading = read_error(response)
    kind = settle(status, status_class(status, phase), reading.kind)
    if issubclass(kind, RateLimitedError):
        delay = reading.retry_after_s if reading.retry_after_s is not None else retry_after_s(response)
        return kind(reading.message, provider=provider, retry_after_s=delay)
    reached = issubclass(kind, TransientProviderError) and may_have_acted(status, phase)
    return kind(reading.message, provider=provider, may_have_reached_upstream=reached)


# -- body second -------------------------------------------------------------------------------------------


def unusable(message: str, *, provider: str, phase: Phase) -> ProviderError:
    """A 200 that is not what the adapter expects: a bad response on submit, transient on poll (``Phase``)."""
    if phase is Phase.POLL:
        return TransientProviderError(f"{message} (polling again)", provider=provider)
    return UnexpectedResponseError(message, provider=provider)


def parse_answer(response: httpx.Response, model: type[M], *, provider: str, phase: Phase) -> M:
    """A 200's body as ``model``; a body that is not JSON, or not of that shape, is ``unusable``."""
    try:
        data = response.json()
    except ValueError:
        raise unusable(
            f"{provider} answered HTTP {response.status_code} with a body that is not JSON ({describe_body(response)})",
            provider=provider,
            phase=phase,
        ) from None
    return parse_data(model, data, provider=provider, phase=phase)


def parse_data(model: type[M], data: Any, *, provider: str, phase: Phase) -> M:
    """Part of an answer as ``model``; another shape is ``unusable``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise unusable(
            f"{provider} answered an unexpected shape: {exc.error_count()} problem(s)", provider=provider, phase=phase
        ) from exc


def error_body(response: httpx.Response, model: type[M]) -> M | None:
    """An error answer's body as ``model``; None when it is not JSON of that shape (not the upstream's own)."""
    try:
        return model.model_validate(response.json())
    except ValueError:  # not JSON, or pydantic's ValidationError (a ValueError)
        return None


#: keys under which upstreams and the gateways in front of them put a reason, in the order they are preferred
_REASON_KEYS = ("message", "error", "detail", "details", "error_description", "msg", "reason", "status")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def _reason_in(value: Any, depth: int = 0) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if depth > 4:
        return None
    if isinstance(value, dict):
        for key in _REASON_KEYS:
            if (found := _reason_in(value.get(key), depth + 1)) is not None:
                return found
        return None
    if isinstance(value, list):
        return "; ".join(found for item in value[:5] if (found := _reason_in(item, depth + 1)) is not None) or None
    return None


def upstream_reason(response: httpx.Response) -> str | None:
    """The reason a JSON answer gives in any of the usual places (``message``, ``error.message``, ``detail``,
    ``details.error`` …), nested objects included; None when the body is not JSON or names none."""
    try:
        return _reason_in(response.json())
    except ValueError:
        return None


def describe_body(response: httpx.Response) -> str:
    """A short description of a body that is not the upstream's JSON: an HTML page's title, the start of a
    text, or ``empty body``."""
    text = response.text.strip()
    if not text:
        return "empty body"
    if "html" in response.headers.get("content-type", "").lower() or text.lstrip().startswith("<"):
        title = _TITLE.search(text)
        words = html.unescape(_TAG.sub(" ", title.group(1) if title else text))
        return f"HTML page: {_SPACE.sub(' ', words).strip()[:120]}"
    return _SPACE.sub(" ", text)[:200]


def reason_or_body(response: httpx.Response) -> str:
    """The upstream's reason when the body gives one, else a description of the body."""
    return upstream_reason(response) or describe_body(response)


def plain_reading(label: str, response: httpx.Response) -> ErrorReading:
    """An error answer whose body names no class: ``<label> HTTP <status>: <reason>``; the status decides."""
    return ErrorReading(f"{label} HTTP {response.status_code}: {reason_or_body(response)}")


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` (seconds or an HTTP date), or ``retry-after-ms``."""
    if (millis := response.headers.get("retry-after-ms")) is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000)
    value = response.headers.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None
