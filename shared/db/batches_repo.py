"""Keyword-only repository functions for job batches (``job_batch`` rows) and their ``batch.completed`` webhook.

None of these commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from shared.db.tables import Job, JobBatch, WebhookDelivery
from shared.jobs import TERMINAL

#: the event type of the one webhook a batch sends
BATCH_COMPLETED = "batch.completed"


def insert_batch(*, session: Session, batch: JobBatch) -> None:
    session.add(batch)


def get_batch(*, session: Session, batch_id: str, owner: str | None = None) -> JobBatch | None:
    """The batch, or None; with ``owner`` a batch of another key is not found either."""
    batch = session.get(JobBatch, batch_id)
    if batch is None or (owner is not None and batch.owner != owner):
        return None
    return batch


def status_counts(*, session: Session, batch_id: str) -> dict[str, int]:
    """How many of the batch's jobs are in each status (statuses with none are absent)."""
    statement = select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
    return {str(status): int(count) for status, count in session.exec(statement)}


def job_ids(*, session: Session, batch_id: str) -> list[str]:
    """The batch's job ids in the order of the request's items."""
    statement = select(Job.id).where(Job.batch_id == batch_id).order_by(col(Job.batch_index))
    return list(session.exec(statement))


def find_unfinished(*, session: Session, limit: int) -> Sequence[JobBatch]:
    """Batches not yet marked finished, oldest first."""
    statement = (
        select(JobBatch).where(col(JobBatch.finished_at).is_(None)).order_by(col(JobBatch.created_at)).limit(limit)
    )
    return session.exec(statement).all()


def unended_jobs(*, session: Session, batch_id: str) -> int:
    statement = select(func.count()).where(Job.batch_id == batch_id, col(Job.status).not_in(list(TERMINAL)))
    return int(session.exec(statement).one())


def finish_batch(*, session: Session, batch_id: str, now: datetime) -> bool:
    """Compare-and-set ``finished_at`` (unset → ``now``); only one caller wins."""
    statement = (
        update(JobBatch)
        .where(col(JobBatch.id) == batch_id, col(JobBatch.finished_at).is_(None))
        .values(finished_at=now)
    )
    return session.exec(statement, execution_options={"synchronize_session": False}).rowcount == 1


def add_webhook_attempt(*, session: Session, batch: JobBatch, attempt: int, at: datetime) -> WebhookDelivery:
    """A pending delivery attempt of the batch's ``batch.completed`` event (``webhook-id`` derived from the batch)."""
    assert batch.callback_url is not None
    delivery = WebhookDelivery(
        batch_id=batch.id,
        webhook_id=f"msg_{batch.id}",
        event_type=BATCH_COMPLETED,
        url=batch.callback_url,
        attempt=attempt,
        next_attempt_at=at,
    )
    session.add(delivery)
    return delivery
