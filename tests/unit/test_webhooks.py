"""``worker.webhooks``: Standard Webhooks signatures, one attempt per row, the retry schedule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from shared.db import jobs_repo
from shared.db.tables import WebhookDelivery
from shared.errors import ContentPolicyError
from shared.files import is_valid_file_signature
from shared.webhook_secrets import derived_secret
from tests.fakes import accepted, completed, succeeded
from tests.support import SIGNING_KEY, WEBHOOK_SECRET
from tests.unit.conftest import OPENAI_REQUEST, OWNER, Harness
from worker.pipeline import poll_job, submit_job
from worker.webhooks import deliver_webhook, next_retry_delay, sign_headers

CALLBACK = "https://hooks.example.com/imagejobs"
BODY = '{"type":"job.succeeded","data":{"id":"abc"}}'


def _succeeded_job_with_callback(harness: Harness, *, images: int = 1) -> tuple[str, int]:
    """Given an OpenAI job that succeeded with a callback URL: its id and its first delivery row's id."""
    job_id = harness.enqueue(OPENAI_REQUEST, callback_url=CALLBACK, n=images)
    harness.openai.submissions.append(completed(images))
    submit_job(job_id, rt=harness.rt)
    [(delivery_id, countdown)] = harness.sender.webhooks
    assert countdown == 0
    harness.sender.webhooks.clear()
    return job_id, delivery_id


def _row(harness: Harness, delivery_id: int) -> WebhookDelivery:
    with harness.rt.session() as session:
        row = session.get(WebhookDelivery, delivery_id)
    assert row is not None
    return row


# -- signing -----------------------------------------------------------------------------------------


def test_sign_headers_verify_with_the_standard_webhooks_library() -> None:
    headers = sign_headers(secrets=WEBHOOK_SECRET, webhook_id="msg_1", sent_at=datetime.now(UTC), body=BODY)

    assert Webhook(WEBHOOK_SECRET).verify(BODY, headers) == json.loads(BODY)
    assert headers["webhook-id"] == "msg_1"
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")


@pytest.mark.parametrize(
    ("secret", "body"),
    [
        pytest.param(WEBHOOK_SECRET, BODY.replace("abc", "abd"), id="tampered-body"),
        pytest.param("whsec_" + "QUJD" * 8, BODY, id="other-secret"),
    ],
)
def test_sign_headers_do_not_verify_for_another_body_or_secret(secret: str, body: str) -> None:
    headers = sign_headers(secrets=WEBHOOK_SECRET, webhook_id="msg_1", sent_at=datetime.now(UTC), body=BODY)

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_sign_headers_carry_the_send_time_as_unix_seconds() -> None:
    sent_at = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

    headers = sign_headers(secrets=WEBHOOK_SECRET, webhook_id="msg_1", sent_at=sent_at, body=BODY)

    assert headers["webhook-timestamp"] == str(int(sent_at.timestamp()))


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 5.0), (2, 30.0), (4, 300.0), pytest.param(5, None, id="exhausted")]
)
def test_next_retry_delay_follows_the_schedule(attempt: int, expected: float | None) -> None:
    assert next_retry_delay(attempt, [5.0, 30.0, 120.0, 300.0]) == expected


# -- delivery ----------------------------------------------------------------------------------------


def test_delivery_answered_200_is_marked_delivered(harness: Harness) -> None:
    job_id, delivery_id = _succeeded_job_with_callback(harness)

    deliver_webhook(delivery_id, rt=harness.rt)

    [request] = harness.webhook_requests
    assert (request.method, str(request.url)) == ("POST", CALLBACK)
    row = _row(harness, delivery_id)
    assert (row.state, row.response_status, row.error) == ("delivered", 200, None)
    assert row.latency_ms is not None and row.latency_ms >= 0
    assert row.started_at == harness.clock.now
    assert row.finished_at == harness.clock.now
    assert len(harness.deliveries(job_id)) == 1
    assert harness.sender.webhooks == []


def test_failed_delivery_schedules_attempt_two_with_the_same_webhook_id(harness: Harness) -> None:
    job_id, delivery_id = _succeeded_job_with_callback(harness)
    harness.webhook_statuses.append(500)

    deliver_webhook(delivery_id, rt=harness.rt)

    first, second = harness.deliveries(job_id)
    assert (first.id, first.state, first.response_status, first.attempt) == (delivery_id, "failed", 500, 1)
    assert (second.state, second.attempt, second.event_type) == ("pending", 2, "job.succeeded")
    assert second.webhook_id == first.webhook_id == f"msg_{job_id}"
    assert second.next_attempt_at == harness.clock.now + timedelta(seconds=0.5)  # retry_delays_s[0]
    assert harness.sender.webhooks == [(second.id, 0.5)]


def test_retry_attempt_is_sent_with_the_same_webhook_id_and_a_fresh_signature(harness: Harness) -> None:
    job_id, delivery_id = _succeeded_job_with_callback(harness)
    harness.webhook_statuses.append(503)
    deliver_webhook(delivery_id, rt=harness.rt)
    [(retry_id, _)] = harness.sender.webhooks
    harness.advance(1)

    deliver_webhook(retry_id, rt=harness.rt)

    first, second = harness.webhook_requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_{job_id}"
    assert int(second.headers["webhook-timestamp"]) == int(first.headers["webhook-timestamp"]) + 1
    assert _row(harness, retry_id).state == "delivered"


def test_delivery_answered_410_is_not_retried(harness: Harness) -> None:
    job_id, delivery_id = _succeeded_job_with_callback(harness)
    harness.webhook_statuses.append(410)

    deliver_webhook(delivery_id, rt=harness.rt)

    [row] = harness.deliveries(job_id)
    assert (row.state, row.response_status) == ("failed", 410)
    assert harness.sender.webhooks == []


@pytest.mark.parametrize("status", [301, 302, 307])
def test_redirect_counts_as_a_failed_delivery(harness: Harness, status: int) -> None:
    job_id, delivery_id = _succeeded_job_with_callback(harness)
    harness.webhook_statuses.append(status)

    deliver_webhook(delivery_id, rt=harness.rt)

    first, second = harness.deliveries(job_id)
    assert (first.state, first.response_status) == ("failed", status)
    assert (second.state, second.attempt) == ("pending", 2)
    assert len(harness.webhook_requests) == 1  # the redirect was not followed


def test_retries_stop_when_the_schedule_is_exhausted(harness: Harness) -> None:
    job_id, delivery_id = _succeeded_job_with_callback(harness)
    harness.webhook_statuses += [500, 500, 500]

    # retry_delays_s = [0.5, 1.0]: attempts 1, 2 and 3, then no more
    deliver_webhook(delivery_id, rt=harness.rt)
    for _ in range(2):
        next_id, _ = harness.sender.webhooks[-1]
        deliver_webhook(next_id, rt=harness.rt)

    rows = harness.deliveries(job_id)
    assert [(row.attempt, row.state) for row in rows] == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert [countdown for _, countdown in harness.sender.webhooks] == [0.5, 1.0]
    assert len(harness.webhook_requests) == 3


def test_connection_error_counts_as_a_failed_attempt(harness: Harness) -> None:
    job_id, delivery_id = _succeeded_job_with_callback(harness)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    harness.rt.webhook_http = httpx.Client(transport=httpx.MockTransport(refuse))

    deliver_webhook(delivery_id, rt=harness.rt)
    harness.rt.webhook_http.close()

    first, second = harness.deliveries(job_id)
    assert (first.state, first.response_status, first.error) == ("failed", None, "ConnectError")
    assert second.attempt == 2


def test_an_attempt_already_delivered_is_not_sent_again(harness: Harness) -> None:
    _, delivery_id = _succeeded_job_with_callback(harness)
    deliver_webhook(delivery_id, rt=harness.rt)

    deliver_webhook(delivery_id, rt=harness.rt)  # a duplicated task message

    assert len(harness.webhook_requests) == 1


def test_an_attempt_claimed_by_a_vanished_sender_is_sent_again_once_stale(harness: Harness) -> None:
    _, delivery_id = _succeeded_job_with_callback(harness)
    with harness.session() as session, session.begin():
        assert jobs_repo.claim_webhook(
            session=session, delivery_id=delivery_id, now=harness.clock.now, stale_before=harness.clock.now
        )

    deliver_webhook(delivery_id, rt=harness.rt)
    assert harness.webhook_requests == []
    harness.advance(61)  # webhook_stale_s = 60
    deliver_webhook(delivery_id, rt=harness.rt)

    assert len(harness.webhook_requests) == 1
    assert _row(harness, delivery_id).state == "delivered"


# -- payload -----------------------------------------------------------------------------------------


def test_payload_describes_the_finished_job(harness: Harness) -> None:
    job_id, delivery_id = _succeeded_job_with_callback(harness, images=2)

    deliver_webhook(delivery_id, rt=harness.rt)

    [request] = harness.webhook_requests
    payload = json.loads(request.content)
    assert payload["type"] == "job.succeeded"
    data = payload["data"]
    assert (data["id"], data["status"], data["model"]) == (job_id, "succeeded", "gpt-image-1")
    assert data["error"] is None
    assert Decimal(data["cost"]["amount"]) == Decimal("0.3328")
    assert (data["cost"]["currency"], data["cost"]["per"], data["cost"]["quantity"]) == ("USD", "image", 2)
    urls = [image["url"] for image in data["data"]]
    assert len(urls) == 2
    for index, url in enumerate(urls):
        parsed = httpx.URL(url)
        assert url.startswith(f"http://127.0.0.1:8000/v1/files/jobs/{job_id}/{index}.png?")
        assert is_valid_file_signature(
            key=parsed.path.removeprefix("/v1/files/"),
            expires=int(parsed.params["expires"]),
            signature=parsed.params["signature"],
            secret=SIGNING_KEY,
            now=harness.clock.now.timestamp(),
        )


def test_payload_of_a_failed_job_carries_the_error_and_no_cost(harness: Harness) -> None:
    job_id = harness.enqueue(callback_url=CALLBACK)
    harness.kling.submissions.append(ContentPolicyError("Kling 1301: content security policy", provider="kling"))
    submit_job(job_id, rt=harness.rt)
    [(delivery_id, _)] = harness.sender.webhooks

    deliver_webhook(delivery_id, rt=harness.rt)

    payload = json.loads(harness.webhook_requests[0].content)
    assert payload["type"] == "job.failed"
    assert payload["data"]["status"] == "failed"
    assert payload["data"]["error"] == {
        "code": "content_policy_violation",
        "message": "Kling 1301: content security policy",
    }
    assert payload["data"]["cost"] is None
    assert payload["data"]["data"] == []


def test_signed_body_is_byte_identical_to_the_body_sent(harness: Harness) -> None:
    job_id = harness.enqueue(callback_url=CALLBACK)
    harness.kling.submissions.append(accepted())
    submit_job(job_id, rt=harness.rt)
    harness.kling.polls.append(succeeded())
    poll_job(job_id, 0, rt=harness.rt)
    [(delivery_id, _)] = harness.sender.webhooks

    deliver_webhook(delivery_id, rt=harness.rt)

    [request] = harness.webhook_requests
    assert request.headers["content-type"] == "application/json"
    # bootstrap tenants sign with a secret derived from the master secret and their tenant id
    payload = Webhook(derived_secret(WEBHOOK_SECRET, OWNER)).verify(request.content, dict(request.headers))
    with pytest.raises(WebhookVerificationError):
        Webhook(WEBHOOK_SECRET).verify(request.content, dict(request.headers))
    assert payload["data"]["id"] == job_id
    assert payload["type"] == "job.succeeded"
