"""A publish that fails after the commit (broker down at enqueue) leaves the job re-sendable, never orphaned.

The API commits the job row, then publishes its submit message. With this test's redis-server stopped, the
publish fails: the API still answers 202 (promptly: kombu's publish retries end on "connection refused") and
logs the failure. While Redis is down nothing can take the job — it stays ``queued``. Once Redis is back, the
sweeper finds the job ``queued`` past ``requeue_after_s`` and re-sends it; it succeeds, is billed once and
its webhook is delivered once.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

import httpx
import pytest

from tests.chaos.conftest import ChaosProcesses, PrivateRedis, kling_request, record_outcome
from tests.integration.harness import (
    Emulator,
    Rows,
    delivered,
    duplicate_charges,
    duplicate_webhook_events,
    lost_jobs,
    settle,
)
from tests.support import API_KEY, wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

RESENT_QUEUED = re.compile(r"resent_queued=(\d+)")
#: the sweeper's ``requeue_after_s`` in ``base_env`` (3 s) plus a margin: long enough that it would have acted
DOWN_FOR_S = 5.0


def _submit(api_url: str, fields: dict[str, Any]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(
        f"{api_url}/v1/images/generations", json=fields, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    )
    return response, time.monotonic() - started


def test_a_job_whose_publish_failed_after_commit_is_resent_by_the_sweeper(
    postgres_url: str,
    chaos_redis: PrivateRedis,
    chaos_processes: ChaosProcesses,
    rows_for: Any,
    emulator: Emulator,
    webhook_receiver: Any,
) -> None:
    emulator.set_latency(kling_s=1.0, openai_s=0.2)
    receiver = webhook_receiver()
    stack = chaos_processes(postgres_url)
    worker = stack.worker()
    stack.beat()
    api_url = stack.api()
    rows: Rows = rows_for(postgres_url)

    # the ordinary path first, so the API's broker connection is established when Redis goes away
    warm_up, _ = _submit(api_url, kling_request("before the outage", callback_url=receiver.url))
    assert warm_up.status_code == 202, warm_up.text
    assert not settle(rows, [warm_up.json()["id"]], timeout_s=30)

    chaos_redis.shutdown()
    response, answered_in_s = _submit(api_url, kling_request("during the outage", callback_url=receiver.url))
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert rows.job(job_id).status == "queued"  # committed before the publish was tried
    time.sleep(DOWN_FOR_S)
    still_queued = rows.job(job_id).status == "queued"
    chaos_redis.start()

    job_ids = [warm_up.json()["id"], job_id]
    settle(rows, job_ids, timeout_s=60)
    with contextlib.suppress(TimeoutError):  # asserted on below
        wait_until(lambda: delivered(rows, job_id), timeout_s=30, what="the webhook of the job")
    lost = lost_jobs(rows, job_ids)
    outcome = record_outcome(
        "publish-failure",
        submitted=len(job_ids),
        terminal=len(job_ids) - len(lost),
        lost=len(lost),
        duplicate_charges=duplicate_charges(rows, job_ids),
        duplicate_webhook_events=duplicate_webhook_events(receiver.received()),
    )
    api_log = "\n".join(process.output() for process in stack.started if process.name.startswith("api"))
    resent = sum(int(n) for n in RESENT_QUEUED.findall(worker.output()))
    print(f"publish-failure detail: answered_in_s={answered_in_s:.2f} resent_queued={resent}")

    assert outcome.lost == 0, lost
    assert answered_in_s < 10, "the API hung on the failed publish"
    assert f"1 job(s) committed (first {job_id}) but their submit tasks were not published" in api_log
    assert still_queued, "nothing could have taken the job while Redis was down"
    assert resent >= 1  # the sweeper re-sent it
    assert rows.statuses(job_ids) == {job_ids[0]: "succeeded", job_id: "succeeded"}
    assert rows.event_path(job_id) == ["queued", "submitting", "running", "succeeded"]
    assert outcome.duplicate_charges == 0 and len(rows.costs(job_id)) == 1
    assert outcome.duplicate_webhook_events == 0
    assert delivered(rows, job_id)
    assert emulator.stats()["kling"]["submits"] == 2
