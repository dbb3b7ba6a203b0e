"""Keyword-only repository functions for API keys (``api_key`` rows) and what a tenant has committed to spend.

None of these commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import case, func, or_, update
from sqlmodel import Session, col, select

from shared.db.tables import ApiKey, CostEntry, Job
from shared.jobs import TERMINAL

_NO_SYNC = {"synchronize_session": False}


def insert_key(*, session: Session, key: ApiKey) -> None:
    session.add(key)


def find_by_hash(*, session: Session, key_hash: str) -> ApiKey | None:
    """The row of the key whose SHA-256 is ``key_hash`` (revoked or not)."""
    return session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()


def list_keys(*, session: Session) -> Sequence[ApiKey]:
    return session.exec(select(ApiKey).order_by(col(ApiKey.created_at), col(ApiKey.id))).all()


def find_by_reference(*, session: Session, reference: str, key_hash: str | None = None) -> Sequence[ApiKey]:
    """Rows whose id, display prefix or (given ``key_hash``) whole key matches ``reference``."""
    conditions = [col(ApiKey.id) == reference, col(ApiKey.prefix) == reference]
    if key_hash is not None:
        conditions.append(col(ApiKey.key_hash) == key_hash)
    return session.exec(select(ApiKey).where(or_(*conditions))).all()


def revoke(*, session: Session, key_id: str, now: datetime) -> bool:
    """Mark the key revoked; False if it was already revoked (or does not exist)."""
    statement = update(ApiKey).where(col(ApiKey.id) == key_id, col(ApiKey.revoked_at).is_(None)).values(revoked_at=now)
    return session.exec(statement, execution_options=_NO_SYNC).rowcount == 1


def rotate_webhook_secret(*, session: Session, key: ApiKey, new_secret: str, previous_until: datetime | None) -> None:
    """``new_secret`` signs from now on; the current one keeps signing until ``previous_until`` (None: stops now)."""
    if previous_until is None:
        key.previous_webhook_secret, key.previous_secret_expires_at = None, None
    else:
        key.previous_webhook_secret, key.previous_secret_expires_at = key.webhook_secret, previous_until
    key.webhook_secret = new_secret
    session.add(key)


def lock_key(*, session: Session, key_id: str) -> ApiKey | None:
    """The key's row, locked until the transaction ends, so one tenant's budget checks run one at a time.

    PostgreSQL: a row lock (``FOR UPDATE``). SQLite ignores ``FOR UPDATE`` but our engine opens every
    transaction with ``BEGIN IMMEDIATE`` (shared/db/engine.py), which serialises all writers anyway.
    """
    return session.exec(select(ApiKey).where(ApiKey.id == key_id).with_for_update()).first()


def committed_spend(*, session: Session, owner: str, currency: str) -> Decimal:
    """What the tenant has spent or may still spend in ``currency``.

    The recorded cost of its succeeded jobs plus the maximum cost of its jobs that have not ended yet (price
    snapshot × requested images, or the per-request price). Jobs that failed cost nothing.
    """
    spent = session.exec(
        select(func.sum(CostEntry.amount)).where(CostEntry.owner == owner, CostEntry.currency == currency)
    ).one()
    unit = col(Job.unit_price)
    most = case((col(Job.price_per) == "request", unit), else_=unit * col(Job.image_count))
    pending = session.exec(
        select(func.sum(most)).where(
            col(Job.owner) == owner, col(Job.currency) == currency, col(Job.status).not_in(list(TERMINAL))
        )
    ).one()
    return _decimal(spent) + _decimal(pending)


def _decimal(value: object) -> Decimal:
    # SQLite sums NUMERIC columns as floats: go through str() and keep the column's six decimals
    return Decimal(str(value)).quantize(Decimal("0.000001")) if value is not None else Decimal(0)
