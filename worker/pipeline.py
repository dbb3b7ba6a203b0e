"""The decisions of a job's life: submit, poll, finish, fail. Plain functions; tasks only call them.

Each step reads in one short transaction, calls the upstream with no transaction open, and writes in
another short transaction whose status change is a compare-and-set. Only the winner of a terminal
transition records cost, stores image rows, schedules the webhook and announces the job as done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col

from shared.catalog import PollingPolicy
from shared.db import jobs_repo
from shared.db.tables import Job, WebhookDelivery
from shared.errors import (
    ErrorCode,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from shared.jobs import TERMINAL, JobStatus
from shared.queue import route_of
from shared.upstream_callbacks import callback_url
from worker import safety_poll
from worker.capacity import Admitted, Fail, Refusing, RetryElsewhere, RetryHere, Waiting
from worker.latency import Completion, latency_key
from worker.polling import clamp_to_deadline, next_poll_delay, with_profile
from worker.providers.base import Accepted, Completed, JobSpec, PollResult, ResultImage, UpstreamState
from worker.results import store_results
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def submit_job(job_id: str, *, rt: Runtime) -> None:
    """Claim a queued job (or one whose submitting worker vanished) and hand it to its upstream.

    Upstream capacity comes first (``Capacity.admit``: a channel, a token and the job's slots there). A job that has
    to wait goes back to its queue unclaimed, so waiting for capacity is never a submit attempt.
    """
    now = rt.clock()
    with rt.session() as session:
        job = session.get(Job, job_id)
    if job is None or not _claimable(job, now):
        log.info("job %s submit skipped (status=%s)", job_id, job.status if job else "missing")
        return
    from_, attempt = JobStatus(job.status), job.submit_attempts + 1
    if attempt > rt.settings.sweeper.max_submit_attempts:
        fail_job(
            job_id, from_=from_, code=ErrorCode.TOO_MANY_ATTEMPTS, message="gave up after repeated attempts", rt=rt
        )
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
        case Admitted() as admission:
            pass
    with rt.session() as session, session.begin():
        claimed = jobs_repo.transition(
            session=session,
            job_id=job_id,
            from_=from_,
            to=JobStatus.SUBMITTING,
            detail=f"attempt {attempt}",
            when=col(Job.submit_attempts) == job.submit_attempts,
            now=now,
            submit_attempts=attempt,
            lease_until=now + timedelta(seconds=rt.settings.sweeper.submit_lease_s),
            channel=admission.channel,
        )
    if not claimed:
        _after_lost_claim(job, admission.channel, rt=rt)
        return
    _submit_claimed(job, _spec_of(job, attempt, rt=rt), channel=admission.channel, rt=rt)


def _defer_submit(job: Job, delay: float, *, why: str, rt: Runtime) -> None:
    """Back to the queue for ``delay`` seconds, unclaimed.

    ``dispatched_at`` moves to when the message is due: the sweeper leaves the job alone meanwhile, and a
    duplicate message of a job deferred a moment ago (its ``dispatched_at`` already ahead) ends here.
    """
    now = rt.clock()
    with rt.session() as session, session.begin():
        won = jobs_repo.touch_dispatch(
            session=session,
            job_id=job.id,
            status=JobStatus(job.status),
            not_since=now + timedelta(seconds=delay / 2),
            now=now + timedelta(seconds=delay),
        )
    if won:
        log.debug("job %s waits %.2fs: %s", job.id, delay, why)
        rt.sender.submit(job.id, route=route_of(job), countdown_s=delay)


def _after_lost_claim(job: Job, channel: str, *, rt: Runtime) -> None:
    """Another worker moved the job on: the slots taken stay only if the job still uses this channel."""
    with rt.session() as session:
        now_ = session.get(Job, job.id)
    if now_ is None or now_.status in TERMINAL or now_.channel != channel:
        rt.capacity.release(job, channel)


def _claimable(job: Job, now: datetime) -> bool:
    if job.status == JobStatus.QUEUED:
        return True
    return job.status == JobStatus.SUBMITTING and job.lease_until is not None and job.lease_until < now


def _spec_of(job: Job, attempt: int, *, rt: Runtime) -> JobSpec:
    return JobSpec(
        job_id=job.id,
        upstream_model=job.upstream_model,
        operation=job.operation,
        params=dict(job.upstream_params),
        image_count=job.image_count,
        attempt=attempt,
        callback_url=callback_url(rt.settings, job.provider, job.id),
    )


def _submit_claimed(job: Job, spec: JobSpec, *, channel: str, rt: Runtime) -> None:
    provider = rt.adapter(job.provider, channel)
    try:
        submission = provider.submit(spec)
    except (TransientProviderError, PermanentProviderError) as exc:
        _submit_failed(job, spec.attempt, exc, channel=channel, rt=rt)
        return
    rt.capacity.after_submit_success(job, channel)
    if isinstance(submission, Completed):
        finish_job(job.id, from_=JobStatus.SUBMITTING, provider=job.provider, images=submission.images, rt=rt,
                   served_model=submission.served_model)  # fmt: skip
        return
    _start_polling(job, submission, attempt=spec.attempt, rt=rt)


def _start_polling(job: Job, accepted: Accepted, *, attempt: int, rt: Runtime) -> None:
    now = rt.clock()
    delay = clamp_to_deadline(next_poll_delay(0, _policy_of(job, rt=rt)), now=now, deadline=job.deadline_at)
    with rt.session() as session, session.begin():
        won = jobs_repo.transition(
            session=session,
            job_id=job.id,
            from_=JobStatus.SUBMITTING,
            to=JobStatus.RUNNING,
            detail=f"upstream task {accepted.upstream_id}",
            when=col(Job.submit_attempts) == attempt,
            now=now,
            upstream_task_id=accepted.upstream_id,
            poll_count=0,
            next_poll_at=now + timedelta(seconds=delay),
            lease_until=None,
        )
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


def _hand_back_for_retry(
    job: Job, *, attempt: int, error: ProviderError, channel: str | None, delay_s: float | None = None, rt: Runtime
) -> None:
    """Back to ``queued`` for another attempt: on ``channel`` (pinned) or, with None, on whichever admits it."""
    job_id = job.id
    if attempt >= rt.settings.sweeper.max_submit_attempts:
        fail_job(job_id, from_=JobStatus.SUBMITTING, code=error.code, message=error.message, rt=rt)
        return
    delay = _retry_delay(attempt, error) if delay_s is None else delay_s
    now = rt.clock()
    with rt.session() as session, session.begin():
        won = jobs_repo.transition(
            session=session,
            job_id=job_id,
            from_=JobStatus.SUBMITTING,
            to=JobStatus.QUEUED,
            detail=f"retry in {delay:.0f}s: {error.message}"[:1000],
            when=col(Job.submit_attempts) == attempt,
            now=now,
            lease_until=None,
            dispatched_at=now + timedelta(seconds=delay),
            channel=channel,
        )
    if won:
        log.info("job %s submit retry in %.1fs after %s", job_id, delay, error.code)
        rt.sender.submit(job_id, route=route_of(job), countdown_s=delay)


def _retry_delay(attempt: int, error: ProviderError) -> float:
    if isinstance(error, RateLimitedError) and error.retry_after_s is not None:
        return min(max(error.retry_after_s, 1.0), 300.0)
    return float(min(5 * 3 ** (attempt - 1), 300))


def poll_job(job_id: str, poll_count: int, *, rt: Runtime) -> None:
    """One link of the poll chain: ask the upstream, then finish, fail, or schedule the next link."""
    with rt.session() as session:
        job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.RUNNING or job.poll_count != poll_count:
        return  # a stale or duplicated link: the chain has moved on
    now = rt.clock()
    if job.deadline_at is not None and now >= job.deadline_at:
        fail_job(
            job_id,
            from_=JobStatus.RUNNING,
            code=ErrorCode.UPSTREAM_TIMEOUT,
            message="deadline passed",
            to=JobStatus.TIMED_OUT,
            rt=rt,
            when_poll_count=poll_count,
        )
        return
    if not _poll_token(job, poll_count, rt=rt):
        return
    result, retry_after = _ask_upstream(job, poll_count, rt=rt)
    polled = poll_count + 1
    if result is not None and result.state == UpstreamState.SUCCEEDED:
        if finish_job(job_id, from_=JobStatus.RUNNING, provider=job.provider, images=result.images, rt=rt,
                      when_poll_count=poll_count, poll_count=polled, served_model=result.served_model):  # fmt: skip
            _learn_completion(job, seen_at=now, rt=rt)
        return
    if result is not None and result.state == UpstreamState.FAILED:
        error = result.error or ProviderError("the upstream task failed", provider=job.provider)
        fail_job(job_id, from_=JobStatus.RUNNING, code=error.code, message=error.message, rt=rt,
                 when_poll_count=poll_count, poll_count=polled)  # fmt: skip
        return
    _schedule_next_poll(job, poll_count, minimum_s=retry_after, rt=rt)


def _ask_upstream(job: Job, poll_count: int, *, rt: Runtime) -> tuple[PollResult | None, float]:
    """The upstream's answer (a permanent error becomes FAILED), or None and a minimum wait when unsure."""
    assert job.upstream_task_id is not None  # set together with RUNNING
    try:
        return rt.adapter(job.provider, job.channel).poll(job.upstream_task_id), 0.0
    except TransientProviderError as exc:
        log.info("job %s poll %d transient: %s", job.id, poll_count + 1, exc.message)
        wait = exc.retry_after_s if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None else 0.0
        return None, wait
    except PermanentProviderError as exc:
        return PollResult(state=UpstreamState.FAILED, error=exc), 0.0


def _poll_token(job: Job, poll_count: int, *, rt: Runtime) -> bool:
    """A token of the job's channel for this poll. Without one, the same link comes back when a token is due (no
    poll counted); with Redis unreachable, the sweeper restarts the link once it is overdue."""
    match rt.capacity.admit_poll(job):
        case Admitted():
            return True
        case Waiting(wait_s=float(delay)):
            now = rt.clock()
            with rt.session() as session, session.begin():
                won = jobs_repo.touch_poll(
                    session=session, job_id=job.id, poll_count=poll_count, next_poll_at=now + timedelta(seconds=delay)
                )
            if won:
                rt.sender.poll(job.id, poll_count, route=route_of(job), countdown_s=delay)
    return False


def _schedule_next_poll(job: Job, poll_count: int, *, minimum_s: float, rt: Runtime) -> None:
    now = rt.clock()
    delay = max(next_poll_delay(poll_count + 1, _policy_of(job, rt=rt)), min(minimum_s, 300.0))
    delay = clamp_to_deadline(delay, now=now, deadline=job.deadline_at)
    with rt.session() as session, session.begin():
        won = jobs_repo.schedule_next_poll(
            session=session,
            job_id=job.id,
            expected_poll_count=poll_count,
            next_poll_at=now + timedelta(seconds=delay),
        )
    if won:
        rt.sender.poll(job.id, poll_count + 1, route=route_of(job), countdown_s=delay)


def _policy_of(job: Job, *, rt: Runtime) -> PollingPolicy:
    """The job's polling policy: the catalog's, with the first poll and usual window its upstream model's recent
    completions teach (``worker.latency``); sparse when its upstream calls back (``worker.safety_poll``)."""
    policy = with_profile(PollingPolicy.model_validate(job.polling_policy), rt.latency.profile(_latency_key(job)))
    return safety_poll.policy_for(policy, provider=job.provider, settings=rt.settings)


def _latency_key(job: Job) -> str:
    return latency_key(job.provider, job.upstream_model, job.operation)


def _learn_completion(job: Job, *, seen_at: datetime, rt: Runtime) -> None:
    """Teach the poll schedule when this upstream model's tasks finish: after the last poll that saw the task
    pending (the row's last update) and by the poll that saw it done, in seconds since the job started running."""
    with rt.session() as session:
        events = jobs_repo.list_events(session=session, job_id=job.id)
    started = max((event.at for event in events if event.to_status == JobStatus.RUNNING), default=None)
    if started is None:
        return
    last_pending = job.updated_at if job.poll_count > 0 else started
    after_s, by_s = (last_pending - started).total_seconds(), (seen_at - started).total_seconds()
    rt.latency.record(_latency_key(job), Completion.between(after_s, by_s))


def finish_job(
    job_id: str,
    *,
    from_: JobStatus,
    provider: str,
    images: Sequence[ResultImage],
    rt: Runtime,
    when_poll_count: int | None = None,
    served_model: str | None = None,
    **changes: Any,
) -> bool:
    """Store the images, then in one transaction: ``→ succeeded``, image rows, cost row, webhook row."""
    if served_model:
        changes["upstream_model"] = served_model
    try:
        stored = store_results(
            job_id=job_id,
            provider=provider,
            images=images,
            storage=rt.storage,
            downloads=rt.downloads,
            max_bytes=rt.settings.max_image_bytes,
        )
    except TransientProviderError as exc:
        if from_ == JobStatus.RUNNING and when_poll_count is not None:
            log.info("job %s result download failed, polling again: %s", job_id, exc.message)
            with rt.session() as session:
                job = session.get(Job, job_id)
            if job is not None:
                _schedule_next_poll(job, when_poll_count, minimum_s=0, rt=rt)
            return False
        return fail_job(job_id, from_=from_, code=exc.code, message=exc.message, rt=rt, **changes)
    except ProviderError as exc:
        return fail_job(
            job_id, from_=from_, code=exc.code, message=exc.message, rt=rt, when_poll_count=when_poll_count, **changes
        )
    now = rt.clock()
    with rt.session() as session, session.begin():
        ended, delivery = _end(
            session,
            job_id,
            from_=from_,
            to=JobStatus.SUCCEEDED,
            now=now,
            detail=f"{len(stored)} image(s)",
            when_poll_count=when_poll_count,
            **changes,
        )
        if ended is not None:
            jobs_repo.add_images(session=session, images=stored)
            jobs_repo.record_cost(session=session, job=ended, quantity=len(stored))
    if ended is None:
        return False
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
    when_poll_count: int | None = None,
    **changes: Any,
) -> bool:
    """``from_ → failed | timed_out`` with a normalised error code; no cost is recorded."""
    now = rt.clock()
    with rt.session() as session, session.begin():
        ended, delivery = _end(
            session,
            job_id,
            from_=from_,
            to=to,
            now=now,
            detail=code,
            when_poll_count=when_poll_count,
            error_code=code,
            error_message=message[:1000],
            **changes,
        )
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


def _end(
    session: Session,
    job_id: str,
    *,
    from_: JobStatus,
    to: JobStatus,
    now: datetime,
    detail: str,
    when_poll_count: int | None,
    **changes: Any,
) -> tuple[Job | None, WebhookDelivery | None]:
    """The terminal compare-and-set; the winner also gets the ended row (already loaded by ``end_job``)."""
    when = col(Job.poll_count) == when_poll_count if when_poll_count is not None else None
    won, delivery = jobs_repo.end_job(
        session=session, job_id=job_id, from_=from_, to=to, now=now, detail=detail, when=when, **changes
    )
    return (session.get(Job, job_id) if won else None), delivery


def _after_terminal(job: Job, delivery: WebhookDelivery | None, *, rt: Runtime) -> None:
    rt.capacity.release(job)  # the job's upstream task is over: its concurrency slots are free
    rt.announce_done(job.id)
    if delivery is not None and delivery.id is not None:
        rt.sender.webhook(delivery.id)
