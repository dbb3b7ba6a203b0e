"""Fewer hops per job: a fast receiver's webhook goes out from the task that ended the job, and the learned poll
schedule reads no event history."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from shared.jobs import JobStatus
from tests.fakes import accepted, completed, pending, succeeded
from tests.unit.conftest import OPENAI_REQUEST, Harness
from worker import webhooks
from worker.fast_receivers import FAST_MS, FastReceivers
from worker.pipeline import poll_job, submit_job
from worker.scheduling.latency import latency_key
from worker.sweeper import sweep

CALLBACK = "https://hooks.example.com/imagejobs"


def _sync_job_with_webhook(harness: Harness) -> str:
    job_id = harness.enqueue(OPENAI_REQUEST, callback_url=CALLBACK)
    harness.openai.submissions.append(completed())
    submit_job(job_id, rt=harness.rt)
    assert harness.job(job_id).status == JobStatus.SUCCEEDED
    return job_id


def test_a_receiver_not_seen_yet_gets_its_webhook_from_the_webhook_task(harness: Harness) -> None:
    job_id = _sync_job_with_webhook(harness)

    [delivery] = harness.deliveries(job_id)
    assert harness.sender.webhooks == [(delivery.id, 0)]
    assert harness.webhook_requests == []  # not sent inline


def test_a_fast_receiver_gets_the_next_webhook_inline_with_no_webhook_task(harness: Harness) -> None:
    harness.rt.fast_receivers.note(CALLBACK, delivered=True, latency_ms=5)

    job_id = _sync_job_with_webhook(harness)

    [delivery] = harness.deliveries(job_id)
    assert harness.sender.webhooks == []
    assert (delivery.state, delivery.response_status) == ("delivered", 200)
    assert [request.headers["webhook-id"] for request in harness.webhook_requests] == [f"msg_{job_id}"]


def test_an_inline_attempt_that_fails_keeps_the_webhook_tasks_retry_schedule(harness: Harness) -> None:
    harness.rt.fast_receivers.note(CALLBACK, delivered=True, latency_ms=5)
    harness.webhook_statuses.append(503)

    job_id = _sync_job_with_webhook(harness)

    first, second = harness.deliveries(job_id)
    assert (first.state, first.response_status, second.state, second.attempt) == ("failed", 503, "pending", 2)
    assert [delivery_id for delivery_id, _ in harness.sender.webhooks] == [second.id]  # the retry: a task
    assert not harness.rt.fast_receivers.is_fast(CALLBACK)  # and the next job's webhook goes by the task


@pytest.mark.parametrize(
    ("delivered", "latency_ms", "fast"),
    [(True, FAST_MS, True), (True, FAST_MS + 1, False), (False, 1, False)],
)
def test_only_a_quick_2xx_makes_a_receiver_fast(delivered: bool, latency_ms: int, fast: bool) -> None:
    receivers = FastReceivers()
    receivers.note("https://a.example", delivered=delivered, latency_ms=latency_ms)
    assert receivers.is_fast("https://a.example") is fast


def test_receivers_are_forgotten_least_recently_used_first() -> None:
    receivers = FastReceivers(max_entries=2)
    for url in ("https://a", "https://b", "https://c"):
        receivers.note(url, delivered=True, latency_ms=1)
    assert [receivers.is_fast(url) for url in ("https://a", "https://b", "https://c")] == [False, True, True]


def test_a_completion_is_learned_without_reading_the_jobs_event_history(harness: Harness) -> None:
    job_id = harness.enqueue()
    harness.kling.submissions.append(accepted("up-1"))
    submit_job(job_id, rt=harness.rt)
    started = harness.job(job_id).running_since
    assert started is not None
    harness.kling.polls.extend([pending(), succeeded()])
    harness.advance(3)
    poll_job(job_id, 0, rt=harness.rt)
    harness.advance(2)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(harness.rt.engine, "before_cursor_execute", seen)
    try:
        poll_job(job_id, 1, rt=harness.rt)
    finally:
        event.remove(harness.rt.engine, "before_cursor_execute", seen)

    assert harness.job(job_id).status == JobStatus.SUCCEEDED
    assert not [statement for statement in statements if "FROM job_event" in statement]
    [completion] = harness.rt.latency.store.recent(latency_key("kling", "kling-v2-1", "text2img"))
    assert completion.after_s == pytest.approx(3.0, abs=0.01)
    assert completion.by_s == pytest.approx(5.0, abs=0.01)


def test_an_inline_attempt_is_created_claimed_and_the_sweeper_sends_it_if_the_sender_died(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.rt.fast_receivers.note(CALLBACK, delivered=True, latency_ms=5)

    def crash(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the worker died mid-attempt")

    monkeypatch.setattr(webhooks, "_post", crash)
    job_id = _sync_job_with_webhook(harness)

    [delivery] = harness.deliveries(job_id)
    assert (delivery.state, harness.sender.webhooks) == ("sending", [])  # claimed in the terminal commit
    harness.advance(harness.rt.settings.sweeper.webhook_stale_s + 1)
    sweep(rt=harness.rt)
    assert harness.sender.webhooks == [(delivery.id, 0)]
