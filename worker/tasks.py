"""Thin Celery tasks: ids in, one pipeline call, unexpected errors end the job as ``internal_error``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from kombu.exceptions import KombuError
from redis.exceptions import RedisError

from shared.errors import ErrorCode, StorageUnavailableError
from shared.queue import TaskName
from worker import ending, pipeline, retention, sweeper, webhooks
from worker.app import app, runtime

log = logging.getLogger(__name__)


@contextmanager
def _failing_job_on_crash(job_id: str) -> Iterator[None]:
    try:
        yield
    except (KombuError, RedisError):
        # the broker went away mid-task: every step commits before it publishes, so the job's row says where it
        # is and the sweeper re-sends the lost message; a Redis outage is no reason to fail the job
        log.warning("job %s: broker unavailable, its next message is left to the sweeper", job_id, exc_info=True)
    except Exception:
        log.exception("job %s crashed in a task", job_id)
        ending.fail_job_wherever(job_id, code=ErrorCode.INTERNAL_ERROR, message="internal error", rt=runtime())


@app.task(name=TaskName.SUBMIT_JOB.value)
def submit_job(job_id: str) -> None:
    with _failing_job_on_crash(job_id):
        pipeline.submit_job(job_id, rt=runtime())


@app.task(name=TaskName.POLL_JOB.value)
def poll_job(job_id: str, poll_count: int) -> None:
    with _failing_job_on_crash(job_id):
        pipeline.poll_job(job_id, poll_count, rt=runtime())


@app.task(name=TaskName.DELIVER_WEBHOOK.value)
def deliver_webhook(delivery_id: int) -> None:
    webhooks.deliver_webhook(delivery_id, rt=runtime())


@app.task(name=TaskName.SWEEP.value)
def sweep() -> None:
    sweeper.sweep(rt=runtime())


@app.task(name=TaskName.PURGE_EXPIRED.value)
def purge_expired() -> None:
    try:
        retention.purge(rt=runtime())
    except StorageUnavailableError as exc:  # the next run goes on where this one stopped
        log.warning("retention run stopped: %s", exc.message)
