"""R2: a job whose worker process dies on every attempt ends ``failed`` after ≤ 3 attempts, without a loop.

With the threads pool the pool *is* the worker process, so "the pool process dies" is the worker being
SIGKILLed while the task runs. The job's upstream call (OpenAI, synchronous) takes 20 s, so every attempt is
still inside it when the test kills the worker. A new worker starts each time; once the submit lease (3 s)
has run out, the sweeper re-sends the job and the next worker claims it as the next attempt (the attempt
counter is the job row's ``submit_attempts``). After the third death the next claim finds the counter at
the limit and ends the job ``failed`` / ``too_many_attempts`` without calling the upstream again.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.db.tables import CostEntry
from tests.chaos.conftest import ChaosProcesses, Producer, record_outcome
from tests.integration.harness import Emulator, Rows, duplicate_charges, lost_jobs, settle
from tests.support import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

MAX_ATTEMPTS = 3
SUBMIT_LEASE_S = 3


def test_a_job_that_kills_its_worker_on_every_attempt_fails_after_three(
    postgres_url: str,
    chaos_processes: ChaosProcesses,
    rows_for: Any,
    producer_for: Any,
    emulator: Emulator,
) -> None:
    stack = chaos_processes(
        postgres_url,
        IMAGEJOBS_SWEEPER__SUBMIT_LEASE_S=str(SUBMIT_LEASE_S),
        IMAGEJOBS_SWEEPER__MAX_SUBMIT_ATTEMPTS=str(MAX_ATTEMPTS),
    )
    stack.beat()
    worker = stack.worker()
    rows: Rows = rows_for(postgres_url)
    producer: Producer = producer_for(rows, postgres_url)
    job_id = producer.submit({"model": "gpt-image-1", "prompt": "a vase that never renders [latency=20]"})

    def openai_requests() -> int:
        return int(emulator.stats()["openai"]["requests"])

    for attempt in range(1, MAX_ATTEMPTS + 1):

        def reached_the_upstream(attempt: int = attempt) -> bool:
            return rows.job(job_id).submit_attempts == attempt and openai_requests() == attempt

        wait_until(
            reached_the_upstream,
            timeout_s=30,
            interval_s=0.05,
            what=f"attempt {attempt} to reach the upstream",
        )
        assert rows.job(job_id).status == "submitting"
        worker.kill(9)  # the process dies in the middle of the upstream call
        worker = stack.worker()

    settle(rows, [job_id], timeout_s=30)
    # no loop: a few more sweeper intervals (and a lease) later nothing has moved
    time.sleep(SUBMIT_LEASE_S + 2)
    lost = lost_jobs(rows, [job_id])
    record_outcome(
        "R2",
        submitted=1,
        terminal=1 - len(lost),
        lost=len(lost),
        duplicate_charges=duplicate_charges(rows, [job_id]),
        duplicate_webhook_events=0,
    )
    job = rows.job(job_id)
    print(f"R2 detail: status={job.status} error={job.error_code} attempts={job.submit_attempts} "
          f"upstream_requests={openai_requests()}")  # fmt: skip

    assert not lost, lost
    assert (job.status, job.error_code) == ("failed", "too_many_attempts")
    assert job.submit_attempts == MAX_ATTEMPTS
    assert openai_requests() == MAX_ATTEMPTS  # the claim past the limit never called the upstream
    assert rows.count(CostEntry) == 0
    assert rows.event_path(job_id) == ["queued", *["submitting"] * MAX_ATTEMPTS, "failed"]
