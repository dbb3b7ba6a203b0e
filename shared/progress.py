"""How far a job has got, for a client waiting on it: its place in the queue, when it was submitted and started,
and when it is expected to be done. Read from the database (and the learned completion times) in one session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_
from sqlmodel import Session, col, select

from shared.completion_latencies import latency_key
from shared.db.tables import Job, JobEvent
from shared.jobs import JobStatus, Priority

#: a key of ``shared.completion_latencies`` → the median seconds from accepted to done (None: unknown)
ExpectedSeconds = Callable[[str], float | None]

#: the priorities served before (or with) each one
_AT_OR_ABOVE = {
    Priority.HIGH.value: (Priority.HIGH.value,),
    Priority.NORMAL.value: (Priority.HIGH.value, Priority.NORMAL.value),
    Priority.LOW.value: (Priority.HIGH.value, Priority.NORMAL.value, Priority.LOW.value),
}


@dataclass(frozen=True, slots=True)
class Progress:
    queue_position: int | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    expected_done_at: datetime | None = None


def progress_of(session: Session, job: Job, *, expected_s: ExpectedSeconds | None = None) -> Progress:
    position = queue_position(session, job) if job.status == JobStatus.QUEUED else None
    expected_done_at = None
    if job.status == JobStatus.RUNNING and job.running_since is not None and expected_s is not None:
        seconds = expected_s(latency_key(job.provider, job.upstream_model, job.operation))
        if seconds is not None:
            expected_done_at = job.running_since + timedelta(seconds=seconds)
    return Progress(
        queue_position=position,
        submitted_at=first_submitted_at(session, job.id) if job.submit_attempts > 0 else None,
        started_at=job.running_since,
        expected_done_at=expected_done_at,
    )


def queue_position(session: Session, job: Job) -> int:
    """How many queued jobs of the same provider go before ``job``: of a higher priority, or of the same one and
    sent (else created) earlier."""
    mine = job.dispatched_at or job.created_at
    sent = func.coalesce(col(Job.dispatched_at), col(Job.created_at))
    higher = tuple(p for p in _AT_OR_ABOVE.get(job.priority, ()) if p != job.priority)
    ahead = or_(
        col(Job.priority).in_(higher),
        and_(col(Job.priority) == job.priority, or_(sent < mine, and_(sent == mine, col(Job.id) < job.id))),
    )
    statement = (
        select(func.count())
        .select_from(Job)
        .where(col(Job.status) == JobStatus.QUEUED, col(Job.provider) == job.provider, col(Job.id) != job.id, ahead)
    )
    return int(session.exec(statement).one())


def first_submitted_at(session: Session, job_id: str) -> datetime | None:
    """When a worker first claimed the job for submit (its first ``→ submitting`` event)."""
    statement = select(func.min(col(JobEvent.at))).where(
        col(JobEvent.job_id) == job_id, col(JobEvent.to_status) == JobStatus.SUBMITTING
    )
    found = session.exec(statement).one()
    return _utc(found) if isinstance(found, datetime) else None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
