"""Group commit for the accept path: the jobs of concurrent requests share one transaction and one publish.

Each request hands its prepared job row to ``AcceptWriter.accept`` and waits. One writer task takes everything
that is waiting, inserts it with multi-row statements and commits once (the rows are durable before any request
is answered), then sends all their submit messages in one Redis pipeline. Nobody waits for a timer: while one
group is being written the next one gathers, so an idle API answers as fast as before and a busy one writes
hundreds of jobs per commit.

What a group cannot decide alone it hands back to the one-job path (``producer.enqueue.commit_job``): tenants
with a spend budget never come here (their check locks the key's row), and a group that hits a unique
``external_task_id`` written by another process meanwhile is written again job by job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from producer.enqueue import Enqueued, SubmitSender, commit_job, prepare_job, publish_submits
from producer.keys import Tenant
from shared.catalog import Catalog
from shared.db import jobs_repo
from shared.db.tables import Job
from shared.egress import EgressPolicy
from shared.inline_inputs import InlineInputs
from shared.jobs import ImageRequest
from shared.logs import current, request_ids_for_jobs

log = logging.getLogger(__name__)

#: jobs written by one transaction at most (a larger backlog is written as several groups, one after the other)
MAX_GROUP = 1000


@dataclass(slots=True)
class _Waiting:
    job: Job
    #: the accepting request's id: the job's submit message carries it though another task publishes it
    request_id: str | None = field(default_factory=lambda: current("request_id"))
    answer: asyncio.Future[Enqueued] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class AcceptWriter:
    """The API process's one writer of new jobs (start it in the lifespan, stop it on shutdown)."""

    def __init__(self, engine: Engine, sender: SubmitSender, *, max_group: int = MAX_GROUP) -> None:
        self._engine = engine
        self._sender = sender
        self._max_group = max_group
        self._waiting: list[_Waiting] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="accept-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for waiting in self._waiting:
            if not waiting.answer.done():
                waiting.answer.set_exception(RuntimeError("the API is shutting down"))
        self._waiting.clear()

    async def accept_request(
        self,
        request: ImageRequest,
        *,
        tenant: Tenant,
        catalog: Catalog,
        egress: EgressPolicy,
        inputs: InlineInputs | None = None,
    ) -> Enqueued:
        """Validate (``InvalidRequestError``, nothing written) and accept one request of ``tenant``; with ``inputs``,
        large inline input images go to storage first (off the event loop) and the row keeps references."""
        job = prepare_job(request, owner=tenant.owner, catalog=catalog, egress=egress)
        if inputs is not None and inputs.would_store(job.upstream_params):
            job.upstream_params = await asyncio.to_thread(inputs.offload, job.id, job.upstream_params)
        if tenant.has_spend_budget:
            return await asyncio.to_thread(self._write_budgeted, job)
        return await self.accept(job)

    async def accept(self, job: Job) -> Enqueued:
        """Write ``job`` (of a tenant without a spend budget) with whatever else is waiting; answer once committed."""
        if self._task is None or self._task.done():
            raise RuntimeError("the accept writer is not running")
        waiting = _Waiting(job)
        self._waiting.append(waiting)
        self._wake.set()
        # a cancelled request must not cancel the write it shares with others: shield the answer
        return await asyncio.shield(waiting.answer)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                group = self._waiting[: self._max_group]
                del self._waiting[: self._max_group]
                try:
                    request_ids = {w.job.id: w.request_id for w in group if w.request_id is not None}
                    answers = await asyncio.to_thread(self._write_for, request_ids, [w.job for w in group])
                except Exception as exc:  # every request of the group gets the error (a 500), none is lost
                    log.exception("writing %d accepted job(s) failed", len(group))
                    for waiting in group:
                        if not waiting.answer.done():
                            waiting.answer.set_exception(exc)
                    continue
                for waiting, answer in zip(group, answers, strict=True):
                    if not waiting.answer.done():
                        waiting.answer.set_result(answer)

    def _write_for(self, request_ids: dict[str, str], jobs: Sequence[Job]) -> list[Enqueued]:
        with request_ids_for_jobs(request_ids):
            return self.write(jobs)

    def write(self, jobs: Sequence[Job]) -> list[Enqueued]:
        """Commit ``jobs`` in one transaction, then publish their submits in one pipeline (blocking)."""
        try:
            answers = self._write_group(jobs)
        except IntegrityError:
            # another process wrote one of these external_task_ids since we looked: job by job, as one request would
            log.info("a group of %d jobs raced on an external_task_id; writing them one by one", len(jobs))
            answers = [self._write_one(job) for job in jobs]
            publish_submits([answer.job for answer in answers if answer.created], sender=self._sender)
            return answers
        publish_submits([answer.job for answer in answers if answer.created], sender=self._sender)
        return answers

    def _write_group(self, jobs: Sequence[Job]) -> list[Enqueued]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            known = _known_by_external_id(session, jobs)
            answers: list[Enqueued] = []
            fresh: list[Job] = []
            for job in jobs:
                key = (job.owner, job.external_task_id)
                if job.external_task_id is not None and key in known:
                    answers.append(Enqueued(job=known[key], created=False))
                    continue
                if job.external_task_id is not None:
                    known[key] = job  # a repeat within this group answers this job
                fresh.append(job)
                answers.append(Enqueued(job=job, created=True))
            jobs_repo.insert_jobs(session=session, jobs=fresh)
        return answers

    def _write_budgeted(self, job: Job) -> Enqueued:
        with Session(self._engine, expire_on_commit=False) as session:
            answer = commit_job(job, session=session, has_spend_budget=True)
        if answer.created:
            publish_submits([job], sender=self._sender)
        return answer

    def _write_one(self, job: Job) -> Enqueued:
        with Session(self._engine, expire_on_commit=False) as session:
            return commit_job(job, session=session, has_spend_budget=False)


def _known_by_external_id(session: Session, jobs: Sequence[Job]) -> dict[tuple[str, str | None], Job]:
    """Existing jobs that these jobs' ``external_task_id`` values already name, by (owner, external_task_id)."""
    wanted: dict[str, list[str]] = {}
    for job in jobs:
        if job.external_task_id is not None:
            wanted.setdefault(job.owner, []).append(job.external_task_id)
    known: dict[tuple[str, str | None], Job] = {}
    for owner, external_ids in wanted.items():
        found = jobs_repo.find_jobs_by_external_ids(session=session, owner=owner, external_task_ids=external_ids)
        known.update({(owner, external_id): job for external_id, job in found.items()})
    return known
