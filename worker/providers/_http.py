"""HTTP helpers shared by adapters: the one place httpx errors become ``ProviderError``s."""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shared.errors import ProviderError, TransientProviderError, UnexpectedResponseError
from worker.http_transport import PerThreadTransport

M = TypeVar("M", bound=BaseModel)
#: an adapter's mapping of a non-200 answer onto our error tree
ErrorFor = Callable[[httpx.Response], ProviderError]


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
    """Timeouts and connection failures are transient; whether the request may have reached the upstream is
    decided here, once (https://www.python-httpx.org/exceptions/), and carried on the error."""
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


def json_body(response: httpx.Response, *, provider: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise UnexpectedResponseError(
            f"{provider} answered HTTP {response.status_code} with a non-JSON body", provider=provider
        ) from None


def parse_model(model: type[M], data: Any, *, provider: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UnexpectedResponseError(
            f"{provider} answered an unexpected shape: {exc.error_count()} problem(s)", provider=provider
        ) from exc


def call(
    http: httpx.Client, method: str, url: str, model: type[M], *, provider: str, error_for: ErrorFor, **kwargs: Any
) -> M:
    """One request whose only good answer is HTTP 200 with a JSON body of ``model``'s shape.

    Transport failures are transient; any other status is raised as ``error_for(response)``; a body that is
    not JSON or not of ``model``'s shape is an ``UnexpectedResponseError``.
    """
    with map_transport_errors(provider):
        response = http.request(method, url, **kwargs)
    if response.status_code != 200:
        raise error_for(response)
    return parse_model(model, json_body(response, provider=provider), provider=provider)


def error_body(response: httpx.Response, model: type[M], fallback: Callable[[str], M]) -> M:
    """An error answer's body as ``model``; when it is not JSON of that shape, ``fallback(first 200 characters)``."""
    try:
        return model.model_validate(response.json())
    except ValueError:  # not JSON, or pydantic's ValidationError (a ValueError)
        return fallback(response.text[:200])


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
