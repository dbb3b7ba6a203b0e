"""The apimodels dialect (the apimodels task API): ``POST /api/v1/images/generations`` creates a task,
``GET /api/v1/images/generations?task_id=`` reads it, both in ``{code: 200, msg: "success", data}`` with
camelCase task fields (``taskId, state, model, resultUrls, createTime, completeTime, failMsg``, ms times).

The body is the apimodels one (``model`` required, ``image_url``, ``multi_model_name``, ``subject_image_list``,
expansion ratios …) and may carry any field of the unified request; the catalog decides what the model takes.
``data.model`` is rendered like the apimodels example ``kling-image-gen/kling-v3``: ``<provider>-image-gen/``
followed by the upstream model that serves the job.

``POST /api/v1/images/generations/cancel?task_id=`` (our extension, in the style of the query) cancels a
pending or processing task and answers it as the query does (``state: failed``, ``failMsg`` saying it was
cancelled); a task that already ended answers 409.

Errors answer ``{code, msg, data: null}`` where ``code`` is the HTTP status: 400, 401, 402 (the key's spend
budget cannot cover the task), 404, 409, 429, 500, ….
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from producer.http.auth import Owner
from producer.http.cancel_routes import cancel_task
from producer.http.context import ApiContext, api_context
from producer.http.errors import Failure, dialect_route
from producer.http.tasks import enqueue_task, epoch_ms, load_task, parse_request, refuse_fields
from shared.db.tables import Job
from shared.jobs import ImageRequest, JobStatus, without_empty

#: unified-request fields that have no meaning here: every task is async and answers URLs
REFUSED_FIELDS: Final = ("async", "response_format")

STATE: Final[Mapping[JobStatus, str]] = {
    JobStatus.QUEUED: "pending",
    JobStatus.SUBMITTING: "pending",
    JobStatus.RUNNING: "processing",
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.TIMED_OUT: "failed",
    JobStatus.CANCELLED: "failed",
}


def apimodels_error(failure: Failure) -> JSONResponse:
    """A failure in the apimodels envelope: ``{code, msg, data: null}``, ``code`` = the HTTP status."""
    body = {"code": failure.status, "msg": failure.message, "data": None}
    return JSONResponse(body, status_code=failure.status, headers=failure.headers)


router = APIRouter(prefix="/api/v1/images", tags=["apimodels dialect"], route_class=dialect_route(apimodels_error))
Context = Annotated[ApiContext, Depends(api_context)]


def apimodels_request(body: Mapping[str, Any]) -> ImageRequest:
    """The unified request for an apimodels body (a bad field raises naming it)."""
    fields = without_empty(body)  # "" and null mean "not given"
    refuse_fields(fields, REFUSED_FIELDS, dialect="apimodels")
    return parse_request(fields)


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 200, "msg": "success", "data": data}


def model_label(job: Job) -> str:
    """``kling-image-gen/kling-v3`` for a Kling job served by ``kling-v3`` (as apimodels renders it)."""
    return f"{job.provider}-image-gen/{job.upstream_model}"


def created_data(job: Job) -> dict[str, Any]:
    """``data`` of the create answer, exactly the three fields apimodels answers."""
    return {"taskId": job.id, "state": STATE[JobStatus(job.status)], "model": model_label(job)}


def task_data(job: Job, urls: Sequence[str]) -> dict[str, Any]:
    """``data`` of the query answer: result URLs once completed, the reason once failed."""
    data = created_data(job) | {"createTime": epoch_ms(job.created_at)}
    if data["state"] == "completed":
        data["resultUrls"] = list(urls)
    if job.finished_at is not None:
        data["completeTime"] = epoch_ms(job.finished_at)
    if data["state"] == "failed":
        data["failMsg"] = job.error_message or job.error_code or f"The task ended as {job.status}."
    return data


@router.post("/generations")
async def create_task(body: Annotated[dict[str, Any], Body()], owner: Owner, context: Context) -> JSONResponse:
    """Create an image task (always asynchronous); poll it with ``GET ?task_id=``."""
    task = await run_in_threadpool(enqueue_task, context, apimodels_request(body), owner)
    return JSONResponse(envelope(created_data(task.job)))


@router.get("/generations")
async def get_task(task_id: Annotated[str, Query(min_length=1)], owner: Owner, context: Context) -> JSONResponse:
    """The task's state, result URLs and times."""
    task = await run_in_threadpool(load_task, context, task_id, owner)
    return JSONResponse(envelope(task_data(task.job, task.urls)))


@router.post("/generations/cancel")
async def cancel(task_id: Annotated[str, Query(min_length=1)], owner: Owner, context: Context) -> JSONResponse:
    """Cancel a pending or processing task; answers it as the query does."""
    job_id = await run_in_threadpool(cancel_task, context, task_id, owner)
    task = await run_in_threadpool(load_task, context, job_id, owner)
    return JSONResponse(envelope(task_data(task.job, task.urls)))
