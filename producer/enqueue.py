"""``enqueue_job``: validate → insert the job row → commit → send the submit task (ids only).

Used by the HTTP API and by services that enqueue in-process. A lost publish is not a lost job:
the row is committed first and the sweeper re-sends queued jobs whose task never arrived.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from producer.keys import check_spend_budget
from shared import metrics
from shared.catalog import Catalog, ValidatedRequest, load_catalog, validate_request
from shared.db import jobs_repo
from shared.db.tables import Job, utcnow
from shared.egress import EgressPolicy, refusal_reason
from shared.errors import InvalidRequestError
from shared.inline_inputs import InlineInputs
from shared.jobs import WEBHOOK_EVENTS, ImageRequest, Priority
from shared.queue import Route, route_of

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("url", "b64_json")


class SubmitSender(Protocol):
    def submit(self, job_id: str, *, route: Route, countdown_s: float = 0) -> None: ...

    def submit_many(self, jobs: Sequence[tuple[str, Route]]) -> None: ...


@dataclass(frozen=True, slots=True)
class Enqueued:
    job: Job
    #: False when ``external_task_id`` matched an existing job of the same key
    created: bool


def new_job_id() -> str:
    return uuid.uuid4().hex


def enqueue_job(
    request: ImageRequest,
    *,
    session: Session,
    owner: str,
    sender: SubmitSender,
    catalog: Catalog | None = None,
    egress: EgressPolicy | None = None,
    now: datetime | None = None,
    inputs: InlineInputs | None = None,
    has_spend_budget: bool = True,
) -> Enqueued:
    """Accept one request as a durable job; raises ``InvalidRequestError`` (nothing written) if it breaks a rule.

    With ``inputs``, large inline input images are written to storage first and the row keeps references.
    ``has_spend_budget=False`` (the tenant's cached key says it has none) skips the budget check's row lock.
    """
    job = prepare_job(request, owner=owner, catalog=catalog, egress=egress, now=now)
    if inputs is not None:
        job.upstream_params = inputs.offload(job.id, job.upstream_params)
    enqueued = commit_job(job, session=session, has_spend_budget=has_spend_budget)
    if enqueued.created:
        publish_submits([job], sender=sender)
    return enqueued


def prepare_job(
    request: ImageRequest,
    *,
    owner: str,
    catalog: Catalog | None = None,
    egress: EgressPolicy | None = None,
    now: datetime | None = None,
) -> Job:
    """The job row a request becomes (not written); ``InvalidRequestError`` naming the parameter if it breaks a rule."""
    validated = validate_request(request, catalog=catalog or load_catalog())
    _check_gateway_fields(request, egress or EgressPolicy())
    return _new_job(request, validated, owner=owner, now=now or utcnow())


def commit_job(job: Job, *, session: Session, has_spend_budget: bool = True) -> Enqueued:
    """Insert ``job`` and commit (one commit), or answer the existing job of its ``external_task_id``."""
    if job.external_task_id is not None:
        existing = jobs_repo.find_job_by_external_id(
            session=session, owner=job.owner, external_task_id=job.external_task_id
        )
        if existing is not None:
            return Enqueued(job=existing, created=False)
    if has_spend_budget:
        check_spend_budget(session=session, job=job)  # 402 if the key's spend budget cannot cover it
    jobs_repo.insert_jobs(session=session, jobs=[job])
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if job.external_task_id is None:
            raise
        existing = jobs_repo.find_job_by_external_id(
            session=session, owner=job.owner, external_task_id=job.external_task_id
        )
        if existing is None:
            raise
        return Enqueued(job=existing, created=False)
    return Enqueued(job=job, created=True)


def publish_submits(jobs: Sequence[Job], *, sender: SubmitSender) -> None:
    """Count the committed jobs as accepted and send their submit tasks in one pipeline; a failed publish is left to
    the sweeper."""
    metrics.count_accepted(jobs)
    try:
        if len(jobs) == 1:
            sender.submit(jobs[0].id, route=route_of(jobs[0]))
        else:
            sender.submit_many([(job.id, route_of(job)) for job in jobs])
    except (KombuError, RedisError, OSError):
        log.warning(
            "%d job(s) committed (first %s) but their submit tasks were not published; the sweeper will re-send them",
            len(jobs),
            jobs[0].id if jobs else "-",
        )


def _check_gateway_fields(request: ImageRequest, egress: EgressPolicy) -> None:
    if request.response_format is not None and request.response_format not in RESPONSE_FORMATS:
        raise InvalidRequestError(
            f"Invalid value for 'response_format': '{request.response_format}' is not one of url, b64_json.",
            param="response_format",
        )
    check_callback_url(request.callback_url, egress)
    unknown = sorted(set(request.webhook_events or ()) - WEBHOOK_EVENTS)
    if unknown:
        raise InvalidRequestError(
            f"Invalid value for 'webhook_events': '{unknown[0]}' is not one of "
            f"{', '.join(sorted(WEBHOOK_EVENTS))} (terminal events are always sent).",
            param="webhook_events",
        )
    for param, url in _image_urls(request):
        reason = refusal_reason(url, egress)
        if reason is not None:
            raise InvalidRequestError(f"'{param}' {reason}.", param=param)


def check_callback_url(url: str | None, egress: EgressPolicy) -> None:
    """400 naming ``callback_url`` if we would refuse to deliver webhooks to it."""
    if url is None:
        return
    reason = refusal_reason(url, egress)
    if reason is None and len(url) > 2048:
        reason = "is longer than 2048 characters"
    if reason is not None:
        raise InvalidRequestError(f"'callback_url' {reason}.", param="callback_url")


#: request fields that may carry an image URL; list fields hold strings or objects with the given key
_IMAGE_FIELDS: dict[str, str | None] = {
    "image": None,
    "image_url": None,
    "scene_image": None,
    "style_image": None,
    "human_image": None,
    "cloth_image": None,
    "mask": None,
    "image_urls": None,
    "images": None,
    "subject_image_list": "subject_image",
    "image_list": "image",
}


def _image_urls(request: ImageRequest) -> Iterator[tuple[str, str]]:
    """(param, url) for every caller-supplied image given as a URL rather than inline data."""
    for param, key in _IMAGE_FIELDS.items():
        value = getattr(request, param, None)
        items = value if isinstance(value, list) else [value]
        for item in items:
            ref = item.get(key) if isinstance(item, dict) and key else item
            if isinstance(ref, str) and "://" in ref[:16]:
                yield param, ref


def _new_job(request: ImageRequest, validated: ValidatedRequest, *, owner: str, now: datetime) -> Job:
    return Job(
        id=new_job_id(),
        owner=owner,
        model=validated.model,
        variant=validated.variant,
        provider=validated.provider,
        upstream_model=validated.upstream_model,
        operation=validated.operation,
        upstream_params=validated.upstream_params,
        image_count=validated.image_count,
        response_format=request.response_format or "url",
        priority=(request.priority or Priority.NORMAL).value,
        callback_url=request.callback_url,
        webhook_events=sorted(set(request.webhook_events)) if request.webhook_events else None,
        external_task_id=request.external_task_id,
        price_per=validated.price.per,
        unit_price=validated.price.unit_amount,
        currency=validated.price.currency,
        pricing=validated.price.stored(),
        polling_policy=validated.polling.model_dump(),
        created_at=now,
        updated_at=now,
        dispatched_at=now,
        deadline_at=now + timedelta(seconds=validated.polling.deadline_s),
    )
