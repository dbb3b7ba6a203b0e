"""``worker.pipeline`` driven directly (no Celery): fake upstreams, a real database, recorded task sends."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from shared.db import jobs_repo
from shared.db.tables import Job, JobEvent, WebhookDelivery
from shared.errors import ContentPolicyError, ErrorCode, RateLimitedError, TransientProviderError
from shared.jobs import JobStatus
from tests.fakes import accepted, completed, pending, succeeded
from tests.unit.conftest import OPENAI_REQUEST, CrashingProvider, Harness, HarnessFactory
from worker.finishing import Ended, finish_job
from worker.pipeline import poll_job, submit_job
from worker.providers.base import JobSpec, PollResult, ResultImage, UpstreamState

CALLBACK = "https://hooks.example.com/imagejobs"


def _start_running(harness: Harness, upstream_id: str = "up-1", **fields: Any) -> str:
    """Given a Kling job whose async submit was accepted (status running, poll_count 0)."""
    job_id = harness.enqueue(**fields)
    harness.kling.submissions.append(accepted(upstream_id))
    submit_job(job_id, rt=harness.rt)
    assert harness.job(job_id).status == JobStatus.RUNNING
    return job_id


# -- submit ------------------------------------------------------------------------------------------


def test_sync_submit_stores_images_records_cost_and_succeeds(harness: Harness) -> None:
    # Given an OpenAI job for two 1024x1024 images at quality=high (0.1664 USD each)
    job_id = harness.enqueue(OPENAI_REQUEST, n=2)
    harness.openai.submissions.append(completed(2))

    assert harness.enqueue_sender.submits == [(job_id, 0)]  # the producer sent the submit after commit

    # When the worker submits it and the upstream answers synchronously
    submit_job(job_id, rt=harness.rt)

    # Then the job succeeded, with both images on disk and in job_image
    job = harness.job(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.submit_attempts == 1
    assert job.finished_at == harness.clock.now
    images = harness.images(job_id)
    assert [image.index for image in images] == [0, 1]
    for image in images:
        stored = harness.files_dir / image.storage_key
        assert stored.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert image.byte_size == stored.stat().st_size
        assert (image.content_type, image.width, image.height) == ("image/png", 8, 8)
    # and exactly one cost row: unit price × delivered images
    [cost] = harness.costs(job_id)
    assert (cost.per, cost.quantity, cost.currency) == ("image", 2, "USD")
    assert Decimal(cost.unit_price) == Decimal("0.1664")
    assert Decimal(cost.amount) == Decimal("0.3328")
    assert (cost.basis, cost.inputs) == ("per_image", {"quality": "high", "size": "1024x1024"})  # no usage reported
    assert harness.events(job_id) == [(None, "queued"), ("queued", "submitting"), ("submitting", "succeeded")]
    assert harness.announced == [job_id]
    assert harness.sender.polls == []
    assert harness.sender.submits == []


def test_submit_hands_the_provider_the_job_spec_from_the_row(harness: Harness) -> None:
    job_id = harness.enqueue(aspect_ratio="1:1")
    harness.kling.submissions.append(accepted())

    submit_job(job_id, rt=harness.rt)

    [spec] = harness.kling.submitted
    assert spec == JobSpec(
        job_id=job_id,
        upstream_model="kling-v2-1",
        operation="text2img",
        params={"prompt": "a red fox in snow", "aspect_ratio": "1:1", "n": 1},
        image_count=1,
        attempt=1,
    )


def test_async_submit_marks_job_running_and_schedules_the_first_poll(harness: Harness) -> None:
    job_id = harness.enqueue()
    harness.kling.submissions.append(accepted("kling-task-42"))

    submit_job(job_id, rt=harness.rt)

    job = harness.job(job_id)
    assert job.status == JobStatus.RUNNING
    assert job.upstream_task_id == "kling-task-42"
    assert job.poll_count == 0
    assert job.lease_until is None
    [(sent_id, poll_count, countdown)] = harness.sender.polls
    assert (sent_id, poll_count) == (job_id, 0)
    assert 4.0 * 0.9 <= countdown <= 4.0 * 1.1  # kling-image: first_poll_s = 4 with ±10 % jitter
    assert job.next_poll_at is not None
    assert (job.next_poll_at - harness.clock.now).total_seconds() == pytest.approx(countdown)
    assert harness.events(job_id)[-1] == ("submitting", "running")
    assert harness.announced == []


def test_submit_of_a_job_that_is_not_queued_is_a_no_op(harness: Harness) -> None:
    job_id = _start_running(harness)

    submit_job(job_id, rt=harness.rt)  # a duplicated submit message

    assert len(harness.kling.submitted) == 1
    assert harness.job(job_id).submit_attempts == 1


def test_submit_of_an_unknown_job_does_nothing(harness: Harness) -> None:
    submit_job("0" * 32, rt=harness.rt)

    assert harness.kling.submitted == []
    assert harness.openai.submitted == []


def test_transient_submit_error_hands_the_job_back_and_resends_the_submit_later(harness: Harness) -> None:
    job_id = harness.enqueue()
    harness.kling.submissions.append(TransientProviderError("Kling 5000: internal error", provider="kling"))

    submit_job(job_id, rt=harness.rt)

    job = harness.job(job_id)
    assert job.status == JobStatus.QUEUED
    assert job.submit_attempts == 1
    assert job.lease_until is None
    assert job.error_code is None
    assert harness.sender.submits == [(job_id, 5.0)]
    assert job.dispatched_at == harness.clock.now + _seconds(5)
    assert harness.events(job_id)[-2:] == [("queued", "submitting"), ("submitting", "queued")]


def test_rate_limited_submit_is_retried_after_the_upstreams_retry_after(harness: Harness) -> None:
    job_id = harness.enqueue()
    harness.kling.submissions.append(RateLimitedError("slow down", provider="kling", retry_after_s=17))

    submit_job(job_id, rt=harness.rt)

    assert harness.sender.submits == [(job_id, 17.0)]


def test_retried_submit_passes_the_attempt_number_to_the_provider(harness: Harness) -> None:
    job_id = harness.enqueue()
    harness.kling.submissions += [TransientProviderError("down", provider="kling"), accepted()]

    submit_job(job_id, rt=harness.rt)
    submit_job(job_id, rt=harness.rt)  # the re-sent submit arrives

    assert [spec.attempt for spec in harness.kling.submitted] == [1, 2]
    assert harness.job(job_id).status == JobStatus.RUNNING


def test_transient_errors_on_every_allowed_attempt_fail_the_job(harness: Harness) -> None:
    job_id = harness.enqueue()
    harness.kling.submissions += [TransientProviderError("down", provider="kling") for _ in range(3)]

    for _ in range(3):  # max_submit_attempts = 3
        submit_job(job_id, rt=harness.rt)

    job = harness.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.error_code == ErrorCode.UPSTREAM_UNAVAILABLE
    assert len(harness.sender.submits) == 2
    assert harness.costs(job_id) == []


def test_submit_attempts_beyond_the_limit_fail_the_job_with_too_many_attempts(
    make_harness: HarnessFactory, sqlite_url: str
) -> None:
    harness = make_harness(sqlite_url, sweeper={"max_submit_attempts": 2})
    crashing = CrashingProvider()
    harness.rt.providers = {"kling": crashing}
    job_id = harness.enqueue()

    # Given two claims whose worker died, each re-claimed after its lease expired
    for _ in range(2):
        with pytest.raises(RuntimeError):
            submit_job(job_id, rt=harness.rt)
        assert harness.job(job_id).status == JobStatus.SUBMITTING
        harness.advance(301)  # submit_lease_s = 300

    # When the submit arrives a third time
    submit_job(job_id, rt=harness.rt)

    # Then the upstream is not called again and the job fails
    assert crashing.calls == 2
    job = harness.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.error_code == ErrorCode.TOO_MANY_ATTEMPTS
    assert job.submit_attempts == 2
    assert harness.announced == [job_id]


def test_submitting_job_with_a_live_lease_is_not_reclaimed(harness: Harness) -> None:
    harness.rt.providers = {"kling": CrashingProvider()}
    job_id = harness.enqueue()
    with pytest.raises(RuntimeError):
        submit_job(job_id, rt=harness.rt)
    harness.advance(299)

    submit_job(job_id, rt=harness.rt)

    assert harness.job(job_id).submit_attempts == 1


def test_permanent_submit_error_fails_the_job_without_cost(harness: Harness) -> None:
    job_id = harness.enqueue(OPENAI_REQUEST)
    harness.openai.submissions.append(ContentPolicyError("moderation_blocked", provider="openai"))

    submit_job(job_id, rt=harness.rt)

    job = harness.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.error_code == "content_policy_violation"
    assert job.error_message == "moderation_blocked"
    assert harness.costs(job_id) == []
    assert harness.images(job_id) == []
    assert harness.events(job_id)[-1] == ("submitting", "failed")


# -- poll --------------------------------------------------------------------------------------------


def test_poll_pending_advances_the_chain_and_sends_the_next_poll(harness: Harness) -> None:
    job_id = _start_running(harness, "up-7")
    harness.kling.polls.append(pending())

    poll_job(job_id, 0, rt=harness.rt)

    assert harness.kling.polled == ["up-7"]
    job = harness.job(job_id)
    assert job.status == JobStatus.RUNNING
    assert job.poll_count == 1
    next_poll = harness.sender.polls[-1]
    assert next_poll[:2] == (job_id, 1)
    assert 3.8 * 0.95 <= next_poll[2] <= 3.8 * 1.05  # inside the usual window: interval_s = 3.8 (±5 %)


def test_poll_succeeded_finishes_the_job_and_counts_the_final_poll(harness: Harness) -> None:
    job_id = _start_running(harness)
    harness.kling.polls += [pending(), succeeded(3)]

    poll_job(job_id, 0, rt=harness.rt)
    poll_job(job_id, 1, rt=harness.rt)

    job = harness.job(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.poll_count == 2
    assert job.next_poll_at is None
    assert len(harness.images(job_id)) == 3
    [cost] = harness.costs(job_id)
    assert (cost.quantity, cost.currency) == (3, "credits")
    assert Decimal(cost.amount) == Decimal("0.228")  # 3 × 0.076
    assert harness.events(job_id) == [
        (None, "queued"),
        ("queued", "submitting"),
        ("submitting", "running"),
        ("running", "succeeded"),
    ]
    assert harness.announced == [job_id]
    assert [poll[1] for poll in harness.sender.polls] == [0, 1]  # no poll after the last one


def test_poll_downloads_images_given_as_urls(harness: Harness) -> None:
    job_id = _start_running(harness)
    harness.kling.polls.append(
        PollResult(state=UpstreamState.SUCCEEDED, images=(ResultImage(url="https://cdn.example.com/0.png"),))
    )

    poll_job(job_id, 0, rt=harness.rt)

    [image] = harness.images(job_id)
    assert (harness.files_dir / image.storage_key).read_bytes()[:4] == b"\x89PNG"


def test_poll_result_that_is_not_an_image_fails_the_job(harness: Harness) -> None:
    job_id = _start_running(harness)
    harness.kling.polls.append(PollResult(state=UpstreamState.SUCCEEDED, images=(ResultImage(data=b"<html>"),)))

    poll_job(job_id, 0, rt=harness.rt)

    job = harness.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.error_code == ErrorCode.UPSTREAM_BAD_RESPONSE
    assert harness.costs(job_id) == []


@pytest.mark.parametrize("current_count", [0, 1])
def test_stale_or_duplicated_poll_message_is_a_no_op(harness: Harness, current_count: int) -> None:
    job_id = _start_running(harness)
    if current_count == 1:
        harness.kling.polls.append(pending())
        poll_job(job_id, 0, rt=harness.rt)
    polled, sent = list(harness.kling.polled), list(harness.sender.polls)

    poll_job(job_id, current_count + 1, rt=harness.rt)  # from the future
    if current_count == 1:
        poll_job(job_id, 0, rt=harness.rt)  # redelivered old link

    assert harness.kling.polled == polled
    assert harness.sender.polls == sent
    assert harness.job(job_id).poll_count == current_count


def test_poll_of_a_finished_job_does_not_call_the_provider(harness: Harness) -> None:
    job_id = _start_running(harness)
    harness.kling.polls.append(succeeded())
    poll_job(job_id, 0, rt=harness.rt)

    poll_job(job_id, 1, rt=harness.rt)

    assert len(harness.kling.polled) == 1


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(
            PollResult(
                state=UpstreamState.FAILED,
                error=ContentPolicyError("Failure to pass the risk control system", provider="kling"),
            ),
            id="reported-failed",
        ),
        pytest.param(ContentPolicyError("Failure to pass the risk control system", provider="kling"), id="raised"),
    ],
)
def test_poll_content_policy_failure_fails_the_job_without_cost(
    harness: Harness, outcome: PollResult | ContentPolicyError
) -> None:
    job_id = _start_running(harness, callback_url=CALLBACK)
    harness.kling.polls.append(outcome)

    poll_job(job_id, 0, rt=harness.rt)

    job = harness.job(job_id)
    assert job.status == JobStatus.FAILED
    assert job.error_code == "content_policy_violation"
    assert job.error_message == "Failure to pass the risk control system"
    assert job.poll_count == 1
    assert harness.costs(job_id) == []
    assert harness.images(job_id) == []
    [delivery] = harness.deliveries(job_id)
    assert delivery.event_type == "job.failed"
    assert harness.announced == [job_id]


def test_transient_poll_error_keeps_polling(harness: Harness) -> None:
    job_id = _start_running(harness)
    harness.kling.polls.append(TransientProviderError("timed out", provider="kling"))

    poll_job(job_id, 0, rt=harness.rt)

    job = harness.job(job_id)
    assert (job.status, job.poll_count) == (JobStatus.RUNNING, 1)
    assert harness.sender.polls[-1][:2] == (job_id, 1)


def test_rate_limited_poll_waits_at_least_the_retry_after(harness: Harness) -> None:
    job_id = _start_running(harness)
    harness.kling.polls.append(RateLimitedError("slow down", provider="kling", retry_after_s=45))

    poll_job(job_id, 0, rt=harness.rt)

    assert harness.sender.polls[-1] == (job_id, 1, 45.0)


def test_poll_marks_job_timed_out_after_deadline(harness: Harness) -> None:
    job_id = _start_running(harness, callback_url=CALLBACK)
    harness.advance(901)  # kling-image deadline_s = 900

    poll_job(job_id, 0, rt=harness.rt)

    assert harness.kling.polled == []
    job = harness.job(job_id)
    assert job.status == JobStatus.TIMED_OUT
    assert job.error_code == ErrorCode.UPSTREAM_TIMEOUT
    assert harness.events(job_id)[-1] == ("running", "timed_out")
    [delivery] = harness.deliveries(job_id)
    assert delivery.event_type == "job.timed_out"
    assert harness.announced == [job_id]


def test_next_poll_is_clamped_to_the_deadline(harness: Harness) -> None:
    job_id = _start_running(harness)
    harness.advance(899)
    harness.kling.polls.append(pending())

    poll_job(job_id, 0, rt=harness.rt)

    assert harness.sender.polls[-1] == (job_id, 1, 1.0)


# -- finishing once ----------------------------------------------------------------------------------


def test_two_finish_calls_for_one_job_have_one_winner(harness: Harness) -> None:
    job_id = _start_running(harness, callback_url=CALLBACK)
    images = completed(2).images

    with harness.rt.session() as session:
        job = session.get(Job, job_id)
    assert job is not None
    first = finish_job(job, from_=JobStatus.RUNNING, images=images, rt=harness.rt, expected_poll_count=0, poll_count=1)
    second = finish_job(job, from_=JobStatus.RUNNING, images=images, rt=harness.rt, expected_poll_count=0, poll_count=1)

    assert (first, second) == (Ended(won=True), Ended(won=False))
    assert len(harness.costs(job_id)) == 1
    assert len(harness.deliveries(job_id)) == 1
    assert len(harness.images(job_id)) == 2
    assert harness.announced == [job_id]
    assert len(harness.sender.webhooks) == 1
    assert [to for _, to in harness.events(job_id)].count("succeeded") == 1


# -- webhooks scheduled at the end -------------------------------------------------------------------


def test_job_with_callback_url_schedules_one_webhook_delivery(harness: Harness) -> None:
    job_id = harness.enqueue(OPENAI_REQUEST, callback_url=CALLBACK)
    harness.openai.submissions.append(completed())

    submit_job(job_id, rt=harness.rt)

    [delivery] = harness.deliveries(job_id)
    assert (delivery.attempt, delivery.state, delivery.url) == (1, "pending", CALLBACK)
    assert delivery.event_type == "job.succeeded"
    assert delivery.webhook_id == f"msg_{job_id}"
    assert delivery.next_attempt_at == harness.clock.now
    assert harness.sender.webhooks == [(delivery.id, 0)]


def test_job_without_callback_url_schedules_no_webhook(harness: Harness) -> None:
    job_id = harness.enqueue(OPENAI_REQUEST)
    harness.openai.submissions.append(completed())

    submit_job(job_id, rt=harness.rt)

    assert harness.job(job_id).status == JobStatus.SUCCEEDED
    assert harness.deliveries(job_id) == []
    assert harness.sender.webhooks == []


# -- compare-and-set on both databases ---------------------------------------------------------------


def test_transition_reports_false_for_the_loser_and_appends_no_event(
    make_harness: HarnessFactory, database_url: str
) -> None:
    harness = make_harness(database_url)
    job_id = harness.enqueue()

    with harness.session() as session, session.begin():
        won = jobs_repo.transition(
            session=session, job_id=job_id, from_=JobStatus.QUEUED, to=JobStatus.SUBMITTING, now=harness.clock.now
        )
    with harness.session() as session, session.begin():
        lost = jobs_repo.transition(
            session=session, job_id=job_id, from_=JobStatus.QUEUED, to=JobStatus.CANCELLED, now=harness.clock.now
        )

    assert (won, lost) == (True, False)
    assert harness.job(job_id).status == JobStatus.SUBMITTING
    assert harness.events(job_id) == [(None, "queued"), ("queued", "submitting")]


def test_transition_guard_condition_makes_a_stale_claim_lose(make_harness: HarnessFactory, database_url: str) -> None:
    harness = make_harness(database_url)
    job_id = harness.enqueue()

    with harness.session() as session, session.begin():
        won = jobs_repo.claim_submit(
            session=session,
            job_id=job_id,
            from_=JobStatus.QUEUED,
            expected_attempts=5,
            lease_until=harness.clock.now,
            channel="default",
            now=harness.clock.now,
        )

    assert won is False
    assert (harness.job(job_id).status, harness.job(job_id).submit_attempts) == (JobStatus.QUEUED, 0)
    with harness.session() as session:
        assert len(session.exec(select(JobEvent).where(JobEvent.job_id == job_id)).all()) == 1


def test_transition_refuses_a_change_the_table_forbids(make_harness: HarnessFactory, database_url: str) -> None:
    harness = make_harness(database_url)
    job_id = harness.enqueue()

    with harness.session() as session, session.begin(), pytest.raises(ValueError, match="not a job transition"):
        jobs_repo.transition(session=session, job_id=job_id, from_=JobStatus.QUEUED, to=JobStatus.SUCCEEDED)


def test_only_one_holder_of_a_poll_count_advances_the_chain(make_harness: HarnessFactory, database_url: str) -> None:
    harness = make_harness(database_url)
    job_id = _start_running(harness)
    at = harness.clock.now + _seconds(10)

    with harness.session() as session, session.begin():
        first = jobs_repo.advance_poll(session=session, job_id=job_id, expected_poll_count=0, next_poll_at=at)
    with harness.session() as session, session.begin():
        second = jobs_repo.advance_poll(session=session, job_id=job_id, expected_poll_count=0, next_poll_at=at)

    assert (first, second) == (True, False)
    assert harness.job(job_id).poll_count == 1


def test_a_webhook_attempt_is_claimed_once(make_harness: HarnessFactory, database_url: str) -> None:
    harness = make_harness(database_url)
    job_id = harness.enqueue(OPENAI_REQUEST, callback_url=CALLBACK)
    harness.openai.submissions.append(completed())
    submit_job(job_id, rt=harness.rt)
    [delivery] = harness.deliveries(job_id)
    assert delivery.id is not None
    now = harness.clock.now

    claims = []
    for _ in range(2):
        with harness.session() as session, session.begin():
            claims.append(
                jobs_repo.claim_webhook(
                    session=session, delivery_id=delivery.id, now=now, stale_before=now - _seconds(60)
                )
            )

    assert claims == [True, False]
    with harness.session() as session:
        row = session.get(WebhookDelivery, delivery.id)
        assert row is not None
        assert row.state == "sending"


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
