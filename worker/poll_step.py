"""The poll step of a job's life: one link of the poll chain asks the upstream, then finishes, fails, or schedules
the next link (a countdown message). Stale and duplicated links end here without effect: each link claims its
number in ``rt.poll_chains`` before it polls (``shared.poll_chains``), so a pending poll commits nothing unless
the row's promise to the sweeper would go stale; the terminal compare-and-set is on the job's status.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from shared import metrics
from shared.db import jobs_repo
from shared.db.tables import Job
from shared.errors import ErrorCode, ProviderError, RateLimitedError, TransientProviderError
from shared.jobs import JobStatus
from shared.logs import bind
from shared.poll_chains import needs_heartbeat
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
    if job is None or job.status != JobStatus.RUNNING or job.poll_count > poll_count:
        return  # a stale or duplicated link: the chain has moved on
    bind(provider=job.provider, channel=job.channel)
    now = rt.clock()
    if job.deadline_at is not None and now >= job.deadline_at:
        fail_job(job_id, from_=JobStatus.RUNNING, code=ErrorCode.UPSTREAM_TIMEOUT, message="deadline passed",
                 to=JobStatus.TIMED_OUT, rt=rt)  # fmt: skip
        return
    if not _poll_token(job, poll_count, rt=rt):
        return
    claim = rt.poll_chains.claim(job_id, poll_count, at=now.timestamp())
    if not claim:
        return  # stale or duplicated, or the chain cannot be asked (None): the sweeper restarts it once overdue
    result, retry_after = _ask_upstream(job, poll_count, rt=rt)
    polled = poll_count + 1
    if result is not None and result.state == UpstreamState.SUCCEEDED:
        match finish_job(job, from_=JobStatus.RUNNING, images=result.images, rt=rt, poll_count=polled,
                         served_model=result.served_model):  # fmt: skip
            case PollAgain(after_s=after_s):
                _schedule_next_poll(job, polled, minimum_s=after_s, rt=rt)
            case ended if ended.won:
                last_pending = None if claim.previous_at is None else datetime.fromtimestamp(claim.previous_at, UTC)
                record_completion(job, seen_at=now, last_pending=last_pending, rt=rt)
        return
    if result is not None and result.state == UpstreamState.FAILED:
        error = result.error or ProviderError("the upstream task failed", provider=job.provider)
        fail_job(job_id, from_=JobStatus.RUNNING, code=error.code, message=error.message, rt=rt,
                 poll_count=polled)  # fmt: skip
        return
    _schedule_next_poll(job, polled, minimum_s=retry_after, rt=rt)


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
            _send_link(job, poll_count, delay_s=delay, rt=rt)
    return False


def _schedule_next_poll(job: Job, link: int, *, minimum_s: float, rt: Runtime) -> None:
    """Send ``link``, the next one of the chain, when the policy says (never sooner than ``minimum_s``)."""
    now = rt.clock()
    delay = max(next_poll_delay(link, learned_policy(job, rt=rt)), min(minimum_s, 300.0))
    _send_link(job, link, delay_s=clamp_to_deadline(delay, now=now, deadline=job.deadline_at), rt=rt)


def _send_link(job: Job, link: int, *, delay_s: float, rt: Runtime) -> None:
    """The next link in ``delay_s``; the row hears of it only when its promise to the sweeper would go stale."""
    if rt.poll_chains.current(job.id) not in (None, link):
        return  # the chain moved on meanwhile (an upstream callback claimed this link): its poll is on its way
    now = rt.clock()
    due = now + timedelta(seconds=delay_s)
    if needs_heartbeat(promised=job.next_poll_at, next_due=due, overdue_s=rt.settings.sweeper.poll_overdue_s):
        with rt.session() as session, session.begin():
            alive = jobs_repo.heartbeat_poll(session=session, job_id=job.id, poll_count=link, next_poll_at=due,
                                             now=now)  # fmt: skip
        if not alive:
            return  # the job ended meanwhile (a cancel, the sweeper's deadline)
    rt.sender.poll(job.id, link, route=route_of(job), countdown_s=delay_s)
