"""The public view of a job: the task object the API returns and the webhook payload carries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel

from shared.db.tables import CostEntry, Job, JobImage
from shared.progress import Progress

#: storage key → a URL the caller can download (signed, expiring)
UrlSigner = Callable[[str], str]


class ImageView(BaseModel):
    url: str
    content_type: str
    width: int | None = None
    height: int | None = None


class CostView(BaseModel):
    amount: Decimal
    currency: str
    per: str
    quantity: int
    #: how ``amount`` was computed: ``per_image`` (unit price × images delivered), ``per_request`` (one unit
    #: price), ``usage`` (the tokens the upstream reported at the model's token rates); None on old rows
    basis: Literal["per_image", "per_request", "usage"] | None = None
    #: what it was computed from: the price's parameter values (e.g. quality and size), plus the usage, the token
    #: rates and the table's estimate when billed by usage
    inputs: dict[str, Any] = {}


class ErrorView(BaseModel):
    code: str
    message: str


class JobView(BaseModel):
    id: str
    task_id: str
    object: str = "image.generation.task"
    status: str
    model: str
    model_name: str | None
    upstream_model: str
    operation: str
    #: low | normal | high: the order within the provider's queues
    priority: str
    external_task_id: str | None
    created: int
    created_at: int
    updated_at: int
    finished_at: int | None
    poll_count: int
    submit_attempts: int
    data: list[ImageView]
    #: when the result images are deleted (Unix seconds; None: kept for good, or the job has not ended)
    expires_at: int | None = None
    cost: CostView | None
    error: ErrorView | None
    # What the upstream reported about the result, as OpenAI's ImagesResponse names it
    # (https://platform.openai.com/docs/api-reference/images/object); None where it says nothing.
    background: str | None = None
    output_format: str | None = None
    quality: str | None = None
    size: str | None = None
    usage: dict[str, Any] | None = None
    #: while queued: how many queued jobs of its provider go first (higher priority, or same and sent earlier)
    queue_position: int | None = None
    #: when a worker first claimed it for submit, and when the upstream accepted it (Unix seconds)
    submitted_at: int | None = None
    started_at: int | None = None
    #: while running: when it is expected to be done, from its upstream model's recent completion times
    expected_done_at: int | None = None


def job_view(
    job: Job,
    *,
    images: Sequence[JobImage],
    cost: CostEntry | None,
    sign: UrlSigner,
    results_kept_s: float | None = None,
    progress: Progress | None = None,
) -> JobView:
    created = int(job.created_at.timestamp())
    reported = job.upstream_report or {}
    expires_at = None
    if job.finished_at is not None and results_kept_s is not None:
        expires_at = int(job.finished_at.timestamp() + results_kept_s)
    return JobView(
        id=job.id,
        task_id=job.id,
        status=job.status,
        model=job.model,
        model_name=job.variant,
        upstream_model=job.upstream_model,
        operation=job.operation,
        priority=job.priority,
        external_task_id=job.external_task_id,
        created=created,
        created_at=created,
        updated_at=int(job.updated_at.timestamp()),
        finished_at=int(job.finished_at.timestamp()) if job.finished_at else None,
        expires_at=expires_at,
        poll_count=job.poll_count,
        submit_attempts=job.submit_attempts,
        data=[
            ImageView(
                url=sign(image.storage_key), content_type=image.content_type, width=image.width, height=image.height
            )
            for image in images
        ],
        cost=(
            CostView(
                amount=Decimal(cost.amount),
                currency=cost.currency,
                per=cost.per,
                quantity=cost.quantity,
                basis=cost.basis,  # written from pricing.Basis only
                inputs=cost.inputs or {},
            )
            if cost is not None
            else None
        ),
        error=ErrorView(code=job.error_code, message=job.error_message or "") if job.error_code else None,
        **{name: reported.get(name) for name in REPORTED_FIELDS},
        **_progress_fields(progress or Progress(started_at=job.running_since)),
    )


def _progress_fields(progress: Progress) -> dict[str, int | None]:
    def seconds(moment: datetime | None) -> int | None:
        return int(moment.timestamp()) if moment is not None else None

    return {
        "queue_position": progress.queue_position,
        "submitted_at": seconds(progress.submitted_at),
        "started_at": seconds(progress.started_at),
        "expected_done_at": seconds(progress.expected_done_at),
    }


#: the upstream's report fields a task object carries (``Job.upstream_report``)
REPORTED_FIELDS = ("background", "output_format", "quality", "size", "usage")
