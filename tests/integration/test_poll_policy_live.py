"""The latency-aware poll schedule in a real worker: learned profiles (in the test's own Redis) drive the polls
against the emulator's Kling, and every polled completion is recorded there, bracketing the true one.

The emulator's Kling task says when it turned ``succeed`` (``updated_at``); our job says when it started running
(its ``running`` event) and when it finished. Bounds are the policy's own, with slack for a busy machine.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from celery import Celery
from redis import Redis
from sqlmodel import Session

from producer.enqueue import enqueue_job
from producer.keys import owner_id
from shared.catalog import PollingPolicy, load_catalog
from shared.db.tables import Job
from shared.jobs import ImageRequest
from shared.queue import TaskSender, make_celery
from tests.conftest import make_settings
from tests.integration.harness import Emulator, ProcessesFactory, Rows, wait_for_terminal
from tests.support import API_KEY
from worker.scheduling.latency import KEY_PREFIX, Completion, RedisCompletions, latency_key, profile_of
from worker.scheduling.polling import MIN_DELAY_S, max_detection_lag_s, nominal_delay, with_profile

pytestmark = pytest.mark.integration

#: seconds of slack for the worker's own work after the poll (image download, storing, the commit) on a busy box
SLACK_S = 1.5
#: the upstream's clock (its task's ``created_at``/``updated_at``) against our ``running`` event: same machine
CLOCK_SLACK_S = 0.3


@dataclass
class Live:
    rows: Rows
    sender: TaskSender
    redis: Redis
    emulator: Emulator

    def enqueue(self, model_name: str, count: int) -> list[str]:
        ids = []
        with Session(self.rows.engine, expire_on_commit=False) as session:
            for index in range(count):
                body = {"model": "kling-image", "model_name": model_name, "prompt": f"a fox, take {index}"}
                enqueued = enqueue_job(
                    ImageRequest.model_validate(body), session=session, owner=owner_id(API_KEY), sender=self.sender
                )
                ids.append(enqueued.job.id)
        return ids

    def seed(self, key: str, completions: list[Completion]) -> PollingPolicy:
        """Completions learned before the worker started; the policy its jobs then follow."""
        store = RedisCompletions(self.redis)
        for completion in completions:
            store.add(key, completion)
        profile = profile_of(store.recent(key))
        assert profile is not None
        return with_profile(load_catalog().models["kling-image"].polling, profile)


@dataclass(frozen=True)
class Observed:
    """One finished job, in seconds since it started running."""

    job: Job
    upstream_done_s: float
    finished_s: float

    @property
    def lag_s(self) -> float:
        return self.finished_s - self.upstream_done_s


def observe(live: Live, job_ids: list[str]) -> list[Observed]:
    seen = []
    for job_id in job_ids:
        job = live.rows.job(job_id)
        assert job.status == "succeeded" and job.upstream_task_id and job.finished_at, job
        [running] = [event for event in live.rows.events(job_id) if event.to_status == "running"]
        started = running.at.timestamp()
        upstream = live.emulator.kling_task(job.upstream_task_id)
        seen.append(Observed(job, upstream["updated_at"] / 1000 - started, job.finished_at.timestamp() - started))
    return seen


def most_polls_within(seconds: float, policy: PollingPolicy) -> int:
    """The most polls ``policy`` can make in ``seconds`` (every wait at its shortest)."""
    elapsed, polls = 0.0, 0
    while True:
        elapsed += max(nominal_delay(polls, policy) * (1 - policy.jitter), MIN_DELAY_S)
        if elapsed > seconds:
            return polls
        polls += 1


@pytest.fixture
def live(
    sqlite_url: str, processes: ProcessesFactory, rows_for: Any, isolated_redis_url: str, emulator: Emulator
) -> Iterator[Live]:
    settings = make_settings(redis_url=isolated_redis_url, database_url=sqlite_url)
    celery: Celery = make_celery(settings, main="test-producer")
    redis = Redis.from_url(isolated_redis_url)
    try:
        yield Live(rows=rows_for(sqlite_url), sender=TaskSender(celery), redis=redis, emulator=emulator)
    finally:
        redis.close()
        celery.close()


def start_worker(processes: ProcessesFactory, sqlite_url: str) -> None:
    processes(sqlite_url).worker()


def test_a_learned_early_quantile_brings_the_first_poll_forward(
    live: Live, processes: ProcessesFactory, sqlite_url: str
) -> None:
    # Kling takes 0.8 s; what was learned says tasks finish from 1.0 s on: the first poll goes there, not to the
    # catalog's 4 s, and finds every task done
    live.emulator.configure({"kling": {"latency": {"kind": "fixed", "value_s": 0.8}}})
    key = latency_key("kling", "kling-v2-1", "text2img")
    policy = live.seed(key, [Completion(1.0 + i / 100, 1.0 + i / 100) for i in range(60)])
    assert 1.0 <= policy.first_poll_s <= 1.1
    start_worker(processes, sqlite_url)

    job_ids = live.enqueue("kling-v2-1", 8)
    wait_for_terminal(live.rows, job_ids, timeout_s=60)

    seen = observe(live, job_ids)
    print(
        f"poll-first: finished after {[round(item.finished_s, 2) for item in seen]} s (the catalog's first poll: 4 s)"
    )
    assert [item.job.poll_count for item in seen] == [1] * len(seen)
    assert max(item.finished_s for item in seen) <= policy.first_poll_s * (1 + policy.jitter) + SLACK_S
    recorded = RedisCompletions(live.redis).recent(key)[: len(job_ids)]
    # each poll came at the learned first poll (jittered), give or take the clocks' slack: nowhere near the 4 s
    latest_first_poll_s = policy.first_poll_s * (1 + policy.jitter) + CLOCK_SLACK_S
    assert all(item.after_s == 0.0 and 0.9 <= item.by_s <= latest_first_poll_s for item in recorded), recorded


def test_on_a_lognormal_kling_polls_and_lag_stay_within_the_learned_schedule(
    live: Live, processes: ProcessesFactory, sqlite_url: str
) -> None:
    # the emulator's lognormal profile scaled down (median 2 s, p95 6 s), learned from 150 earlier completions
    live.emulator.configure({"kling": {"latency": {"kind": "lognormal", "median_s": 2.0, "p95_s": 6.0}}})
    key = latency_key("kling", "kling-v2-1", "text2img")
    rng, sigma = random.Random(11), math.log(3) / 1.645
    earlier = [rng.lognormvariate(math.log(2.0), sigma) for _ in range(150)]
    policy = live.seed(key, [Completion(value, value) for value in earlier])
    assert policy.usual_window_s is not None and policy.first_poll_s < 2.0 < policy.usual_window_s
    start_worker(processes, sqlite_url)

    job_ids = live.enqueue("kling-v2-1", 16)
    wait_for_terminal(live.rows, job_ids, timeout_s=90)
    emulator_queries = live.emulator.stats()["kling"]["queries"]  # before ``observe`` reads the tasks too

    seen = observe(live, job_ids)
    lags = sorted(item.lag_s for item in seen)
    polls = [item.job.poll_count for item in seen]
    print(
        f"poll-live: {len(seen)} jobs, polls/job {statistics.mean(polls):.2f} (max {max(polls)}), "
        f"lag p50 {statistics.median(lags):.2f} s max {lags[-1]:.2f} s; first poll {policy.first_poll_s:.2f} s, "
        f"window {policy.usual_window_s:.1f} s, promised lag ≤ {max_detection_lag_s(policy):.1f} s"
    )
    assert emulator_queries == sum(polls)  # one upstream query per poll
    for item in seen:
        assert -CLOCK_SLACK_S <= item.lag_s <= max_detection_lag_s(policy) + SLACK_S, item
        assert item.job.poll_count <= most_polls_within(item.finished_s + CLOCK_SLACK_S, policy), item

    # every completion was recorded, each bracketing its task's true completion (newest first in the list)
    recorded = RedisCompletions(live.redis).recent(key)[: len(job_ids)]
    assert len(recorded) == len(job_ids)
    truths = [item.upstream_done_s for item in seen]
    for completion in recorded:
        assert any(
            completion.after_s - CLOCK_SLACK_S <= truth <= completion.by_s + CLOCK_SLACK_S for truth in truths
        ), (completion, truths)
    for truth in truths:
        assert any(item.after_s - CLOCK_SLACK_S <= truth <= item.by_s + CLOCK_SLACK_S for item in recorded), truth
    assert live.redis.llen(KEY_PREFIX + key) == 150 + len(job_ids)
