"""A job's webhook delivery log, replay, and the caller's signing secret."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlmodel import Session

from producer.http.auth import Owner
from producer.http.context import ApiContext, api_context
from producer.http.errors import ApiError
from shared.db import jobs_repo
from shared.db.tables import WebhookDelivery, utcnow
from shared.jobs import TERMINAL, JobStatus
from shared.webhook_secrets import signing_secrets

router = APIRouter(tags=["Webhooks"])
Context = Annotated[ApiContext, Depends(api_context)]


class DeliveryAttempt(BaseModel):
    id: int
    webhook_id: str
    event_type: str
    url: str
    attempt: int
    state: str
    response_status: int | None
    latency_ms: int | None
    error: str | None
    next_attempt_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class DeliveryLog(BaseModel):
    object: str = "list"
    task_id: str
    data: list[DeliveryAttempt]
    #: the schedule ran out (or the URL answered 410) and the last attempt failed
    exhausted: bool
    next_attempt_at: datetime | None


class WebhookSecret(BaseModel):
    secret: str


def _log(session: Session, job_id: str) -> DeliveryLog:
    rows = jobs_repo.list_deliveries(session=session, job_id=job_id)
    attempts = [
        DeliveryAttempt.model_validate(
            {**row.model_dump(), "next_attempt_at": row.next_attempt_at if row.state == "pending" else None}
        )
        for row in rows
        if row.id is not None
    ]
    pending = [row.next_attempt_at for row in rows if row.state in ("pending", "sending")]
    last = rows[-1] if rows else None
    exhausted = last is not None and not pending and last.state in ("failed", "skipped")
    return DeliveryLog(task_id=job_id, data=attempts, exhausted=exhausted, next_attempt_at=min(pending, default=None))


@router.get("/v1/images/generations/{task_id}/webhooks")
async def delivery_log(task_id: str, owner: Owner, context: Context) -> DeliveryLog:
    """Every delivery attempt of the job's webhook: status codes, latency, errors, the next attempt."""

    def load() -> DeliveryLog:
        with context.session() as session:
            jobs_repo.get_job(session=session, job_id=task_id, owner=owner)
            return _log(session, task_id)

    return await run_in_threadpool(load)


@router.post("/v1/images/generations/{task_id}/webhooks/redeliver", status_code=202)
async def redeliver(task_id: str, owner: Owner, context: Context) -> DeliveryLog:
    """Send the job's terminal event again now (same ``webhook-id``), e.g. after the schedule ran out."""

    def schedule() -> tuple[WebhookDelivery, DeliveryLog]:
        with context.session() as session, session.begin():
            job = jobs_repo.get_job(session=session, job_id=task_id, owner=owner)
            if job.callback_url is None:
                raise ApiError(400, "This task has no callback_url.", param="callback_url", code="no_callback_url")
            if job.status not in TERMINAL:
                raise ApiError(409, "The task has not finished yet.", code="task_not_finished")
            previous = jobs_repo.list_deliveries(session=session, job_id=task_id)
            delivery = jobs_repo.add_webhook_attempt(
                session=session,
                job=job,
                event_type=f"job.{JobStatus(job.status).value}",
                attempt=max((row.attempt for row in previous), default=0) + 1,
                at=utcnow(),
            )
            session.flush()
            return delivery, _log(session, task_id)

    delivery, log = await run_in_threadpool(schedule)
    assert delivery.id is not None
    await run_in_threadpool(context.sender.webhook, delivery.id)
    return log


@router.get("/v1/webhooks/secret")
async def webhook_secret(owner: Owner, context: Context) -> WebhookSecret:
    """The secret your webhooks are signed with (Standard Webhooks, ``whsec_…``)."""

    def load() -> str:
        with context.session() as session:
            return signing_secrets(session=session, owner=owner, settings=context.settings, now=utcnow())[0]

    return WebhookSecret(secret=await run_in_threadpool(load))
