"""What request handlers share within one API process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine
from sqlmodel import Session

from producer.accept_writer import AcceptWriter
from producer.http.waiter import JobWaiter
from producer.keys import KeyRing
from shared.catalog import Catalog
from shared.completion_latencies import ExpectedDurations
from shared.config import Settings
from shared.db import jobs_repo
from shared.egress import EgressPolicy
from shared.files import ResultUrls
from shared.inline_inputs import InlineInputs
from shared.progress import progress_of
from shared.queue import TaskSender
from shared.storage import ObjectStorage
from shared.views import JobView, job_view


@dataclass
class ApiContext:
    settings: Settings
    catalog: Catalog
    engine: Engine
    sender: TaskSender
    keys: KeyRing
    storage: ObjectStorage
    waiter: JobWaiter
    #: caller-supplied URLs (callbacks, input images) are checked against it at submit time
    egress: EgressPolicy
    #: writes accepted jobs of concurrent requests in one commit and one publish
    writer: AcceptWriter
    #: the learned completion times a running job's ``expected_done_at`` comes from (None: no estimates)
    expected: ExpectedDurations | None = None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def sign(self, key: str) -> str:
        return ResultUrls(self.settings, self.storage).signer()(key)

    def inline_inputs(self) -> InlineInputs:
        return InlineInputs(self.storage, max_chars=self.settings.storage.inline_input_max_chars)

    def load_view(self, job_id: str, owner: str) -> JobView:
        """The task object of one of ``owner``'s jobs (``JobNotFoundError`` otherwise)."""
        with self.session() as session:
            job = jobs_repo.get_job(session=session, job_id=job_id, owner=owner)
            images = jobs_repo.list_images(session=session, job_id=job_id)
            cost = jobs_repo.get_cost(session=session, job_id=job_id)
            progress = progress_of(session, job, expected_s=self.expected.seconds if self.expected else None)
        return job_view(job, images=images, cost=cost, sign=self.sign, results_kept_s=self.settings.retention.results_s,
                        progress=progress)  # fmt: skip


def api_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context
