"""The accept path's group commit (``AcceptWriter``) over a real database: many requests, few commits, no job
lost or doubled, ``external_task_id`` still idempotent, a failed publish left to the sweeper."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import Engine, event, func
from sqlmodel import Session, select

from producer import accept_writer
from producer.accept_writer import AcceptWriter
from producer.enqueue import Enqueued, prepare_job
from producer.keys import Tenant
from shared.catalog import load_catalog
from shared.db.engine import make_engine
from shared.db.tables import Job, JobEvent
from shared.egress import EgressPolicy
from shared.jobs import ImageRequest
from shared.queue import Route
from tests.fakes import RecordingSender

OWNER = "owner-1"
GPT: dict[str, Any] = {"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "async": True}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=5)
    yield engine
    engine.dispose()


def count_commits(engine: Engine) -> list[int]:
    commits = [0]

    @event.listens_for(engine, "commit")
    def _counted(_connection: Any) -> None:
        commits[0] += 1

    return commits


def accept_all(engine: Engine, sender: Any, requests: Sequence[dict[str, Any]]) -> list[Enqueued]:
    async def run() -> list[Enqueued]:
        writer = AcceptWriter(engine, sender)
        await writer.start()
        try:
            catalog, egress, tenant = load_catalog(), EgressPolicy(), Tenant(OWNER)
            return list(
                await asyncio.gather(
                    *(
                        writer.accept_request(
                            ImageRequest.model_validate(body), tenant=tenant, catalog=catalog, egress=egress
                        )
                        for body in requests
                    )
                )
            )
        finally:
            await writer.stop()

    return asyncio.run(run())


def rows(engine: Engine, model: type[Any]) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


def test_concurrent_accepts_share_commits_and_each_job_is_written_and_sent_once(engine: Engine) -> None:
    sender = RecordingSender()
    commits = count_commits(engine)

    answers = accept_all(engine, sender, [{**GPT, "prompt": f"prompt {i}"} for i in range(200)])

    assert all(answer.created for answer in answers)
    ids = [answer.job.id for answer in answers]
    assert len(set(ids)) == 200
    assert rows(engine, Job) == 200 and rows(engine, JobEvent) == 200
    assert sorted(job_id for job_id, _ in sender.submits) == sorted(ids)
    assert sender.routes == [Route(provider="openai")] * 200
    # the first request is written alone, the rest gather while it commits: far fewer commits than jobs
    assert 1 <= commits[0] <= 20, commits


def test_a_repeated_external_task_id_answers_one_job(engine: Engine) -> None:
    sender = RecordingSender()
    (first,) = accept_all(engine, sender, [{**GPT, "external_task_id": "order-1"}])

    answers = accept_all(
        engine, sender, [{**GPT, "external_task_id": "order-1"}] * 3 + [{**GPT, "external_task_id": "order-2"}] * 3
    )

    assert [answer.created for answer in answers] == [False, False, False, True, False, False]
    assert {answer.job.id for answer in answers[:3]} == {first.job.id}
    assert len({answer.job.id for answer in answers[3:]}) == 1
    assert rows(engine, Job) == 2
    assert len(sender.submits) == 2


def test_a_group_that_races_another_writer_is_written_job_by_job(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = RecordingSender()
    (existing,) = accept_all(engine, sender, [{**GPT, "external_task_id": "order-1"}])
    # as if another API process had written order-1 after this group looked: the group's INSERT hits the constraint
    monkeypatch.setattr(accept_writer, "_known_by_external_id", lambda _session, _jobs: {})

    answers = accept_all(engine, sender, [{**GPT, "external_task_id": "order-1"}, GPT, GPT])

    assert (answers[0].created, answers[0].job.id) == (False, existing.job.id)
    assert [answer.created for answer in answers[1:]] == [True, True]
    assert rows(engine, Job) == 3
    assert len(sender.submits) == 3


class BrokenSender(RecordingSender):
    def submit(self, job_id: str, *, route: Route, countdown_s: float = 0) -> None:
        raise RedisConnectionError("redis is down")

    def submit_many(self, jobs: Sequence[tuple[str, Route]]) -> None:
        raise RedisConnectionError("redis is down")


def test_jobs_whose_publish_failed_are_committed_for_the_sweeper(engine: Engine) -> None:
    answers = accept_all(engine, BrokenSender(), [GPT] * 5)

    assert all(answer.created for answer in answers)
    with Session(engine) as session:
        assert {job.status for job in session.exec(select(Job))} == {"queued"}
    assert rows(engine, Job) == 5


def test_a_bad_request_raises_before_anything_is_written(engine: Engine) -> None:
    with pytest.raises(Exception, match="size") as refused:
        prepare_job(ImageRequest.model_validate({**GPT, "size": "999x999"}), owner=OWNER)
    assert getattr(refused.value, "param", None) == "size"
    assert rows(engine, Job) == 0
