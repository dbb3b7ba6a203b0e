"""A tenant's history: the job list (``GET /v1/images/generations`` without ``task_id``), a job's event timeline
and the cost totals by model and day. The results console reads these; any client may.

Each answers only the caller's own jobs. The list is keyset-paged: ``next_cursor`` of one page is the
``cursor`` of the next.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from producer.http.auth import Owner
from producer.http.context import ApiContext, api_context
from producer.http.errors import ApiError
from shared.db import history_repo, jobs_repo
from shared.db.history_repo import JobFilter
from shared.db.tables import Job, utcnow
from shared.jobs import JobStatus
from shared.views import JobView, job_view

router = APIRouter(tags=["History"])
Context = Annotated[ApiContext, Depends(api_context)]

MAX_PAGE: Final = 100
#: the longest period one cost query may cover
MAX_COST_PERIOD: Final = timedelta(days=366)
DEFAULT_COST_PERIOD: Final = timedelta(days=30)


class JobListItem(JobView):
    #: the prompt as submitted (user input: show it escaped)
    prompt: str | None = None


class JobList(BaseModel):
    object: str = "list"
    data: list[JobListItem]
    has_more: bool
    next_cursor: str | None


class TimelineEvent(BaseModel):
    id: int
    from_status: str | None
    to_status: str
    at: datetime
    detail: str | None


class JobRequest(BaseModel):
    """What was asked for and where it went: the model, the upstream that served it and its parameters."""

    model: str
    model_name: str | None
    provider: str
    channel: str | None
    upstream_model: str
    operation: str
    priority: str
    callback_url: str | None
    params: dict[str, Any]


class Timeline(BaseModel):
    object: str = "list"
    task_id: str
    request: JobRequest
    data: list[TimelineEvent]


class CostRow(BaseModel):
    day: date
    model: str
    currency: str
    amount: Decimal
    jobs: int


class CostTotalRow(BaseModel):
    currency: str
    amount: Decimal
    jobs: int


class CostReport(BaseModel):
    object: str = "cost_report"
    since: datetime
    until: datetime
    data: list[CostRow]
    totals: list[CostTotalRow]


def job_filter(
    status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
    model: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    created_after: Annotated[datetime | None, Query(description="ISO 8601; created at or after")] = None,
    created_before: Annotated[datetime | None, Query(description="ISO 8601; created before")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description="text in the prompt")] = None,
) -> JobFilter:
    return JobFilter(
        status=status,
        model=model,
        created_after=_aware(created_after, "created_after"),
        created_before=_aware(created_before, "created_before"),
        text=q,
    )


def _aware(value: datetime | None, param: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ApiError(400, f"'{param}' needs a time zone (e.g. 2026-01-31T12:00:00Z).", param=param)
    return value


Filter = Annotated[JobFilter, Depends(job_filter)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="jobs per page")]


def list_generations(context: ApiContext, owner: str, where: JobFilter, *, limit: int, cursor: str | None) -> JobList:
    """One page of the owner's jobs, newest first (``cursor``: the previous page's ``next_cursor``)."""
    with context.session() as session:
        after: Job | None = None
        if cursor is not None:
            after = session.get(Job, cursor)
            if after is None or after.owner != owner:
                raise ApiError(400, "Unknown 'cursor'; pass a next_cursor this list answered.", param="cursor")
        page = history_repo.list_jobs(session=session, owner=owner, where=where, limit=limit, after=after)
    kept_s = context.settings.retention.results_s
    items = [
        JobListItem(
            **job_view(
                job,
                images=page.images.get(job.id, []),
                cost=page.costs.get(job.id),
                sign=context.sign,
                results_kept_s=kept_s,
            ).model_dump(),
            prompt=_prompt(job),
        )
        for job in page.jobs
    ]
    next_cursor = page.next_after.id if page.next_after is not None else None
    return JobList(data=items, has_more=next_cursor is not None, next_cursor=next_cursor)


def _prompt(job: Job) -> str | None:
    prompt = (job.upstream_params or {}).get("prompt")
    return prompt if isinstance(prompt, str) else None


@router.get("/v1/images/generations/{task_id}/timeline")
async def timeline(task_id: str, owner: Owner, context: Context) -> Timeline:
    """The job's request (model, upstream, parameters) and every recorded event, oldest first: state changes,
    submit attempts, polls."""

    def load() -> Timeline:
        with context.session() as session:
            job = jobs_repo.get_job(session=session, job_id=task_id, owner=owner)
            events = jobs_repo.list_events(session=session, job_id=task_id)
        request = JobRequest(
            model=job.model,
            model_name=job.variant,
            provider=job.provider,
            channel=job.channel,
            upstream_model=job.upstream_model,
            operation=job.operation,
            priority=job.priority,
            callback_url=job.callback_url,
            params=job.upstream_params or {},
        )
        return Timeline(
            task_id=task_id,
            request=request,
            data=[
                TimelineEvent(
                    id=event.id,
                    from_status=event.from_status,
                    to_status=event.to_status,
                    at=event.at,
                    detail=event.detail,
                )
                for event in events
                if event.id is not None
            ],
        )

    return await run_in_threadpool(load)


@router.get("/v1/costs")
async def costs(
    owner: Owner,
    context: Context,
    since: Annotated[datetime | None, Query(description="ISO 8601; default: 30 days ago")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601; default: now")] = None,
) -> CostReport:
    """The caller's recorded cost per UTC day, model and currency, and the period's totals per currency."""
    end = _aware(until, "until") or utcnow()
    start = _aware(since, "since") or end - DEFAULT_COST_PERIOD
    if start >= end:
        raise ApiError(400, "'since' must be before 'until'.", param="since")
    if end - start > MAX_COST_PERIOD:
        raise ApiError(400, f"The period may cover at most {MAX_COST_PERIOD.days} days.", param="since")

    def load() -> list[history_repo.CostTotal]:
        with context.session() as session:
            return history_repo.cost_totals(session=session, owner=owner, since=start, until=end)

    rows = await run_in_threadpool(load)
    totals: dict[str, CostTotalRow] = {}
    for row in rows:
        total = totals.setdefault(row.currency, CostTotalRow(currency=row.currency, amount=Decimal(0), jobs=0))
        total.amount += row.amount
        total.jobs += row.jobs
    return CostReport(
        since=start,
        until=end,
        data=[CostRow(day=r.day, model=r.model, currency=r.currency, amount=r.amount, jobs=r.jobs) for r in rows],
        totals=list(totals.values()),
    )
