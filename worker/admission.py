"""Upstream capacity for a submit: a channel, a rate token and the job's concurrency slots, or a wait.

A job that has to wait goes back to its queue unclaimed (never a submit attempt); slots are given back when
the job's upstream task is over. Book-keeping in Redis never fails a job.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from redis.exceptions import RedisError

from shared.db import jobs_repo
from shared.db.tables import Job
from shared.jobs import TERMINAL, JobStatus
from shared.queue import route_of
from worker import channels
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def admit(job: Job, *, now: datetime, rt: Runtime) -> channels.Admission | None:
    try:
        return channels.admit(job, settings=rt.settings, limits=rt.limits, health=rt.health, now=now)
    except RedisError:
        log.warning("job %s: upstream limits unavailable (Redis); left for the sweeper", job.id, exc_info=True)
        return None


def defer_submit(job: Job, wait_s: float, *, why: str, rt: Runtime) -> None:
    """Back to the queue for about ``wait_s`` (jittered, so waiting jobs do not all ask again at once).

    ``dispatched_at`` moves to when the message is due: the sweeper leaves the job alone meanwhile, and a
    duplicate message of a job deferred a moment ago (its ``dispatched_at`` already ahead) ends here.
    """
    delay = jittered(wait_s)
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


def jittered(wait_s: float) -> float:
    """``wait_s`` stretched by up to half (at least 0.1 s, at most a minute)."""
    return min(max(wait_s, 0.1) * random.uniform(1.0, 1.5), channels.MAX_WAIT_S)


def after_lost_claim(job_id: str, channel: str, *, rt: Runtime) -> None:
    """Another worker moved the job on: the slots taken stay only if the job still uses this channel."""
    with rt.session() as session:
        job = session.get(Job, job_id)
    if job is not None and job.status not in TERMINAL and job.channel == channel:
        return
    release_slots(job.provider if job is not None else "", channel, job_id, rt=rt)


def release_slots(provider: str, channel: str, job_id: str, *, rt: Runtime) -> None:
    """Free the job's concurrency slots on ``channel`` (if Redis is unreachable they expire with the job's hold)."""
    if rt.limits is not None:
        with tolerating_redis(job_id, "release its concurrency slots"):
            rt.limits.release(provider, channel, job_id)


@contextmanager
def tolerating_redis(job_id: str, what: str) -> Iterator[None]:
    """Book-keeping in Redis never fails a job: a failure is logged and the step goes on."""
    try:
        yield
    except RedisError:
        log.warning("job %s: could not %s (Redis unreachable)", job_id, what, exc_info=True)
