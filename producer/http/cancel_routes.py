"""Cancelling a task: ``POST /v1/images/generations/{task_id}/cancel`` answers the task object (``cancelled``).

``cancel_task`` is shared with the task dialects' cancel routes (Kling-task, apimodels), which answer in their
own envelopes. A task of another key is not found (404); a task that already ended answers 409 naming its status.
See ``producer.cancel`` for what a cancellation stops and why nothing is billed.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from redis import Redis
from redis.exceptions import RedisError

from producer.cancel import JobAlreadyEndedError, announce_cancelled, cancel_job
from producer.http.auth import Owner
from producer.http.context import ApiContext, api_context
from producer.http.errors import ApiError
from shared.queue import JOB_DONE_CHANNEL
from shared.views import JobView

log = logging.getLogger(__name__)

router = APIRouter(tags=["OpenAI Images"])
Context = Annotated[ApiContext, Depends(api_context)]


def cancel_task(context: ApiContext, task_id: str, owner: str) -> str:
    """Cancel one of ``owner``'s tasks, wake its sync waiters and send its webhook; returns the job id."""
    with context.session() as session:
        try:
            cancelled = cancel_job(task_id, session=session, owner=owner)
        except JobAlreadyEndedError as exc:
            raise ApiError(
                409,
                f"The task '{exc.job_id}' has already ended as {exc.status}; "
                "only a queued, submitting or running task can be cancelled.",
                param="task_id",
                code="task_already_ended",
            ) from None

    def announce_done(job_id: str) -> None:
        publish_done(context.settings.redis_url, job_id)

    announce_cancelled(cancelled, announce_done=announce_done, sender=context.sender)
    return cancelled.job_id


def publish_done(redis_url: str, job_id: str) -> None:
    """Announce a finished job on the done channel (a short-lived connection: cancellations are rare)."""
    client = Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.publish(JOB_DONE_CHANNEL, job_id)
    except (RedisError, OSError):  # waiters re-check the database
        log.warning("could not announce job %s as done", job_id, exc_info=True)
    finally:
        client.close()


@router.post("/v1/images/generations/{task_id}/cancel")
async def cancel_generation(task_id: str, owner: Owner, context: Context) -> JobView:
    """Cancel a queued, submitting or running task: it is never (further) sent upstream, polled or billed, and its
    webhook says ``job.cancelled``. Answers the task object."""
    job_id = await run_in_threadpool(cancel_task, context, task_id, owner)
    return await run_in_threadpool(context.load_view, job_id, owner)
