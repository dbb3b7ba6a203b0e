"""``GET /v1/images/generations/{task_id}/events``: a job's history and progress as Server-Sent Events.

One ``job.event`` per ``job_event`` row (every status change and submit attempt, oldest first, its row id as the
SSE ``id`` so a client that reconnects with ``Last-Event-ID`` gets only what it missed), a ``job.poll`` whenever
the poll count grows, and a last ``job.task`` with the task object (the upstream model that served, images,
cost) once the job has ended; then the stream closes. Between reads the stream waits on the job-done
announcement (``producer.http.waiter``) for at most ``RECHECK_S``, so a stream costs one short read a second.
Format: https://html.spec.whatwg.org/multipage/server-sent-events.html
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlmodel import Session, col, select

from producer.http.auth import Owner
from producer.http.context import ApiContext, api_context
from shared.db import jobs_repo
from shared.db.engine import reading
from shared.db.tables import JobEvent
from shared.jobs import TERMINAL

router = APIRouter(tags=["OpenAI Images"])
Context = Annotated[ApiContext, Depends(api_context)]

#: the longest a stream waits between two reads of the job
RECHECK_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class _Read:
    status: str
    poll_count: int
    events: list[dict[str, Any]]


@router.get("/v1/images/generations/{task_id}/events", response_model=None)
async def stream_events(
    task_id: str,
    owner: Owner,
    context: Context,
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The job's events until it ends (404 for a job of another key, before anything is streamed)."""
    after = int(last_event_id) if last_event_id is not None and last_event_id.isdigit() else 0
    first = await run_in_threadpool(_read, context, task_id, owner, after)  # JobNotFoundError → 404
    return StreamingResponse(
        _events(context, request, task_id, owner, first, after),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-task-id": task_id},
    )


async def _events(
    context: ApiContext, request: Request, job_id: str, owner: str, read: _Read, after: int
) -> AsyncIterator[bytes]:
    polls = -1
    while True:
        for event in read.events:
            after = event["id"]
            yield _sse("job.event", event, event_id=after)
        if read.poll_count != polls and read.poll_count > 0:
            polls = read.poll_count
            yield _sse("job.poll", {"task_id": job_id, "poll_count": polls})
        if read.status in TERMINAL:
            view = await run_in_threadpool(context.load_view, job_id, owner)
            yield _sse("job.task", view.model_dump(mode="json"))
            return
        if await request.is_disconnected():
            return
        status = read.status

        async def changed(seen: str = status) -> bool:
            return await run_in_threadpool(_status, context, job_id) != seen

        await context.waiter.wait(job_id, timeout_s=RECHECK_S, is_done=changed, check_first=False)
        read = await run_in_threadpool(_read, context, job_id, owner, after)


def _read(context: ApiContext, job_id: str, owner: str, after: int) -> _Read:
    """The job's status and its events after row ``after``, in one read-only transaction."""
    with Session(reading(context.engine)) as session:
        job = jobs_repo.get_job(session=session, job_id=job_id, owner=owner)
        statement = (
            select(JobEvent).where(JobEvent.job_id == job_id, col(JobEvent.id) > after).order_by(col(JobEvent.id))
        )
        events = [_event(row) for row in session.exec(statement)]
        return _Read(status=job.status, poll_count=job.poll_count, events=events)


def _status(context: ApiContext, job_id: str) -> str | None:
    with Session(reading(context.engine)) as session:
        job = jobs_repo.get_job(session=session, job_id=job_id)
        return job.status


def _event(row: JobEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "task_id": row.job_id,
        "from_status": row.from_status,
        "status": row.to_status,
        "at": int(row.at.timestamp()),
        "detail": row.detail,
    }


def _sse(event: str, data: dict[str, Any], *, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
