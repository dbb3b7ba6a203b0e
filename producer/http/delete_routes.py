"""Erasing a task: ``DELETE /v1/images/generations/{task_id}`` deletes an ended job, its images and its rows.

A task of another key is not found (404); one that has not ended answers 409 (cancel it first). The images go
first: if the store is down the answer is 503 and nothing is deleted from the database, so the call can be repeated.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from producer.http.auth import Owner
from producer.http.context import ApiContext, api_context
from producer.http.errors import ApiError
from shared.db import jobs_repo
from shared.jobs import TERMINAL
from shared.retention import erase_job

router = APIRouter(tags=["OpenAI Images"])
Context = Annotated[ApiContext, Depends(api_context)]


class DeletedTask(BaseModel):
    id: str
    object: str = "image.generation.task.deleted"
    deleted: bool = True


def _erase(context: ApiContext, task_id: str, owner: str) -> DeletedTask:
    with context.session() as session:
        job = jobs_repo.get_job(session=session, job_id=task_id, owner=owner)
    if job.status not in TERMINAL:
        raise ApiError(
            409,
            f"The task '{task_id}' is {job.status}; only a task that has ended can be deleted (cancel it first).",
            param="task_id",
            code="task_not_ended",
        )
    erase_job(job.id, engine=context.engine, storage=context.storage)
    return DeletedTask(id=job.id)


@router.delete("/v1/images/generations/{task_id}")
async def delete_generation(task_id: str, owner: Owner, context: Context) -> DeletedTask:
    """Delete an ended task with its result and input images, events, webhook deliveries and cost entry."""
    return await run_in_threadpool(_erase, context, task_id, owner)
