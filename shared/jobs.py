"""Job states, the transition table, and the unified image request every dialect is parsed into."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

JsonObject = dict[str, Any]


class Priority(StrEnum):
    """The order of a job's messages within its provider's queues."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class JobStatus(StrEnum):
    #: row written by the producer; the submit task is sent (or about to be)
    QUEUED = "queued"
    #: a worker claimed the job and is calling the upstream
    SUBMITTING = "submitting"
    #: the upstream accepted an async task; poll tasks track it
    RUNNING = "running"
    #: images stored, cost recorded
    SUCCEEDED = "succeeded"
    #: the upstream (or we) gave up; error_code says why
    FAILED = "failed"
    #: the per-model deadline passed before the upstream finished
    TIMED_OUT = "timed_out"
    #: the caller cancelled it
    CANCELLED = "cancelled"


TERMINAL: Final[frozenset[JobStatus]] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED}
)

#: every allowed change of status; terminal states have no exits.
#: ``SUBMITTING → SUBMITTING`` is a re-claim after a worker died mid-submit (lease expired),
#: ``SUBMITTING → QUEUED`` hands a job back after a transient upstream error.
TRANSITIONS: Final[Mapping[JobStatus, frozenset[JobStatus]]] = {
    JobStatus.QUEUED: frozenset({JobStatus.SUBMITTING, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED}),
    JobStatus.SUBMITTING: frozenset(
        {
            JobStatus.SUBMITTING,
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.TIMED_OUT,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.TIMED_OUT: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def can_transition(src: JobStatus, dst: JobStatus) -> bool:
    return dst in TRANSITIONS[src]


def sources_of(dst: JobStatus) -> frozenset[JobStatus]:
    """Every status from which ``dst`` may be reached (used to build compare-and-set updates)."""
    return frozenset(src for src, targets in TRANSITIONS.items() if dst in targets)


class ImageRequest(BaseModel):
    """The union of every dialect's request fields (OpenAI, Kling-task, apimodels).

    The catalog decides what a model takes.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)

    model: str
    prompt: str | None = None
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    response_format: str | None = None
    style: str | None = None
    user: str | None = None
    image: str | None = None
    image_url: str | None = None
    image_urls: list[str] | None = None
    image_list: list[JsonObject] | None = None
    images: list[str] | None = None
    subject_image_list: list[JsonObject] | None = None
    scene_image: str | None = None
    style_image: str | None = None
    negative_prompt: str | None = None
    aspect_ratio: str | None = None
    resolution: str | None = None
    callback_url: str | None = None
    external_task_id: str | None = Field(default=None, max_length=128)
    model_name: str | None = None
    element_list: list[JsonObject] | None = None
    result_type: str | None = None
    series_amount: int | str | None = None
    human_image: str | None = None
    cloth_image: str | None = None
    up_expansion_ratio: float | None = None
    down_expansion_ratio: float | None = None
    left_expansion_ratio: float | None = None
    right_expansion_ratio: float | None = None
    image_fidelity: float | None = None
    human_fidelity: float | None = None
    image_reference: str | None = None
    #: Kling multi-image (``kling-multi-image``): the upstream model, a model parameter (not ``model_name``)
    multi_model_name: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    #: OpenAI: answer Server-Sent Events (and how many partial images before the final one)
    stream: bool | None = None
    partial_images: int | None = None
    moderation: str | None = None
    mask: str | None = None
    input_fidelity: str | None = None
    seed: int | None = None
    guidance_scale: float | None = None
    safety_tolerance: int | None = None
    #: low | normal | high: the order within the provider's queues (the word, also in strict mode)
    priority: Priority | None = Field(default=None, strict=False)
    async_: bool | None = Field(default=None, alias="async")
    #: progress webhooks wanted besides the terminal one (``WEBHOOK_EVENTS``), as Replicate's
    #: ``webhook_events_filter`` (https://replicate.com/docs/topics/webhooks/setup-webhook)
    webhook_events: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_absent(cls, data: Any) -> Any:
        return without_empty(data) if isinstance(data, Mapping) else data

    def model_params(self) -> JsonObject:
        """The fields sent for the model (gateway-level fields excluded), as given by the caller."""
        return self.model_dump(exclude_none=True, exclude=set(GATEWAY_FIELDS))


def without_empty(fields: Mapping[str, Any]) -> JsonObject:
    """``fields`` without those sent as ``null`` or ``""`` (or only whitespace): every dialect treats them as not
    given, as Kling's own examples send ``""`` for unset optionals (``callback_url``, ``external_task_id``), so
    ``""`` is never an idempotency key nor a callback URL."""
    return {
        name: value
        for name, value in fields.items()
        if value is not None and not (isinstance(value, str) and not value.strip())
    }


#: fields about how *we* handle the job, valid for every model and never sent upstream
GATEWAY_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "model",
        "response_format",
        "user",
        "callback_url",
        "external_task_id",
        "async_",
        "model_name",
        "priority",
        "stream",
        "webhook_events",
    }
)

#: the progress webhooks a request may ask for: ``started`` (``job.started``, a worker submitted it) and
#: ``running`` (``job.running``, the async upstream accepted it); the terminal ``job.*`` one is always sent
WEBHOOK_EVENTS: Final[frozenset[str]] = frozenset({"started", "running"})
