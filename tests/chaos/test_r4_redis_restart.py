"""R4: Redis restarted mid-load (AOF everysec): workers consume again within 60 s and no accepted job is lost.

A stream of Kling jobs is accepted (row committed, then the submit published) while a worker and beat run.
Part-way through, this test's own redis-server is stopped — gracefully (``SHUTDOWN``: the AOF is flushed) or
by SIGKILL (a crash: up to the last second of writes may be gone) — and started again on the same port and
files. Jobs accepted while Redis is down have their publish fail after the commit; the worker's held
countdowns are dropped with its connection. The sweeper re-sends all of that from the database: every
accepted job ends, none is billed twice, none gets a second upstream task.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from redis import Redis

from tests.chaos.conftest import ChaosProcesses, PrivateRedis, Producer, kling_request, record_outcome
from tests.integration.harness import Emulator, Rows, duplicate_charges, queued_messages, settle
from tests.support import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

JOBS = 40
SUBMIT_EVERY_S = 0.2
RESTART_AFTER_JOBS = 15
DOWN_FOR_S = 1.5
RESUME_WITHIN_S = 60


def _queued_messages(redis_url: str) -> int:
    client = Redis.from_url(redis_url)
    try:
        return queued_messages(client)
    finally:
        client.close()


@pytest.mark.parametrize("stop", ["shutdown", "sigkill"])
def test_redis_restart_mid_load_loses_no_accepted_job(
    stop: str,
    postgres_url: str,
    chaos_redis: PrivateRedis,
    chaos_processes: ChaosProcesses,
    rows_for: Any,
    producer_for: Any,
    emulator: Emulator,
) -> None:
    emulator.configure({"kling": {"latency": {"kind": "uniform", "low_s": 2.0, "high_s": 4.0}}})
    stack = chaos_processes(postgres_url)
    worker = stack.worker()
    beat = stack.beat()
    rows: Rows = rows_for(postgres_url)
    producer: Producer = producer_for(rows, postgres_url)
    errors: list[BaseException] = []

    def submit_stream() -> None:
        try:
            for n in range(JOBS):
                producer.submit(kling_request(f"stream {n}"))
                time.sleep(SUBMIT_EVERY_S)
        except BaseException as exc:  # surfaced below: a refused submit is not an accepted job
            errors.append(exc)

    stream = threading.Thread(target=submit_stream, name="submit-stream")
    stream.start()
    try:
        wait_until(lambda: len(producer.submitted) >= RESTART_AFTER_JOBS, timeout_s=30, what="the first jobs")
        queued_before = _queued_messages(chaos_redis.url)
        chaos_redis.shutdown() if stop == "shutdown" else chaos_redis.kill()
        time.sleep(DOWN_FOR_S)
        chaos_redis.start()
        back_at = time.monotonic()
        queued_after = _queued_messages(chaos_redis.url)
        after_restart = len(producer.submitted)
    finally:
        stream.join(timeout=60)
    assert not errors, errors
    job_ids = list(producer.submitted)
    assert len(job_ids) == JOBS

    # the workers consume again: a job accepted after the restart is claimed by a worker
    first_after = job_ids[after_restart]
    wait_until(
        lambda: rows.job(first_after).status != "queued",
        timeout_s=RESUME_WITHIN_S,
        interval_s=0.1,
        what="a worker to take a job accepted after the Redis restart",
    )
    resumed_after_s = time.monotonic() - back_at

    lost = settle(rows, job_ids, timeout_s=90)
    outcome = record_outcome(
        f"R4-{stop}",
        submitted=JOBS,
        terminal=JOBS - len(lost),
        lost=len(lost),
        duplicate_charges=duplicate_charges(rows, job_ids),
        duplicate_webhook_events=0,
    )
    statuses = rows.statuses(job_ids)
    print(
        f"R4 {stop} detail: queued_messages before={queued_before} after={queued_after} "
        f"resumed_after_s={resumed_after_s:.1f} upstream_submits={emulator.stats()['kling']['submits']} "
        f"statuses={sorted(set(statuses.values()))}"
    )
    assert outcome.lost == 0, lost
    # the same processes carried on: a worker that dies on a broker restart would need a supervisor
    assert worker.alive() and beat.alive()
    assert "Unrecoverable error" not in worker.output()
    assert resumed_after_s <= RESUME_WITHIN_S
    failed = {job_id: rows.job(job_id).error_code for job_id, status in statuses.items() if status != "succeeded"}
    assert not failed, failed
    assert outcome.duplicate_charges == 0
    assert emulator.stats()["kling"]["submits"] == JOBS  # nobody got a second upstream task
