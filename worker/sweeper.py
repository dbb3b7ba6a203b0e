"""The beat sweeper: finds work the broker lost and sends it again, and ends jobs past their deadline.

It is safe to run twice at once: every re-send is preceded by a compare-and-set on the row.
"""

from __future__ import annotations

import logging
from dataclasses import astuple, dataclass
from datetime import timedelta

from sqlmodel import col

from shared.db import jobs_repo
from shared.db.tables import Job
from shared.errors import ErrorCode
from shared.jobs import JobStatus
from shared.queue import route_of
from worker.batch_completion import finish_batches
from worker.ending import fail_job
from worker.runtime import Runtime

log = logging.getLogger(__name__)

#: a pending webhook attempt this late is sent by the sweeper (its countdown task, if any, was lost)
WEBHOOK_DUE_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class SweepReport:
    resent_queued: int = 0
    resent_submitting: int = 0
    restarted_polls: int = 0
    timed_out: int = 0
    resent_webhooks: int = 0
    finished_batches: int = 0


def sweep(*, rt: Runtime) -> SweepReport:
    """One pass; returns what it did."""
    report = SweepReport(
        timed_out=_time_out_past_deadline(rt),
        resent_queued=_resend_submits(JobStatus.QUEUED, rt),
        resent_submitting=_resend_submits(JobStatus.SUBMITTING, rt),
        restarted_polls=_restart_overdue_polls(rt),
        resent_webhooks=_resend_webhooks(rt),
        finished_batches=finish_batches(rt=rt),
    )
    if any(astuple(report)):
        log.info("sweep %s", report)
    return report


def _time_out_past_deadline(rt: Runtime) -> int:
    now = rt.clock()
    with rt.session() as session:
        jobs = jobs_repo.find_past_deadline(session=session, now=now, limit=rt.settings.sweeper.batch_size)
    ended = 0
    for job in jobs:
        ended += fail_job(
            job.id,
            from_=JobStatus(job.status),
            code=ErrorCode.UPSTREAM_TIMEOUT,
            message="deadline passed before the upstream finished",
            to=JobStatus.TIMED_OUT,
            rt=rt,
        )
    return ended


def _resend_submits(status: JobStatus, rt: Runtime) -> int:
    """Queued jobs whose submit message was lost, and submits whose worker vanished (lease expired)."""
    now = rt.clock()
    settings = rt.settings.sweeper
    if status == JobStatus.QUEUED:
        column, before = col(Job.dispatched_at), now - timedelta(seconds=settings.requeue_after_s)
    else:
        column, before = col(Job.lease_until), now
    with rt.session() as session:
        jobs = jobs_repo.find_jobs(
            session=session, status=status, column=column, before=before, limit=settings.batch_size
        )
    not_since = now - timedelta(seconds=settings.requeue_after_s)
    resent = 0
    for job in jobs:
        with rt.session() as session, session.begin():
            won = jobs_repo.touch_dispatch(session=session, job_id=job.id, status=status, not_since=not_since, now=now)
        if won:
            rt.sender.submit(job.id, route=route_of(job))
            resent += 1
    return resent


def _restart_overdue_polls(rt: Runtime) -> int:
    now = rt.clock()
    before = now - timedelta(seconds=rt.settings.sweeper.poll_overdue_s)
    with rt.session() as session:
        jobs = jobs_repo.find_jobs(
            session=session,
            status=JobStatus.RUNNING,
            column=col(Job.next_poll_at),
            before=before,
            limit=rt.settings.sweeper.batch_size,
        )
    restarted = 0
    for job in jobs:
        with rt.session() as session, session.begin():
            won = jobs_repo.rearm_poll(session=session, job_id=job.id, poll_count=job.poll_count, next_poll_at=now)
        if won:
            rt.sender.poll(job.id, job.poll_count, route=route_of(job), countdown_s=0)
            restarted += 1
    return restarted


def _resend_webhooks(rt: Runtime) -> int:
    now = rt.clock()
    stale = timedelta(seconds=rt.settings.sweeper.webhook_stale_s)
    # attempts due within a countdown's reach are sent by their own task; long waits (and lost tasks) by us
    due_before = now - timedelta(seconds=WEBHOOK_DUE_GRACE_S)
    with rt.session() as session:
        deliveries = jobs_repo.find_due_webhooks(
            session=session, due_before=due_before, stale_before=now - stale, limit=rt.settings.sweeper.batch_size
        )
    for delivery in deliveries:
        assert delivery.id is not None
        rt.sender.webhook(delivery.id)
    return len(deliveries)
