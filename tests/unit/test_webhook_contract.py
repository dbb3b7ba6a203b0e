"""The webhook delivery contract: 410 disables a URL, 429 waits for Retry-After, long waits go through the
sweeper, secret rotation sends two signatures, the default schedule has jitter."""

from __future__ import annotations

import random
from datetime import timedelta

import httpx
from standardwebhooks.webhooks import Webhook

from shared.db.tables import ApiKey
from shared.webhook_secrets import derived_secret, new_webhook_secret
from tests.fakes import completed
from tests.support import WEBHOOK_SECRET
from tests.unit.conftest import OPENAI_REQUEST, OWNER, Harness, HarnessFactory
from worker.pipeline import submit_job
from worker.sweeper import sweep
from worker.webhooks import deliver_webhook, next_retry_delay

CALLBACK = "https://hooks.example.com/imagejobs"


def _finished_job(harness: Harness) -> tuple[str, int]:
    job_id = harness.enqueue(OPENAI_REQUEST, callback_url=CALLBACK)
    harness.openai.submissions.append(completed())
    submit_job(job_id, rt=harness.rt)
    [(delivery_id, _)] = harness.sender.webhooks
    harness.sender.webhooks.clear()
    return job_id, delivery_id


def _answer_with(harness: Harness, response: httpx.Response) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return response

    harness.rt.webhook_http = httpx.Client(transport=httpx.MockTransport(handler))
    return seen


def test_410_gone_disables_the_url_for_later_jobs_of_the_tenant(harness: Harness) -> None:
    job_id, delivery_id = _finished_job(harness)
    seen = _answer_with(harness, httpx.Response(410))
    deliver_webhook(delivery_id, rt=harness.rt)

    # When a later job of the same tenant finishes with the same callback URL
    later_id, later_delivery = _finished_job(harness)
    deliver_webhook(later_delivery, rt=harness.rt)

    # Then nothing is posted to it: the attempt is recorded as skipped
    assert len(seen) == 1
    [first] = harness.deliveries(job_id)
    assert (first.state, first.response_status) == ("failed", 410)
    [skipped] = harness.deliveries(later_id)
    assert (skipped.state, skipped.error) == ("skipped", "endpoint disabled (410 Gone)")
    assert harness.sender.webhooks == []


def test_429_waits_for_retry_after(harness: Harness) -> None:
    job_id, delivery_id = _finished_job(harness)
    _answer_with(harness, httpx.Response(429, headers={"retry-after": "120"}))

    deliver_webhook(delivery_id, rt=harness.rt)

    first, second = harness.deliveries(job_id)
    assert (first.state, first.response_status) == ("failed", 429)
    assert second.next_attempt_at == harness.clock.now + timedelta(seconds=120)
    assert harness.sender.webhooks == [(second.id, 120.0)]


def test_a_wait_over_300_s_is_a_row_for_the_sweeper_not_a_countdown(
    make_harness: HarnessFactory, sqlite_url: str
) -> None:
    harness = make_harness(sqlite_url, webhooks={"secret": WEBHOOK_SECRET, "retry_delays_s": [1800.0], "jitter": 0})
    job_id, delivery_id = _finished_job(harness)
    _answer_with(harness, httpx.Response(503))
    deliver_webhook(delivery_id, rt=harness.rt)
    _, pending = harness.deliveries(job_id)
    assert harness.sender.webhooks == []  # no Celery countdown of half an hour

    sweep(rt=harness.rt)
    assert harness.sender.webhooks == []  # not due yet

    harness.advance(1800 + 10)
    sweep(rt=harness.rt)
    assert harness.sender.webhooks == [(pending.id, 0)]


def test_rotation_signs_with_both_secrets_until_the_old_one_expires(harness: Harness) -> None:
    new, old = new_webhook_secret(), new_webhook_secret()
    with harness.session() as session:
        session.add(
            ApiKey(
                id=OWNER,
                key_hash="0" * 64,
                prefix="sk-test",
                webhook_secret=new,
                previous_webhook_secret=old,
                previous_secret_expires_at=harness.clock.now + timedelta(hours=1),
            )
        )
        session.commit()
    job_id, delivery_id = _finished_job(harness)
    seen = _answer_with(harness, httpx.Response(500))
    deliver_webhook(delivery_id, rt=harness.rt)

    [during] = seen
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(during.content, dict(during.headers))["data"]["id"] == job_id

    # When the rotation window is over
    with harness.session() as session:
        row = session.get(ApiKey, OWNER)
        assert row is not None
        row.previous_secret_expires_at = harness.clock.now - timedelta(seconds=1)
        session.add(row)
        session.commit()
    [(retry_id, _)] = harness.sender.webhooks
    deliver_webhook(retry_id, rt=harness.rt)
    after = seen[-1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert Webhook(new).verify(after.content, dict(after.headers))["data"]["id"] == job_id


def test_bootstrap_tenants_rotate_with_the_previous_master_secret(
    make_harness: HarnessFactory, sqlite_url: str
) -> None:
    previous = new_webhook_secret()
    harness = make_harness(
        sqlite_url,
        webhooks={"secret": WEBHOOK_SECRET, "previous_secret": previous, "retry_delays_s": [1.0], "jitter": 0},
    )
    job_id, delivery_id = _finished_job(harness)
    seen = _answer_with(harness, httpx.Response(204))

    deliver_webhook(delivery_id, rt=harness.rt)

    [request] = seen
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for master in (WEBHOOK_SECRET, previous):
        Webhook(derived_secret(master, OWNER)).verify(request.content, dict(request.headers))
    assert harness.deliveries(job_id)[0].state == "delivered"


def test_default_schedule_applies_jitter_within_its_bounds() -> None:
    rng = random.Random(7)
    delays = [next_retry_delay(2, [5.0, 300.0], jitter=0.1, rng=rng) for _ in range(200)]

    assert all(delay is not None and 270.0 <= delay <= 330.0 for delay in delays)
    assert len({round(delay or 0, 3) for delay in delays}) > 100
    assert next_retry_delay(3, [5.0, 300.0], jitter=0.1) is None


def test_the_payload_stays_thin_even_with_many_images(harness: Harness) -> None:
    job_id = harness.enqueue(OPENAI_REQUEST, callback_url=CALLBACK, n=10)
    harness.openai.submissions.append(completed(10))
    submit_job(job_id, rt=harness.rt)
    [(delivery_id, _)] = harness.sender.webhooks
    seen = _answer_with(harness, httpx.Response(200))

    deliver_webhook(delivery_id, rt=harness.rt)

    [request] = seen
    assert len(request.content) < 20 * 1024
    assert request.content.count(b"/v1/files/") == 10
