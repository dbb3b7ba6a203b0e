"""The poll step of a job's life: one link of the poll chain asks the upstream, then finishes, fails, or schedules
the next link (a countdown message). Stale and duplicated links end here without effect: the row's ``poll_count``
is the compare-and-set every link carries.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from shared import metrics
from shared.db import jobs_repo
from shared.db.tables import Job
from shared.errors import ErrorCode, ProviderError, RateLimitedError, TransientProviderError
from shared.jobs import JobStatus
from shared.logs import bind
from shared.queue import route_of
from worker.capacity import Admitted, Waiting
from worker.ending import fail_job
from worker.finishing import PollAgain, finish_job
from worker.providers.base import PollResult, UpstreamState
from worker.runtime import Runtime
from worker.scheduling.learned import learned_policy, record_completion
from worker.scheduling.polling import clamp_to_deadline, next_poll_delay

log = logging.getLogger(__name__)


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
    try:
        with metrics.upstream_call(provider=job.provider, channel=job.channel, operation="poll"):
            return rt.pollable(job.provider, job.channel).poll(job.upstream_task_id), 0.0
    except TransientProviderError as exc:
        log.info("job %s poll %d transient: %s", job.id, poll_count + 1, exc.message)
        wait = exc.retry_after_s if isinstance(exc, RateLimitedError) and exc.retry_after_s is not None else 0.0
        return None, wait
    except ProviderError as exc:
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
