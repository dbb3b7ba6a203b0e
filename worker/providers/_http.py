"""HTTP helpers shared by adapters: the one place httpx errors become ``ProviderError``s."""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from shared.errors import TransientProviderError, UnexpectedResponseError

M = TypeVar("M", bound=BaseModel)


def make_client(*, base_url: str, timeout_s: float, max_connections: int = 32) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        trust_env=False,
        follow_redirects=False,
    )


@contextlib.contextmanager
def map_transport_errors(provider: str) -> Iterator[None]:
    """Timeouts and connection failures are transient."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransientProviderError(f"{provider} timed out: {type(exc).__name__}", provider=provider) from exc
    except httpx.TransportError as exc:
        raise TransientProviderError(f"{provider} unreachable: {type(exc).__name__}", provider=provider) from exc


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
