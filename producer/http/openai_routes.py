"""The OpenAI Images dialect: create (sync or async), query tasks, list models."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlmodel import Session

from producer.enqueue import Enqueued, enqueue_job
from producer.http.auth import Owner
from producer.http.context import ApiContext, api_context
from producer.http.errors import error_response
from shared.db import jobs_repo
from shared.db.engine import reading
from shared.errors import ErrorCode
from shared.jobs import TERMINAL, ImageRequest, JobStatus
from shared.views import JobView, job_view

router = APIRouter(tags=["OpenAI Images"])
Context = Annotated[ApiContext, Depends(api_context)]

#: status codes for jobs that ended without images, answered to sync callers
_FAILURE_STATUS = {ErrorCode.CONTENT_POLICY_VIOLATION.value: 400, ErrorCode.UPSTREAM_TIMEOUT.value: 504}


def wants_async(payload: ImageRequest, prefer: str | None) -> bool:
    prefers_async = prefer is not None and "respond-async" in prefer.lower()
    return bool(payload.async_) or payload.callback_url is not None or prefers_async


@router.post("/v1/images/generations", response_model=None)
async def create_generation(
    payload: ImageRequest, owner: Owner, context: Context, prefer: Annotated[str | None, Header()] = None
) -> JSONResponse:
    """Create an image-generation job; waits for it unless asked to answer asynchronously."""
    enqueued = await run_in_threadpool(_enqueue, context, payload, owner)
    job_id = enqueued.job.id
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


def _enqueue(context: ApiContext, payload: ImageRequest, owner: str) -> Enqueued:
    with context.session() as session:
        return enqueue_job(
            payload, session=session, owner=owner, sender=context.sender, catalog=context.catalog, egress=context.egress
        )


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
    view = job_view(job, images=images, cost=cost, sign=context.sign)
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
    return JSONResponse(body, status_code=200)


@router.get("/v1/images/generations/{task_id}")
async def get_generation(task_id: str, owner: Owner, context: Context) -> JobView:
    """The task object: status, images (signed URLs), cost, error, poll count."""
    return await run_in_threadpool(context.load_view, task_id, owner)


@router.get("/v1/images/generations")
async def query_generation(task_id: Annotated[str, Query(min_length=1)], owner: Owner, context: Context) -> JobView:
    """The same task object, by ``?task_id=``."""
    return await run_in_threadpool(context.load_view, task_id, owner)


@router.get("/v1/models")
async def list_models(_owner: Owner, context: Context) -> dict[str, Any]:
    """Every public model name (OpenAI list format)."""
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": context.catalog.models[name].provider}
        for name in context.catalog.names()
    ]
    return {"object": "list", "data": data}
