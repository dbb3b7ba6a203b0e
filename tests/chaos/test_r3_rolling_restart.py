"""R3: a rolling restart (SIGTERM) hands the countdown polls a worker holds back to the broker, and they finish.

Worker A takes every job's poll countdown off the queue (unacked, in its memory). It is then stopped with
SIGTERM, as a container runtime or systemd does: a warm shutdown, or (``REMAP_SIGTERM=SIGQUIT``) a soft
shutdown — running tasks get ``soft_shutdown_timeout_s``, then a cold shutdown. Either way the unacknowledged
messages go back on channel close: on Redis kombu restores them itself (its log says "Restoring N
unacknowledged message(s)"), on RabbitMQ the broker requeues them. So every running job has its poll message
back in the broker before worker B starts. B runs WITHOUT beat: no sweeper can be what rescues the jobs.
Runs on both brokers (``BROKERS``).
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any

import pytest

from shared.db.tables import CostEntry
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
from tests.integration.harness import Emulator, Rows, duplicate_charges, settle

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

JOBS = 20
RESTORING = re.compile(r"Restoring (\d+) unacknowledged message\(s\)")
SOFT_SHUTDOWN_S = 2

SHUTDOWNS = {
    # plain SIGTERM: Celery's warm shutdown (running tasks finish, then the channel closes)
    "warm": {},
    # SIGTERM remapped to SIGQUIT: soft shutdown (running tasks get a time box), then cold shutdown
    "soft": {"REMAP_SIGTERM": "SIGQUIT", "IMAGEJOBS_CELERY__SOFT_SHUTDOWN_TIMEOUT_S": str(SOFT_SHUTDOWN_S)},
}


@BROKERS
@pytest.mark.parametrize("shutdown", list(SHUTDOWNS))
def test_sigterm_restores_the_held_countdown_polls_and_they_finish(
    shutdown: str,
    postgres_url: str,
    chaos_broker: ChaosBroker,
    chaos_processes: ChaosProcesses,
    rows_for: Any,
    producer_for: Any,
    emulator: Emulator,
) -> None:
    emulator.configure({"kling": {"latency": {"kind": "uniform", "low_s": 7.0, "high_s": 9.0}}})
    stack = chaos_processes(postgres_url, **SHUTDOWNS[shutdown])
    worker_a = stack.worker()
    rows: Rows = rows_for(postgres_url)
    producer: Producer = producer_for(rows, postgres_url)
    job_ids = [producer.submit(kling_request(f"rolling {n}")) for n in range(JOBS)]

    wait_for_the_worker_to_hold_every_poll(rows, chaos_broker, job_ids, what="worker A to hold every poll")
    stopping = time.monotonic()
    worker_a.kill(signal.SIGTERM)
    stopped_after = time.monotonic() - stopping
    restored = sum(int(n) for n in RESTORING.findall(worker_a.output()))
    running = sum(status == "running" for status in rows.statuses(job_ids).values())
    back_in_broker = chaos_broker.queued(QueueName.POLL.value)
    print(f"R3 {chaos_broker.kind} {shutdown}: stopped in {stopped_after:.1f}s restored={restored} running={running} "
          f"poll_messages_back_in_the_broker={back_in_broker}")  # fmt: skip
    if chaos_broker.kind == "redis":
        # kombu's Redis transport moves them back from its ``unacked`` hash itself, and says so; RabbitMQ requeues
        # a closed channel's unacknowledged messages on the broker side, silently
        assert restored >= 1, f"worker A did not restore its messages:\n{worker_a.output()[-3000:]}"
    # nobody polls between the stop and worker B: the jobs are still running, so the next check is not 0 == 0
    assert running >= 1, rows.statuses(job_ids)
    # each running job has exactly one poll message waiting in the broker: the restored countdown (or, for a poll
    # that was running at SIGTERM, the next link it published)
    assert back_in_broker == running

    stack.worker()  # worker B, and no beat: only the restored messages can finish the jobs
    lost = settle(rows, job_ids, timeout_s=60)
    outcome = record_outcome(
        f"R3-{chaos_broker.kind}-{shutdown}",
        submitted=JOBS,
        terminal=JOBS - len(lost),
        lost=len(lost),
        duplicate_charges=duplicate_charges(rows, job_ids),
        duplicate_webhook_events=0,
    )
    assert outcome.lost == 0, lost
    assert set(rows.statuses(job_ids).values()) == {"succeeded"}
    assert outcome.duplicate_charges == 0 and rows.count(CostEntry) == JOBS
    assert emulator.stats()["kling"]["submits"] == JOBS
    if shutdown == "soft":
        assert "Initiating Soft Shutdown" in worker_a.output()
