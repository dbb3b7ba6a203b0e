"""A running job is never failed by a transient poll answer: the real Kling and BFL adapters polling the emulator
through ``worker.pipeline`` while every poll is answered by a proxy's broken page (``[poll-answer=NAME]``).

The job keeps running and polling until its deadline, and then times out (``upstream_timeout``) — it never ends
``upstream_bad_response`` on an answer that says nothing about the task.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from emulator.app import create_app
from shared.errors import ErrorCode
from shared.jobs import JobStatus
from tests.unit.conftest import KLING_REQUEST, Harness
from tests.unit.contracts import CONTRACTS
from worker.pipeline import poll_job, submit_job
from worker.providers import ImageProvider

TRANSIENT_POLL_ANSWERS = ["html-502", "html-503", "text-429", "empty-200", "truncated-json", "wrong-shape"]
REQUESTS: dict[str, dict[str, Any]] = {
    "kling": KLING_REQUEST,
    "bfl": {"model": "flux-pro-1.1", "size": "1024x1024", "prompt": "a red fox"},
}
POLLS = 6


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for name in ("EMULATOR_KLING_ACCESS_KEY", "EMULATOR_KLING_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with TestClient(create_app(), base_url="http://emulator") as client:
        yield client


def _with_real_adapter(harness: Harness, emulator: TestClient, provider: str) -> ImageProvider:
    adapter = CONTRACTS[provider].build(emulator, True)
    harness.rt.providers[provider] = adapter  # type: ignore[index]  # the harness holds fakes by default
    return adapter


@pytest.mark.parametrize("answer", TRANSIENT_POLL_ANSWERS)
@pytest.mark.parametrize("provider", list(REQUESTS))
def test_a_running_job_keeps_polling_through_broken_answers_until_its_deadline(
    harness: Harness, emulator: TestClient, provider: str, answer: str
) -> None:
    _with_real_adapter(harness, emulator, provider)
    request = REQUESTS[provider]
    job_id = harness.enqueue(request, prompt=f"{request['prompt']} [poll-answer={answer}] [latency=0]")
    submit_job(job_id, rt=harness.rt)
    assert harness.job(job_id).status == JobStatus.RUNNING

    for poll_count in range(POLLS):
        harness.advance(5)
        poll_job(job_id, poll_count, rt=harness.rt)
        job = harness.job(job_id)
        assert (job.status, job.poll_count) == (JobStatus.RUNNING, poll_count + 1), job.error_message
        assert harness.sender.polls[-1][:2] == (job_id, poll_count + 1)  # the next link was scheduled

    assert job.deadline_at is not None
    harness.clock.now = job.deadline_at
    poll_job(job_id, POLLS, rt=harness.rt)
    ended = harness.job(job_id)
    assert ended.status == JobStatus.TIMED_OUT
    assert ended.error_code == ErrorCode.UPSTREAM_TIMEOUT
