"""The row verbs of retention and erasure: which ended jobs are due, marking their files deleted, deleting rows.

Only jobs in a terminal status are ever selected or touched (the status is part of every statement).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col, select

from shared.db.tables import CostEntry, Job, JobEvent, JobImage, WebhookDelivery
from shared.jobs import TERMINAL

_TERMINAL = [status.value for status in TERMINAL]


def results_due(*, session: Session, finished_before: datetime, limit: int) -> Sequence[str]:
    """Ended jobs whose result images are still kept although they ended before ``finished_before``."""
    return _due(session, col(Job.results_deleted_at), finished_before, limit)


def inputs_due(*, session: Session, finished_before: datetime, limit: int) -> Sequence[str]:
    return _due(session, col(Job.inputs_deleted_at), finished_before, limit)


def rows_due(*, session: Session, finished_before: datetime, limit: int) -> Sequence[str]:
    statement = (
        select(Job.id)
        .where(col(Job.status).in_(_TERMINAL), col(Job.finished_at) < finished_before)
        .order_by(col(Job.finished_at))
        .limit(limit)
    )
    return list(session.exec(statement).all())


def _due(session: Session, marker: Mapped[datetime | None], finished_before: datetime, limit: int) -> Sequence[str]:
    statement = (
        select(Job.id)
        .where(
            col(Job.status).in_(_TERMINAL),
            col(Job.finished_at) < finished_before,
            marker.is_(None),
        )
        .order_by(col(Job.finished_at))
        .limit(limit)
    )
    return list(session.exec(statement).all())


def mark_results_deleted(*, session: Session, job_id: str, now: datetime) -> bool:
    """Drop the image rows and stamp the job (only once, only an ended job); True if this call did it."""
    won = session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status).in_(_TERMINAL), col(Job.results_deleted_at).is_(None))
        .values(results_deleted_at=now)
    )
    if won.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(delete(JobImage).where(col(JobImage.job_id) == job_id))
    return True


def mark_inputs_deleted(*, session: Session, job_id: str, now: datetime) -> bool:
    won = session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status).in_(_TERMINAL), col(Job.inputs_deleted_at).is_(None))
        .values(inputs_deleted_at=now)
    )
    return bool(won.rowcount == 1)  # type: ignore[attr-defined]


def delete_job_rows(*, session: Session, job_id: str) -> bool:
    """Delete an ended job with its events, image rows, deliveries and cost entry; True if it was there."""
    exists = session.exec(select(Job.id).where(col(Job.id) == job_id, col(Job.status).in_(_TERMINAL))).first()
    if exists is None:
        return False
    for child in (JobEvent, JobImage, WebhookDelivery, CostEntry):
        session.execute(delete(child).where(col(child.job_id) == job_id))
    deleted = session.execute(delete(Job).where(col(Job.id) == job_id, col(Job.status).in_(_TERMINAL)))
    return bool(deleted.rowcount == 1)  # type: ignore[attr-defined]
