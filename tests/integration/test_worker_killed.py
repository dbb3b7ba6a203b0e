"""Acceptance: a worker SIGKILLed while it holds every poll chain loses no job and charges none twice.

20 Kling jobs (6 s upstream latency) are submitted; once all are ``running`` and the worker has taken
every poll message off the queue (they sit unacked in its memory, not due back for
``visibility_timeout`` = 600 s), the worker's process group is SIGKILLed. A new worker and beat start;
the beat sweeper finds the overdue poll chains and restarts them, so every job ends.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from producer.enqueue import enqueue_job
from producer.keys import owner_id
from shared.jobs import ImageRequest
from shared.queue import TaskSender, make_celery
from tests.conftest import make_settings
from tests.integration.harness import (
    Emulator,
    ProcessesFactory,
    Rows,
    duplicate_charges,
    lost_jobs,
    settle,
    wait_for_the_worker_to_hold_every_poll,
)
from tests.support import API_KEY

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

    wait_for_the_worker_to_hold_every_poll(rows, isolated_redis_url, job_ids)
    open_at_kill = len(lost_jobs(rows, job_ids))
    first_worker.kill(9)
    assert not first_worker.alive()

    second_worker = stack.worker()
    stack.beat()
    # stragglers are counted as lost below, after the summary
    lost_after_kill = settle(rows, job_ids, timeout_s=60)

    statuses = rows.statuses(job_ids)
    costs = rows.costs()
    charges = Counter(cost.job_id for cost in costs)
    succeeded_events = {job_id: rows.event_path(job_id).count("succeeded") for job_id in job_ids}
    restarted = sum(int(count) for count in RESTARTED.findall(second_worker.output()))
    lost = len(lost_after_kill)
    duplicated = duplicate_charges(rows, job_ids)
    print(
        f"worker-kill: submitted={JOBS} terminal={JOBS - lost} lost={lost} duplicate_charges={duplicated} "
        f"succeeded={sum(status == 'succeeded' for status in statuses.values())} open_at_kill={open_at_kill} "
        f"poll_chains_restarted={restarted} upstream_submits={emulator.stats()['kling']['submits']}"
    )

    assert lost == 0, lost_after_kill
    assert open_at_kill == JOBS, "the worker was killed after some jobs had already ended"
    assert set(statuses.values()) == {"succeeded"}
    assert duplicated == 0
    assert sorted(charges) == sorted(job_ids)
    assert len(costs) == sum(status == "succeeded" for status in statuses.values())
    assert set(succeeded_events.values()) == {1}
    for job_id in job_ids:
        assert rows.event_path(job_id) == ["queued", "submitting", "running", "succeeded"]
        assert len(rows.images(job_id)) == 1
    # the chains the dead worker held were restarted by the sweeper, and nothing was submitted twice
    assert restarted >= open_at_kill
    assert emulator.stats()["kling"]["submits"] == JOBS
