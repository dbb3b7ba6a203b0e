"""The decisions of a job's life: submit and poll. Plain functions; tasks only call them.

Each step reads in one short transaction, calls the upstream with no transaction open, and writes in another short
transaction through a named repository verb whose status change is a compare-and-set. Capacity (a channel, tokens,
slots, what a failure means for them) is ``rt.capacity``'s business; the end of a job is ``worker.ending``'s.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from shared import metrics
from shared.db import jobs_repo
from shared.db.engine import reading
from shared.db.tables import Job
from shared.errors import ErrorCode, ProviderError, RateLimitedError, StorageUnavailableError, TransientProviderError
from shared.inline_inputs import InlineInputs
from shared.jobs import TERMINAL, JobStatus, JsonObject
from shared.logs import bind
from shared.queue import route_of
from shared.upstream_callbacks import callback_url
from worker.capacity import Admitted, Fail, Refusing, RetryElsewhere, RetryHere, Waiting, retry_delay
from worker.ending import fail_job
from worker.finishing import PollAgain, finish_job
from worker.inflight import Outcome
from worker.providers.base import Accepted, Completed, JobSpec, PollResult, Submission, UpstreamState
from worker.runtime import Runtime
from worker.scheduling.learned import learned_policy, record_completion
from worker.scheduling.polling import clamp_to_deadline, next_poll_delay
from worker.webhooks import schedule_progress_webhook, send_progress_webhook

log = logging.getLogger(__name__)


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
        metrics.observe_phase("queued", job.provider, (now - _aware(job.created_at)).total_seconds())
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
        started = time.monotonic()
        outcome = "ok"
        try:
            return adapter.submit(spec)
        except ProviderError as exc:
            outcome = exc.code
            raise
        finally:
            metrics.count_upstream(provider=job.provider, channel=channel, operation="submit", outcome=outcome,
                                   seconds=time.monotonic() - started)  # fmt: skip

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


def poll_job(job_id: str, poll_count: int, *, rt: Runtime) -> None:
    """One link of the poll chain: ask the upstream, then finish, fail, or schedule the next link."""
    with rt.session() as session:
        job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.RUNNING or job.poll_count != poll_count:
        return  # a stale or duplicated link: the chain has moved on
    bind(provider=job.provider, channel=job.channel)
    now = rt.clock()
    if job.deadline_at is not None and now >= job.deadline_at:
        fail_job(job_id, from_=JobStatus.RUNNING, code=ErrorCode.UPSTREAM_TIMEOUT, message="deadline passed",
                 to=JobStatus.TIMED_OUT, rt=rt, expected_poll_count=poll_count)  # fmt: skip
        return
    if not _poll_token(job, poll_count, rt=rt):
        return
    result, retry_after = _ask_upstream(job, poll_count, rt=rt)
    polled = poll_count + 1
    if result is not None and result.state == UpstreamState.SUCCEEDED:
        match finish_job(job, from_=JobStatus.RUNNING, images=result.images, rt=rt, expected_poll_count=poll_count,
                         poll_count=polled, served_model=result.served_model):  # fmt: skip
            case PollAgain(after_s=after_s):
                _schedule_next_poll(job, poll_count, minimum_s=after_s, rt=rt)
            case ended if ended.won:
                record_completion(job, seen_at=now, rt=rt)
        return
    if result is not None and result.state == UpstreamState.FAILED:
        error = result.error or ProviderError("the upstream task failed", provider=job.provider)
        fail_job(job_id, from_=JobStatus.RUNNING, code=error.code, message=error.message, rt=rt,
                 expected_poll_count=poll_count, poll_count=polled)  # fmt: skip
        return
    _schedule_next_poll(job, poll_count, minimum_s=retry_after, rt=rt)


def _ask_upstream(job: Job, poll_count: int, *, rt: Runtime) -> tuple[PollResult | None, float]:
    """The upstream's answer (a permanent error becomes FAILED), or None and a minimum wait when unsure."""
    assert job.upstream_task_id is not None  # set together with RUNNING
    started = time.monotonic()

    def count(outcome: str) -> None:
        metrics.count_upstream(provider=job.provider, channel=job.channel, operation="poll", outcome=outcome,
                               seconds=time.monotonic() - started)  # fmt: skip

    try:
        result = rt.pollable(job.provider, job.channel).poll(job.upstream_task_id)
        count("ok")
        return result, 0.0
    except TransientProviderError as exc:
        count(exc.code)
        log.info("job %s poll %d transient: %s", job.id, poll_count + 1, exc.message)
        wait = exc.retry_after_s if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None else 0.0
        return None, wait
    except ProviderError as exc:
        count(exc.code)
        return PollResult(state=UpstreamState.FAILED, error=exc), 0.0


def _poll_token(job: Job, poll_count: int, *, rt: Runtime) -> bool:
    """A token of the job's channel for this poll. Without one, the same link comes back when a token is due (no
    poll counted); with Redis unreachable, the sweeper restarts the link once it is overdue."""
    match rt.capacity.admit_poll(job):
        case Admitted():
            return True
        case Waiting(wait_s=float(delay)):
            next_poll_at = rt.clock() + timedelta(seconds=delay)
            with rt.session() as session, session.begin():
                won = jobs_repo.rearm_poll(session=session, job_id=job.id, poll_count=poll_count,
                                           next_poll_at=next_poll_at)  # fmt: skip
            if won:
                rt.sender.poll(job.id, poll_count, route=route_of(job), countdown_s=delay)
    return False


def _schedule_next_poll(job: Job, poll_count: int, *, minimum_s: float, rt: Runtime) -> None:
    now = rt.clock()
    delay = max(next_poll_delay(poll_count + 1, learned_policy(job, rt=rt)), min(minimum_s, 300.0))
    delay = clamp_to_deadline(delay, now=now, deadline=job.deadline_at)
    with rt.session() as session, session.begin():
        won = jobs_repo.advance_poll(session=session, job_id=job.id, expected_poll_count=poll_count, now=now,
                                     next_poll_at=now + timedelta(seconds=delay))  # fmt: skip
    if won:
        rt.sender.poll(job.id, poll_count + 1, route=route_of(job), countdown_s=delay)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # SQLite hands back naive UTC
