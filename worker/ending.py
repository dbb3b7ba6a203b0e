"""The end of a job's life: ``→ succeeded | failed | timed_out`` in one transaction, then what only the winner does.

The terminal compare-and-set (``jobs_repo.end_job``) and, for a success, its image rows and its one cost row land in
one commit. Only the winner frees the job's slots, announces the job as done and sends its webhook task.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from shared import metrics
from shared.db import jobs_repo
from shared.db.tables import Job, JobImage, WebhookDelivery
from shared.jobs import TERMINAL, JobStatus
from worker import webhooks
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def succeed_job(
    job_id: str,
    *,
    from_: JobStatus,
    stored: Sequence[JobImage],
    rt: Runtime,
    expected_poll_count: int | None = None,
    poll_count: int | None = None,
    served_model: str | None = None,
    upstream_report: dict[str, Any] | None = None,
) -> bool:
    """``from_ → succeeded`` with the stored images and the cost row (priced from the upstream's reported usage
    where there is one); True for the one winner."""
    now = rt.clock()
    with rt.session() as session, session.begin():
        won, delivery = jobs_repo.end_job(
            session=session,
            job_id=job_id,
            from_=from_,
            to=JobStatus.SUCCEEDED,
            now=now,
            detail=f"{len(stored)} image(s)",
            expected_poll_count=expected_poll_count,
            poll_count=poll_count,
            served_model=served_model,
            upstream_report=upstream_report,
            send_webhook_now=lambda url: webhooks.send_at_once(url, rt=rt),
        )
        ended = session.get(Job, job_id) if won else None
        if ended is not None:
            jobs_repo.add_images(session=session, images=stored)
            cost = jobs_repo.record_cost(session=session, job=ended, quantity=len(stored))
    if ended is None:
        return False
    metrics.COST.labels(model=cost.model, currency=cost.currency).inc(float(cost.amount))
    _after_terminal(ended, delivery, rt=rt)
    return True


def fail_job(
    job_id: str,
    *,
    from_: JobStatus,
    code: str,
    message: str,
    rt: Runtime,
    to: JobStatus = JobStatus.FAILED,
    expected_poll_count: int | None = None,
    poll_count: int | None = None,
) -> bool:
    """``from_ → failed | timed_out`` with a normalised error code; no cost is recorded."""
    now = rt.clock()
    with rt.session() as session, session.begin():
        won, delivery = jobs_repo.end_job(
            session=session,
            job_id=job_id,
            from_=from_,
            to=to,
            now=now,
            detail=code,
            expected_poll_count=expected_poll_count,
            poll_count=poll_count,
            error_code=code,
            error_message=message,
            send_webhook_now=lambda url: webhooks.send_at_once(url, rt=rt),
        )
        ended = session.get(Job, job_id) if won else None
    if ended is None:
        return False
    log.info("job %s %s → %s (%s)", job_id, from_, to, code)
    _after_terminal(ended, delivery, rt=rt)
    return True


def fail_job_wherever(job_id: str, *, code: str, message: str, rt: Runtime, to: JobStatus = JobStatus.FAILED) -> bool:
    """End a job from whatever non-terminal status it is in (task boundary, sweeper deadlines)."""
    with rt.session() as session:
        job = session.get(Job, job_id)
    if job is None or job.status in TERMINAL:
        return False
    return fail_job(job_id, from_=JobStatus(job.status), code=code, message=message, rt=rt, to=to)


def _after_terminal(job: Job, delivery: WebhookDelivery | None, *, rt: Runtime) -> None:
    metrics.count_finished(job)  # only the winner of the terminal compare-and-set gets here
    rt.capacity.release(job)  # the job's upstream task is over: its concurrency slots are free
    rt.announce_done(job.id)
    if delivery is not None and delivery.id is not None:
        webhooks.deliver_first_attempt(delivery, rt=rt)
