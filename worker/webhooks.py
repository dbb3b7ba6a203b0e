"""Signed webhook delivery (Standard Webhooks): payload, signature, one attempt, the retry schedule.

The ``webhook-id`` is derived from the job, so every attempt of one event carries the same id; the
timestamp and signature are fresh per attempt. Each attempt is a ``webhook_delivery`` row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

import httpx
from pydantic import BaseModel
from standardwebhooks.webhooks import Webhook

from shared.db import jobs_repo
from shared.db.tables import CostEntry, Job, JobImage, WebhookDelivery
from shared.egress import EgressRefusedError
from shared.files import signed_file_url
from shared.views import JobView, job_view
from worker.runtime import Runtime

log = logging.getLogger(__name__)


class WebhookPayload(BaseModel):
    type: str
    timestamp: str
    data: JobView


def sign_headers(*, secret: str, webhook_id: str, sent_at: datetime, body: str) -> dict[str, str]:
    signature = Webhook(secret).sign(webhook_id, sent_at, body)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
    }


def next_retry_delay(attempt: int, delays_s: list[float]) -> float | None:
    """The wait before attempt ``attempt + 1``, or None when the schedule is exhausted."""
    return delays_s[attempt - 1] if attempt - 1 < len(delays_s) else None


def deliver_webhook(delivery_id: int, *, rt: Runtime) -> None:
    """Send one attempt; on failure schedule the next one (a row, plus a short countdown task)."""
    now = rt.clock()
    stale_before = now - timedelta(seconds=rt.settings.sweeper.webhook_stale_s)
    with rt.session() as session, session.begin():
        if not jobs_repo.claim_webhook(session=session, delivery_id=delivery_id, now=now, stale_before=stale_before):
            return
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None  # we just claimed it
        job = jobs_repo.get_job(session=session, job_id=delivery.job_id)
        body = _payload(
            job,
            delivery,
            images=jobs_repo.list_images(session=session, job_id=job.id),
            cost=jobs_repo.get_cost(session=session, job_id=job.id),
            rt=rt,
        )
    status, error, latency_ms = _post(delivery, body, rt=rt)
    delivered = status is not None and 200 <= status < 300
    finished = rt.clock()
    delay = (
        None if delivered or status == 410 else next_retry_delay(delivery.attempt, rt.settings.webhooks.retry_delays_s)
    )
    with rt.session() as session, session.begin():
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        row.state = "delivered" if delivered else "failed"
        row.finished_at, row.response_status, row.latency_ms, row.error = finished, status, latency_ms, error
        session.add(row)
        upcoming = None
        if delay is not None:
            upcoming = jobs_repo.schedule_webhook(
                session=session,
                job=job,
                event_type=delivery.event_type,
                attempt=delivery.attempt + 1,
                at=finished + timedelta(seconds=delay),
            )
            session.flush()
    log.info("webhook %s attempt %d → %s (%s ms)", delivery.webhook_id, delivery.attempt, status or error, latency_ms)
    if upcoming is not None and upcoming.id is not None and delay is not None:
        rt.sender.webhook(upcoming.id, countdown_s=delay)


def _payload(
    job: Job, delivery: WebhookDelivery, *, images: Sequence[JobImage], cost: CostEntry | None, rt: Runtime
) -> str:
    settings = rt.settings
    now = time.time()

    def sign(key: str) -> str:
        return signed_file_url(
            base_url=settings.public_base_url,
            key=key,
            secret=settings.signing_key.get_secret_value(),
            ttl_s=settings.file_url_ttl_s,
            now=now,
        )

    view = job_view(job, images=images, cost=cost, sign=sign)
    payload = WebhookPayload(type=delivery.event_type, timestamp=job.updated_at.isoformat(), data=view)
    return payload.model_dump_json()


def _post(delivery: WebhookDelivery, body: str, *, rt: Runtime) -> tuple[int | None, str | None, int]:
    headers = sign_headers(
        secret=rt.settings.webhooks.secret.get_secret_value(),
        webhook_id=delivery.webhook_id,
        sent_at=rt.clock(),
        body=body,
    )
    started = time.perf_counter()
    try:
        response = rt.webhook_http.post(delivery.url, content=body.encode(), headers=headers)
        status, error = response.status_code, None
    except EgressRefusedError as exc:
        status, error = None, f"refused: {exc}"[:500]
    except httpx.HTTPError as exc:
        status, error = None, type(exc).__name__
    return status, error, int((time.perf_counter() - started) * 1000)
