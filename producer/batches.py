"""``POST /v1/images/batches``: up to 1,000 requests become one batch row and its jobs in one commit.

Every item is validated before anything is written; the first bad one refuses the whole batch with a 400 that
names the item (``requests.<index>.<param>``). The jobs are then inserted with multi-row statements in the
same transaction as the batch row, and their submit messages go to Redis in one pipeline. From there on each
job is an ordinary job (its own task object, its own webhook if the item asked for one); the batch adds
progress counts and, with a ``callback_url``, one signed ``batch.completed`` webhook when every job has ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from producer.enqueue import check_callback_url, new_job_id, prepare_job
from producer.keys import check_spend_budget_of
from shared.batches import MAX_BATCH_REQUESTS
from shared.catalog import Catalog
from shared.db import batches_repo, jobs_repo
from shared.db.tables import Job, JobBatch, utcnow
from shared.egress import EgressPolicy
from shared.errors import InvalidRequestError
from shared.jobs import ImageRequest


class BatchRequest(BaseModel):
    """The body of ``POST /v1/images/batches``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    #: each one is a ``POST /v1/images/generations`` body; every job of a batch is asynchronous
    requests: list[ImageRequest] = Field(min_length=1, max_length=MAX_BATCH_REQUESTS)
    #: receives one signed ``batch.completed`` webhook once every job has ended
    callback_url: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    batch: JobBatch
    jobs: list[Job]


def prepare_batch(
    body: BatchRequest, *, owner: str, catalog: Catalog, egress: EgressPolicy, now: datetime | None = None
) -> PreparedBatch:
    """The batch row and its job rows (not written); ``InvalidRequestError`` naming the first bad item."""
    now = now or utcnow()
    check_callback_url(body.callback_url, egress)
    batch = JobBatch(
        id=new_job_id(), owner=owner, job_count=len(body.requests), callback_url=body.callback_url, created_at=now
    )
    jobs = [
        _item_job(request, index, batch=batch, catalog=catalog, egress=egress)
        for index, request in enumerate(body.requests)
    ]
    return PreparedBatch(batch=batch, jobs=jobs)


def _item_job(request: ImageRequest, index: int, *, batch: JobBatch, catalog: Catalog, egress: EgressPolicy) -> Job:
    where = f"requests.{index}"
    if request.external_task_id is not None:
        raise InvalidRequestError(
            f"'{where}.external_task_id' is not supported in a batch: the batch id names the whole request.",
            param=f"{where}.external_task_id",
        )
    try:
        job = prepare_job(request, owner=batch.owner, catalog=catalog, egress=egress, now=batch.created_at)
    except InvalidRequestError as exc:
        param = f"{where}.{exc.param}" if exc.param else where
        raise InvalidRequestError(f"{where}: {exc.message}", param=param, code=exc.code) from None
    job.batch_id, job.batch_index = batch.id, index
    return job


def commit_batch(prepared: PreparedBatch, *, session: Session, has_spend_budget: bool) -> None:
    """Insert the batch and its jobs and commit (one commit); 402 (nothing written) past the key's budget."""
    if has_spend_budget:
        check_spend_budget_of(session=session, owner=prepared.batch.owner, jobs=prepared.jobs)
    batches_repo.insert_batch(session=session, batch=prepared.batch)
    session.flush()
    jobs_repo.insert_jobs(session=session, jobs=prepared.jobs)
    session.commit()
