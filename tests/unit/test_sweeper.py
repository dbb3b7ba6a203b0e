"""``worker.sweeper.sweep``: lost work is re-sent exactly once per loss, deadlines are enforced."""

from __future__ import annotations

import pytest

from shared.errors import ErrorCode, TransientProviderError
from shared.jobs import JobStatus
from tests.fakes import accepted, completed, pending
from tests.unit.conftest import OPENAI_REQUEST, CrashingProvider, Harness
from worker.pipeline import poll_job, submit_job
from worker.sweeper import SweepReport, sweep

CALLBACK = "https://hooks.example.com/imagejobs"


def test_sweep_with_nothing_lost_does_nothing(harness: Harness) -> None:
    job_id = harness.enqueue()

    report = sweep(rt=harness.rt)

    assert report == SweepReport()
    assert harness.sender.submits == []
    assert harness.job(job_id).status == JobStatus.QUEUED


def test_sweep_resends_a_queued_job_whose_submit_was_lost_once(harness: Harness) -> None:
    # Given a queued job whose submit message never arrived
    job_id = harness.enqueue()
    harness.advance(61)  # requeue_after_s = 60

    # When the sweeper runs twice in a row
    first = sweep(rt=harness.rt)
    second = sweep(rt=harness.rt)

    # Then the submit is re-sent by the first pass only
    assert harness.sender.submits == [(job_id, 0)]
    assert (first.resent_queued, second.resent_queued) == (1, 0)
    assert harness.job(job_id).status == JobStatus.QUEUED


def test_sweep_does_not_resend_a_recently_dispatched_queued_job(harness: Harness) -> None:
    harness.enqueue()
    harness.advance(59)

    assert sweep(rt=harness.rt).resent_queued == 0
    assert harness.sender.submits == []


def test_sweep_resends_a_queued_job_again_after_another_requeue_period(harness: Harness) -> None:
    job_id = harness.enqueue()
    harness.advance(61)
    sweep(rt=harness.rt)
    harness.advance(61)

    sweep(rt=harness.rt)

    assert harness.sender.submits == [(job_id, 0), (job_id, 0)]


def test_sweep_waits_for_a_submit_retry_that_is_scheduled_later(harness: Harness) -> None:
    job_id = harness.enqueue()
    harness.kling.submissions.append(TransientProviderError("down", provider="kling"))
    submit_job(job_id, rt=harness.rt)  # retry in 5 s; dispatched_at = now + 5 s
    harness.advance(62)

    assert sweep(rt=harness.rt).resent_queued == 0
    harness.advance(4)
    assert sweep(rt=harness.rt).resent_queued == 1


def test_sweep_resends_a_submitting_job_whose_lease_expired(harness: Harness) -> None:
    harness.rt.providers = {"kling": CrashingProvider()}
    job_id = harness.enqueue()
    with pytest.raises(RuntimeError):
        submit_job(job_id, rt=harness.rt)
    assert harness.job(job_id).status == JobStatus.SUBMITTING

    harness.advance(299)
    assert sweep(rt=harness.rt).resent_submitting == 0
    harness.advance(2)  # submit_lease_s = 300
    first = sweep(rt=harness.rt)
    second = sweep(rt=harness.rt)

    assert (first.resent_submitting, second.resent_submitting) == (1, 0)
    assert harness.sender.submits == [(job_id, 0)]


def test_sweep_restarts_an_overdue_poll_chain_at_its_current_poll_count(harness: Harness) -> None:
    # Given a running job at poll_count 2 whose poll message was lost
    job_id = harness.enqueue()
    harness.kling.submissions.append(accepted())
    submit_job(job_id, rt=harness.rt)
    harness.kling.polls += [pending(), pending()]
    poll_job(job_id, 0, rt=harness.rt)
    poll_job(job_id, 1, rt=harness.rt)
    harness.sender.polls.clear()

    # When the sweeper runs long after next_poll_at
    harness.advance(4.0 + 60)  # next poll ≤ 3.8 s (+5 %) away, poll_overdue_s = 60
    report = sweep(rt=harness.rt)
    again = sweep(rt=harness.rt)

    # Then the chain restarts once, with the job's current poll_count, at once
    assert harness.sender.polls == [(job_id, 2, 0)]
    assert (report.restarted_polls, again.restarted_polls) == (1, 0)
    job = harness.job(job_id)
    assert job.poll_count == 2
    assert job.next_poll_at == harness.clock.now


def test_sweep_leaves_a_poll_chain_that_is_on_time_alone(harness: Harness) -> None:
    job_id = harness.enqueue()
    harness.kling.submissions.append(accepted())
    submit_job(job_id, rt=harness.rt)
    harness.advance(30)

    assert sweep(rt=harness.rt).restarted_polls == 0
    assert len(harness.sender.polls) == 1


def test_sweep_times_out_a_job_past_its_deadline_and_schedules_its_webhook(harness: Harness) -> None:
    job_id = harness.enqueue(callback_url=CALLBACK)
    harness.kling.submissions.append(accepted())
    submit_job(job_id, rt=harness.rt)
    harness.advance(901)  # kling-image deadline_s = 900

    report = sweep(rt=harness.rt)

    assert report.timed_out == 1
    assert report.restarted_polls == 0
    job = harness.job(job_id)
    assert job.status == JobStatus.TIMED_OUT
    assert job.error_code == ErrorCode.UPSTREAM_TIMEOUT
    assert harness.events(job_id)[-1] == ("running", "timed_out")
    [delivery] = harness.deliveries(job_id)
    assert (delivery.event_type, delivery.attempt, delivery.state) == ("job.timed_out", 1, "pending")
    assert harness.sender.webhooks == [(delivery.id, 0)]
    assert harness.announced == [job_id]


def test_sweep_times_out_a_queued_job_past_its_deadline_without_a_webhook(harness: Harness) -> None:
    job_id = harness.enqueue()
    harness.advance(901)

    report = sweep(rt=harness.rt)

    assert (report.timed_out, report.resent_queued) == (1, 0)
    assert harness.job(job_id).status == JobStatus.TIMED_OUT
    assert harness.deliveries(job_id) == []
    assert harness.sender.submits == []


def test_sweep_resends_a_long_overdue_pending_webhook(harness: Harness) -> None:
    job_id = harness.enqueue(OPENAI_REQUEST, callback_url=CALLBACK)
    harness.openai.submissions.append(completed())
    submit_job(job_id, rt=harness.rt)
    [delivery] = harness.deliveries(job_id)
    harness.sender.webhooks.clear()  # the webhook task sent at finish was lost

    harness.advance(4)
    assert sweep(rt=harness.rt).resent_webhooks == 0
    harness.advance(2)  # a pending attempt 5 s past due is the sweeper's (WEBHOOK_DUE_GRACE_S)
    report = sweep(rt=harness.rt)

    assert report.resent_webhooks == 1
    assert harness.sender.webhooks == [(delivery.id, 0)]
