"""The small protocol every adapter implements, and the values it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from shared.config import ProviderSettings, Settings
from shared.errors import ConfigurationError, ProviderError
from shared.jobs import JsonObject


class UpstreamState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ResultImage:
    """An upstream result: inline bytes, or a URL we still have to download."""

    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What an adapter needs to know about a job (read from its row)."""

    job_id: str
    upstream_model: str
    operation: str
    params: JsonObject
    image_count: int
    #: 1 on the first submit; higher after a worker died or a transient error
    attempt: int = 1
    #: our ``/internal/callbacks/…`` URL for this job, for upstreams that call back (None: poll only)
    callback_url: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """An async upstream took the task; poll it by ``upstream_id``."""

    upstream_id: str


@dataclass(frozen=True, slots=True)
class Completed:
    """A sync upstream answered with the images."""

    images: tuple[ResultImage, ...]
    #: the upstream model that actually served, when it differs from the job's (e.g. a DALL·E replacement)
    served_model: str | None = None
    #: what the upstream said about the result besides the images (OpenAI: size, quality, background,
    #: output_format and the token usage it billed); None when it says nothing
    report: JsonObject | None = None
    #: partial images the upstream streamed before the final ones (OpenAI ``partial_images``), in order
    partials: tuple[ResultImage, ...] = ()


Submission = Accepted | Completed


@dataclass(frozen=True, slots=True)
class PollResult:
    state: UpstreamState
    images: tuple[ResultImage, ...] = ()
    error: ProviderError | None = field(default=None)
    served_model: str | None = None


def one_slot(spec: JobSpec) -> int:  # noqa: ARG001
    """Most upstreams: a job's task takes one concurrency slot."""
    return 1


def one_request(spec: JobSpec) -> float:  # noqa: ARG001
    """Most upstreams: a submit is one upstream request."""
    return 1.0


@dataclass(frozen=True, slots=True)
class ProviderFacts:
    """What the rest of the worker needs to know about an upstream, declared once by its adapter module (``FACTS``,
    registered with its factory in ``worker.providers.registry``).

    Capacity's limiter rules (``slots``, ``requests``), whether its tasks are polled (``asynchronous``: the adapter
    is ``Pollable``) and whether its submits carry our callback URL (``calls_back``) all come from here.
    """

    name: str
    asynchronous: bool
    calls_back: bool = False
    #: how many of a channel's concurrency slots the job's upstream task takes
    slots: Callable[[JobSpec], int] = one_slot
    #: how many upstream requests one submit makes (its rate-limit token cost)
    requests: Callable[[JobSpec], float] = one_request
    #: its settings section (credentials, channels, limits); None: the section of that name in ``Settings``
    section: Callable[[Settings], ProviderSettings] | None = None


class ImageProvider(Protocol):
    """An upstream API. Errors are raised as ``shared.errors.ProviderError`` subclasses only.

    A synchronous upstream answers ``submit`` with ``Completed``; an asynchronous one with ``Accepted`` and is
    also ``Pollable``."""

    name: str

    def submit(self, spec: JobSpec) -> Submission: ...

    def close(self) -> None: ...


@runtime_checkable
class Pollable(ImageProvider, Protocol):
    """An asynchronous upstream: the task ``submit`` accepted is asked for by its id until it has ended."""

    def poll(self, upstream_id: str) -> PollResult: ...


def as_pollable(adapter: ImageProvider) -> Pollable:
    """``adapter`` as the async upstream it must be to be polled."""
    if not isinstance(adapter, Pollable):
        raise ConfigurationError(f"{adapter.name} is synchronous: it has nothing to poll")
    return adapter
