"""What the dialects share beyond OpenAI's generations route: parse fields into the unified request, enqueue
it as a task, and read a job back with its signed image URLs.

The Kling-task and apimodels dialects differ only in their envelopes; the job, its validation and its
idempotency are those of the OpenAI dialect (``producer.enqueue.enqueue_job``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from producer.enqueue import enqueue_job
from producer.http.context import ApiContext
from shared.db import jobs_repo
from shared.db.tables import Job
from shared.errors import InvalidRequestError, JobNotFoundError
from shared.jobs import ImageRequest


@dataclass(frozen=True, slots=True)
class Task:
    """One job as a task dialect shows it: the row and its result images as signed URLs (in order)."""

    job: Job
    urls: tuple[str, ...] = ()


def parse_request(fields: Mapping[str, Any], *, lax: bool = False) -> ImageRequest:
    """The unified request from a dialect's fields; a bad field raises ``RequestValidationError`` naming it.

    ``lax`` converts strings the way form fields need (``"2"`` → ``2``, ``"true"`` → ``True``).
    """
    try:
        return ImageRequest.model_validate(dict(fields), strict=False if lax else None)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def refuse_fields(fields: Mapping[str, Any], names: tuple[str, ...], *, dialect: str) -> None:
    """Fields of the unified request that make no sense in a dialect (e.g. ``async`` where every task is)."""
    for name in names:
        if name in fields:
            raise InvalidRequestError(f"The parameter '{name}' is not supported by the {dialect} API.", param=name)


def enqueue_task(context: ApiContext, request: ImageRequest, owner: str) -> Task:
    """Validate and enqueue (nothing is written if a rule is broken); a repeated ``external_task_id`` answers
    the existing job as it is now."""
    with context.session() as session:
        enqueued = enqueue_job(
            request,
            session=session,
            owner=owner,
            sender=context.sender,
            catalog=context.catalog,
            egress=context.egress,
            inputs=context.inline_inputs(),
        )
    if enqueued.created:
        return Task(job=enqueued.job)  # just inserted: no images to read
    return load_task(context, enqueued.job.id, owner)


def load_task(context: ApiContext, task_id: str, owner: str, *, by_external_id: bool = False) -> Task:
    """One of ``owner``'s jobs (``JobNotFoundError`` for any other); ``by_external_id`` also matches the
    caller's ``external_task_id`` when no job has that id."""
    with context.session() as session:
        try:
            job = jobs_repo.get_job(session=session, job_id=task_id, owner=owner)
        except JobNotFoundError:
            found = (
                jobs_repo.find_job_by_external_id(session=session, owner=owner, external_task_id=task_id)
                if by_external_id
                else None
            )
            if found is None:
                raise
            job = found
        images = jobs_repo.list_images(session=session, job_id=job.id)
    return Task(job=job, urls=tuple(context.sign(image.storage_key) for image in images))


def epoch_ms(moment: datetime) -> int:
    """A timestamp in milliseconds since the epoch, as both task dialects write them."""
    return int(moment.timestamp() * 1000)
