"""An ambiguous submit (the upstream may or may not have the task) never creates a second upstream task.

The emulator's ``[slow-ack=S]`` marker creates the Kling task at once but answers the submit ``S`` seconds
later. Two ways of not knowing whether the submit went through:

- ``timeout``: the adapter gives up first (``IMAGEJOBS_KLING__TIMEOUT_S=1``): a transient error, so the job is
  handed back to ``queued`` and submitted again (attempt 2);
- ``worker-killed``: the worker is SIGKILLed while it waits for the answer; after the submit lease the sweeper
  re-sends the job and another worker claims it (attempt 2).

Either way attempt 2 first asks Kling for the task by ``external_task_id`` (= our job id), finds the task the
first attempt created and polls that one: the emulator holds ONE task for the job, which succeeds and is
billed once.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.conftest import ChaosProcesses, Producer, kling_request, record_outcome
from tests.integration.harness import Emulator, Rows, duplicate_charges, settle
from tests.support import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

CASES = {
    # the adapter's timeout (1 s) is shorter than the emulator's slow answer (3 s)
    "timeout": ({"IMAGEJOBS_KLING__TIMEOUT_S": "1"}, "[slow-ack=3]"),
    # the worker dies while waiting for a slow answer; the submit lease (3 s) hands the job to the sweeper
    "worker-killed": ({"IMAGEJOBS_SWEEPER__SUBMIT_LEASE_S": "3"}, "[slow-ack=15]"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_ambiguous_submit_reuses_the_upstream_task_instead_of_creating_another(
    case: str,
    postgres_url: str,
    chaos_processes: ChaosProcesses,
    rows_for: Any,
    producer_for: Any,
    emulator: Emulator,
) -> None:
    extra_env, marker = CASES[case]
    emulator.set_latency(kling_s=2.0, openai_s=0.2)
    stack = chaos_processes(postgres_url, **extra_env)
    worker = stack.worker()
    stack.beat()
    rows: Rows = rows_for(postgres_url)
    producer: Producer = producer_for(rows, postgres_url)
    job_id = producer.submit(kling_request(f"a lighthouse {marker}"))

    if case == "worker-killed":
        wait_until(lambda: emulator.stats()["kling"]["submits"] == 1, timeout_s=30, what="the first submit")
        assert rows.job(job_id).status == "submitting"  # the answer has not come yet
        worker.kill(9)
        stack.worker()

    lost = settle(rows, [job_id], timeout_s=60)
    outcome = record_outcome(
        f"ambiguous-submit-{case}",
        submitted=1,
        terminal=1 - len(lost),
        lost=len(lost),
        duplicate_charges=duplicate_charges(rows, [job_id]),
        duplicate_webhook_events=0,
    )
    job = rows.job(job_id)
    stats = emulator.stats()["kling"]
    print(f"ambiguous-submit {case} detail: status={job.status} attempts={job.submit_attempts} "
          f"upstream_submits={stats['submits']} upstream_queries={stats['queries']}")  # fmt: skip

    assert outcome.lost == 0, lost
    assert job.status == "succeeded", (job.error_code, job.error_message)
    assert job.submit_attempts == 2
    # one upstream task, found by our job id, and it is the one the job polled
    assert stats["submits"] == 1
    upstream = emulator.kling_task(job_id)
    assert upstream["task_info"] == {"external_task_id": job_id}
    assert job.upstream_task_id == upstream["task_id"]
    assert outcome.duplicate_charges == 0 and len(rows.costs(job_id)) == 1
    path = rows.event_path(job_id)
    assert path[-2:] == ["running", "succeeded"] and path.count("submitting") == 2
