"""Job batches: ``POST /v1/images/batches`` (up to 1,000 generation requests in one call) and their progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from producer.batches import BatchRequest, PreparedBatch, commit_batch, prepare_batch
from producer.enqueue import publish_submits
from producer.http.auth import CurrentTenant, Owner
from producer.http.context import ApiContext, api_context
from producer.http.errors import ApiError
from shared.batches import BatchView, batch_view
from shared.db import batches_repo

router = APIRouter(tags=["Batches"])
Context = Annotated[ApiContext, Depends(api_context)]


@router.post("/v1/images/batches", response_model=None, status_code=202)
async def create_batch(body: BatchRequest, tenant: CurrentTenant, context: Context) -> JSONResponse:
    """Accept every request as an asynchronous job of one batch (all or nothing); answers the batch object."""
    prepared = prepare_batch(body, owner=tenant.owner, catalog=context.catalog, egress=context.egress)
    await run_in_threadpool(_commit_and_publish, context, prepared, tenant.has_spend_budget)
    counts = {"queued": len(prepared.jobs)}
    view = batch_view(prepared.batch, counts=counts, job_ids=[job.id for job in prepared.jobs])
    return JSONResponse(view.model_dump(mode="json"), status_code=202)


def _commit_and_publish(context: ApiContext, prepared: PreparedBatch, has_spend_budget: bool) -> None:
    with context.session() as session:
        commit_batch(prepared, session=session, has_spend_budget=has_spend_budget)
    publish_submits(prepared.jobs, sender=context.sender)


@router.get("/v1/images/batches/{batch_id}")
async def get_batch(batch_id: str, owner: Owner, context: Context) -> BatchView:
    """Progress: jobs per status, how many have ended, and the job ids in the order of the request's items."""
    return await run_in_threadpool(_load, context, batch_id, owner)


def _load(context: ApiContext, batch_id: str, owner: str) -> BatchView:
    with context.session() as session:
        batch = batches_repo.get_batch(session=session, batch_id=batch_id, owner=owner)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found")
        counts = batches_repo.status_counts(session=session, batch_id=batch_id)
        job_ids = batches_repo.job_ids(session=session, batch_id=batch_id)
    return batch_view(batch, counts=counts, job_ids=job_ids)
