"""Upstream callbacks end to end: a real API, worker and emulator over HTTP. The emulator's Kling and BFL call our
``/internal/callbacks/…`` URL when a task changes; the job then finishes right after the upstream does, with
one upstream read, while the safety poll (first after ``SAFETY_FIRST_POLL_S``) finishes a job whose callback is
lost. The detection lag (our ``finished_at`` minus the emulator task's ``updated_at``) is printed, not asserted
tightly (performance is measured in bench/)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.harness import Emulator, Processes, ProcessesFactory, Rows, fixed, wait_for_terminal
from tests.support import API_KEY, free_port, wait_until

pytestmark = pytest.mark.integration

KLING = {"model": "kling-image", "model_name": "kling-v2-1", "prompt": "a lighthouse", "async": True}
FLUX = {"model": "flux-pro-1.1", "prompt": "a lighthouse", "async": True}
KLING_LATENCY_S = 3.0
SAFETY_FIRST_POLL_S = 8.0


def _stack(processes: ProcessesFactory, database_url: str) -> tuple[Processes, str]:
    port = free_port()
    stack = processes(
        database_url,
        IMAGEJOBS_API_PORT=str(port),
        IMAGEJOBS_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        IMAGEJOBS_CALLBACKS__ENABLED="true",
        IMAGEJOBS_CALLBACKS__SAFETY_FIRST_POLL_S=str(SAFETY_FIRST_POLL_S),
        IMAGEJOBS_CALLBACKS__SAFETY_INTERVAL_S="30",
    )
    stack.worker()
    return stack, stack.api()


def _create(api: str, body: dict[str, Any]) -> str:
    response = httpx.post(f"{api}/v1/images/generations", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def _kling_lag_s(rows: Rows, emulator: Emulator, job_id: str) -> float:
    """Our ``finished_at`` minus the moment the emulator's task ended."""
    job = rows.job(job_id)
    assert job.finished_at is not None and job.upstream_task_id is not None
    ended_ms = float(emulator.kling_task(job.upstream_task_id)["updated_at"])
    return job.finished_at.timestamp() - ended_ms / 1000


def test_a_callback_finishes_the_job_right_after_the_upstream_with_one_read(
    processes: ProcessesFactory, database_url: str, emulator: Emulator, rows_for: Any
) -> None:
    # Given Kling tasks of 3 s and BFL tasks of 2 s, and a safety poll only after 8 s
    emulator.configure({"kling": {"latency": fixed(KLING_LATENCY_S)}, "bfl": {"latency": fixed(2.0)}})
    _, api = _stack(processes, database_url)
    rows: Rows = rows_for(database_url)

    # When a Kling job and a BFL job run, and a Kling job whose task ends before our submit has its answer
    kling_job, flux_job = _create(api, KLING), _create(api, FLUX)
    instant_job = _create(api, {**KLING, "prompt": "a lighthouse [latency=0]"})
    statuses = wait_for_terminal(rows, [kling_job, flux_job, instant_job], timeout_s=30)

    # Then both finished on their callbacks: one upstream read each, long before the safety poll
    assert set(statuses.values()) == {"succeeded"}
    sent = 3 + 1 + 1  # Kling: its 3 status changes, the instant task its end; BFL: its end
    wait_until(lambda: emulator.stats()["callbacks"]["sent"] >= sent, timeout_s=5, what="the callbacks' answers")
    stats = emulator.stats()
    assert (stats["kling"]["queries"], stats["bfl"]["queries"]) == (2, 1)
    assert stats["callbacks"]["failed"] == 0 and stats["callbacks"]["sent"] == sent
    for job_id in (kling_job, flux_job):
        assert rows.job(job_id).poll_count == 2  # the callback's link, then its poll
        assert len(rows.costs(job_id)) == 1
    lag = _kling_lag_s(rows, emulator, kling_job)
    flux = rows.job(flux_job)
    assert flux.finished_at is not None
    print(f"\ncallback fast path: Kling detection lag {lag * 1000:.0f} ms (1 upstream read; safety poll at 8 s)")
    assert 0 <= lag < 2.0
    assert (flux.finished_at - flux.created_at).total_seconds() < SAFETY_FIRST_POLL_S
    # the instant task's callback raced our submit: it came before the job was running (link 0 polled a second
    # later) or just after (the chain moved on); either way no safety poll was waited for
    instant = rows.job(instant_job)
    assert instant.finished_at is not None and instant.poll_count in (1, 2)
    assert (instant.finished_at - instant.created_at).total_seconds() < SAFETY_FIRST_POLL_S / 2

    # When the emulator sends every callback twice
    emulator.configure({"kling": {"callbacks": {"duplicate_rate": 1.0}}})
    doubled = [_create(api, KLING) for _ in range(4)]
    wait_for_terminal(rows, doubled, timeout_s=30)

    # Then each job still finishes once, on time, billed once
    lags = sorted(_kling_lag_s(rows, emulator, job_id) for job_id in doubled)
    print(f"duplicated callbacks: lags {', '.join(f'{value * 1000:.0f} ms' for value in lags)}")
    assert rows.statuses(doubled) == dict.fromkeys(doubled, "succeeded")
    assert all(len(rows.costs(job_id)) == 1 for job_id in doubled)
    assert lags[-1] < 2.0
    assert emulator.stats()["callbacks"]["duplicated"] == 12


def test_a_lost_callback_is_covered_by_the_safety_poll(
    processes: ProcessesFactory, sqlite_url: str, emulator: Emulator, rows_for: Any
) -> None:
    # Given Kling tasks of 3 s whose callbacks are all lost
    emulator.configure({"kling": {"latency": fixed(KLING_LATENCY_S), "callbacks": {"drop_rate": 1.0}}})
    _, api = _stack(processes, sqlite_url)
    rows: Rows = rows_for(sqlite_url)

    # When a job runs
    job_id = _create(api, KLING)
    statuses = wait_for_terminal(rows, [job_id], timeout_s=30)

    # Then the safety poll (8 s ± 10 % after the submit) finished it with its one read
    assert statuses[job_id] == "succeeded"
    stats = emulator.stats()
    assert stats["callbacks"]["dropped"] == 3 and stats["callbacks"]["sent"] == 0
    assert stats["kling"]["queries"] == 1
    assert rows.job(job_id).poll_count == 1
    lag = _kling_lag_s(rows, emulator, job_id)
    print(f"\nlost callbacks: detection lag {lag:.1f} s (the safety poll)")
    assert SAFETY_FIRST_POLL_S * 0.9 - KLING_LATENCY_S - 0.5 < lag < SAFETY_FIRST_POLL_S * 1.1
