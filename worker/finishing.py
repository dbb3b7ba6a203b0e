"""Finishing a job the upstream has done: store its images (and streamed partials), then end it as succeeded.

Storing can fail in three ways, each with its own answer: a result URL that cannot be downloaded right now (a
running job is polled again: the upstream keeps the result), an answer that is not an image (the job fails), and an
object store that cannot be reached (nothing is ended or billed: a running job is polled again, a synchronous one
goes back to its queue with the attempt not counted, until the store is back or the job's deadline passes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from shared.db import jobs_repo
from shared.db.tables import Job, JobImage
from shared.errors import ProviderError, StorageUnavailableError, TransientProviderError
from shared.jobs import JobStatus
from shared.queue import route_of
from worker.ending import fail_job, succeed_job
from worker.providers.base import ResultImage
from worker.results import store_results
from worker.runtime import Runtime

log = logging.getLogger(__name__)

#: a synchronous job whose results could not be stored is sent again after this long
STORAGE_RETRY_S = 15.0
#: a running job whose results could not be stored is polled again after at least this long
STORAGE_REPOLL_S = 5.0


@dataclass(frozen=True, slots=True)
class Ended:
    """The job reached a terminal state (``won``: by this call) or went back to its queue."""

    won: bool


@dataclass(frozen=True, slots=True)
class PollAgain:
    """Nothing was ended: the running job's next poll should come no sooner than ``after_s``."""

    after_s: float


Finish = Ended | PollAgain


def finish_job(
    job: Job,
    *,
    from_: JobStatus,
    images: Sequence[ResultImage],
    rt: Runtime,
    partials: Sequence[ResultImage] = (),
    report: dict[str, Any] | None = None,
    expected_poll_count: int | None = None,
    poll_count: int | None = None,
    served_model: str | None = None,
    channel: str | None = None,
) -> Finish:
    """``channel``: the one a synchronous job was claimed on (its slots are freed when it goes back to its queue)."""
    polling = from_ == JobStatus.RUNNING and expected_poll_count is not None
    try:
        stored = _store(job.id, job.provider, images, rt=rt)
        if partials:  # kept for a streamed answer; their keys travel in the upstream report
            kept = _store(f"{job.id}/partials", job.provider, partials, rt=rt)
            report = {**(report or {}), "partial_images": [image.storage_key for image in kept]}
    except StorageUnavailableError as exc:
        log.warning("job %s: %s; trying again later", job.id, exc.message)
        if polling:
            return PollAgain(STORAGE_REPOLL_S)
        _requeue_unstored(job, channel=channel, reason=exc.message, rt=rt)
        return Ended(won=False)
    except ProviderError as exc:
        if isinstance(exc, TransientProviderError) and polling:
            log.info("job %s result download failed, polling again: %s", job.id, exc.message)
            return PollAgain(0.0)
        return Ended(fail_job(job.id, from_=from_, code=exc.code, message=exc.message, rt=rt,
                              expected_poll_count=expected_poll_count, poll_count=poll_count))  # fmt: skip
    return Ended(succeed_job(job.id, from_=from_, stored=stored, rt=rt, expected_poll_count=expected_poll_count,
                             poll_count=poll_count, served_model=served_model, upstream_report=report))  # fmt: skip


def _store(job_id: str, provider: str, images: Sequence[ResultImage], *, rt: Runtime) -> list[JobImage]:
    return store_results(job_id=job_id, provider=provider, images=images, storage=rt.storage,
                         downloads=rt.downloads, max_bytes=rt.settings.max_image_bytes)  # fmt: skip


def _requeue_unstored(job: Job, *, channel: str | None, reason: str, rt: Runtime) -> None:
    """A synchronous job's results could not be stored: back to ``queued``, its attempt not counted."""
    rt.capacity.release(job, channel)  # the upstream call is over: nothing holds its slots
    now = rt.clock()
    with rt.session() as session, session.begin():
        won = jobs_repo.hand_back(session=session, job_id=job.id, attempt=job.submit_attempts + 1, channel=None,
                                  now=now, dispatch_at=now + timedelta(seconds=STORAGE_RETRY_S),
                                  reason=f"retry in {STORAGE_RETRY_S:.0f}s: {reason}", refund_attempt=True)  # fmt: skip
    if won:
        rt.sender.submit(job.id, route=route_of(job), countdown_s=STORAGE_RETRY_S)
