"""Keyword-only read functions over recorded costs (``CostEntry``): a tenant's totals over a period."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func
from sqlmodel import Session, col, select

from shared.db.tables import CostEntry

GroupBy = Literal["model", "day"]


@dataclass(frozen=True, slots=True)
class CostTotal:
    """The jobs billed and their total in one currency, for one model or one UTC day."""

    key: str
    currency: str
    jobs: int
    amount: Decimal


def cost_totals(
    *,
    session: Session,
    owner: str,
    group_by: GroupBy,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
) -> Sequence[CostTotal]:
    """``owner``'s costs recorded in ``[since, until)`` summed per model (or per UTC day) and currency.

    ``date()`` exists in both SQLite and PostgreSQL (https://www.sqlite.org/lang_datefunc.html,
    https://www.postgresql.org/docs/current/functions-datetime.html); PostgreSQL answers a ``date``, SQLite a
    ``YYYY-MM-DD`` string: both read back as that string.
    """
    key: Any = func.date(CostEntry.created_at) if group_by == "day" else col(CostEntry.model)
    statement = select(key, CostEntry.currency, func.count(), func.sum(CostEntry.amount)).where(
        CostEntry.owner == owner
    )
    if since is not None:
        statement = statement.where(col(CostEntry.created_at) >= since)
    if until is not None:
        statement = statement.where(col(CostEntry.created_at) < until)
    if model is not None:
        statement = statement.where(CostEntry.model == model)
    statement = statement.group_by(key, CostEntry.currency).order_by(key, CostEntry.currency)
    return [
        CostTotal(key=str(name), currency=currency, jobs=int(count), amount=Decimal(total))
        for name, currency, count, total in session.exec(statement)
    ]
