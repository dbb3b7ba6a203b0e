"""``cancel_job``: end one of a caller's unfinished jobs as ``cancelled``.

One compare-and-set from the status the job is in (``queued``, ``submitting`` or ``running``) to ``cancelled``, in
one transaction with its ``job.cancelled`` webhook row (``jobs_repo.end_job``, the worker's terminal helper too).
After the commit the caller announces the job as done (sync waiters wake up) and sends the webhook task
(``announce_cancelled``).

Nothing else has to be stopped: every worker step is a compare-and-set from the status it expects, so

- a queued job's submit finds nothing to claim: the upstream is never called;
- a submit in flight loses its move to ``running`` / ``succeeded`` / ``failed``: nothing is polled, stored or billed;
- a poll of a cancelled job is a no-op, and the poll chain ends there;
- the sweeper only looks at unfinished jobs.

An upstream task that was already created keeps running upstream (Kling, BFL and the others have no cancel API);
its result is never fetched, stored or billed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from kombu.exceptions import KombuError
from redis.exceptions import RedisError
from sqlmodel import Session

from shared.db import jobs_repo
from shared.db.tables import utcnow
from shared.errors import ImageJobsError
from shared.jobs import TERMINAL, JobStatus

log = logging.getLogger(__name__)

#: the job-event detail of a cancellation
CANCEL_DETAIL = "cancelled by the caller"


class JobAlreadyEndedError(ImageJobsError):
    """The job is already terminal: there is nothing left to cancel."""

    def __init__(self, job_id: str, status: JobStatus) -> None:
        super().__init__(f"job {job_id} already ended as {status}")
        self.job_id = job_id
        self.status = status


class WebhookSender(Protocol):
    def webhook(self, delivery_id: int, *, countdown_s: float = 0) -> None: ...


@dataclass(frozen=True, slots=True)
class Cancelled:
    job_id: str
    #: the status the job was cancelled from
    from_: JobStatus
    #: the ``job.cancelled`` webhook row, when the job has a callback URL
    delivery_id: int | None


def cancel_job(job_id: str, *, session: Session, owner: str, now: datetime | None = None) -> Cancelled:
    """Cancel one of ``owner``'s jobs (commits). Raises ``JobNotFoundError`` for a job that is not the owner's,
    ``JobAlreadyEndedError`` for one that is already terminal.

    ``session`` must have no transaction open. If the job moves on between our read and our compare-and-set (a
    worker claimed it, or it went running), we read it again and try from its new status: each lost race is one
    of the job's own transitions, and a job has only a few before it is terminal.
    """
    while True:
        session.expire_all()  # read the row as committed now, not as this session last saw it
        with session.begin():
            job = jobs_repo.get_job(session=session, job_id=job_id, owner=owner)
            status = JobStatus(job.status)
            if status in TERMINAL:
                raise JobAlreadyEndedError(job.id, status)
            won, delivery = jobs_repo.end_job(
                session=session,
                job_id=job.id,
                from_=status,
                to=JobStatus.CANCELLED,
                now=now or utcnow(),
                detail=CANCEL_DETAIL,
            )
            cancelled = Cancelled(job_id=job_id, from_=status, delivery_id=delivery.id if delivery else None)
        if won:
            log.info("job %s %s → cancelled", job_id, status)
            return cancelled


def announce_cancelled(cancelled: Cancelled, *, announce_done: Callable[[str], None], sender: WebhookSender) -> None:
    """After the commit: wake the job's sync waiters and send the webhook task.

    Neither may fail the cancellation: waiters re-check the database, and the sweeper sends a webhook attempt
    whose task was lost.
    """
    announce_done(cancelled.job_id)
    if cancelled.delivery_id is not None:
        try:
            sender.webhook(cancelled.delivery_id)
        except (KombuError, RedisError, OSError):
            log.warning("job %s cancelled, its webhook task not sent; the sweeper will send it", cancelled.job_id)
