"""Signed webhook delivery (Standard Webhooks): payload, signatures, one attempt, the retry schedule.

The ``webhook-id`` is derived from the job, so every attempt of one event carries the same id; the
timestamp and signatures are fresh per attempt (one signature per active tenant secret, so a rotation
sends two). Each attempt is a ``webhook_delivery`` row. Success is a 2xx (redirects are not followed:
a 3xx is a failure); ``410 Gone`` disables the URL for the tenant; ``429`` waits for its ``Retry-After``;
anything else is retried on ``retry_delays_s`` with jitter. Waits up to 300 s are Celery countdowns; longer
ones are rows that the sweeper sends when due.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from pydantic import BaseModel
from sqlmodel import Session, select
from standardwebhooks.webhooks import Webhook

from shared import metrics
from shared.batches import BatchView, batch_view
from shared.db import batches_repo, jobs_repo
from shared.db.tables import CostEntry, DisabledWebhookEndpoint, Job, JobBatch, JobImage, WebhookDelivery
from shared.egress import EgressRefusedError
from shared.files import ResultUrls
from shared.progress import Progress, progress_of
from shared.queue import MAX_COUNTDOWN_S
from shared.views import JobView, job_view
from shared.webhook_secrets import signing_secrets
from worker.providers._http import retry_after_s
from worker.runtime import Runtime

log = logging.getLogger(__name__)

#: bytes of a receiver's answer we read at most (we only need the status)
MAX_RESPONSE_BYTES = 4096


class WebhookPayload(BaseModel):
    type: str
    timestamp: str
    data: JobView


class BatchWebhookPayload(BaseModel):
    """``batch.completed``: the batch object once every job has ended."""

    type: str
    timestamp: str
    data: BatchView


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status: int | None
    error: str | None
    latency_ms: int
    retry_after_s: float | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def sign_headers(*, secrets: Sequence[str] | str, webhook_id: str, sent_at: datetime, body: str) -> dict[str, str]:
    """Standard Webhooks headers; several secrets give a space-separated list of signatures."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    signatures = " ".join(Webhook(secret).sign(webhook_id, sent_at, body) for secret in keys)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signatures,
    }


def next_retry_delay(
    attempt: int, delays_s: Sequence[float], *, jitter: float = 0.0, rng: random.Random | None = None
) -> float | None:
    """The wait before attempt ``attempt + 1`` (± jitter), or None when the schedule is exhausted."""
    if attempt - 1 >= len(delays_s):
        return None
    nominal = delays_s[attempt - 1]
    return max(0.0, nominal * (1 + (rng or random).uniform(-jitter, jitter)))


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def is_disabled(*, session: Session, owner: str, url: str) -> bool:
    statement = select(DisabledWebhookEndpoint).where(
        DisabledWebhookEndpoint.owner == owner, DisabledWebhookEndpoint.url_hash == url_hash(url)
    )
    return session.exec(statement).first() is not None


def deliver_webhook(delivery_id: int, *, rt: Runtime, claimed: bool = False) -> None:
    """Send one attempt; on failure schedule the next one (a row, plus a countdown task for short waits).

    ``claimed``: the attempt was created already claimed by the task that ended the job (``send_at_once``), so
    there is no claim to commit."""
    now = rt.clock()
    stale_before = now - timedelta(seconds=rt.settings.sweeper.webhook_stale_s)
    with rt.session() as session:
        if not claimed:
            with session.begin():
                won = jobs_repo.claim_webhook(
                    session=session, delivery_id=delivery_id, now=now, stale_before=stale_before
                )
            if not won:
                return
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None  # claimed: by us just now, or by its creator
        subject = _subject_of(session, delivery, rt=rt)
        if is_disabled(session=session, owner=subject.owner, url=delivery.url):
            _finish(session, delivery, AttemptResult(None, "endpoint disabled (410 Gone)", 0), now, state="skipped")
            session.commit()
            return
        secrets = signing_secrets(session=session, owner=subject.owner, settings=rt.settings, now=now)
    result = _post(delivery, subject.body, secrets=secrets, rt=rt)
    metrics.WEBHOOK_ATTEMPTS.labels(outcome=_outcome_of(result)).inc()
    metrics.WEBHOOK_SECONDS.observe(result.latency_ms / 1000)
    rt.fast_receivers.note(delivery.url, delivered=result.delivered, latency_ms=result.latency_ms)
    finished = rt.clock()
    if result.delivered and subject.job is not None and subject.job.finished_at is not None:
        metrics.WEBHOOK_DELIVERY_DELAY.observe(metrics.seconds_between(subject.job.finished_at, finished))
    delay = _retry_delay(delivery.attempt, result, rt=rt)
    with rt.session() as session, session.begin():
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        _finish(session, row, result, finished, state="delivered" if result.delivered else "failed")
        if result.status == 410:
            _disable(session, owner=subject.owner, url=delivery.url, now=finished)
        upcoming = None
        if delay is not None:
            at = finished + timedelta(seconds=delay)
            if subject.batch is not None:
                upcoming = batches_repo.add_webhook_attempt(
                    session=session, batch=subject.batch, attempt=delivery.attempt + 1, at=at
                )
            elif subject.job is not None:
                upcoming = jobs_repo.schedule_webhook(
                    session=session,
                    job=subject.job,
                    event_type=delivery.event_type,
                    attempt=delivery.attempt + 1,
                    at=at,
                )
            session.flush()
    log.info(
        "webhook %s attempt %d → %s (%s ms)%s",
        delivery.webhook_id,
        delivery.attempt,
        result.status or result.error,
        result.latency_ms,
        f", next in {delay:.0f}s" if delay is not None else "",
    )
    if upcoming is not None and upcoming.id is not None and delay is not None and delay <= MAX_COUNTDOWN_S:
        rt.sender.webhook(upcoming.id, countdown_s=delay)


def _outcome_of(result: AttemptResult) -> str:
    """A bounded label: delivered, the status class (4xx, 5xx …) or the transport error."""
    if result.delivered:
        return "delivered"
    if result.status is not None:
        return f"{result.status // 100}xx"
    return "refused" if (result.error or "").startswith("refused") else "error"


def schedule_progress_webhook(*, session: Session, job: Job, event: str, at: datetime) -> WebhookDelivery | None:
    """In the transaction that made the step: the ``job.<event>`` (``started``, ``running``) webhook, if the job
    has a callback URL and asked for it (``webhook_events``). Sent after the commit (``send_progress_webhook``)."""
    if job.callback_url is None or event not in (job.webhook_events or ()):
        return None
    delivery = jobs_repo.add_webhook_attempt(session=session, job=job, event_type=f"job.{event}", attempt=1, at=at)
    session.flush()
    return delivery


def send_progress_webhook(delivery: WebhookDelivery | None, *, rt: Runtime) -> None:
    if delivery is not None and delivery.id is not None:
        rt.sender.webhook(delivery.id)


def send_at_once(url: str, *, rt: Runtime) -> bool:
    """Whether the task that ends a job sends its webhook's first attempt itself (``worker.fast_receivers``)."""
    return rt.fast_receivers.is_fast(url)


def deliver_first_attempt(delivery: WebhookDelivery, *, rt: Runtime) -> None:
    """Right after the terminal commit: the attempt itself when it was created claimed, else the webhook task."""
    assert delivery.id is not None
    if delivery.state != "sending":
        rt.sender.webhook(delivery.id)
        return
    try:
        deliver_webhook(delivery.id, rt=rt, claimed=True)
    except Exception:  # the attempt stays claimed; the sweeper re-sends it once that claim is stale
        log.warning("webhook %s: inline delivery failed; left to the sweeper", delivery.id, exc_info=True)


def _retry_delay(attempt: int, result: AttemptResult, *, rt: Runtime) -> float | None:
    if result.delivered or result.status == 410:
        return None
    webhooks = rt.settings.webhooks
    delay = next_retry_delay(attempt, webhooks.retry_delays_s, jitter=webhooks.jitter)
    if delay is not None and result.status == 429 and result.retry_after_s is not None:
        return min(result.retry_after_s, webhooks.max_retry_after_s)
    return delay


def _finish(session: Session, row: WebhookDelivery, result: AttemptResult, at: datetime, *, state: str) -> None:
    row.state = state
    row.finished_at, row.response_status, row.latency_ms = at, result.status, result.latency_ms
    row.error = result.error[:500] if result.error else None
    session.add(row)


def _disable(session: Session, *, owner: str, url: str, now: datetime) -> None:
    if not is_disabled(session=session, owner=owner, url=url):
        session.add(DisabledWebhookEndpoint(owner=owner, url_hash=url_hash(url), url=url, disabled_at=now))


@dataclass(frozen=True, slots=True)
class _Subject:
    """What a delivery is about: a job's terminal event or a batch's ``batch.completed`` (one of the two)."""

    owner: str
    body: str
    job: Job | None = None
    batch: JobBatch | None = None


def _subject_of(session: Session, delivery: WebhookDelivery, *, rt: Runtime) -> _Subject:
    if delivery.batch_id is not None:
        batch = session.get(JobBatch, delivery.batch_id)
        assert batch is not None  # the delivery row's foreign key
        view = batch_view(
            batch,
            counts=batches_repo.status_counts(session=session, batch_id=batch.id),
            job_ids=batches_repo.job_ids(session=session, batch_id=batch.id),
        )
        stamp = (batch.finished_at or batch.created_at).isoformat()
        body = BatchWebhookPayload(type=delivery.event_type, timestamp=stamp, data=view).model_dump_json()
        return _Subject(owner=batch.owner, body=body, batch=batch)
    assert delivery.job_id is not None  # a delivery is about a job or a batch
    job = jobs_repo.get_job(session=session, job_id=delivery.job_id)
    body = _payload(
        job,
        delivery,
        images=jobs_repo.list_images(session=session, job_id=job.id),
        cost=jobs_repo.get_cost(session=session, job_id=job.id),
        progress=progress_of(session, job),
        rt=rt,
    )
    return _Subject(owner=job.owner, body=body, job=job)


def _payload(
    job: Job,
    delivery: WebhookDelivery,
    *,
    images: Sequence[JobImage],
    cost: CostEntry | None,
    progress: Progress,
    rt: Runtime,
) -> str:
    sign = ResultUrls(rt.settings, rt.storage).signer()
    view = job_view(
        job, images=images, cost=cost, sign=sign, results_kept_s=rt.settings.retention.results_s, progress=progress
    )
    payload = WebhookPayload(type=delivery.event_type, timestamp=job.updated_at.isoformat(), data=view)
    return payload.model_dump_json()


def _post(delivery: WebhookDelivery, body: str, *, secrets: Sequence[str], rt: Runtime) -> AttemptResult:
    headers = sign_headers(secrets=secrets, webhook_id=delivery.webhook_id, sent_at=rt.clock(), body=body)
    started = time.perf_counter()
    try:
        with rt.webhook_http.stream("POST", delivery.url, content=body.encode(), headers=headers) as response:
            received = 0
            for chunk in response.iter_bytes():
                received += len(chunk)
                if received >= MAX_RESPONSE_BYTES:
                    break
            status, error, wait = response.status_code, None, retry_after_s(response)
    except EgressRefusedError as exc:
        status, error, wait = None, f"refused: {exc}", None
    except httpx.HTTPError as exc:
        status, error, wait = None, type(exc).__name__, None
    latency_ms = int((time.perf_counter() - started) * 1000)
    return AttemptResult(status=status, error=error, latency_ms=latency_ms, retry_after_s=wait)
