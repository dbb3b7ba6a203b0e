"""Reading a tenant's past jobs: the filtered, paged job list and the cost totals by model and day.

Always scoped to one owner: a tenant never sees another's jobs. Pages are keyset-paged on ``(created_at, id)``
newest first, so a page stays stable while new jobs arrive (no OFFSET drift).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import String, and_, cast, or_
from sqlmodel import Session, col, select

from shared.db.tables import CostEntry, Job, JobImage
from shared.jobs import JobStatus


@dataclass(frozen=True, slots=True)
class JobFilter:
    """What the job list is narrowed to; every field optional."""

    status: JobStatus | None = None
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    #: a piece of text of the prompt (case-insensitive)
    text: str | None = None


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: Sequence[Job]
    images: dict[str, list[JobImage]]
    costs: dict[str, CostEntry]
    #: the last job of this page, when another page follows
    next_after: Job | None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_jobs(*, session: Session, owner: str, where: JobFilter, limit: int, after: Job | None) -> JobPage:
    """One page of ``owner``'s jobs, newest first, after the job ``after`` (the previous page's last)."""
    statement = select(Job).where(Job.owner == owner)
    if where.status is not None:
        statement = statement.where(Job.status == where.status)
    if where.model is not None:
        statement = statement.where(Job.model == where.model)
    if where.created_after is not None:
        statement = statement.where(col(Job.created_at) >= where.created_after)
    if where.created_before is not None:
        statement = statement.where(col(Job.created_at) < where.created_before)
    if where.text:
        # the prompt lives in the upstream parameters (a JSON column): matched on its text, on every backend
        pattern = f"%{_escape_like(where.text)}%"
        statement = statement.where(cast(Job.upstream_params, String).ilike(pattern, escape="\\"))
    if after is not None:
        statement = statement.where(
            or_(
                col(Job.created_at) < after.created_at,
                and_(col(Job.created_at) == after.created_at, col(Job.id) < after.id),
            )
        )
    statement = statement.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(limit + 1)
    rows = session.exec(statement).all()
    jobs, more = rows[:limit], len(rows) > limit
    ids = [job.id for job in jobs]
    images: dict[str, list[JobImage]] = defaultdict(list)
    costs: dict[str, CostEntry] = {}
    if ids:
        for image in session.exec(
            select(JobImage).where(col(JobImage.job_id).in_(ids)).order_by(col(JobImage.index))
        ).all():
            images[image.job_id].append(image)
        for cost in session.exec(select(CostEntry).where(col(CostEntry.job_id).in_(ids))).all():
            costs[cost.job_id] = cost
    return JobPage(jobs=jobs, images=dict(images), costs=costs, next_after=jobs[-1] if more and jobs else None)


@dataclass(frozen=True, slots=True)
class CostTotal:
    day: date
    model: str
    currency: str
    amount: Decimal
    jobs: int


def cost_totals(*, session: Session, owner: str, since: datetime, until: datetime) -> list[CostTotal]:
    """``owner``'s recorded cost per UTC day, model and currency in ``[since, until)``, oldest day first.

    Summed here as ``Decimal`` (exact on every backend; SQLite has no decimal arithmetic)."""
    statement = select(CostEntry).where(
        CostEntry.owner == owner, col(CostEntry.created_at) >= since, col(CostEntry.created_at) < until
    )
    sums: dict[tuple[date, str, str], tuple[Decimal, int]] = {}
    for entry in session.exec(statement).all():
        key = (entry.created_at.date(), entry.model, entry.currency)
        total, count = sums.get(key, (Decimal(0), 0))
        sums[key] = (total + Decimal(entry.amount), count + 1)
    return [
        CostTotal(day=day, model=model, currency=currency, amount=amount, jobs=count)
        for (day, model, currency), (amount, count) in sorted(sums.items())
    ]
