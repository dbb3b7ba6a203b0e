"""A batch is finished once every one of its jobs has ended: mark it (once) and schedule its one webhook.

The sweeper runs this on each pass, so ``batch.completed`` leaves at most one sweep interval after the batch's
last job ended. Finishing is a compare-and-set on ``job_batch.finished_at``, so two sweepers at once still
schedule one webhook; the delivery itself (signature, retries, 410) is that of every webhook.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from shared.db import batches_repo
from shared.db.tables import JobBatch
from worker.runtime import Runtime


def finish_batches(*, rt: Runtime) -> int:
    """Mark the unfinished batches whose jobs have all ended; returns how many it marked."""
    with rt.session() as session:
        batches = batches_repo.find_unfinished(session=session, limit=rt.settings.sweeper.batch_size)
    finished = 0
    for batch in batches:
        with rt.session() as session, session.begin():
            outcome = _finish(session, batch, rt=rt)
        if outcome is None:
            continue
        finished += 1
        if outcome.webhook_id is not None:
            rt.sender.webhook(outcome.webhook_id)
    return finished


@dataclass(frozen=True, slots=True)
class _Finished:
    #: the ``webhook_delivery`` row of the first attempt (None: the batch has no callback URL)
    webhook_id: int | None


def _finish(session: Session, batch: JobBatch, *, rt: Runtime) -> _Finished | None:
    """Finish ``batch`` if all its jobs have ended and nobody else did; None otherwise."""
    if batches_repo.unended_jobs(session=session, batch_id=batch.id) > 0:
        return None
    now = rt.clock()
    if not batches_repo.finish_batch(session=session, batch_id=batch.id, now=now):
        return None
    if batch.callback_url is None:
        return _Finished(webhook_id=None)
    delivery = batches_repo.add_webhook_attempt(session=session, batch=batch, attempt=1, at=now)
    session.flush()
    return _Finished(webhook_id=delivery.id)
