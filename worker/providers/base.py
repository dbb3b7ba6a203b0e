"""The small protocol every adapter implements, and the values it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from shared.errors import ProviderError
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


class ImageProvider(Protocol):
    """An upstream API. Errors are raised as ``shared.errors.ProviderError`` subclasses only."""

    name: str

    def submit(self, spec: JobSpec) -> Submission: ...

    def poll(self, upstream_id: str) -> PollResult: ...

    def close(self) -> None: ...
