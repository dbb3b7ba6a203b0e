"""The OpenAI Images dialect: create (sync, async or streamed), query tasks (models: ``models_routes``).

As OpenAI does, GPT image models answer ``data[].b64_json`` unless ``response_format: "url"`` (our extension)
is asked for; DALL·E names answer ``url`` by default (https://platform.openai.com/docs/api-reference/images).
``stream: true`` answers Server-Sent Events (``producer.http.image_events``).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from sqlmodel import Session

from producer.http.auth import CurrentTenant, Owner
from producer.http.context import ApiContext, api_context
from producer.http.errors import error_response
from producer.http.image_events import EventKind, job_events
from producer.keys import Tenant
from shared.db import jobs_repo
from shared.db.engine import reading
from shared.db.tables import Job
from shared.errors import ErrorCode, InvalidRequestError
from shared.jobs import TERMINAL, ImageRequest, JobStatus
from shared.views import REPORTED_FIELDS, JobView, job_view

router = APIRouter(tags=["OpenAI Images"])
Context = Annotated[ApiContext, Depends(api_context)]

#: status codes for jobs that ended without images, answered to sync callers
_FAILURE_STATUS = {ErrorCode.CONTENT_POLICY_VIOLATION.value: 400, ErrorCode.UPSTREAM_TIMEOUT.value: 504}


def wants_async(payload: ImageRequest, prefer: str | None) -> bool:
    prefers_async = prefer is not None and "respond-async" in prefer.lower()
    return bool(payload.async_) or payload.callback_url is not None or prefers_async


#: upstream model names of OpenAI's GPT image family (served by OpenAI or relayed)
GPT_IMAGE_MODELS: Final = ("gpt-image-", "chatgpt-image-")


def default_response_format(payload: ImageRequest, context: ApiContext) -> ImageRequest:
    """GPT image models answer base64 unless asked otherwise, as OpenAI's do; every other model a URL."""
    if payload.response_format is not None:
        return payload
    entry = context.catalog.get(payload.model)
    if entry is None or not (entry.upstream_model or "").startswith(GPT_IMAGE_MODELS):
        return payload
    return payload.model_copy(update={"response_format": "b64_json"})


@router.post("/v1/images/generations", response_model=None)
async def create_generation(
    payload: ImageRequest, tenant: CurrentTenant, context: Context, prefer: Annotated[str | None, Header()] = None
) -> JSONResponse | StreamingResponse:
    """Create an image-generation job; waits for it unless asked to answer asynchronously."""
    return await answer_images(payload, tenant, context, prefer, events="image_generation")


async def answer_images(
    payload: ImageRequest, tenant: Tenant, context: ApiContext, prefer: str | None, *, events: EventKind
) -> JSONResponse | StreamingResponse:
    """Create the job, then answer as asked: streamed events, the images once done, or the task (202)."""
    payload = default_response_format(payload, context)
    if payload.stream and wants_async(payload, prefer):
        raise InvalidRequestError("'stream' cannot be combined with an asynchronous answer.", param="stream")
    owner = tenant.owner
    enqueued = await context.writer.accept_request(
        payload, tenant=tenant, catalog=context.catalog, egress=context.egress, inputs=context.inline_inputs()
    )
    job_id = enqueued.job.id
    if payload.stream:
        finished = _wait(context, job_id)
        load = _loader(context, owner)
        stream = job_events(
            job_id,
            kind=events,
            finished=finished,
            load=load,
            read_images=_reader(context, _read_images),
            read_partials=_reader(context, _read_partials),
        )
        return StreamingResponse(stream, media_type="text/event-stream", headers={"x-task-id": job_id})
    if not wants_async(payload, prefer) and context.settings.sync_timeout_s > 0:
        wants_bytes = enqueued.job.response_format == "b64_json"
        ended: list[_Ended] = []

        async def is_done() -> bool:  # what is read to decide is what is answered: one thread hop, one session
            outcome = await run_in_threadpool(_load_ended, context, job_id, owner, wants_bytes)
            ended[:] = [outcome] if outcome is not None else []
            return outcome is not None

        timeout_s = context.settings.sync_timeout_s
        if await context.waiter.wait(job_id, timeout_s=timeout_s, is_done=is_done, check_first=not enqueued.created):
            return _sync_answer(ended[0])
    if enqueued.created and wants_async(payload, prefer):
        view = job_view(enqueued.job, images=[], cost=None, sign=context.sign)  # just inserted: nothing to read
    else:
        view = await run_in_threadpool(context.load_view, job_id, owner)
    return JSONResponse(view.model_dump(mode="json"), status_code=202)


async def _wait(context: ApiContext, job_id: str) -> bool:
    """Whether the job ended within the sync timeout."""
    if context.settings.sync_timeout_s <= 0:
        return await run_in_threadpool(_is_terminal, context, job_id)

    async def is_done() -> bool:
        return await run_in_threadpool(_is_terminal, context, job_id)

    return await context.waiter.wait(job_id, timeout_s=context.settings.sync_timeout_s, is_done=is_done)


def _is_terminal(context: ApiContext, job_id: str) -> bool:
    with Session(reading(context.engine)) as session:
        job = session.get(Job, job_id)
    return job is not None and job.status in TERMINAL


def _loader(context: ApiContext, owner: str) -> Callable[[str], Awaitable[JobView]]:
    async def load(job_id: str) -> JobView:
        return await run_in_threadpool(context.load_view, job_id, owner)

    return load


def _reader(
    context: ApiContext, read_blobs: Callable[[ApiContext, str], list[bytes]]
) -> Callable[[str], Awaitable[list[bytes]]]:
    async def read(job_id: str) -> list[bytes]:
        return await run_in_threadpool(read_blobs, context, job_id)

    return read


@dataclass(frozen=True, slots=True)
class _Ended:
    """A job that has ended, as a sync answer needs it: its view and, for ``b64_json``, its images' bytes."""

    view: JobView
    blobs: tuple[bytes, ...] | None


def _load_ended(context: ApiContext, job_id: str, owner: str, wants_bytes: bool) -> _Ended | None:
    """The ended job (None while it runs: then nothing else is read). A read-only transaction: waiting callers
    never queue for SQLite's write lock behind the workers' writes."""
    with Session(reading(context.engine), expire_on_commit=False) as session:
        job = jobs_repo.get_job(session=session, job_id=job_id, owner=owner)
        if job.status not in TERMINAL:
            return None
        images = jobs_repo.list_images(session=session, job_id=job_id)
        cost = jobs_repo.get_cost(session=session, job_id=job_id)
    view = job_view(
        job, images=images, cost=cost, sign=context.sign, results_kept_s=context.settings.retention.results_s
    )
    blobs = tuple(context.storage.get(image.storage_key) for image in images) if wants_bytes else None
    return _Ended(view=view, blobs=blobs)


def _sync_answer(ended: _Ended) -> JSONResponse:
    view = ended.view
    if view.status == JobStatus.CANCELLED:
        response = error_response(409, "The task was cancelled.", code="task_cancelled")
        response.headers["x-task-id"] = view.id
        return response
    if view.status != JobStatus.SUCCEEDED:
        code = view.error.code if view.error else "job_failed"
        message = view.error.message if view.error else f"The job ended as {view.status}."
        response = error_response(_FAILURE_STATUS.get(code, 502), message, code=code)
        response.headers["x-task-id"] = view.id
        return response
    data: list[dict[str, Any]]
    if ended.blobs is not None:
        data = [{"b64_json": base64.b64encode(blob).decode("ascii")} for blob in ended.blobs]
    else:
        data = [{"url": image.url} for image in view.data]
    body = view.model_dump(mode="json", exclude={"data"}) | {"created": view.created, "data": data}
    # OpenAI answers these only where the model reports them: leave them out rather than answer null
    body = {key: value for key, value in body.items() if key not in REPORTED_FIELDS or value is not None}
    return JSONResponse(body, status_code=200)


def _read_images(context: ApiContext, job_id: str) -> list[bytes]:
    with context.session() as session:
        images = jobs_repo.list_images(session=session, job_id=job_id)
    return [context.storage.get(image.storage_key) for image in images]


def _read_partials(context: ApiContext, job_id: str) -> list[bytes]:
    """The partial images the worker kept for a streamed answer (``Job.upstream_report``), in order."""
    with context.session() as session:
        job = session.get(Job, job_id)
    keys = (job.upstream_report or {}).get("partial_images", []) if job is not None else []
    return [context.storage.get(key) for key in keys if isinstance(key, str)]


@router.get("/v1/images/generations/{task_id}")
async def get_generation(task_id: str, owner: Owner, context: Context) -> JobView:
    """The task object: status, images (signed URLs), cost, error, poll count."""
    return await run_in_threadpool(context.load_view, task_id, owner)


class JobList(BaseModel):
    """The caller's newest tasks first (``has_more``: there are older ones beyond ``limit``)."""

    object: str = "list"
    data: list[JobView]
    has_more: bool


@router.get("/v1/images/generations")
async def query_generation(
    owner: Owner,
    context: Context,
    task_id: Annotated[str | None, Query(min_length=1)] = None,
    status: JobStatus | None = None,
    model: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JobView | JobList:
    """The same task object, by ``?task_id=``; without it, the caller's tasks (only its own), newest first,
    filtered by ``status`` and ``model``."""
    if task_id is not None:
        return await run_in_threadpool(context.load_view, task_id, owner)
    return await run_in_threadpool(_list_views, context, owner, status, model, limit)


def _list_views(context: ApiContext, owner: str, status: JobStatus | None, model: str | None, limit: int) -> JobList:
    with Session(reading(context.engine), expire_on_commit=False) as session:
        jobs = jobs_repo.list_jobs(session=session, owner=owner, status=status, model=model, limit=limit + 1)
        kept_s = context.settings.retention.results_s
        views = [
            job_view(
                job,
                images=jobs_repo.list_images(session=session, job_id=job.id),
                cost=jobs_repo.get_cost(session=session, job_id=job.id),
                sign=context.sign,
                results_kept_s=kept_s,
            )
            for job in jobs[:limit]
        ]
    return JobList(data=views, has_more=len(jobs) > limit)
