"""The decisions of a job's life: submit here, poll in ``worker.poll_step``. Plain functions; tasks only call them.

Each step reads in one short transaction, calls the upstream with no transaction open, and writes in another short
transaction through a named repository verb whose status change is a compare-and-set. Capacity (a channel, tokens,
slots, what a failure means for them) is ``rt.capacity``'s business; the end of a job is ``worker.ending``'s.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from sqlmodel import Session

from shared import metrics
from shared.db import jobs_repo
from shared.db.engine import reading
from shared.db.tables import Job
from shared.errors import ErrorCode, ProviderError, StorageUnavailableError
from shared.inline_inputs import InlineInputs
from shared.jobs import TERMINAL, JobStatus, JsonObject
from shared.logs import bind
from shared.queue import route_of
from shared.upstream_callbacks import callback_url
from worker.capacity import Admitted, Fail, Refusing, RetryElsewhere, RetryHere, Waiting, retry_delay
from worker.ending import fail_job
from worker.finishing import finish_job
from worker.inflight import Outcome
from worker.poll_step import poll_job
from worker.providers.base import Accepted, Completed, JobSpec, Submission
from worker.runtime import Runtime
from worker.scheduling.learned import learned_policy
from worker.scheduling.polling import clamp_to_deadline, next_poll_delay
from worker.webhooks import schedule_progress_webhook, send_progress_webhook

log = logging.getLogger(__name__)

__all__ = ["poll_job", "submit_job"]


def submit_job(job_id: str, *, rt: Runtime) -> None:
    """Claim a queued job (or one whose submitting worker vanished) and hand it to its upstream.

    Upstream capacity comes first (``Capacity.admit``: a channel, a token and the job's slots there). A job that has
    to wait goes back to its queue unclaimed, so waiting for capacity is never a submit attempt.
    """
    now = rt.clock()
    with Session(reading(rt.engine), expire_on_commit=False) as session:  # the claim below is the compare-and-set
        job = session.get(Job, job_id)
    if job is not None:
        bind(provider=job.provider)
    if job is None or not _claimable(job, now):
        log.info("job %s submit skipped (status=%s)", job_id, job.status if job else "missing")
        return
    try:  # inputs moved to storage at accept time go back inline
        params = InlineInputs(rt.storage, max_chars=0).restore(job.upstream_params)
    except StorageUnavailableError as exc:
        log.warning("job %s: its input images cannot be read (%s); the sweeper sends it again", job_id, exc.message)
        return
    from_ = JobStatus(job.status)
    if job.submit_attempts >= rt.settings.sweeper.max_submit_attempts:
        fail_job(job_id, from_=from_, code=ErrorCode.TOO_MANY_ATTEMPTS, message="gave up after repeated attempts",
                 rt=rt)  # fmt: skip
        return
    match rt.capacity.admit(job, now=now):
        case Waiting(wait_s=None):
            return  # capacity cannot be checked (Redis unreachable): the sweeper sends the job again
        case Waiting(wait_s=float(wait_s), why=why):
            _defer_submit(job, wait_s, why=why, rt=rt)
            return
        case Refusing(code=code, message=message):
            fail_job(job_id, from_=from_, code=code, message=message, rt=rt)
            return
        case Admitted(channel=channel):
            pass
    lease_until = now + timedelta(seconds=rt.settings.sweeper.submit_lease_s)
    with rt.session() as session, session.begin():
        claimed = jobs_repo.claim_submit(session=session, job_id=job_id, from_=from_, now=now, channel=channel,
                                         expected_attempts=job.submit_attempts, lease_until=lease_until)  # fmt: skip
        first_claim = claimed and job.submit_attempts == 0
        started = schedule_progress_webhook(session=session, job=job, event="started", at=now) if first_claim else None
    send_progress_webhook(started, rt=rt)
    if not claimed:
        _after_lost_claim(job, channel, rt=rt)
        return
    bind(channel=channel)
    if job.submit_attempts == 0:  # the first claim ends the time queued (retries are part of submitting)
        metrics.observe_phase("queued", job.provider, metrics.seconds_between(job.created_at, now))
    _submit_claimed(job, _spec_of(job, job.submit_attempts + 1, params, rt=rt), channel=channel, rt=rt)


def _claimable(job: Job, now: datetime) -> bool:
    if job.status == JobStatus.QUEUED:
        return True
    return job.status == JobStatus.SUBMITTING and job.lease_until is not None and job.lease_until < now


def _defer_submit(job: Job, delay: float, *, why: str, rt: Runtime) -> None:
    """Back to the queue for ``delay`` seconds, unclaimed. ``dispatched_at`` moves to when the message is due: the
    sweeper leaves the job alone meanwhile, and a duplicate message of a job deferred a moment ago ends here."""
    now = rt.clock()
    with rt.session() as session, session.begin():
        won = jobs_repo.touch_dispatch(session=session, job_id=job.id, status=JobStatus(job.status),
                                       not_since=now + timedelta(seconds=delay / 2),
                                       now=now + timedelta(seconds=delay))  # fmt: skip
    if won:
        log.debug("job %s waits %.2fs: %s", job.id, delay, why)
        rt.sender.submit(job.id, route=route_of(job), countdown_s=delay)


def _after_lost_claim(job: Job, channel: str, *, rt: Runtime) -> None:
    """Another worker moved the job on: the slots taken stay only if the job still uses this channel."""
    with rt.session() as session:
        current = session.get(Job, job.id)
    if current is None or current.status in TERMINAL or current.channel != channel:
        rt.capacity.release(job, channel)


def _spec_of(job: Job, attempt: int, params: JsonObject, *, rt: Runtime) -> JobSpec:
    return JobSpec(
        job_id=job.id,
        upstream_model=job.upstream_model,
        operation=job.operation,
        params=params,
        image_count=job.image_count,
        attempt=attempt,
        callback_url=callback_url(rt.settings, job.provider, job.id),
    )


def _submit_claimed(job: Job, spec: JobSpec, *, channel: str, rt: Runtime) -> None:
    """The upstream call runs in flight beside the pool (a sync generation takes seconds); then ``_submitted``."""
    adapter = rt.adapter(job.provider, channel)
    claimed_at = time.monotonic()

    def submit() -> Submission:
        with metrics.upstream_call(provider=job.provider, channel=channel, operation="submit"):
            return adapter.submit(spec)

    def then(outcome: Outcome[Submission]) -> None:
        metrics.observe_phase("submitting", job.provider, time.monotonic() - claimed_at)
        _submitted(job, spec, outcome, channel=channel, rt=rt)

    rt.inflight.call(job.id, submit, then=then)


def _submitted(job: Job, spec: JobSpec, outcome: Outcome[Submission], *, channel: str, rt: Runtime) -> None:
    try:
        submission = outcome()
    except ProviderError as exc:
        _submit_failed(job, spec.attempt, exc, channel=channel, rt=rt)
        return
    rt.capacity.after_submit_success(job, channel)
    if isinstance(submission, Completed):
        finish_job(job, from_=JobStatus.SUBMITTING, images=submission.images, partials=submission.partials,
                   report=submission.report, served_model=submission.served_model, channel=channel, rt=rt)  # fmt: skip
        return
    _start_polling(job, submission, attempt=spec.attempt, rt=rt)


def _start_polling(job: Job, accepted: Accepted, *, attempt: int, rt: Runtime) -> None:
    now = rt.clock()
    delay = clamp_to_deadline(next_poll_delay(0, learned_policy(job, rt=rt)), now=now, deadline=job.deadline_at)
    with rt.session() as session, session.begin():
        won = jobs_repo.start_running(session=session, job_id=job.id, attempt=attempt, now=now,
                                      upstream_task_id=accepted.upstream_id,
                                      next_poll_at=now + timedelta(seconds=delay))  # fmt: skip
        running = schedule_progress_webhook(session=session, job=job, event="running", at=now) if won else None
    send_progress_webhook(running, rt=rt)
    if won:
        rt.sender.poll(job.id, 0, route=route_of(job), countdown_s=delay)


def _submit_failed(job: Job, attempt: int, error: ProviderError, *, channel: str, rt: Runtime) -> None:
    """Retry on the same channel, on whichever admits the job, or fail: capacity decides (``after_failure``)."""
    match rt.capacity.after_submit_failure(job, channel, error):
        case RetryHere():
            _hand_back_for_retry(job, attempt=attempt, error=error, channel=channel, rt=rt)
        case RetryElsewhere(at_once=at_once):
            _hand_back_for_retry(job, attempt=attempt, error=error, channel=None, delay_s=0.0 if at_once else None,
                                 rt=rt)  # fmt: skip
        case Fail():
            fail_job(job.id, from_=JobStatus.SUBMITTING, code=error.code, message=error.message, rt=rt)


def _hand_back_for_retry(job: Job, *, attempt: int, error: ProviderError, channel: str | None,
                         delay_s: float | None = None, rt: Runtime) -> None:  # fmt: skip
    """Back to ``queued`` for another attempt: on ``channel`` (pinned) or, with None, on whichever admits it."""
    if attempt >= rt.settings.sweeper.max_submit_attempts:
        fail_job(job.id, from_=JobStatus.SUBMITTING, code=error.code, message=error.message, rt=rt)
        return
    delay = retry_delay(attempt, error) if delay_s is None else delay_s
    now = rt.clock()
    with rt.session() as session, session.begin():
        won = jobs_repo.hand_back(session=session, job_id=job.id, attempt=attempt, channel=channel, now=now,
                                  dispatch_at=now + timedelta(seconds=delay),
                                  reason=f"retry in {delay:.0f}s: {error.message}")  # fmt: skip
    if won:
        log.info("job %s submit retry in %.1fs after %s", job.id, delay, error.code)
        rt.sender.submit(job.id, route=route_of(job), countdown_s=delay)
