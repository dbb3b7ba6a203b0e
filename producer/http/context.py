"""What request handlers share within one API process."""

from __future__ import annotations

import time
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
from shared.config import Settings
from shared.db import jobs_repo
from shared.egress import EgressPolicy
from shared.files import signed_file_url
from shared.queue import TaskSender
from shared.storage import LocalStorage
from shared.views import JobView, job_view


@dataclass
class ApiContext:
    settings: Settings
    catalog: Catalog
    engine: Engine
    sender: TaskSender
    keys: KeyRing
    storage: LocalStorage
    waiter: JobWaiter
    #: caller-supplied URLs (callbacks, input images) are checked against it at submit time
    egress: EgressPolicy
    #: writes accepted jobs of concurrent requests in one commit and one publish
    writer: AcceptWriter

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    def sign(self, key: str) -> str:
        return signed_file_url(
            base_url=self.settings.public_base_url,
            key=key,
            secret=self.settings.signing_key.get_secret_value(),
            ttl_s=self.settings.file_url_ttl_s,
            now=time.time(),
        )

    def load_view(self, job_id: str, owner: str) -> JobView:
        """The task object of one of ``owner``'s jobs (``JobNotFoundError`` otherwise)."""
        with self.session() as session:
            job = jobs_repo.get_job(session=session, job_id=job_id, owner=owner)
            images = jobs_repo.list_images(session=session, job_id=job_id)
            cost = jobs_repo.get_cost(session=session, job_id=job_id)
        return job_view(job, images=images, cost=cost, sign=self.sign)


def api_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context
