"""``GET /v1/costs``: what the caller's jobs cost over a period, per model or per UTC day, in each currency."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel
from sqlmodel import Session

from producer.http.auth import Owner
from producer.http.context import ApiContext, api_context
from shared.db import costs_repo
from shared.db.costs_repo import GroupBy
from shared.db.engine import reading
from shared.errors import InvalidRequestError

router = APIRouter(tags=["Costs"])
Context = Annotated[ApiContext, Depends(api_context)]


class CostLine(BaseModel):
    #: the model, or the UTC day (``YYYY-MM-DD``), as grouped
    key: str
    currency: str
    jobs: int
    amount: Decimal


class CostReport(BaseModel):
    object: str = "cost.report"
    group_by: GroupBy
    since: datetime | None
    until: datetime | None
    model: str | None
    data: list[CostLine]


@router.get("/v1/costs")
async def get_costs(
    owner: Owner,
    context: Context,
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    model: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    group_by: GroupBy = "model",
) -> CostReport:
    """The caller's recorded costs in ``[since, until)`` (ISO 8601 with a UTC offset), summed per ``group_by``
    (``model`` or ``day``) and currency; only the caller's own jobs."""
    if since is not None and until is not None and until <= since:
        raise InvalidRequestError("'until' must be later than 'since'.", param="until")

    def read() -> CostReport:
        with Session(reading(context.engine)) as session:
            totals = costs_repo.cost_totals(
                session=session,
                owner=owner,
                group_by=group_by,
                since=since.astimezone(UTC) if since else None,
                until=until.astimezone(UTC) if until else None,
                model=model,
            )
        lines = [CostLine(key=t.key, currency=t.currency, jobs=t.jobs, amount=t.amount) for t in totals]
        return CostReport(group_by=group_by, since=since, until=until, model=model, data=lines)

    return await run_in_threadpool(read)
