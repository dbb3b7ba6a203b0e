"""The Kling-task dialect (Kling's task envelope under ``/kling``, as gateways offer it):
``POST /kling/v1/images/generations`` creates a task,
``GET /kling/v1/images/generations/{task_id}`` reads it, both in Kling's envelope
``{code, message, request_id, data}`` with millisecond timestamps and Kling's status words.

``POST /kling/v1/images/generations/{task_id}/cancel`` (our extension: Kling itself has no cancel API) cancels a
queued, submitting or running task by its id or the caller's ``external_task_id`` and answers it like the query
(``task_status: failed``, ``task_status_msg`` saying it was cancelled); a task that already ended answers HTTP 409.

The body is Kling's (``prompt, negative_prompt, image, image_fidelity, n, aspect_ratio`` …) and may carry any
field of the unified request; the catalog decides what the model takes. Without ``model`` the task is a
``kling-image`` one; without ``model_name`` a ``kling-image`` task uses ``DEFAULT_MODEL_NAME``. Kling's legacy
``model`` field (a Kling model name such as ``kling-v1``) is read as ``model_name``.

Errors answer in the same envelope with Kling's service codes and HTTP statuses
(https://app.klingai.com/global/dev/document-api).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from producer.http.auth import Owner
from producer.http.cancel_routes import cancel_task
from producer.http.context import ApiContext, api_context
from producer.http.errors import Failure, dialect_route
from producer.http.tasks import enqueue_task, epoch_ms, load_task, parse_request, refuse_fields
from shared.catalog import Catalog
from shared.db.tables import Job
from shared.jobs import ImageRequest, JobStatus, without_empty

#: the model of a Kling-task body without ``model`` (the gateway's example body has none)
DEFAULT_MODEL: Final = "kling-image"
#: Kling's own default when ``model_name`` is omitted: ``kling-v1`` in the legacy API whose body this dialect
#: mirrors (``image_fidelity`` is a v1 / v1-5 parameter); Kling's 3.0 page says ``kling-v3``
DEFAULT_MODEL_NAME: Final = "kling-v1"
#: unified-request fields that have no meaning here: every Kling task is async and answers URLs
REFUSED_FIELDS: Final = ("async", "response_format")

KLING_STATUS: Final[Mapping[JobStatus, str]] = {
    JobStatus.QUEUED: "submitted",
    JobStatus.SUBMITTING: "submitted",
    JobStatus.RUNNING: "processing",
    JobStatus.SUCCEEDED: "succeed",
    JobStatus.FAILED: "failed",
    JobStatus.TIMED_OUT: "failed",
    JobStatus.CANCELLED: "failed",
}

#: Kling service codes for our failures (Kling's error-code table), by normalised code, then by HTTP status
#: (a spent budget is Kling's "resource pack depleted", 1102, answered with our HTTP 402)
_CODES_BY_NAME: Final = {"missing_api_key": 1001, "invalid_api_key": 1002, "invalid_json": 1200}
_CODES_BY_STATUS: Final = {
    401: 1000,
    402: 1102,
    403: 1103,
    404: 1203,
    413: 1200,
    429: 1302,
    500: 5000,
    503: 5001,
    504: 5002,
}


def kling_error(failure: Failure) -> JSONResponse:
    """A failure in Kling's envelope: ``{code, message, request_id}`` with the matching HTTP status."""
    code = _CODES_BY_NAME.get(failure.code or "") or _CODES_BY_STATUS.get(failure.status)
    if code is None:
        code = 5000 if failure.status >= 500 else 1201
    body = {"code": code, "message": failure.message, "request_id": _request_id()}
    return JSONResponse(body, status_code=failure.status, headers=failure.headers)


router = APIRouter(prefix="/kling/v1/images", tags=["Kling-task dialect"], route_class=dialect_route(kling_error))
Context = Annotated[ApiContext, Depends(api_context)]


def kling_request(body: Mapping[str, Any], catalog: Catalog) -> ImageRequest:
    """The unified request for a Kling-task body (defaults applied; a bad field raises naming it)."""
    fields = without_empty(body)  # Kling's examples send "" for unset optionals
    refuse_fields(fields, REFUSED_FIELDS, dialect="Kling task")
    model = fields.get("model")
    if model is None:
        model = DEFAULT_MODEL
    elif _is_legacy_model_name(model, catalog):
        fields.setdefault("model_name", model)
        model = DEFAULT_MODEL
    fields["model"] = model
    if model == DEFAULT_MODEL and fields.get("model_name") is None:
        fields["model_name"] = DEFAULT_MODEL_NAME
    return parse_request(fields)


def _is_legacy_model_name(model: object, catalog: Catalog) -> bool:
    """Kling's legacy ``model`` field: a ``kling-image`` model_name that is not a public model of its own."""
    default = catalog.get(DEFAULT_MODEL)
    return isinstance(model, str) and catalog.get(model) is None and default is not None and model in default.variants


def kling_envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 0, "message": "SUCCEED", "request_id": _request_id(), "data": data}


def created_data(job: Job) -> dict[str, Any]:
    """``data`` of the create answer: the task id, its status and timestamps."""
    data: dict[str, Any] = {"task_id": job.id, "task_status": KLING_STATUS[JobStatus(job.status)]}
    if job.external_task_id is not None:
        data["task_info"] = {"external_task_id": job.external_task_id}
    return data | {"created_at": epoch_ms(job.created_at), "updated_at": epoch_ms(job.updated_at)}


def task_data(job: Job, urls: Sequence[str]) -> dict[str, Any]:
    """``data`` of the query answer: status, the failure reason, and the result images once it succeeded."""
    status = KLING_STATUS[JobStatus(job.status)]
    message = (job.error_message or job.error_code or f"The task ended as {job.status}.") if status == "failed" else ""
    return created_data(job) | {
        "task_status_msg": message,
        "task_result": {"images": [{"index": index, "url": url} for index, url in enumerate(urls)]},
    }


@router.post("/generations")
async def create_task(body: Annotated[dict[str, Any], Body()], owner: Owner, context: Context) -> JSONResponse:
    """Create a Kling-style image task (always asynchronous)."""
    request = kling_request(body, context.catalog)
    task = await run_in_threadpool(enqueue_task, context, request, owner)
    return JSONResponse(kling_envelope(created_data(task.job)))


@router.get("/generations/{task_id}")
async def get_task(task_id: str, owner: Owner, context: Context) -> JSONResponse:
    """The task by its id, or by the caller's ``external_task_id`` (as Kling allows)."""
    task = await run_in_threadpool(load_task, context, task_id, owner, by_external_id=True)
    return JSONResponse(kling_envelope(task_data(task.job, task.urls)))


@router.post("/generations/{task_id}/cancel")
async def cancel(task_id: str, owner: Owner, context: Context) -> JSONResponse:
    """Cancel a task (by its id or the caller's ``external_task_id``); answers it as the query does."""
    found = await run_in_threadpool(load_task, context, task_id, owner, by_external_id=True)
    job_id = await run_in_threadpool(cancel_task, context, found.job.id, owner)
    task = await run_in_threadpool(load_task, context, job_id, owner)
    return JSONResponse(kling_envelope(task_data(task.job, task.urls)))


def _request_id() -> str:
    return str(uuid.uuid4())
