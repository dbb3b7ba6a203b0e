"""``POST /internal/callbacks/{provider}/{job_id}?token=…``: an upstream says its task changed (Kling callback,
BFL webhook), so the job is polled now instead of at its next (sparse) safety poll.

A callback is a hint, never a result (R16): the token (``shared.upstream_callbacks``) is checked in constant time,
the body is only read to skip statuses that are still under way, and the answer (200) comes in milliseconds;
the work is a poll task, which reads the upstream as every poll does. For a running job the poll chain is moved
on by one link (compare-and-set on ``poll_count``) and that link's poll is sent at once: a link still queued, or
in flight, with the old count can no longer write anything, so the poll made after the upstream's change decides.
Duplicates and replays are harmless: a later one finds the job finished (nothing to do) or moves the chain once
more (one more upstream read, never a second charge or webhook). A job not running yet (the upstream finished
before our submit was recorded) gets one early poll of link 0. Any lost callback is covered by the safety poll
(``worker/scheduling/safety_poll.py``) and the sweeper.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Protocol

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlmodel import Session

from producer.http.context import ApiContext, api_context
from producer.http.errors import ApiError
from shared.db import jobs_repo
from shared.db.tables import Job, utcnow
from shared.jobs import TERMINAL, JobStatus
from shared.queue import Route, route_of
from shared.upstream_callbacks import CALLBACK_PROVIDERS, ROUTE_PREFIX, token_is_valid

log = logging.getLogger(__name__)

router = APIRouter(tags=["Upstream callbacks"], include_in_schema=False)
Context = Annotated[ApiContext, Depends(api_context)]

#: status words (Kling legacy ``task_status``, Kling new / BFL ``status``; lowercased) of a task still under way
PENDING_STATUSES: Final = frozenset({"submitted", "processing", "pending", "queued", "running", "in_progress"})
#: a callback for a job whose submit is not recorded yet polls link 0 this much later
EARLY_POLL_S: Final = 1.0
#: compare-and-set attempts against polls that move the chain at the same moment
_ATTEMPTS: Final = 3


class Action(StrEnum):
    #: the chain was moved on and a poll sent now
    POLL_SENT = "poll_sent"
    #: the job's submit is not recorded yet: link 0 is polled a little later
    EARLY_POLL_SENT = "early_poll_sent"
    #: the callback reports a task still under way
    IGNORED_PENDING = "ignored_pending"
    #: the job already ended
    ALREADY_FINISHED = "already_finished"
    #: other polls kept moving the chain: one of them reads the upstream anyway
    CHAIN_BUSY = "chain_busy"


class CallbackAnswer(BaseModel):
    received: bool = True
    action: Action


class PollSender(Protocol):
    def poll(self, job_id: str, poll_count: int, *, route: Route, countdown_s: float) -> None: ...


SessionFactory = Callable[[], AbstractContextManager[Session]]


@router.post(ROUTE_PREFIX + "/{provider}/{job_id}")
async def upstream_callback(
    provider: str, job_id: str, request: Request, context: Context, token: str = ""
) -> CallbackAnswer:
    """Authenticated by the token in the URL we gave the upstream; answers 200 at once, polls asynchronously."""
    if provider not in CALLBACK_PROVIDERS:
        raise ApiError(404, f"No upstream callbacks for {provider!r}.", code="not_found")
    if not token_is_valid(context.settings, provider, job_id, token):
        raise ApiError(401, "Invalid callback token.", code="invalid_callback_token")
    if reports_pending(await request.body()):
        return CallbackAnswer(action=Action.IGNORED_PENDING)
    action = await run_in_threadpool(
        react_to_callback, job_id, provider=provider, session=context.session, sender=context.sender, now=utcnow()
    )
    log.info("upstream callback for job %s (%s): %s", job_id, provider, action)
    return CallbackAnswer(action=action)


def reports_pending(body: bytes) -> bool:
    """Whether the payload says the task is still under way (anything unreadable counts as news)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    if not isinstance(payload, dict):
        return False
    status = payload.get("task_status", payload.get("status"))
    return isinstance(status, str) and status.strip().lower() in PENDING_STATUSES


def react_to_callback(
    job_id: str, *, provider: str, session: SessionFactory, sender: PollSender, now: datetime
) -> Action:
    """Send the poll that finds out what changed (see the module docstring); ``ApiError`` 404 for no such job."""
    for _ in range(_ATTEMPTS):
        with session() as reading:
            job = reading.get(Job, job_id)
        if job is None or job.provider != provider:
            raise ApiError(404, "No such task.", code="not_found")
        if job.status in TERMINAL:
            return Action.ALREADY_FINISHED
        route = route_of(job)
        if job.status != JobStatus.RUNNING:
            sender.poll(job_id, 0, route=route, countdown_s=EARLY_POLL_S)
            return Action.EARLY_POLL_SENT
        with session() as writing, writing.begin():
            moved = jobs_repo.advance_poll(
                session=writing, job_id=job_id, expected_poll_count=job.poll_count, next_poll_at=now
            )
        if moved:
            sender.poll(job_id, job.poll_count + 1, route=route, countdown_s=0)
            return Action.POLL_SENT
    return Action.CHAIN_BUSY
