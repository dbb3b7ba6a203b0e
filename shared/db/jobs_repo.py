"""Keyword-only repository functions for jobs. Every status change is a compare-and-set.

None of these commit: the caller owns the transaction (``with session.begin():``), so a terminal
transition, its cost row, its images, its event and its webhook row land in one commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, update
from sqlmodel import Session, col, select

from shared.catalog.pricing import cost_of
from shared.db.tables import CostEntry, Job, JobEvent, JobImage, WebhookDelivery, utcnow
from shared.errors import JobNotFoundError
from shared.jobs import TERMINAL, JobStatus, can_transition

_NO_SYNC: dict[str, Any] = {"synchronize_session": False}


def insert_jobs(*, session: Session, jobs: Sequence[Job]) -> None:
    """Add many new ``queued`` jobs and their first events as two multi-row Core INSERTs (no ORM unit of work).

    SQLAlchemy sends each list of parameter sets as batched multi-row statements ("insertmanyvalues",
    https://docs.sqlalchemy.org/en/20/core/connections.html#engine-insertmanyvalues).
    """
    if not jobs:
        return
    table = Job.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models without declaring it
    keys = [column.key for column in table.columns]
    session.execute(table.insert(), [{key: getattr(job, key) for key in keys} for job in jobs])
    events = [{"job_id": job.id, "from_status": None, "to_status": job.status, "at": job.created_at} for job in jobs]
    session.execute(JobEvent.__table__.insert(), events)  # type: ignore[attr-defined]


def get_job(*, session: Session, job_id: str, owner: str | None = None) -> Job:
    """The job, or ``JobNotFoundError``; with ``owner`` a job of another key is not found either."""
    job = session.get(Job, job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise JobNotFoundError(job_id)
    return job


def find_job_by_external_id(*, session: Session, owner: str, external_task_id: str) -> Job | None:
    statement = select(Job).where(Job.owner == owner, Job.external_task_id == external_task_id)
    return session.exec(statement).first()


def find_jobs_by_external_ids(*, session: Session, owner: str, external_task_ids: Sequence[str]) -> dict[str, Job]:
    """``owner``'s jobs with one of these ``external_task_id`` values, by that value."""
    if not external_task_ids:
        return {}
    statement = select(Job).where(Job.owner == owner, col(Job.external_task_id).in_(list(external_task_ids)))
    return {job.external_task_id: job for job in session.exec(statement) if job.external_task_id is not None}


def transition(
    *,
    session: Session,
    job_id: str,
    from_: JobStatus,
    to: JobStatus,
    detail: str | None = None,
    now: datetime | None = None,
) -> bool:
    """A plain compare-and-set ``from_ → to`` (no other column changes); appends an event and returns True if it
    won. The worker's steps use the named verbs below, which change what their step changes."""
    return _compare_and_set(session, job_id, from_=from_, to=to, now=now or utcnow(), detail=detail)


def claim_submit(
    *,
    session: Session,
    job_id: str,
    from_: JobStatus,
    expected_attempts: int,
    lease_until: datetime,
    channel: str,
    now: datetime,
) -> bool:
    """``queued`` (or ``submitting`` with an expired lease) ``→ submitting``, as attempt ``expected_attempts + 1``
    on ``channel``: only one of the workers holding the same message wins."""
    attempt = expected_attempts + 1
    return _compare_and_set(
        session,
        job_id,
        from_=from_,
        to=JobStatus.SUBMITTING,
        now=now,
        detail=f"attempt {attempt}",
        where=[col(Job.submit_attempts) == expected_attempts],
        values={"submit_attempts": attempt, "lease_until": lease_until, "channel": channel},
    )


def start_running(
    *, session: Session, job_id: str, attempt: int, upstream_task_id: str, next_poll_at: datetime, now: datetime
) -> bool:
    """``submitting → running`` for the submit attempt ``attempt`` that created ``upstream_task_id``."""
    return _compare_and_set(
        session,
        job_id,
        from_=JobStatus.SUBMITTING,
        to=JobStatus.RUNNING,
        now=now,
        detail=f"upstream task {upstream_task_id}",
        where=[col(Job.submit_attempts) == attempt],
        values={"upstream_task_id": upstream_task_id, "poll_count": 0, "next_poll_at": next_poll_at,
                "lease_until": None, "running_since": now},
    )  # fmt: skip


def hand_back(
    *,
    session: Session,
    job_id: str,
    attempt: int,
    channel: str | None,
    dispatch_at: datetime,
    reason: str,
    now: datetime,
    refund_attempt: bool = False,
) -> bool:
    """``submitting → queued`` after the failed submit attempt ``attempt``, due again at ``dispatch_at``: pinned to
    ``channel``, or (None) free to go to whichever channel admits it. ``refund_attempt``: the attempt does not count
    (the upstream did its part; we could not store its result)."""
    values: dict[str, object] = {"lease_until": None, "dispatched_at": dispatch_at, "channel": channel}
    if refund_attempt:
        values["submit_attempts"] = max(attempt - 1, 0)
    return _compare_and_set(
        session,
        job_id,
        from_=JobStatus.SUBMITTING,
        to=JobStatus.QUEUED,
        now=now,
        detail=reason[:1000],
        where=[col(Job.submit_attempts) == attempt],
        values=values,
    )


def end_job(
    *,
    session: Session,
    job_id: str,
    from_: JobStatus,
    to: JobStatus,
    now: datetime,
    detail: str | None = None,
    expected_poll_count: int | None = None,
    poll_count: int | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    served_model: str | None = None,
    upstream_report: dict[str, Any] | None = None,
    send_webhook_now: Callable[[str], bool] | None = None,
) -> tuple[bool, WebhookDelivery | None]:
    """The terminal compare-and-set ``from_ → to``: stamps ``finished_at``, clears the lease and the next poll, and
    schedules the ``job.<to>`` webhook (if the job has a callback URL). Returns (won, that webhook row); the winner
    finds the ended row in the session (``session.get`` without a query).

    ``expected_poll_count``: only the poll that holds this link of the chain may end the job (``poll_count``: the
    count it ends with). ``served_model``: the upstream model that actually served; ``upstream_report``: what it
    said about the result (size, quality, usage …). ``send_webhook_now(url)``: the
    caller sends the first attempt itself right after the commit, so the row is created already claimed
    (``sending``; the sweeper re-sends it if the caller dies). Used by the worker (succeeded,
    failed, timed out) and the producer (cancelled). After the commit the winner announces the job as done and
    sends the webhook task.
    """
    if to not in TERMINAL:
        raise ValueError(f"{to} is not a terminal status")
    values: dict[str, object] = {"finished_at": now, "lease_until": None, "next_poll_at": None}
    if poll_count is not None:
        values["poll_count"] = poll_count
    if error_code is not None:
        values |= {"error_code": error_code, "error_message": (error_message or "")[:1000]}
    if served_model:
        values["upstream_model"] = served_model
    if upstream_report:
        values["upstream_report"] = upstream_report
    where = [col(Job.poll_count) == expected_poll_count] if expected_poll_count is not None else []
    won = _compare_and_set(session, job_id, from_=from_, to=to, now=now, detail=detail, where=where, values=values)
    if not won:
        return False, None
    job = get_job(session=session, job_id=job_id)
    claimed = job.callback_url is not None and send_webhook_now is not None and send_webhook_now(job.callback_url)
    delivery = schedule_webhook(
        session=session, job=job, event_type=f"job.{to.value}", attempt=1, at=now, claimed=claimed
    )
    session.flush()
    return True, delivery


def _compare_and_set(
    session: Session,
    job_id: str,
    *,
    from_: JobStatus,
    to: JobStatus,
    now: datetime,
    detail: str | None,
    where: Sequence[ColumnElement[bool]] = (),
    values: Mapping[str, object] | None = None,
) -> bool:
    """``UPDATE jobs SET status = to, … WHERE id = job_id AND status = from_ AND …``; the winner's event row."""
    if not can_transition(from_, to):
        raise ValueError(f"{from_} → {to} is not a job transition")
    conditions = [col(Job.id) == job_id, col(Job.status) == from_, *where]
    statement = update(Job).where(*conditions).values(status=to, updated_at=now, **(values or {}))
    won = session.exec(statement, execution_options=_NO_SYNC).rowcount == 1
    if won:
        session.add(JobEvent(job_id=job_id, from_status=from_, to_status=to, at=now, detail=detail))
    return won


def advance_poll(
    *, session: Session, job_id: str, expected_poll_count: int, next_poll_at: datetime, now: datetime | None = None
) -> bool:
    """Advance the poll chain by one (a poll that found the task pending); only one holder of
    ``expected_poll_count`` can win. Not a status change: no event."""
    statement = (
        update(Job)
        .where(
            col(Job.id) == job_id,
            col(Job.status) == JobStatus.RUNNING,
            col(Job.poll_count) == expected_poll_count,
        )
        .values(poll_count=expected_poll_count + 1, next_poll_at=next_poll_at, updated_at=now or utcnow())
    )
    return session.exec(statement, execution_options=_NO_SYNC).rowcount == 1


def touch_dispatch(
    *, session: Session, job_id: str, status: JobStatus, not_since: datetime, now: datetime | None = None
) -> bool:
    """Mark a job as (re-)dispatched at ``now`` unless someone else did so since ``not_since``."""
    statement = (
        update(Job)
        .where(
            col(Job.id) == job_id,
            col(Job.status) == status,
            or_(col(Job.dispatched_at).is_(None), col(Job.dispatched_at) < not_since),
        )
        .values(dispatched_at=now or utcnow())
    )
    return session.exec(statement, execution_options=_NO_SYNC).rowcount == 1


def rearm_poll(*, session: Session, job_id: str, poll_count: int, next_poll_at: datetime) -> bool:
    """Re-arm the poll chain at ``poll_count`` without counting a poll (a poll waiting for a token, the sweeper's
    restart of an overdue chain), if nobody moved it."""
    statement = (
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status) == JobStatus.RUNNING, col(Job.poll_count) == poll_count)
        .values(next_poll_at=next_poll_at)
    )
    return session.exec(statement, execution_options=_NO_SYNC).rowcount == 1


def add_images(*, session: Session, images: Sequence[JobImage]) -> None:
    session.add_all(images)


def record_cost(*, session: Session, job: Job, quantity: int) -> CostEntry:
    """The job's one cost row: from the usage the upstream reported when its model bills by tokens, else from
    the price snapshot taken at submit time (``shared.catalog.pricing.cost_of``)."""
    usage = (job.upstream_report or {}).get("usage")
    cost = cost_of(
        per=job.price_per,
        unit_price=Decimal(job.unit_price),
        images_delivered=quantity,
        pricing=job.pricing,
        usage=usage if isinstance(usage, dict) else None,
    )
    entry = CostEntry(
        job_id=job.id,
        owner=job.owner,
        model=job.model,
        per=job.price_per,
        unit_price=cost.unit_price,
        quantity=cost.quantity,
        amount=cost.amount,
        currency=job.currency,
        basis=cost.basis,
        inputs=cost.inputs,
    )
    session.add(entry)
    return entry


def schedule_webhook(
    *, session: Session, job: Job, event_type: str, attempt: int, at: datetime, claimed: bool = False
) -> WebhookDelivery | None:
    """Schedule a delivery attempt of the job's terminal event, if the job has a callback URL."""
    if job.callback_url is None:
        return None
    return add_webhook_attempt(session=session, job=job, event_type=event_type, attempt=attempt, at=at, claimed=claimed)


def add_webhook_attempt(
    *, session: Session, job: Job, event_type: str, attempt: int, at: datetime, claimed: bool = False
) -> WebhookDelivery:
    """A delivery attempt of the job's terminal event (``webhook-id`` derived from the job): pending, or already
    claimed for sending at ``at`` by whoever creates it."""
    assert job.callback_url is not None
    delivery = WebhookDelivery(
        job_id=job.id,
        webhook_id=webhook_id_of(job.id, event_type),
        event_type=event_type,
        url=job.callback_url,
        attempt=attempt,
        next_attempt_at=at,
        state="sending" if claimed else "pending",
        started_at=at if claimed else None,
    )
    session.add(delivery)
    return delivery


def webhook_id_of(job_id: str, event_type: str) -> str:
    """The ``webhook-id`` of one of a job's events: the terminal one keeps ``msg_<job>``, a progress event
    (``job.started``, ``job.running``) gets its own, so a receiver deduplicating on it sees every event once."""
    if event_type in ("job.started", "job.running"):
        return f"msg_{job_id}_{event_type.removeprefix('job.')}"
    return f"msg_{job_id}"


def claim_webhook(*, session: Session, delivery_id: int, now: datetime, stale_before: datetime) -> bool:
    """Take a scheduled attempt (or one whose sender vanished) for sending; True if we got it."""
    statement = (
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.id) == delivery_id,
            or_(
                col(WebhookDelivery.state) == "pending",
                and_(col(WebhookDelivery.state) == "sending", col(WebhookDelivery.started_at) < stale_before),
            ),
        )
        .values(state="sending", started_at=now)
    )
    return session.exec(statement, execution_options=_NO_SYNC).rowcount == 1


def list_events(*, session: Session, job_id: str) -> Sequence[JobEvent]:
    return session.exec(select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id))).all()


def list_images(*, session: Session, job_id: str) -> Sequence[JobImage]:
    return session.exec(select(JobImage).where(JobImage.job_id == job_id).order_by(col(JobImage.index))).all()


def get_cost(*, session: Session, job_id: str) -> CostEntry | None:
    return session.exec(select(CostEntry).where(CostEntry.job_id == job_id)).first()


def list_deliveries(*, session: Session, job_id: str) -> Sequence[WebhookDelivery]:
    statement = select(WebhookDelivery).where(WebhookDelivery.job_id == job_id).order_by(col(WebhookDelivery.id))
    return session.exec(statement).all()


def find_jobs(*, session: Session, status: JobStatus, column: Any, before: datetime, limit: int) -> Sequence[Job]:
    """Jobs in ``status`` whose ``column`` (a datetime column) is unset or earlier than ``before``."""
    statement = (
        select(Job)
        .where(col(Job.status) == status, or_(column.is_(None), column < before))
        .order_by(column)
        .limit(limit)
    )
    return session.exec(statement).all()


def find_past_deadline(*, session: Session, now: datetime, limit: int) -> Sequence[Job]:
    statement = (
        select(Job)
        .where(col(Job.status).not_in(list(TERMINAL)), col(Job.deadline_at) < now)
        .order_by(col(Job.deadline_at))
        .limit(limit)
    )
    return session.exec(statement).all()


def find_due_webhooks(
    *, session: Session, due_before: datetime, stale_before: datetime, limit: int
) -> Sequence[WebhookDelivery]:
    statement = (
        select(WebhookDelivery)
        .where(
            or_(
                and_(col(WebhookDelivery.state) == "pending", col(WebhookDelivery.next_attempt_at) < due_before),
                and_(col(WebhookDelivery.state) == "sending", col(WebhookDelivery.started_at) < stale_before),
            )
        )
        .order_by(col(WebhookDelivery.next_attempt_at))
        .limit(limit)
    )
    return session.exec(statement).all()
