"""Acceptance: upstreams are protected fleet-wide, a hanging provider holds only its own share, channels fail over.

Real processes throughout: Celery workers (threads pool) against a private Redis, the emulator over HTTP.

- Rate and concurrency: two worker processes, Kling limited to K slots and R requests per second in our settings
  and K slots in the emulator (``concurrency_limit``). The emulator measures what it sees: the peak of image slots
  in flight, the most requests within any second, and submits it refused with 1303. Printed against the limits.
- Isolation: the Gemini emulator hangs (past our client's timeout) on every job; with Gemini's ``max_concurrent``
  those jobs hold two of the worker's threads and wait in their queue otherwise, so Kling jobs finish as fast as
  without them.
- Failover: a preferred Kling channel with a wrong secret key (auth error) and a good one. Jobs fail over to the
  good one and succeed; the bad one rests and is tried again only after its rest.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from redis import Redis
from sqlmodel import Session

from producer.enqueue import enqueue_job
from producer.keys import owner_id
from shared.config import EMULATOR_KLING_ACCESS_KEY, EMULATOR_KLING_SECRET_KEY
from shared.egress import EgressPolicy
from shared.jobs import ImageRequest
from shared.queue import TaskSender, make_celery
from tests.conftest import make_settings
from tests.integration.harness import Emulator, ProcessesFactory, Rows, seconds_between, wait_for_terminal
from tests.support import API_KEY, wait_until

pytestmark = pytest.mark.integration

LOOPBACK = EgressPolicy.from_lists(hosts=[], networks=["127.0.0.0/8"])
#: Kling's catalog poll schedule: a finished task is noticed at the latest this long after it finished
KLING_POLL_INTERVAL_S = 8.0


@dataclass
class Producer:
    rows: Rows
    sender: TaskSender

    def enqueue(self, body: dict[str, Any]) -> str:
        with Session(self.rows.engine, expire_on_commit=False) as session:
            enqueued = enqueue_job(
                ImageRequest.model_validate(body), session=session, owner=owner_id(API_KEY), sender=self.sender,
                egress=LOOPBACK,
            )  # fmt: skip
        return enqueued.job.id

    def kling(self, prompt: str, n: int = 1) -> str:
        return self.enqueue({"model": "kling-image", "model_name": "kling-v2-1", "prompt": prompt, "n": n})


@pytest.fixture
def producer_for(rows_for: Any, isolated_redis_url: str, files_dir: Path) -> Iterator[Any]:
    celeries: list[Celery] = []

    def make(database_url: str) -> Producer:
        settings = make_settings(redis_url=isolated_redis_url, database_url=database_url, files_dir=files_dir)
        celery = make_celery(settings, main="test-producer")
        celeries.append(celery)
        return Producer(rows=rows_for(database_url), sender=TaskSender(celery))

    yield make
    for celery in celeries:
        celery.close()


class LoadSampler:
    """Reads the emulator's Kling load every 0.1 s in a thread: the highest in-flight slot count it saw."""

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator
        self._stop = threading.Event()
        self.samples: list[int] = []
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append(int(self._emulator.stats()["kling_load"]["in_flight_slots"]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- rate and concurrency -------------------------------------------------------------------------------------

SLOT_LIMIT = 5
RATE_LIMIT = 4.0
IMAGE_COUNTS = (1, 2, 3)
JOBS = 9


def test_two_workers_never_exceed_the_kling_slot_limit_nor_the_request_rate(
    database_url: str, processes: ProcessesFactory, producer_for: Any, emulator: Emulator
) -> None:
    # Given an upstream account of K slots, and our settings limiting Kling to K slots and R requests per second
    emulator.configure({"kling": {"latency": {"kind": "fixed", "value_s": 3.0}, "concurrency_limit": SLOT_LIMIT}})
    stack = processes(
        database_url,
        IMAGEJOBS_KLING__MAX_CONCURRENT=str(SLOT_LIMIT),
        IMAGEJOBS_KLING__REQUESTS_PER_SECOND=str(RATE_LIMIT),
        IMAGEJOBS_UPSTREAM__SLOT_WAIT_S="1",
        IMAGEJOBS_CELERY__SOFT_SHUTDOWN_TIMEOUT_S="1",
    )
    stack.worker(concurrency=8)
    stack.worker(concurrency=8)
    stack.beat()
    producer: Producer = producer_for(database_url)
    sampler = LoadSampler(emulator)

    # When many jobs of 1–3 images arrive at once
    started = time.monotonic()
    job_ids = [producer.kling(f"load {i}", n=IMAGE_COUNTS[i % 3]) for i in range(JOBS)]
    try:
        statuses = wait_for_terminal(producer.rows, job_ids, timeout_s=150)
    finally:
        sampler.stop()
    elapsed = time.monotonic() - started

    # Then every job succeeded, and the upstream never saw more than K slots nor more than R requests in a second
    load = emulator.stats()["kling_load"]
    print(f"\npeak in-flight slots {load['peak_in_flight_slots']} / limit {SLOT_LIMIT}")
    print(f"peak rps {load['peak_requests_per_s']} / limit {RATE_LIMIT:g}")
    print(
        f"sampled in-flight slots: max {max(sampler.samples, default=0)}; 1303 answers: {load['concurrency_rejected']}"
    )
    print(f"{JOBS} jobs ({sum(IMAGE_COUNTS[i % 3] for i in range(JOBS))} images) in {elapsed:.1f}s, 2 worker processes")
    assert set(statuses.values()) == {"succeeded"}
    assert load["peak_in_flight_slots"] <= SLOT_LIMIT
    assert max(sampler.samples, default=0) <= SLOT_LIMIT
    assert load["concurrency_rejected"] == 0
    assert load["peak_requests_per_s"] <= RATE_LIMIT
    # the load did reach the limits (the jobs queued behind them, not around them) ...
    assert load["peak_in_flight_slots"] >= SLOT_LIMIT - 2
    # ... and waiting in the queue was never a submit attempt
    assert {producer.rows.job(job_id).submit_attempts for job_id in job_ids} == {1}
    assert {producer.rows.job(job_id).channel for job_id in job_ids} == {"default"}


# -- a hanging provider holds only its own share ----------------------------------------------------------------

HANGING_JOBS = 6
KLING_JOBS = 4
#: Gemini answers only long after our client (8 s timeout) gave up: a hang for us. (Not ``[hang]``: the emulator
#: would keep those requests open for an hour and hold up its own shutdown at the end of the session.)
HANG = "[latency=20]"


def _kling_durations(producer: Producer, job_ids: Sequence[str], *, from_first_claim: bool = False) -> list[float]:
    """Seconds from arrival (or from the first claim: not counting a worker still starting) to success."""
    durations = []
    for job_id in job_ids:
        job = producer.rows.job(job_id)
        assert job.status == "succeeded" and job.finished_at is not None
        start = job.created_at
        if from_first_claim:
            start = next(event.at for event in producer.rows.events(job_id) if event.to_status == "submitting")
        durations.append(seconds_between(start, job.finished_at))
    return durations


def test_a_hanging_gemini_does_not_delay_kling_jobs(
    sqlite_url: str, processes: ProcessesFactory, producer_for: Any, emulator: Emulator
) -> None:
    # Given one worker of six threads, and Gemini limited to two concurrent calls
    stack = processes(
        sqlite_url,
        IMAGEJOBS_GEMINI__MAX_CONCURRENT="2",
        IMAGEJOBS_GEMINI__TIMEOUT_S="8",
        IMAGEJOBS_CELERY__SOFT_SHUTDOWN_TIMEOUT_S="1",
    )
    stack.worker(concurrency=6)
    producer: Producer = producer_for(sqlite_url)
    baseline_ids = [producer.kling(f"baseline {i}") for i in range(KLING_JOBS)]
    wait_for_terminal(producer.rows, baseline_ids, timeout_s=60)
    baseline = _kling_durations(producer, baseline_ids, from_first_claim=True)

    # When more Gemini jobs than the worker has threads hang upstream, and then Kling jobs arrive
    hanging_ids = [producer.enqueue({"model": "nano-banana", "prompt": f"{HANG} {i}"}) for i in range(HANGING_JOBS)]
    wait_until(lambda: emulator.stats()["gemini"]["requests"] >= 2, timeout_s=20, what="two hanging Gemini calls")
    kling_ids = [producer.kling(f"during the hang {i}") for i in range(KLING_JOBS)]
    wait_for_terminal(producer.rows, kling_ids, timeout_s=60)
    during = _kling_durations(producer, kling_ids)

    # Then the Kling jobs took no longer than one poll interval more than without the hang
    print(f"\nKling job seconds without the hang: {[round(s, 1) for s in baseline]}")
    print(f"Kling job seconds during the hang: {[round(s, 1) for s in during]}")
    assert max(during) <= max(baseline) + KLING_POLL_INTERVAL_S
    # while the Gemini jobs were still hanging: two in flight upstream (and perhaps their retry after the client
    # timeout), the others waiting in their queue without a thread
    assert emulator.stats()["gemini"]["requests"] <= 4
    assert all(producer.rows.job(job_id).status in ("queued", "submitting") for job_id in hanging_ids)


# -- channels fail over ------------------------------------------------------------------------------------------

REST_S = 4.0
BAD_REST_KEY = "imagejobs:upstream:{kling:bad}:rest"


def test_jobs_fail_over_from_a_channel_with_refused_credentials_which_rests_and_is_retried_later(
    sqlite_url: str, processes: ProcessesFactory, producer_for: Any, emulator: Emulator, isolated_redis_url: str
) -> None:
    # Given a preferred channel "bad" (wrong secret key) and the good default channel as the backup
    bad = {"name": "bad", "access_key": EMULATOR_KLING_ACCESS_KEY, "secret_key": "not-the-secret-key-of-this-account"}
    stack = processes(
        sqlite_url,
        IMAGEJOBS_KLING__ACCESS_KEY=EMULATOR_KLING_ACCESS_KEY,
        IMAGEJOBS_KLING__SECRET_KEY=EMULATOR_KLING_SECRET_KEY,
        IMAGEJOBS_KLING__BASE_URL=f"{emulator.url}/kling",
        IMAGEJOBS_KLING__PRIORITY="1",
        IMAGEJOBS_KLING__CHANNELS=json.dumps([{**bad, "priority": 0}]),
        IMAGEJOBS_UPSTREAM__COOLDOWN_BASE_S=str(REST_S),
        IMAGEJOBS_CELERY__SOFT_SHUTDOWN_TIMEOUT_S="1",
    )
    stack.worker(concurrency=8)
    producer: Producer = producer_for(sqlite_url)
    redis = Redis.from_url(isolated_redis_url)

    # When a first job arrives, it tries "bad", is refused, and fails over to "default" at once
    first = producer.kling("first")
    wait_until(lambda: producer.rows.job(first).submit_attempts >= 2, timeout_s=20, what="the failover")
    failed_over_at = time.monotonic()
    rest_ms = int(redis.pttl(BAD_REST_KEY))
    # and jobs arriving while "bad" rests go straight to "default"
    resting = [producer.kling(f"while it rests {i}") for i in range(3)]
    wait_for_terminal(producer.rows, [first, *resting], timeout_s=60)

    # Then once its rest is over, "bad" is tried again (and rests twice as long)
    time.sleep(max(0.0, failed_over_at + REST_S + 0.5 - time.monotonic()))
    assert redis.pttl(BAD_REST_KEY) < 0  # recovered by itself
    later = producer.kling("after the rest")
    wait_until(lambda: producer.rows.job(later).submit_attempts >= 2, timeout_s=20, what="the second failover")
    second_rest_ms = int(redis.pttl(BAD_REST_KEY))
    wait_for_terminal(producer.rows, [later], timeout_s=60)
    redis.close()

    print(f"\nbad channel rests: {rest_ms} ms after its first refusal, {second_rest_ms} ms after its second")
    assert 0 < rest_ms <= REST_S * 1000
    assert REST_S * 1000 < second_rest_ms <= 2 * REST_S * 1000
    jobs = {job_id: producer.rows.job(job_id) for job_id in [first, *resting, later]}
    assert {job.status for job in jobs.values()} == {"succeeded"}
    assert {job.channel for job in jobs.values()} == {"default"}
    assert [jobs[job_id].submit_attempts for job_id in [first, *resting, later]] == [2, 1, 1, 1, 2]
    for job_id in (first, later):
        handed_back = [event for event in producer.rows.events(job_id) if event.to_status == "queued"][-1]
        assert handed_back.detail is not None and "Kling 1002" in handed_back.detail
