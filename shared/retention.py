"""What an ended job leaves behind, and when it goes: result images, stored input images, then the rows.

``purge_expired`` is the beat task's decision (bounded batches; safe to run twice or concurrently: objects are
deleted before their job is stamped, and deleting what is gone is no error). ``erase_job`` is a tenant's
``DELETE``. Neither ever touches a job that has not ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from shared.config import RetentionSettings
from shared.db import retention_repo
from shared.storage import ObjectStorage, input_prefix, result_prefix

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Purged:
    results: int = 0
    inputs: int = 0
    jobs: int = 0


def purge_expired(*, engine: Engine, storage: ObjectStorage, retention: RetentionSettings, now: datetime) -> Purged:
    """One run: at most ``batch_size`` jobs of each kind (a backlog is worked off by the following runs)."""
    results = _purge_objects(retention.results_s, retention_repo.results_due, result_prefix,
                             retention_repo.mark_results_deleted, engine=engine, storage=storage,
                             limit=retention.batch_size, now=now)  # fmt: skip
    inputs = _purge_objects(retention.inputs_s, retention_repo.inputs_due, input_prefix,
                            retention_repo.mark_inputs_deleted, engine=engine, storage=storage,
                            limit=retention.batch_size, now=now)  # fmt: skip
    jobs = 0
    if retention.jobs_s is not None:
        cutoff = now - timedelta(seconds=retention.jobs_s)
        with Session(engine) as session:
            due = retention_repo.rows_due(session=session, finished_before=cutoff, limit=retention.batch_size)
        for job_id in due:
            jobs += erase_job(job_id, engine=engine, storage=storage)
    purged = Purged(results=results, inputs=inputs, jobs=jobs)
    if purged != Purged():
        log.info("retention deleted the results of %d, the inputs of %d and the rows of %d job(s)", *_counts(purged))
    return purged


def _purge_objects(
    kept_s: float | None,
    find_due: Callable[..., Sequence[str]],
    prefix_of: Callable[[str], str],
    mark_deleted: Callable[..., bool],
    *,
    engine: Engine,
    storage: ObjectStorage,
    limit: int,
    now: datetime,
) -> int:
    """One kind of object (results or inputs) of jobs ended more than ``kept_s`` ago; how many jobs were purged."""
    if kept_s is None:
        return 0
    with Session(engine) as session:
        due = find_due(session=session, finished_before=now - timedelta(seconds=kept_s), limit=limit)
    purged = 0
    for job_id in due:  # the objects first: a run cut off here finds the job again next time
        storage.delete_prefix(prefix_of(job_id))
        with Session(engine) as session, session.begin():
            purged += mark_deleted(session=session, job_id=job_id, now=now)
    return purged


def erase_job(job_id: str, *, engine: Engine, storage: ObjectStorage) -> bool:
    """Delete an ended job's objects, then its rows (a store outage leaves the rows: the erasure can be repeated)."""
    storage.delete_prefix(result_prefix(job_id))
    storage.delete_prefix(input_prefix(job_id))
    with Session(engine) as session, session.begin():
        return retention_repo.delete_job_rows(session=session, job_id=job_id)


def _counts(purged: Purged) -> tuple[int, int, int]:
    return purged.results, purged.inputs, purged.jobs
