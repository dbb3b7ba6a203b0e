"""Acceptance: a finished upstream task is noticed within the polling policy's promised lag.

The emulator's Kling takes exactly 20 s. We compare our job's ``finished_at`` with the moment the
emulator's task turned ``succeed`` (its ``updated_at``, read over the Kling API with a JWT).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from shared.catalog import PollingPolicy
from tests.e2e.conftest import Stack
from tests.support import API_KEY, wait_until
from worker.scheduling.polling import MIN_DELAY_S, max_detection_lag_s

pytestmark = pytest.mark.e2e

UPSTREAM_LATENCY_S = 20.0
SLACK_S = 2.0


def most_polls_within(seconds: float, policy: PollingPolicy) -> int:
    """The most polls the policy can make in ``seconds`` (every wait at its shortest, jitter −max)."""
    elapsed, polls = 0.0, 0
    while True:
        nominal = policy.first_poll_s if polls == 0 else min(policy.max_s, policy.base_s * policy.factor ** (polls - 1))
        elapsed += max(nominal * (1 - policy.jitter), MIN_DELAY_S)
        if elapsed > seconds:
            return polls
        polls += 1


def test_a_finished_kling_task_is_detected_within_the_policy_lag(
    start_stack: Callable[[str], Stack], sqlite_url: str
) -> None:
    stack = start_stack(sqlite_url)
    stack.emulator.set_latency(kling_s=UPSTREAM_LATENCY_S, openai_s=0.2)

    response = httpx.post(
        f"{stack.api_url}/v1/images/generations",
        json={"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a slow fox", "async": True},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["id"]
    job_policy = PollingPolicy.model_validate(stack.rows.job(task_id).polling_policy)
    promised_lag = max_detection_lag_s(job_policy)

    wait_until(
        lambda: stack.rows.job(task_id).finished_at is not None,
        timeout_s=UPSTREAM_LATENCY_S + promised_lag + 15,
        interval_s=0.25,
        what="the job to finish",
    )
    upstream_queries = stack.emulator.stats()["kling"]["queries"]
    task = stack.task(task_id)
    job = stack.rows.job(task_id)
    assert task["status"] == "succeeded", task
    assert job.upstream_task_id is not None and job.finished_at is not None
    upstream = stack.emulator.kling_task(job.upstream_task_id)
    assert upstream["task_status"] == "succeed"
    upstream_done_s = upstream["updated_at"] / 1000
    assert upstream["updated_at"] - upstream["created_at"] == pytest.approx(UPSTREAM_LATENCY_S * 1000, abs=2)

    lag_s = job.finished_at.timestamp() - upstream_done_s
    [running] = [event for event in stack.rows.events(task_id) if event.to_status == "running"]
    polling_for_s = job.finished_at.timestamp() - running.at.timestamp()
    print(
        f"poll-lag: lag={lag_s:.2f}s promised<={promised_lag:.1f}s(+{SLACK_S:.0f}s slack) "
        f"poll_count={task['poll_count']} upstream_queries={upstream_queries} polling_for={polling_for_s:.1f}s"
    )

    assert 0 <= lag_s <= promised_lag + SLACK_S
    assert task["poll_count"] == job.poll_count >= 2
    # each poll is one upstream query (no hammering) and the backoff kept the count to what the policy allows
    assert upstream_queries == job.poll_count
    assert job.poll_count <= most_polls_within(polling_for_s + 0.5, job_policy)
