"""R1: a worker SIGKILLed while it holds ≥ 50 poll chains loses no job, bills none twice, notifies each once.

50 Kling jobs with a callback URL (upstream latency 7–9 s) are accepted. Once every job is ``running`` and the
worker has taken every submit and poll message off the queues (the poll countdowns sit unacked in its memory),
its process group is SIGKILLed. A new worker and beat start. On Redis the held messages are not due back
before ``visibility_timeout`` (600 s): the sweeper finds the overdue poll chains in the database and restarts
them, so every job ends within the sweeper bound (``poll_overdue_s`` + ``interval_s`` after the chain's due
time, plus a poll or two). On RabbitMQ the broker redelivers the held messages as soon as the dead worker's
connection closes. Runs on both brokers (``BROKERS``).
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from typing import Any

import pytest

from shared.queue import QueueName
from tests.chaos.conftest import (
    BROKERS,
    ChaosBroker,
    ChaosProcesses,
    Producer,
    kling_request,
    record_outcome,
    wait_for_the_worker_to_hold_every_poll,
)
from tests.integration.harness import (
    Emulator,
    Rows,
    delivered,
    duplicate_charges,
    duplicate_webhook_events,
    lost_jobs,
    settle,
)
from tests.support import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

JOBS = 50
RESTARTED = re.compile(r"restarted_polls=(\d+)")
#: sweeper bound in the test config: first poll (4 s) + poll_overdue_s (3 s) + interval (1 s) + worker start
#: and a few polls of margin; generous because two cores run everything
TERMINAL_WITHIN_S = 90


@BROKERS
def test_jobs_survive_a_worker_killed_while_holding_their_poll_chains(
    postgres_url: str,
    chaos_broker: ChaosBroker,
    chaos_processes: ChaosProcesses,
    rows_for: Any,
    producer_for: Any,
    emulator: Emulator,
    webhook_receiver: Any,
) -> None:
    emulator.configure({"kling": {"latency": {"kind": "uniform", "low_s": 7.0, "high_s": 9.0}}})
    receiver = webhook_receiver()
    stack = chaos_processes(postgres_url)
    first_worker = stack.worker()
    rows: Rows = rows_for(postgres_url)
    producer: Producer = producer_for(rows, postgres_url)
    job_ids = [producer.submit(kling_request(f"survivor {n}", callback_url=receiver.url)) for n in range(JOBS)]

    wait_for_the_worker_to_hold_every_poll(rows, chaos_broker, job_ids)
    open_at_kill = len(lost_jobs(rows, job_ids))
    first_worker.kill(9)
    assert not first_worker.alive()
    if chaos_broker.kind == "amqp":
        # RabbitMQ returns a dead consumer's unacknowledged messages as soon as its connection drops
        with contextlib.suppress(TimeoutError):  # asserted on below
            wait_until(lambda: chaos_broker.queued(QueueName.POLL.value) >= JOBS, timeout_s=15, what="redelivery")
    # Redis keeps them in its ``unacked`` hash until visibility_timeout (600 s here): only the sweeper helps
    returned_at_kill = chaos_broker.queued(QueueName.POLL.value)

    second_worker = stack.worker()
    stack.beat()
    settle(rows, job_ids, timeout_s=TERMINAL_WITHIN_S)

    # every terminal job has its webhook delivered (the receiver always answers 200)
    with contextlib.suppress(TimeoutError):  # asserted on below
        wait_until(
            lambda: all(delivered(rows, job_id) for job_id in job_ids),
            timeout_s=30,
            interval_s=0.5,
            what="one delivered webhook per job",
        )

    lost = lost_jobs(rows, job_ids)
    requests = receiver.received()
    outcome = record_outcome(
        f"R1-{chaos_broker.kind}",
        submitted=JOBS,
        terminal=JOBS - len(lost),
        lost=len(lost),
        duplicate_charges=duplicate_charges(rows, job_ids),
        duplicate_webhook_events=duplicate_webhook_events(requests),
    )
    restarted = sum(int(count) for count in RESTARTED.findall(second_worker.output()))
    print(
        f"R1 {chaos_broker.kind} detail: open_at_kill={open_at_kill} returned_at_kill={returned_at_kill} "
        f"poll_chains_restarted={restarted} "
        f"upstream_submits={emulator.stats()['kling']['submits']} webhook_requests={len(requests)}"
    )

    assert outcome.lost == 0, lost
    assert open_at_kill == JOBS, "the worker was killed after some jobs had already ended"
    statuses = rows.statuses(job_ids)
    assert set(statuses.values()) == {"succeeded"}
    # billing: at most one cost row per job, one per succeeded job
    assert outcome.duplicate_charges == 0
    charges = Counter(cost.job_id for cost in rows.costs())
    assert sorted(charges) == sorted(job_ids)
    assert sum(charges.values()) == sum(status == "succeeded" for status in statuses.values())
    # no second upstream task, and the chains the dead worker held came back: on RabbitMQ as the very messages it
    # held (redelivered at once), on Redis restarted from the database by the sweeper
    assert emulator.stats()["kling"]["submits"] == JOBS
    if chaos_broker.kind == "amqp":
        assert returned_at_kill == JOBS
    else:
        assert returned_at_kill == 0
        assert restarted >= open_at_kill
    for job_id in job_ids:
        assert rows.event_path(job_id) == ["queued", "submitting", "running", "succeeded"]
    # webhooks: one event id per job, every delivery of a job carries it, each accepted once
    assert outcome.duplicate_webhook_events == 0
    received_ids = Counter(request.headers.get("webhook-id") for request in requests)
    assert set(received_ids) == {f"msg_{job_id}" for job_id in job_ids}
    for job_id in job_ids:
        deliveries = rows.deliveries(job_id)
        assert {delivery.webhook_id for delivery in deliveries} == {f"msg_{job_id}"}
        assert [delivery.state for delivery in deliveries].count("delivered") == 1
