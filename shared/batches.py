"""The public view of a job batch: what ``GET /v1/images/batches/{id}`` answers and ``batch.completed`` carries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from shared.db.tables import JobBatch
from shared.jobs import TERMINAL

#: most requests one ``POST /v1/images/batches`` may carry
MAX_BATCH_REQUESTS = 1000


class BatchView(BaseModel):
    id: str
    object: str = "image.generation.batch"
    #: ``in_progress`` until every job has ended, then ``completed`` (whatever each job's outcome)
    status: str
    created_at: int
    #: when every job had ended (set by the sweeper's next pass); None before
    finished_at: int | None
    total: int
    #: jobs that have ended, whatever their status
    ended: int
    #: jobs per status (only statuses that some job has)
    counts: dict[str, int]
    #: the jobs, in the order of the request's items (each is a task: ``GET /v1/images/generations/{id}``)
    job_ids: list[str]


def batch_view(batch: JobBatch, *, counts: Mapping[str, int], job_ids: Sequence[str]) -> BatchView:
    ended = sum(count for status, count in counts.items() if status in TERMINAL)
    return BatchView(
        id=batch.id,
        status="completed" if ended >= batch.job_count else "in_progress",
        created_at=int(batch.created_at.timestamp()),
        finished_at=int(batch.finished_at.timestamp()) if batch.finished_at else None,
        total=batch.job_count,
        ended=ended,
        counts=dict(counts),
        job_ids=list(job_ids),
    )
