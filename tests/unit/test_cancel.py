"""Cancelling a job (``producer.cancel``) against the worker pipeline driven directly: fake upstreams, a real database.

A cancellation is one compare-and-set to ``cancelled`` with its ``job.cancelled`` webhook row; every pipeline step
is a compare-and-set from the status it expects, so none of them can bring a cancelled job back, poll it or bill it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kombu.exceptions import OperationalError
from sqlmodel import Session
from standardwebhooks.webhooks import Webhook

from producer.cancel import CANCEL_DETAIL, Cancelled, JobAlreadyEndedError, announce_cancelled, cancel_job
from shared.db import jobs_repo
from shared.errors import ContentPolicyError, JobNotFoundError, ProviderError, TransientProviderError
from shared.jobs import JobStatus, Priority
from shared.webhook_secrets import derived_secret
from tests.fakes import RecordingSender, accepted, completed, pending, succeeded
from tests.support import WEBHOOK_SECRET
from tests.unit.conftest import OPENAI_REQUEST, OWNER, Harness
from worker.pipeline import poll_job, submit_job
from worker.providers.base import JobSpec, PollResult, Submission
from worker.sweeper import sweep
from worker.webhooks import deliver_webhook

CALLBACK = "https://hooks.example.com/imagejobs"


def cancel(harness: Harness, job_id: str, *, owner: str = OWNER) -> Cancelled:
    with Session(harness.rt.engine, expire_on_commit=False) as session:
        return cancel_job(job_id, session=session, owner=owner, now=harness.clock.now)


def start_running(harness: Harness, **fields: Any) -> str:
    job_id = harness.enqueue(**fields)
    harness.kling.submissions.append(accepted("up-1"))
    submit_job(job_id, rt=harness.rt)
    assert harness.job(job_id).status == JobStatus.RUNNING
    return job_id


def assert_cancelled_without_cost(harness: Harness, job_id: str) -> None:
    job = harness.job(job_id)
    assert job.status == JobStatus.CANCELLED
    assert job.finished_at is not None
    assert (job.lease_until, job.next_poll_at, job.error_code) == (None, None, None)
    assert harness.costs(job_id) == []
    assert harness.images(job_id) == []


# -- queued ------------------------------------------------------------------------------------------


def test_a_cancelled_queued_job_never_reaches_the_upstream(harness: Harness) -> None:
    job_id = harness.enqueue(callback_url=CALLBACK)

    cancelled = cancel(harness, job_id)

    assert cancelled.from_ == JobStatus.QUEUED
    assert harness.events(job_id) == [(None, "queued"), ("queued", "cancelled")]
    [delivery] = harness.deliveries(job_id)
    assert (delivery.id, delivery.event_type, delivery.attempt) == (cancelled.delivery_id, "job.cancelled", 1)

    # When its submit message arrives anyway (it was sent at enqueue)
    harness.kling.submissions.append(accepted())
    submit_job(job_id, rt=harness.rt)

    # Then the upstream is never called and nothing else is sent
    assert harness.kling.submitted == []
    assert (harness.sender.submits, harness.sender.polls) == ([], [])
    assert_cancelled_without_cost(harness, job_id)
    assert harness.job(job_id).submit_attempts == 0


def test_the_sweeper_leaves_a_cancelled_job_alone(harness: Harness) -> None:
    job_id = harness.enqueue()
    cancel(harness, job_id)

    harness.advance(3600)  # past every re-send delay and the deadline (900 s)
    report = sweep(rt=harness.rt)

    assert (report.resent_queued, report.resent_submitting, report.restarted_polls, report.timed_out) == (0, 0, 0, 0)
    assert (harness.sender.submits, harness.sender.polls) == ([], [])
    assert harness.job(job_id).status == JobStatus.CANCELLED


# -- running -----------------------------------------------------------------------------------------


def test_a_cancelled_running_job_is_not_polled_and_not_billed(harness: Harness) -> None:
    job_id = start_running(harness)
    [(_, poll_count, _)] = harness.sender.polls

    cancelled = cancel(harness, job_id)

    # When its scheduled poll arrives, with the upstream ready to answer success
    harness.kling.polls.append(succeeded())
    poll_job(job_id, poll_count, rt=harness.rt)

    # Then the upstream is not asked, no next poll is scheduled, and nothing is stored or billed
    assert cancelled.from_ == JobStatus.RUNNING
    assert harness.kling.polled == []
    assert len(harness.sender.polls) == 1
    assert_cancelled_without_cost(harness, job_id)
    assert harness.job(job_id).poll_count == 0
    assert harness.events(job_id)[-1] == ("running", "cancelled")


def test_a_poll_in_flight_when_the_job_is_cancelled_stores_and_bills_nothing(harness: Harness) -> None:
    job_id = start_running(harness)
    harness.rt.providers = {"kling": CancellingProvider(harness, job_id, poll_answer=succeeded())}

    poll_job(job_id, 0, rt=harness.rt)  # the upstream answers "succeeded" after the cancel committed

    assert_cancelled_without_cost(harness, job_id)
    assert len(harness.sender.polls) == 1  # only the first one, sent by the submit
    assert harness.announced == []  # the poll's finish lost its race: it announces nothing


def test_a_pending_poll_in_flight_does_not_schedule_another_after_a_cancel(harness: Harness) -> None:
    job_id = start_running(harness)
    harness.rt.providers = {"kling": CancellingProvider(harness, job_id, poll_answer=pending())}

    poll_job(job_id, 0, rt=harness.rt)

    assert len(harness.sender.polls) == 1
    assert harness.job(job_id).poll_count == 0
    assert_cancelled_without_cost(harness, job_id)


# -- submitting --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(accepted("up-late"), id="async-accepted"),
        pytest.param(completed(2), id="sync-completed"),
        pytest.param(TransientProviderError("5xx", provider="openai"), id="transient-error"),
        pytest.param(ContentPolicyError("moderated", provider="openai"), id="permanent-error"),
    ],
)
def test_the_outcome_of_a_submit_in_flight_is_discarded_after_a_cancel(
    harness: Harness, outcome: Submission | ProviderError
) -> None:
    # Given an OpenAI job whose upstream call is in flight when the caller cancels it
    job_id = harness.enqueue(OPENAI_REQUEST, callback_url=CALLBACK)
    provider = CancellingProvider(harness, job_id, submit_answer=outcome)
    harness.rt.providers = {"openai": provider}

    submit_job(job_id, rt=harness.rt)

    # Then whatever the upstream answered, the job stays cancelled: not running, not re-queued, not billed
    assert provider.cancelled is not None and provider.cancelled.from_ == JobStatus.SUBMITTING
    assert_cancelled_without_cost(harness, job_id)
    assert (harness.sender.submits, harness.sender.polls) == ([], [])
    assert harness.events(job_id) == [(None, "queued"), ("queued", "submitting"), ("submitting", "cancelled")]
    assert [delivery.event_type for delivery in harness.deliveries(job_id)] == ["job.cancelled"]
    assert harness.job(job_id).upstream_task_id is None


# -- what a cancel answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("ended", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_job_that_already_ended_cannot_be_cancelled(harness: Harness, ended: JobStatus) -> None:
    job_id = harness.enqueue(OPENAI_REQUEST)
    if ended == JobStatus.CANCELLED:
        cancel(harness, job_id)
    else:
        harness.openai.submissions.append(
            completed() if ended == JobStatus.SUCCEEDED else ContentPolicyError("no", provider="openai")
        )
        submit_job(job_id, rt=harness.rt)
    events_before = harness.events(job_id)

    with pytest.raises(JobAlreadyEndedError) as raised:
        cancel(harness, job_id)

    assert (raised.value.job_id, raised.value.status) == (job_id, ended)
    assert harness.job(job_id).status == ended
    assert harness.events(job_id) == events_before


def test_another_keys_job_is_not_found(harness: Harness) -> None:
    job_id = harness.enqueue()

    with pytest.raises(JobNotFoundError):
        cancel(harness, job_id, owner="owner-2")
    with pytest.raises(JobNotFoundError):
        cancel(harness, "0" * 32)

    assert harness.job(job_id).status == JobStatus.QUEUED


def test_a_cancel_that_loses_a_race_tries_again_from_the_new_status(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = harness.enqueue()
    real_end_job = jobs_repo.end_job
    calls: list[JobStatus] = []

    def end_job_after_a_worker_claimed_it(*, session: Session, from_: JobStatus, **kwargs: Any) -> Any:
        calls.append(from_)
        if len(calls) == 1:  # a worker claims the job between the cancel's read and its compare-and-set
            assert jobs_repo.transition(session=session, job_id=job_id, from_=JobStatus.QUEUED, to=JobStatus.SUBMITTING)
        return real_end_job(session=session, from_=from_, **kwargs)

    monkeypatch.setattr(jobs_repo, "end_job", end_job_after_a_worker_claimed_it)

    cancelled = cancel(harness, job_id)

    assert calls == [JobStatus.QUEUED, JobStatus.SUBMITTING]
    assert cancelled.from_ == JobStatus.SUBMITTING
    assert harness.events(job_id) == [(None, "queued"), ("queued", "submitting"), ("submitting", "cancelled")]


def test_the_cancel_event_says_who_ended_it(harness: Harness) -> None:
    job_id = harness.enqueue()
    cancel(harness, job_id)

    with harness.session() as session:
        last = jobs_repo.list_events(session=session, job_id=job_id)[-1]
    assert (last.to_status, last.detail, last.at) == ("cancelled", CANCEL_DETAIL, harness.clock.now)


# -- after the commit: announcement and webhook ------------------------------------------------------


def test_after_a_cancel_the_job_is_announced_and_a_signed_job_cancelled_webhook_sent(harness: Harness) -> None:
    job_id = harness.enqueue(callback_url=CALLBACK, priority="high")
    cancelled = cancel(harness, job_id)
    announced: list[str] = []
    sender = RecordingSender()

    announce_cancelled(cancelled, announce_done=announced.append, sender=sender)

    assert announced == [job_id]
    assert cancelled.delivery_id is not None
    assert sender.webhooks == [(cancelled.delivery_id, 0)]

    # When the worker delivers it
    deliver_webhook(cancelled.delivery_id, rt=harness.rt)

    [request] = harness.webhook_requests
    payload = Webhook(derived_secret(WEBHOOK_SECRET, OWNER)).verify(request.content, dict(request.headers))
    assert payload["type"] == "job.cancelled"
    assert request.headers["webhook-id"] == f"msg_{job_id}"
    data = payload["data"]
    assert (data["id"], data["status"], data["cost"], data["error"], data["data"]) == (
        job_id,
        "cancelled",
        None,
        None,
        [],
    )
    assert data["priority"] == Priority.HIGH


def test_a_job_without_callback_url_is_announced_and_sends_no_webhook(harness: Harness) -> None:
    job_id = harness.enqueue()
    cancelled = cancel(harness, job_id)
    announced: list[str] = []
    sender = RecordingSender()

    announce_cancelled(cancelled, announce_done=announced.append, sender=sender)

    assert (cancelled.delivery_id, announced, sender.webhooks) == (None, [job_id], [])
    assert harness.deliveries(job_id) == []


def test_a_lost_webhook_send_is_left_to_the_sweeper(harness: Harness) -> None:
    job_id = harness.enqueue(callback_url=CALLBACK)
    cancelled = cancel(harness, job_id)

    class BrokerDown:
        def webhook(self, delivery_id: int, *, countdown_s: float = 0) -> None:
            raise OperationalError("connection refused")

    announce_cancelled(cancelled, announce_done=lambda _job_id: None, sender=BrokerDown())  # does not raise

    harness.advance(10)  # past the sweeper's grace for due webhook attempts
    sweep(rt=harness.rt)
    assert harness.sender.webhooks == [(cancelled.delivery_id, 0)]


# -- the terminal helper the worker and the producer share -------------------------------------------


def test_end_job_refuses_a_status_that_is_not_terminal(harness: Harness) -> None:
    job_id = harness.enqueue()
    with harness.session() as session, session.begin(), pytest.raises(ValueError, match="not a terminal"):
        jobs_repo.end_job(
            session=session, job_id=job_id, from_=JobStatus.QUEUED, to=JobStatus.SUBMITTING, now=harness.clock.now
        )


# -- a provider during whose call the caller cancels -------------------------------------------------


class CancellingProvider:
    """An upstream call in flight while the caller cancels the job: the cancel commits, then the upstream answers."""

    name = "fake"

    def __init__(
        self,
        harness: Harness,
        job_id: str,
        *,
        submit_answer: Submission | ProviderError | None = None,
        poll_answer: PollResult | None = None,
    ) -> None:
        self._cancel: Callable[[], Cancelled] = lambda: cancel(harness, job_id)
        self._submit_answer, self._poll_answer = submit_answer, poll_answer
        self.cancelled: Cancelled | None = None

    def submit(self, spec: JobSpec) -> Submission:
        self.cancelled = self._cancel()
        assert self._submit_answer is not None
        if isinstance(self._submit_answer, ProviderError):
            raise self._submit_answer
        return self._submit_answer

    def poll(self, upstream_id: str) -> PollResult:
        self.cancelled = self._cancel()
        assert self._poll_answer is not None
        return self._poll_answer

    def close(self) -> None:
        pass
