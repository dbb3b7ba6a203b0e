"""Acceptance: a worker SIGKILLed while it holds every poll chain loses no job and charges none twice.

20 Kling jobs (6 s upstream latency) are submitted; once all are ``running`` and the worker has taken
every poll message off the queue (they sit unacked in its memory, not due back for
``visibility_timeout`` = 600 s), the worker's process group is SIGKILLed. A new worker and beat start;
the beat sweeper finds the overdue poll chains and restarts them, so every job ends.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from sqlmodel import Session

from producer.enqueue import enqueue_job
from producer.keys import owner_id
from shared.jobs import TERMINAL, ImageRequest
from shared.queue import QueueName, TaskSender, make_celery
from tests.conftest import make_settings
from tests.integration.harness import Emulator, ProcessesFactory, Rows
from tests.support import API_KEY, queued_count, wait_until

pytestmark = pytest.mark.integration

JOBS = 20
KLING_LATENCY_S = 6.0
RESTARTED = re.compile(r"restarted_polls=(\d+)")


def test_jobs_survive_a_worker_killed_mid_poll(
    database_url: str,
    processes: ProcessesFactory,
    rows_for: Any,
    isolated_redis_url: str,
    files_dir: Path,
    emulator: Emulator,
) -> None:
    emulator.set_latency(kling_s=KLING_LATENCY_S, openai_s=0.2)
    stack = processes(database_url)
    first_worker = stack.worker()
    rows: Rows = rows_for(database_url)
    redis = Redis.from_url(isolated_redis_url)
    settings = make_settings(redis_url=isolated_redis_url, database_url=database_url, files_dir=files_dir)
    celery = make_celery(settings, main="test-producer")
    try:
        sender = TaskSender(celery)
        job_ids = []
        for number in range(JOBS):
            request = ImageRequest.model_validate(
                {"model": "kling-image", "model_name": "kling-v2-1", "prompt": f"survivor {number}"}
            )
            with Session(rows.engine, expire_on_commit=False) as session:
                job_ids.append(enqueue_job(request, session=session, owner=owner_id(API_KEY), sender=sender).job.id)
    finally:
        celery.close()

    def all_running_and_held_by_the_worker() -> bool:
        jobs = rows.jobs(job_ids)
        running = all(job.status == "running" and job.next_poll_at is not None for job in jobs)
        queued_messages = queued_count(redis, QueueName.POLL.value) + queued_count(redis, QueueName.SUBMIT.value)
        return len(jobs) == JOBS and running and queued_messages == 0

    try:
        wait_until(all_running_and_held_by_the_worker, timeout_s=30, interval_s=0.1, what="all jobs running")
    finally:
        redis.close()
    open_at_kill = sum(job.status not in TERMINAL for job in rows.jobs(job_ids))
    first_worker.kill(9)
    assert not first_worker.alive()

    second_worker = stack.worker()
    stack.beat()
    terminal = {status.value for status in TERMINAL}
    with contextlib.suppress(TimeoutError):  # stragglers are counted as lost below, after the summary
        wait_until(
            lambda: all(status in terminal for status in rows.statuses(job_ids).values()),
            timeout_s=60,
            interval_s=0.25,
            what="every job to end after the worker was killed",
        )

    statuses = rows.statuses(job_ids)
    costs = rows.costs()
    charges = Counter(cost.job_id for cost in costs)
    succeeded_events = {job_id: rows.event_path(job_id).count("succeeded") for job_id in job_ids}
    restarted = sum(int(count) for count in RESTARTED.findall(second_worker.output()))
    lost = sum(status not in terminal for status in statuses.values())
    duplicate_charges = sum(count - 1 for count in charges.values() if count > 1)
    print(
        f"worker-kill: submitted={JOBS} terminal={JOBS - lost} lost={lost} duplicate_charges={duplicate_charges} "
        f"succeeded={sum(status == 'succeeded' for status in statuses.values())} open_at_kill={open_at_kill} "
        f"poll_chains_restarted={restarted} upstream_submits={emulator.stats()['kling']['submits']}"
    )

    assert lost == 0, {job_id: status for job_id, status in statuses.items() if status not in terminal}
    assert set(statuses.values()) == {"succeeded"}
    assert duplicate_charges == 0
    assert sorted(charges) == sorted(job_ids)
    assert len(costs) == sum(status == "succeeded" for status in statuses.values())
    assert set(succeeded_events.values()) == {1}
    for job_id in job_ids:
        assert rows.event_path(job_id) == ["queued", "submitting", "running", "succeeded"]
        assert len(rows.images(job_id)) == 1
    # the chains the dead worker held were restarted by the sweeper, and nothing was submitted twice
    assert restarted >= open_at_kill
    assert emulator.stats()["kling"]["submits"] == JOBS
